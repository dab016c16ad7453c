// The Qwen2 decoder, its KV cache, the modality-driven MoE, generation and token log-probabilities, on a
// tiny config built here: shapes, finite-difference gradients, cache == full forward, MoE == a naive
// per-token loop, the load-balance loss by hand, and generation against full re-runs.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "model/decoder.h"
#include "model/generate.h"
#include "model/inputs.h"
#include "model/moe.h"
#include "model/moon_model.h"
#include "ops/elementwise.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"
#include "runtime/rng.h"
#include "test_util.h"

using namespace moon;
using namespace moon::model;

namespace {

// A tiny decoder config: V 37, C 16, 2 layers, 4 query heads over 2 kv heads (GQA), optional MoE.
ModelConfig tiny_config(bool moe) {
  ModelConfig c;
  c.decoder.vocab = 37;
  c.decoder.hidden = 16;
  c.decoder.layers = 2;
  c.decoder.heads = 4;
  c.decoder.kv_heads = 2;
  c.decoder.mlp = 24;
  c.decoder.tie_embeddings = !moe;  // cover both lm_head forms
  c.moe.enabled = moe;
  c.moe.experts = 4;
  c.moe.top_k = 2;
  c.moe.mlp = 20;
  c.init_seed = 7;
  return c;
}

// Redraws every parameter with a larger spread (norm weights around 1) so that outputs are O(1) and a
// wrong position, mask or routing shows far above rounding.
void spread_params(ParamStore& ps, uint64_t seed, double stddev = 0.3) {
  NoGradGuard no_grad;
  Generator gen(seed);
  for (auto& [name, p] : ps.all()) {
    Tensor r = randn(p.shape(), gen);
    mul_(r, stddev);
    const bool is_norm = name.find("norm") != std::string::npos;
    Tensor value = is_norm ? add_scalar(r, 1.0) : r;
    Tensor target = p;
    target.copy_(value);
  }
}

Tensor ids_tensor(const std::vector<std::vector<int64_t>>& rows, int64_t T, int64_t pad,
                  std::vector<uint8_t>* keep, std::vector<int64_t>* positions) {
  const int64_t B = static_cast<int64_t>(rows.size());
  std::vector<int64_t> ids(static_cast<size_t>(B * T), pad);
  keep->assign(static_cast<size_t>(B * T), 0);
  positions->assign(static_cast<size_t>(B * T), 0);
  for (int64_t b = 0; b < B; ++b)
    for (size_t t = 0; t < rows[b].size(); ++t) {
      ids[b * T + t] = rows[b][t];
      (*keep)[b * T + t] = 1;
      (*positions)[b * T + t] = static_cast<int64_t>(t);
    }
  return from_vector(ids, {B, T}, DType::I64);
}

// Central finite differences of loss() in the given elements of leaf p, against p's analytic gradient.
void check_gradient(const std::function<Tensor()>& loss, const Tensor& p, const std::vector<int64_t>& elements,
                    const std::string& what, double eps = 1e-2) {
  Tensor(p).zero_grad();
  loss().backward();
  REQUIRE_MESSAGE(p.grad().defined(), what, " got no gradient");
  const std::vector<float> analytic = p.grad().to_vector<float>();
  float* data = p.data<float>();
  for (int64_t i : elements) {
    double numeric;
    {
      NoGradGuard no_grad;
      const float saved = data[i];
      data[i] = saved + static_cast<float>(eps);
      const double up = loss().item();
      data[i] = saved - static_cast<float>(eps);
      const double down = loss().item();
      data[i] = saved;
      numeric = (up - down) / (2 * eps);
    }
    INFO(what, "[", i, "]: analytic ", analytic[i], ", numeric ", numeric);
    CHECK(std::abs(analytic[i] - numeric) <= 2e-2 * (std::abs(numeric) + 0.05));
  }
  Tensor(p).zero_grad();
}

// SwiGLU expert on one token in double: down @ (silu(gate @ x) * (up @ x)).
std::vector<double> expert_naive(const ParamStore& ps, const std::string& prefix, const float* x, int64_t C, int64_t I) {
  const std::vector<float> g = ps.get(prefix + "gate_proj.weight").to_vector<float>();
  const std::vector<float> u = ps.get(prefix + "up_proj.weight").to_vector<float>();
  const std::vector<float> d = ps.get(prefix + "down_proj.weight").to_vector<float>();
  std::vector<double> h(static_cast<size_t>(I)), out(static_cast<size_t>(C), 0.0);
  for (int64_t i = 0; i < I; ++i) {
    double a = 0, b = 0;
    for (int64_t c = 0; c < C; ++c) a += double(g[i * C + c]) * x[c], b += double(u[i * C + c]) * x[c];
    h[i] = a / (1 + std::exp(-a)) * b;
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < I; ++i) out[c] += double(d[c * I + i]) * h[i];
  return out;
}

// The router probabilities of one token in double: softmax(W (x + modality_embedding[m])).
std::vector<double> router_naive(const ParamStore& ps, const std::string& prefix, const float* x, int64_t m, int64_t C,
                                 int64_t E) {
  const std::vector<float> w = ps.get(prefix + "gate.weight").to_vector<float>();
  const std::vector<float> emb = ps.get(prefix + "modality_embedding.weight").to_vector<float>();
  std::vector<double> p(static_cast<size_t>(E));
  double mx = -1e300, total = 0;
  for (int64_t e = 0; e < E; ++e) {
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += double(w[e * C + c]) * (double(x[c]) + emb[m * C + c]);
    p[e] = s;
    mx = std::max(mx, s);
  }
  for (auto& v : p) total += (v = std::exp(v - mx));
  for (auto& v : p) v /= total;
  return p;
}

struct MoeCase {
  Tensor x, modality, keep;  // (B, T, C), (B), (B, T)
};

MoeCase moe_case(int64_t B, int64_t T, int64_t C, uint64_t seed) {
  Generator gen(seed);
  MoeCase m;
  m.x = randn({B, T, C}, gen);
  std::vector<int64_t> mod(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) mod[b] = b % 3;
  m.modality = from_vector(mod, {B}, DType::I64);
  std::vector<uint8_t> keep(static_cast<size_t>(B * T), 1);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = T - b; t < T; ++t) keep[b * T + t] = 0;  // row b has b padded positions at the end
  m.keep = from_vector(keep, {B, T}, DType::U8);
  return m;
}


