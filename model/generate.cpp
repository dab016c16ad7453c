// Generation against a preallocated KV cache (one batched prefill, then one decoder step per token, with
// greedy, temperature and top-p sampling from Philox) and the log-probabilities of given tokens.
#include "model/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/norm.h"
#include "runtime/autograd.h"
#include "runtime/error.h"
#include "runtime/rng.h"

namespace moon::model {
namespace {

// Index of the largest logit (ties: the lowest id).
int64_t argmax_id(const float* logits, int64_t V) {
  int64_t best = 0;
  for (int64_t i = 1; i < V; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

// A uniform double in [0, 1) for row `row` at step `step`: Philox keyed by the seed, one counter per
// (row, step), so a row's draws do not depend on the batch size or on the other rows.
double uniform_draw(uint64_t seed, int64_t row, int64_t step) {
  const auto lanes = philox4x32((static_cast<uint64_t>(row) << 32) | static_cast<uint64_t>(step), seed);
  const uint64_t bits = (static_cast<uint64_t>(lanes[0]) << 21) ^ (lanes[1] >> 11);  // 53 bits
  return static_cast<double>(bits & ((uint64_t{1} << 53) - 1)) * (1.0 / 9007199254740992.0);
}

// Draws a token from softmax(logits / temperature), restricted to the smallest set of most probable tokens
// whose probability reaches top_p (ties: lower id first; at least one token).
int64_t sample_id(const float* logits, int64_t V, double temperature, double top_p, double u) {
  const int64_t top = argmax_id(logits, V);
  std::vector<double> prob(static_cast<size_t>(V));
  double total = 0;
  for (int64_t i = 0; i < V; ++i) {
    prob[i] = std::exp((static_cast<double>(logits[i]) - logits[top]) / temperature);
    total += prob[i];
  }
  std::vector<int64_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return prob[a] > prob[b]; });
  int64_t kept = 0;
  double mass = 0;
  while (kept < V) {
    mass += prob[order[kept]] / total;
    ++kept;
    if (mass >= top_p) break;
  }
  double target = u * mass * total, run = 0;  // draw within the kept mass (unnormalised units)
  for (int64_t i = 0; i < kept; ++i) {
    run += prob[order[i]];
    if (target < run) return order[i];
  }
  return order[kept - 1];
}

// Last kept position of every row of keep (B, T) u8; an error for a row with none.
std::vector<int64_t> last_kept(const Tensor& keep) {
  const int64_t B = keep.size(0), T = keep.size(1);
  const std::vector<uint8_t> k = keep.to_vector<uint8_t>();
  std::vector<int64_t> last(static_cast<size_t>(B), -1);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      if (k[b * T + t]) last[b] = t;
  for (int64_t b = 0; b < B; ++b) MOON_CHECK(last[b] >= 0, "generate: prompt row ", b, " has no kept token");
  return last;
}

}  // namespace

std::vector<std::vector<int64_t>> generate(const MoonModel& model, const ModelBatch& prompt,
                                           const GenerateOptions& options) {
  MOON_CHECK(options.max_new_tokens >= 0, "generate: max_new_tokens (", options.max_new_tokens, ") must be >= 0");
  MOON_CHECK(options.temperature >= 0 && std::isfinite(options.temperature), "generate: temperature (",
             options.temperature, ") must be a finite number >= 0 (0 = greedy)");
  MOON_CHECK(options.top_p >= 0 && options.top_p <= 1, "generate: top_p (", options.top_p, ") must be in [0, 1]");
  MOON_CHECK(prompt.token_ids.defined() && prompt.token_ids.dim() == 2 && prompt.rows() > 0,
             "generate: the prompt batch has no rows");
  NoGradGuard no_grad;
  const Decoder& decoder = model.decoder();
  const DecoderConfig& dc = model.config().decoder;
  const Compute& compute = model.compute();
  const int64_t B = prompt.rows(), T0 = prompt.token_ids.size(1), V = dc.vocab;
  std::vector<std::vector<int64_t>> result(static_cast<size_t>(B));
  if (options.max_new_tokens == 0) return result;

  // Prefill: all prompts at once; the cache keeps the prompt padding masked.
  KVCache cache = KVCache::create(dc, B, T0 + options.max_new_tokens);
  MoonModel::Prepared prepared = model.prepare(prompt);
  DecoderOutput pre = decoder.forward(prepared.inputs, prompt.positions, prompt.keep, prompt.modality,
                                      model.fire_hook(prepared, prompt), &cache, compute);
  std::vector<int64_t> last = last_kept(prompt.keep);  // (B)
  std::vector<int64_t> next_position(static_cast<size_t>(B));
  {
    const std::vector<uint8_t> k = prompt.keep.to_vector<uint8_t>();
    for (int64_t b = 0; b < B; ++b) next_position[b] = std::count(k.begin() + b * T0, k.begin() + (b + 1) * T0, 1);
    for (int64_t b = 0; b < B; ++b) last[b] += b * T0;
  }
  Tensor hidden = index_select(pre.hidden.reshape({B * T0, dc.hidden}), 0, from_vector(last, {B}, DType::I64));
  Tensor logits = decoder.logits(hidden, compute).contiguous();  // (B, V)

  std::vector<bool> done(static_cast<size_t>(B), false);
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const float* lg = logits.data<float>();  // (B, V)
    std::vector<int64_t> ids(static_cast<size_t>(B), 0), positions(static_cast<size_t>(B), 0);
    std::vector<uint8_t> keep(static_cast<size_t>(B), 0);
    bool any_active = false;
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      const float* row = lg + b * V;
      const int64_t id = options.temperature == 0.0
                             ? argmax_id(row, V)
                             : sample_id(row, V, options.temperature, options.top_p, uniform_draw(options.seed, b, step));
      result[b].push_back(id);
      if (id == options.stop_token) {
        done[b] = true;
        continue;
      }
      ids[b] = id;
      positions[b] = next_position[b]++;
      keep[b] = 1;
      any_active = true;
    }
    if (!any_active || step + 1 == options.max_new_tokens) break;
    // One decoder step: each active row's new token at its own next position; finished rows are masked.
    Tensor ids_t = from_vector(ids, {B, 1}, DType::I64);                                   // (B, 1)
    Tensor x = decoder.embed(ids_t);                                                        // (B, 1, C)
    DecoderOutput out = decoder.forward(x, from_vector(positions, {B, 1}, DType::I64), from_vector(keep, {B, 1}, DType::U8),
                                        prompt.modality, nullptr, &cache, compute);
    logits = decoder.logits(out.hidden.reshape({B, dc.hidden}), compute).contiguous();  // (B, V)
  }
  return result;
}