// A whole tiny model for generation: 16x16 images of 8x8 patches (4 vision tokens), the tiny decoder with MoE,
// FIRE from vision layer 1 into decoder layer 0 (its gate made non-zero by spread_params).
ModelConfig tiny_model_config() {
  ModelConfig c = tiny_config(true);
  c.vision.image_size = 16;
  c.vision.patch_size = 8;
  c.vision.hidden = 16;
  c.vision.layers = 2;
  c.vision.heads = 2;
  c.vision.mlp = 32;
  c.projector.merge = 1;
  c.projector.hidden = 24;
  c.fire.enabled = true;
  c.fire.vision_layers = {1};
  c.fire.decoder_layers = {0};
  c.embedding.dim = 16;
  return c;
}

// Three prompt rows of different lengths: image + text, text only, image + longer text.
ModelBatch prompt_batch(const ModelConfig& cfg) {
  std::vector<InputRow> rows(3);
  rows[0].text = {10, 11, 12, 13};
  rows[0].image = 0;
  rows[1].text = {14, 15};
  rows[2].text = {16, 17, 18, 19, 20, 21, 22};
  rows[2].image = 1;
  for (auto& r : rows) r.prompt = true;
  Generator gen(31);
  return assemble(rows, randn({2, 3, 16, 16}, gen), SpecialTokens{}, cfg);
}

// The prompt with each row's generated tokens written after its last kept position (no cache involved).
ModelBatch extend(const ModelBatch& prompt, const std::vector<std::vector<int64_t>>& added) {
  const int64_t B = prompt.rows(), T0 = prompt.token_ids.size(1);
  int64_t extra = 0;
  for (const auto& a : added) extra = std::max<int64_t>(extra, static_cast<int64_t>(a.size()));
  const int64_t T = T0 + extra;
  auto widen = [&](const Tensor& t, int64_t fill) {  // (B, T0) -> (B, T) vector, new columns = fill
    const std::vector<int64_t> v = t.to_vector<int64_t>();
    std::vector<int64_t> out(static_cast<size_t>(B * T), fill);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T0; ++t) out[b * T + t] = v[b * T0 + t];
    return out;
  };
  std::vector<int64_t> ids = widen(prompt.token_ids, 8), keep = widen(prompt.keep, 0), pos = widen(prompt.positions, 0),
                       slot = widen(prompt.vision_slot, -1), pool = widen(prompt.pool_mask, 0),
                       text = widen(prompt.text_mask, 0);
  std::vector<int64_t> emb(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    int64_t n = 0;
    for (int64_t t = 0; t < T; ++t) n += keep[b * T + t];
    for (size_t i = 0; i < added[b].size(); ++i) {
      const int64_t t = n + static_cast<int64_t>(i);
      ids[b * T + t] = added[b][i], keep[b * T + t] = 1, pos[b * T + t] = t, pool[b * T + t] = 1;
    }
    emb[b] = n + static_cast<int64_t>(added[b].size()) - 1;
  }
  auto u8 = [&](const std::vector<int64_t>& v) {
    return from_vector(std::vector<uint8_t>(v.begin(), v.end()), {B, T}, DType::U8);
  };
  ModelBatch out = prompt;
  out.token_ids = from_vector(ids, {B, T}, DType::I64);
  out.keep = u8(keep);
  out.positions = from_vector(pos, {B, T}, DType::I64);
  out.vision_slot = from_vector(slot, {B, T}, DType::I64);
  out.pool_mask = u8(pool);
  out.text_mask = u8(text);
  out.emb_index = from_vector(emb, {B}, DType::I64);
  return out;
}