Tensor token_logprobs(const MoonModel& model, const ModelBatch& batch) {
  const Decoder& decoder = model.decoder();
  const Compute& compute = model.compute();
  const int64_t B = batch.rows(), T = batch.token_ids.size(1), V = model.config().decoder.vocab;
  MoonModel::Prepared prepared = model.prepare(batch);
  DecoderOutput out = decoder.forward(prepared.inputs, batch.positions, batch.keep, batch.modality,
                                      model.fire_hook(prepared, batch), nullptr, compute);
  Tensor logp = log_softmax(decoder.logits(out.hidden, compute), -1).reshape({B * T * V});  // (B*T*V)

  // Token (b, t) is predicted at the previous kept position of its row; 0 where there is none, where t is
  // padding or a vision placeholder.
  const std::vector<uint8_t> keep = batch.keep.to_vector<uint8_t>();
  const std::vector<int64_t> ids = batch.token_ids.to_vector<int64_t>();
  std::vector<int64_t> slot(static_cast<size_t>(B * T), -1);
  if (batch.vision_slot.defined()) slot = batch.vision_slot.to_vector<int64_t>();
  std::vector<int64_t> pick(static_cast<size_t>(B * T), 0);  // flat index into (B, T, V)
  std::vector<float> mask(static_cast<size_t>(B * T), 0.0f);
  for (int64_t b = 0; b < B; ++b) {
    int64_t prev = -1;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = b * T + t;
      if (!keep[i]) continue;
      if (prev >= 0 && slot[i] < 0) {
        MOON_CHECK(ids[i] >= 0 && ids[i] < V, "token_logprobs: token_ids[", b, ", ", t, "] = ", ids[i],
                   " is outside the vocabulary [0, ", V, ")");
        pick[i] = (b * T + prev) * V + ids[i];
        mask[i] = 1.0f;
      }
      prev = t;
    }
  }
  Tensor picked = index_select(logp, 0, from_vector(pick, {B * T}, DType::I64));  // (B*T)
  return mul(picked, from_vector(mask, {B * T})).reshape({B, T});                  // (B, T)
}

}  // namespace moon::model