// (B, V) logits at every row's last kept position from one full forward without a cache.
std::vector<float> last_logits(const MoonModel& model, const ModelBatch& batch) {
  NoGradGuard no_grad;
  MoonModel::Prepared p = model.prepare(batch);
  DecoderOutput o = model.decoder().forward(p.inputs, batch.positions, batch.keep, batch.modality,
                                            model.fire_hook(p, batch), nullptr, Compute{});
  const int64_t B = batch.rows(), T = batch.token_ids.size(1), C = model.config().decoder.hidden;
  const std::vector<float> h = o.hidden.to_vector<float>();
  const std::vector<uint8_t> keep = batch.keep.to_vector<uint8_t>();
  std::vector<float> last(static_cast<size_t>(B * C));
  for (int64_t b = 0; b < B; ++b) {
    int64_t at = 0;
    for (int64_t t = 0; t < T; ++t)
      if (keep[b * T + t]) at = t;
    std::copy(h.begin() + (b * T + at) * C, h.begin() + (b * T + at + 1) * C, last.begin() + b * C);
  }
  return model.decoder().logits(from_vector(last, {B, C}), Compute{}).to_vector<float>();
}

// Greedy continuation by full re-runs: argmax (lowest id on ties) of the last logits, `steps` times.
std::vector<std::vector<int64_t>> greedy_by_rerun(const MoonModel& model, const ModelBatch& prompt, int64_t steps) {
  const int64_t B = prompt.rows(), V = model.config().decoder.vocab;
  std::vector<std::vector<int64_t>> added(static_cast<size_t>(B));
  for (int64_t s = 0; s < steps; ++s) {
    const std::vector<float> lg = last_logits(model, s == 0 ? prompt : extend(prompt, added));
    for (int64_t b = 0; b < B; ++b)
      added[b].push_back(std::max_element(lg.begin() + b * V, lg.begin() + (b + 1) * V) - (lg.begin() + b * V));
  }
  return added;
}

}  // namespace

TEST_SUITE("model_decoder") {
  TEST_CASE("decoder forward: shapes, logits, aux and router counts") {
    for (bool moe : {false, true}) {
      ModelConfig cfg = tiny_config(moe);
      ParamStore ps(cfg.init_seed);
      Decoder dec(cfg, ps);
      CHECK(ps.contains("lm_head.weight") == moe);  // tied without MoE in this config
      CHECK(ps.contains("model.layers.1.mlp.experts.3.down_proj.weight") == moe);
      CHECK(ps.contains("model.layers.1.mlp.up_proj.weight") == !moe);
      std::vector<uint8_t> keep;
      std::vector<int64_t> pos;
      Tensor ids = ids_tensor({{1, 2, 3, 4, 5}, {6, 7}}, 5, 0, &keep, &pos);
      Tensor x = dec.embed(ids);
      CHECK(x.shape() == Shape({2, 5, 16}));
      DecoderOutput out = dec.forward(x, from_vector(pos, {2, 5}, DType::I64), from_vector(keep, {2, 5}, DType::U8),
                                      from_vector(std::vector<int64_t>{0, 2}, {2}, DType::I64), nullptr, nullptr, Compute{});
      CHECK(out.hidden.shape() == Shape({2, 5, 16}));
      CHECK(dec.logits(out.hidden, Compute{}).shape() == Shape({2, 5, 37}));
      CHECK(out.aux_loss.dim() == 0);
      if (moe) {
        REQUIRE(out.router_counts.size() == 2);
        CHECK(out.router_counts[0].shape() == Shape({4, 3}));
        CHECK(out.aux_loss.item() > 0.5);  // E * sum f P is about 1 for a balanced router
      } else {
        CHECK(out.router_counts.empty());
        CHECK(out.aux_loss.item() == 0.0);
      }
      // bf16 compute mode (operands of every product rounded to bf16): close to f32, but not equal.
      DecoderOutput bf = dec.forward(x, from_vector(pos, {2, 5}, DType::I64), from_vector(keep, {2, 5}, DType::U8),
                                     from_vector(std::vector<int64_t>{0, 2}, {2}, DType::I64), nullptr, nullptr,
                                     Compute{DType::BF16});
      const double diff = max(abs(sub(bf.hidden, out.hidden))).item();
      CHECK(diff > 0);
      CHECK(diff < 0.05);
      // The hidden state is RMS-normalised: mean square 1 per token (norm weight 1 at init).
      const std::vector<float> h = out.hidden.to_vector<float>();
      double ms = 0;
      for (int c = 0; c < 16; ++c) ms += double(h[c]) * h[c];
      CHECK(ms / 16 == doctest::Approx(1.0).epsilon(1e-3));
    }
  }

  TEST_CASE("decoder input errors name the tensor and the shapes") {
    ModelConfig cfg = tiny_config(false);
    ParamStore ps(cfg.init_seed);
    Decoder dec(cfg, ps);
    Tensor x = zeros({2, 3, 16}), pos = zeros({2, 3}, DType::I64), keep = ones({2, 3}, DType::U8);
    Tensor mod = zeros({2}, DType::I64);
    using test::contains;
    using test::error_of;
    CHECK(contains(error_of([&] { dec.forward(zeros({2, 3, 8}), pos, keep, mod, nullptr, nullptr, Compute{}); }),
                   "decoder: input embeddings must be (B, T, 16), got f32(2, 3, 8)"));
    CHECK(contains(error_of([&] { dec.forward(x, zeros({2, 4}, DType::I64), keep, mod, nullptr, nullptr, Compute{}); }),
                   "decoder: positions must be i64 (2, 3)"));
    CHECK(contains(error_of([&] { dec.forward(x, pos, ones({2, 3}), mod, nullptr, nullptr, Compute{}); }),
                   "decoder: keep must be u8 (2, 3)"));
    KVCache cache = KVCache::create(cfg.decoder, 2, 4);
    NoGradGuard no_grad;
    dec.forward(x, pos, keep, mod, nullptr, &cache, Compute{});
    CHECK(cache.length == 3);
    CHECK(error_of([&] { dec.forward(x, pos, keep, mod, nullptr, &cache, Compute{}); }) ==
          "decoder: the KV cache holds 3 of 4 positions and cannot take 3 more; create it with a larger capacity");
    KVCache other = KVCache::create(cfg.decoder, 1, 8);
    CHECK(contains(error_of([&] { dec.forward(x, pos, keep, mod, nullptr, &other, Compute{}); }),
                   "decoder: the KV cache was made for 1 rows but the input has 2"));
  }

  TEST_CASE("decoder gradients match finite differences") {
    for (bool moe : {false, true}) {
      ModelConfig cfg = tiny_config(moe);
      ParamStore ps(cfg.init_seed);
      Decoder dec(cfg, ps);
      spread_params(ps, 11);
      std::vector<uint8_t> keep;
      std::vector<int64_t> pos;
      Tensor ids = ids_tensor({{1, 2, 3, 4}, {5, 6, 7}}, 4, 0, &keep, &pos);
      Tensor keep_t = from_vector(keep, {2, 4}, DType::U8), pos_t = from_vector(pos, {2, 4}, DType::I64);
      Tensor mod = from_vector(std::vector<int64_t>{1, 2}, {2}, DType::I64);
      Generator gen(3);
      Tensor proj = randn({2, 4, 37}, gen);  // fixed random projection of the logits
      auto loss = [&] {
        DecoderOutput o = dec.forward(dec.embed(ids), pos_t, keep_t, mod, nullptr, nullptr, Compute{});
        Tensor l = sum(mul(dec.logits(o.hidden, Compute{}), proj));
        return moe ? add(l, scale(o.aux_loss, 5.0)) : l;
      };
      const std::string L0 = "model.layers.0.", L1 = "model.layers.1.";
      check_gradient(loss, ps.get(L0 + "self_attn.q_proj.weight"), {0, 37, 200}, "q_proj");
      check_gradient(loss, ps.get(L0 + "self_attn.k_proj.bias"), {1, 6}, "k_proj.bias");
      check_gradient(loss, ps.get(L1 + "self_attn.v_proj.weight"), {3, 100}, "v_proj");
      check_gradient(loss, ps.get(L1 + "self_attn.o_proj.weight"), {5, 77}, "o_proj");
      check_gradient(loss, ps.get(L0 + "input_layernorm.weight"), {2}, "input_layernorm");
      check_gradient(loss, ps.get("model.norm.weight"), {9}, "model.norm");
      check_gradient(loss, ps.get("model.embed_tokens.weight"), {16 * 2 + 3, 16 * 6 + 1}, "embed_tokens");
      if (moe) {
        check_gradient(loss, ps.get(L1 + "mlp.gate.weight"), {0, 21, 50}, "router");
        check_gradient(loss, ps.get(L0 + "mlp.modality_embedding.weight"), {16 + 4, 32 + 7}, "modality_embedding");
        check_gradient(loss, ps.get(L0 + "mlp.experts.1.up_proj.weight"), {3, 90}, "expert up_proj");
        check_gradient(loss, ps.get("lm_head.weight"), {10, 300}, "lm_head");
      } else {
        check_gradient(loss, ps.get(L1 + "mlp.down_proj.weight"), {4, 99}, "down_proj");
        check_gradient(loss, ps.get(L0 + "mlp.gate_proj.weight"), {8, 150}, "gate_proj");
      }
    }
  }

  TEST_CASE("KV cache: prefill + step decode equal the full forward for right-padded rows of different lengths") {
    for (bool moe : {false, true}) {
      ModelConfig cfg = tiny_config(moe);
      ParamStore ps(cfg.init_seed);
      Decoder dec(cfg, ps);
      spread_params(ps, 5);
      NoGradGuard no_grad;
      const std::vector<std::vector<int64_t>> prompts = {{3, 9, 4, 1, 30}, {7, 2, 8}, {11, 12, 13, 14}};
      const std::vector<std::vector<int64_t>> added = {{5, 6, 20, 21}, {22, 23, 24, 25}, {26, 27, 28, 29}};
      const int64_t B = 3, T0 = 5, S = 4, V = cfg.decoder.vocab;
      Tensor mod = from_vector(std::vector<int64_t>{0, 1, 2}, {B}, DType::I64);
      // Full forward over prompt + added tokens (rows laid out without gaps).
      std::vector<std::vector<int64_t>> full_rows = prompts;
      for (int64_t b = 0; b < B; ++b) full_rows[b].insert(full_rows[b].end(), added[b].begin(), added[b].end());
      std::vector<uint8_t> keep;
      std::vector<int64_t> pos;
      const int64_t TF = T0 + S;
      Tensor full_ids = ids_tensor(full_rows, TF, 0, &keep, &pos);
      DecoderOutput full = dec.forward(dec.embed(full_ids), from_vector(pos, {B, TF}, DType::I64),
                                       from_vector(keep, {B, TF}, DType::U8), mod, nullptr, nullptr, Compute{});
      const std::vector<float> ref = dec.logits(full.hidden, Compute{}).to_vector<float>();  // (B, TF, V)

      KVCache cache = KVCache::create(cfg.decoder, B, T0 + S);
      Tensor ids = ids_tensor(prompts, T0, 0, &keep, &pos);
      DecoderOutput pre = dec.forward(dec.embed(ids), from_vector(pos, {B, T0}, DType::I64),
                                      from_vector(keep, {B, T0}, DType::U8), mod, nullptr, &cache, Compute{});
      CHECK(cache.length == T0);
      const std::vector<float> got_pre = dec.logits(pre.hidden, Compute{}).to_vector<float>();  // (B, T0, V)
      double worst = 0;
      for (int64_t b = 0; b < B; ++b)
        for (size_t t = 0; t < prompts[b].size(); ++t)
          for (int64_t v = 0; v < V; ++v)
            worst = std::max(worst, double(std::abs(got_pre[(b * T0 + t) * V + v] - ref[(b * TF + t) * V + v])));
      for (int64_t s = 0; s < S; ++s) {
        std::vector<int64_t> step_ids(B), step_pos(B);
        for (int64_t b = 0; b < B; ++b) {
          step_ids[b] = added[b][s];
          step_pos[b] = static_cast<int64_t>(prompts[b].size()) + s;
        }
        DecoderOutput st = dec.forward(dec.embed(from_vector(step_ids, {B, 1}, DType::I64)),
                                       from_vector(step_pos, {B, 1}, DType::I64), ones({B, 1}, DType::U8), mod, nullptr,
                                       &cache, Compute{});
        const std::vector<float> got = dec.logits(st.hidden, Compute{}).to_vector<float>();  // (B, 1, V)
        for (int64_t b = 0; b < B; ++b)
          for (int64_t v = 0; v < V; ++v)
            worst = std::max(worst, double(std::abs(got[b * V + v] - ref[(b * TF + step_pos[b]) * V + v])));
      }
      CHECK(cache.length == T0 + S);
      INFO("moe ", moe, ": worst |cached - full| logit difference ", worst);
      CHECK(worst < 1e-5);
      // The logits are O(1), so the comparison means something.
      CHECK(*std::max_element(ref.begin(), ref.end()) > 0.5);
    }
  }

  TEST_CASE("MoE equals a naive per-token loop; aux by hand; counts") {
    ModelConfig cfg = tiny_config(true);
    ParamStore ps(cfg.init_seed);
    MoeFFN moe(cfg, ps, 0);
    spread_params(ps, 9, 0.4);
    const int64_t B = 3, T = 6, C = 16, E = 4, K = 2, I = 20;
    MoeCase mc = moe_case(B, T, C, 21);
    MoeOutput out = moe.forward(mc.x, mc.modality, mc.keep, Compute{});
    REQUIRE(out.y.shape() == Shape({B, T, C}));
    const std::vector<float> x = mc.x.to_vector<float>(), y = out.y.to_vector<float>();
    const std::vector<uint8_t> keep = mc.keep.to_vector<uint8_t>();
    const std::string prefix = "model.layers.0.mlp.";
    std::vector<double> f(E, 0.0), P(E, 0.0);
    std::vector<int64_t> counts(E * 3, 0);
    double worst = 0;
    int64_t kept = 0;
    for (int64_t n = 0; n < B * T; ++n) {
      const int64_t m = (n / T) % 3;
      std::vector<double> p = router_naive(ps, prefix, &x[n * C], m, C, E);
      std::vector<int64_t> order(E);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
      double wsum = 0;
      for (int64_t j = 0; j < K; ++j) wsum += p[order[j]];
      std::vector<double> expect(C, 0.0);
      for (int64_t j = 0; j < K; ++j) {
        std::vector<double> o = expert_naive(ps, prefix + "experts." + std::to_string(order[j]) + ".", &x[n * C], C, I);
        for (int64_t c = 0; c < C; ++c) expect[c] += p[order[j]] / wsum * o[c];
      }
      for (int64_t c = 0; c < C; ++c) worst = std::max(worst, std::abs(expect[c] - y[n * C + c]));
      if (!keep[n]) continue;
      ++kept;
      for (int64_t e = 0; e < E; ++e) P[e] += p[e];
      for (int64_t j = 0; j < K; ++j) f[order[j]] += 1, ++counts[order[j] * 3 + m];
    }
    INFO("worst |moe - naive| ", worst);
    CHECK(worst < 1e-5);
    double aux = 0;
    for (int64_t e = 0; e < E; ++e) aux += (f[e] / (K * kept)) * (P[e] / kept);
    aux *= E;
    CHECK(out.aux.item() == doctest::Approx(aux).epsilon(1e-5));
    CHECK(out.counts.dtype() == DType::I64);
    CHECK(out.counts.to_vector<int64_t>() == counts);
    const std::vector<int64_t> got = out.counts.to_vector<int64_t>();
    CHECK(std::accumulate(got.begin(), got.end(), int64_t{0}) == K * kept);
    CHECK(kept == B * T - 3);  // rows 1 and 2 have 1 and 2 padded positions
  }

  TEST_CASE("MoE: padded tokens change neither aux nor counts nor kept outputs") {
    ModelConfig cfg = tiny_config(true);
    ParamStore ps(cfg.init_seed);
    MoeFFN moe(cfg, ps, 1);
    spread_params(ps, 4, 0.4);
    const int64_t B = 3, T = 5, C = 16;
    MoeCase mc = moe_case(B, T, C, 8);
    MoeOutput a = moe.forward(mc.x, mc.modality, mc.keep, Compute{});
    // New values at every padded position only.
    Generator gen(99);
    Tensor noise = scale(randn({B, T, C}, gen), 3.0);
    Tensor pad = eq(mc.keep, zeros({1}, DType::U8)).reshape({B, T, 1});
    Tensor x2 = where(pad, noise, mc.x);
    MoeOutput b = moe.forward(x2, mc.modality, mc.keep, Compute{});
    CHECK(a.aux.item() == b.aux.item());
    CHECK(a.counts.to_vector<int64_t>() == b.counts.to_vector<int64_t>());
    const std::vector<float> ya = a.y.to_vector<float>(), yb = b.y.to_vector<float>();
    const std::vector<uint8_t> keep = mc.keep.to_vector<uint8_t>();
    int64_t differs = 0;
    for (int64_t n = 0; n < B * T; ++n)
      for (int64_t c = 0; c < C; ++c) {
        if (keep[n]) CHECK(ya[n * C + c] == yb[n * C + c]);
        differs += !keep[n] && ya[n * C + c] != yb[n * C + c];
      }
    CHECK(differs > 0);  // the padded tokens were really computed with the new values
    // All padding: no kept token, aux 0 and no counts.
    MoeOutput none = moe.forward(mc.x, mc.modality, zeros({B, T}, DType::U8), Compute{});
    CHECK(none.aux.item() == 0.0);
    const std::vector<int64_t> nc = none.counts.to_vector<int64_t>();
    CHECK(std::all_of(nc.begin(), nc.end(), [](int64_t v) { return v == 0; }));
    CHECK(test::error_of([&] { moe.forward(mc.x, from_vector(std::vector<int64_t>{0, 3, 1}, {3}, DType::I64), mc.keep,
                                           Compute{}); }) ==
          "moe: modality[1] = 3 must be 0 (text), 1 (image) or 2 (image + text)");
  }

  TEST_CASE("MoE gradients in x, router, modality embedding and experts match finite differences") {
    ModelConfig cfg = tiny_config(true);
    ParamStore ps(cfg.init_seed);
    MoeFFN moe(cfg, ps, 0);
    spread_params(ps, 13, 0.4);
    const int64_t B = 2, T = 4, C = 16;
    MoeCase mc = moe_case(B, T, C, 17);
    Tensor x = mc.x;
    x.set_requires_grad(true);
    Generator gen(5);
    Tensor proj = randn({B, T, C}, gen);
    auto loss = [&] {
      MoeOutput o = moe.forward(x, mc.modality, mc.keep, Compute{});
      return add(sum(mul(o.y, proj)), scale(o.aux, 10.0));
    };
    const std::string p = "model.layers.0.mlp.";
    check_gradient(loss, x, {0, 17, 40, 100}, "x", 1e-3);
    check_gradient(loss, ps.get(p + "gate.weight"), {0, 19, 47, 63}, "router", 1e-3);
    check_gradient(loss, ps.get(p + "modality_embedding.weight"), {2, 16 + 5, 32 + 11}, "modality_embedding", 1e-3);
    check_gradient(loss, ps.get(p + "experts.0.gate_proj.weight"), {1, 77}, "expert 0 gate_proj", 1e-3);
    check_gradient(loss, ps.get(p + "experts.2.down_proj.weight"), {5, 150}, "expert 2 down_proj", 1e-3);
    check_gradient(loss, ps.get(p + "experts.3.up_proj.weight"), {9, 200}, "expert 3 up_proj", 1e-3);
  }

  TEST_CASE("generate: greedy equals argmax of full re-runs; stop token; errors") {
    ModelConfig cfg = tiny_model_config();
    MoonModel model(cfg);
    spread_params(model.params(), 23);
    ModelBatch prompt = prompt_batch(cfg);
    REQUIRE(prompt.token_ids.size(1) == 15);  // rows of 11, 5 and 15 kept tokens, right-padded
    const std::vector<std::vector<int64_t>> ref = greedy_by_rerun(model, prompt, 8);
    GenerateOptions opt;
    opt.max_new_tokens = 8;
    const std::vector<std::vector<int64_t>> got = generate(model, prompt, opt);
    CHECK(got == ref);
    std::set<int64_t> distinct;
    for (const auto& r : got) distinct.insert(r.begin(), r.end());
    CHECK(distinct.size() >= 3);  // not a degenerate constant output

    // A stop token ends its row after emitting it; the other rows go on until they emit it.
    opt.stop_token = ref[0][2];
    const std::vector<std::vector<int64_t>> stopped = generate(model, prompt, opt);
    for (size_t b = 0; b < ref.size(); ++b) {
      auto at = std::find(ref[b].begin(), ref[b].end(), opt.stop_token);
      std::vector<int64_t> expect(ref[b].begin(), at == ref[b].end() ? at : at + 1);
      CHECK(stopped[b] == expect);
    }
    CHECK(stopped[0].size() <= 3);

    opt.max_new_tokens = 0;
    CHECK(generate(model, prompt, opt) == std::vector<std::vector<int64_t>>(3));
    opt.max_new_tokens = 4;
    opt.temperature = -1;
    CHECK(test::error_of([&] { generate(model, prompt, opt); }) ==
          "generate: temperature (-1) must be a finite number >= 0 (0 = greedy)");
    opt.temperature = 1;
    opt.top_p = 1.5;
    CHECK(test::error_of([&] { generate(model, prompt, opt); }) == "generate: top_p (1.5) must be in [0, 1]");
  }

  TEST_CASE("generate: seeded sampling is deterministic, top_p -> 0 is greedy, draws follow softmax") {
    ModelConfig cfg = tiny_model_config();
    MoonModel model(cfg);
    spread_params(model.params(), 29);
    ModelBatch prompt = prompt_batch(cfg);
    GenerateOptions opt;
    opt.max_new_tokens = 8;
    const std::vector<std::vector<int64_t>> greedy = generate(model, prompt, opt);
    opt.temperature = 1.0;
    opt.top_p = 0.95;
    opt.seed = 42;
    const auto a = generate(model, prompt, opt), b = generate(model, prompt, opt);
    CHECK(a == b);
    opt.seed = 43;
    CHECK(generate(model, prompt, opt) != a);
    CHECK(a != greedy);
    opt.top_p = 0.0;
    CHECK(generate(model, prompt, opt) == greedy);
    opt.top_p = 1e-7;
    opt.temperature = 2.5;
    CHECK(generate(model, prompt, opt) == greedy);

    // 600 copies of one text prompt in one batch draw independently (one Philox counter per row and step).
    // Their first tokens must lie in the nucleus computed by hand from softmax(logits / 0.5) with top_p 0.6,
    // with frequencies following the renormalised nucleus probabilities.
    const int draws = 600;
    std::vector<InputRow> copies(draws);
    for (auto& r : copies) r.text = {14, 15, 16}, r.prompt = true;
    ModelBatch many = assemble(copies, Tensor(), SpecialTokens{}, cfg);
    const double temperature = 0.5, top_p = 0.6;
    const std::vector<float> lg = last_logits(model, many);  // (draws, V); row 0 stands for every row
    const int64_t V = cfg.decoder.vocab;
    std::vector<double> p(V);
    double total = 0;
    for (int64_t v = 0; v < V; ++v) total += (p[v] = std::exp(lg[v] / temperature));
    for (auto& x : p) x /= total;
    std::vector<int64_t> order(V);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return p[x] > p[y]; });
    std::map<int64_t, double> nucleus;  // token -> renormalised probability
    double mass = 0;
    for (int64_t i = 0; i < V && mass < top_p; ++i) nucleus[order[i]] = p[order[i]], mass += p[order[i]];
    for (auto& [id, q] : nucleus) q /= mass;
    REQUIRE(nucleus.size() >= 3);
    REQUIRE(nucleus.size() < 12);
    opt.max_new_tokens = 1;
    opt.temperature = temperature;
    opt.top_p = top_p;
    opt.seed = 1000;
    const std::vector<std::vector<int64_t>> drawn = generate(model, many, opt);
    std::map<int64_t, int> hits;
    for (const auto& r : drawn) ++hits[r.at(0)];
    for (const auto& [id, n] : hits) CHECK_MESSAGE(nucleus.count(id), "token ", id, " drawn ", n, " times is outside the nucleus");
    for (const auto& [id, q] : nucleus) {
      const double sd = std::sqrt(q * (1 - q) / draws);
      INFO("token ", id, ": nucleus probability ", q, ", drawn ", hits[id], " of ", draws);
      CHECK(std::abs(hits[id] / double(draws) - q) < 4 * sd);
    }

    // top_p = 1 keeps the whole vocabulary (drawn without sorting): frequencies follow softmax itself, and
    // tokens outside the 0.6 nucleus (at least 0.4 of the mass) are drawn too.
    opt.top_p = 1.0;
    opt.seed = 2000;
    std::map<int64_t, int> all_hits;
    for (const auto& r : generate(model, many, opt)) ++all_hits[r.at(0)];
    int outside = 0;
    for (const auto& [id, n] : all_hits) outside += nucleus.count(id) ? 0 : n;
    CHECK(outside > draws / 4);
    for (int64_t v = 0; v < V; ++v) {
      if (p[v] < 0.02) continue;
      const double sd = std::sqrt(p[v] * (1 - p[v]) / draws);
      INFO("token ", v, ": probability ", p[v], ", drawn ", all_hits[v], " of ", draws);
      CHECK(std::abs(all_hits[v] / double(draws) - p[v]) < 4 * sd);
    }
  }

  TEST_CASE("token_logprobs equals log_softmax of the logits gathered by hand, and is differentiable") {
    ModelConfig cfg = tiny_model_config();
    MoonModel model(cfg);
    spread_params(model.params(), 37);
    std::vector<InputRow> rows(3);
    rows[0].text = {10, 11, 12};
    rows[0].image = 0;
    rows[0].reasoning = {20, 21, 22, 23};
    rows[0].has_reasoning = true;
    rows[1].text = {14, 15};
    rows[1].reasoning = {24};
    rows[1].has_reasoning = true;
    rows[2].image = 1;
    Generator gen(2);
    ModelBatch batch = assemble(rows, randn({2, 3, 16, 16}, gen), SpecialTokens{}, cfg);
    Tensor lp = token_logprobs(model, batch);
    const int64_t B = 3, T = batch.token_ids.size(1), V = cfg.decoder.vocab;
    REQUIRE(lp.shape() == Shape({B, T}));
    std::vector<float> ref;
    {
      NoGradGuard no_grad;
      MoonModel::Prepared p = model.prepare(batch);
      DecoderOutput o = model.decoder().forward(p.inputs, batch.positions, batch.keep, batch.modality,
                                                model.fire_hook(p, batch), nullptr, Compute{});
      ref = log_softmax(model.decoder().logits(o.hidden, Compute{}), -1).to_vector<float>();  // (B, T, V)
    }
    const std::vector<float> got = lp.to_vector<float>();
    const std::vector<int64_t> ids = batch.token_ids.to_vector<int64_t>(), slot = batch.vision_slot.to_vector<int64_t>();
    const std::vector<uint8_t> keep = batch.keep.to_vector<uint8_t>();
    int64_t scored = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = b * T + t;
        const bool counts = t > 0 && keep[i] && slot[i] < 0;
        const float expect = counts ? ref[(i - 1) * V + ids[i]] : 0.0f;
        scored += counts;
        INFO("row ", b, " position ", t);
        CHECK(std::abs(got[i] - expect) < 1e-6);
      }
    // Kept tokens minus the first and the vision tokens: row 0 has 17 (im_start image 4v /image 3 text think
    // 4 reasoning /think emb), row 1 has 7, row 2 has 8 (im_start image 4v /image emb).
    CHECK(scored == (17 - 1 - 4) + (7 - 1) + (8 - 1 - 4));
    Tensor total = sum(lp);
    total.backward();
    const Tensor& w = model.params().get("model.layers.1.self_attn.q_proj.weight");
    REQUIRE(w.grad().defined());
    const std::vector<float> g = w.grad().to_vector<float>();
    CHECK(std::any_of(g.begin(), g.end(), [](float v) { return v != 0.0f; }));
  }
  TEST_CASE("token_logprobs with a position mask scores only the masked positions, with the same values and gradient") {
    ModelConfig cfg = tiny_model_config();
    MoonModel model(cfg);
    spread_params(model.params(), 41);
    std::vector<InputRow> rows(2);
    rows[0].text = {10, 11, 12};
    rows[0].image = 0;
    rows[0].reasoning = {20, 21, 22};
    rows[0].has_reasoning = true;
    rows[1].text = {14, 15, 16, 17};
    rows[1].reasoning = {24, 25};
    rows[1].has_reasoning = true;
    Generator gen(3);
    ModelBatch batch = assemble(rows, randn({1, 3, 16, 16}, gen), SpecialTokens{}, cfg);
    const int64_t B = 2, T = batch.token_ids.size(1);
    std::vector<uint8_t> only(static_cast<size_t>(B * T), 0);  // (B, T): every third position, and row 1's last
    for (int64_t i = 0; i < B * T; i += 3) only[i] = 1;
    only[(B - 1) * T + T - 1] = 1;
    const Tensor mask = from_vector(only, {B, T}, DType::U8);
    const Tensor& w = model.params().get("model.layers.0.self_attn.v_proj.weight");

    Tensor full = token_logprobs(model, batch);  // (B, T)
    Tensor masked_full = mul(full, mask.to(DType::F32));
    sum(mul(masked_full, masked_full)).backward();
    const std::vector<float> g_full = w.grad().to_vector<float>(), v_full = masked_full.to_vector<float>();
    model.params().zero_grad();

    Tensor part = token_logprobs(model, batch, mask);  // (B, T)
    REQUIRE(part.shape() == Shape({B, T}));
    sum(mul(part, part)).backward();
    const std::vector<float> g_part = w.grad().to_vector<float>(), v_part = part.to_vector<float>();
    int64_t nonzero = 0;
    for (int64_t i = 0; i < B * T; ++i) {
      INFO("position ", i);
      CHECK(std::abs(v_part[i] - v_full[i]) < 1e-6);
      nonzero += v_part[i] != 0.0f;
    }
    CHECK(nonzero >= 3);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < g_full.size(); ++i) {
      worst = std::max(worst, std::abs(static_cast<double>(g_part[i]) - g_full[i]));
      scale = std::max(scale, std::abs(static_cast<double>(g_full[i])));
    }
    CHECK(scale > 0);
    CHECK(worst <= 1e-5 * scale);

    // An empty mask gives zeros and a gradient of zeros, not an error.
    model.params().zero_grad();
    Tensor none = token_logprobs(model, batch, zeros({B, T}, DType::U8));
    sum(none).backward();
    for (float v : none.to_vector<float>()) CHECK(v == 0.0f);
    CHECK_THROWS_WITH_AS(token_logprobs(model, batch, zeros({B, T + 1}, DType::U8)),
                         doctest::Contains("does not match token_ids"), Error);
  }
}
