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
  if (top_p >= 1.0) {  // the whole vocabulary is kept: draw in id order, no sort
    double target = u * total, run = 0;
    for (int64_t i = 0; i < V; ++i) {
      run += prob[i];
      if (target < run) return i;
    }
    return top;
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

Tensor token_logprobs(const MoonModel& model, const ModelBatch& batch, const Tensor& only) {
  const Decoder& decoder = model.decoder();
  const Compute& compute = model.compute();
  const int64_t B = batch.rows(), T = batch.token_ids.size(1), C = model.config().decoder.hidden;
  const int64_t V = model.config().decoder.vocab;
  if (only.defined())
    MOON_CHECK(only.shape() == batch.token_ids.shape(), "token_logprobs: the position mask ", only.desc(),
               " does not match token_ids ", batch.token_ids.desc());

  // Token (b, t) is predicted at the previous kept position of its row. It is scored unless it is the row's
  // first kept token, padding, a vision placeholder, or outside `only`.
  const std::vector<uint8_t> keep = batch.keep.to_vector<uint8_t>();
  const std::vector<int64_t> ids = batch.token_ids.to_vector<int64_t>();
  std::vector<int64_t> slot(static_cast<size_t>(B * T), -1);
  if (batch.vision_slot.defined()) slot = batch.vision_slot.to_vector<int64_t>();
  std::vector<uint8_t> wanted(static_cast<size_t>(B * T), 1);
  if (only.defined()) wanted = only.to(DType::U8).to_vector<uint8_t>();
  std::vector<int64_t> predictor;                                // (N): flat (b, t) position whose logits predict
  std::vector<int64_t> token;                                    // (N): the token scored there
  std::vector<int64_t> place(static_cast<size_t>(B * T), -1);    // (B*T): index into the N scores; N = zero
  for (int64_t b = 0; b < B; ++b) {
    int64_t prev = -1;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = b * T + t;
      if (!keep[i]) continue;
      if (prev >= 0 && slot[i] < 0 && wanted[i]) {
        MOON_CHECK(ids[i] >= 0 && ids[i] < V, "token_logprobs: token_ids[", b, ", ", t, "] = ", ids[i],
                   " is outside the vocabulary [0, ", V, ")");
        place[i] = static_cast<int64_t>(predictor.size());
        predictor.push_back(b * T + prev);
        token.push_back(ids[i]);
      }
      prev = t;
    }
  }
  if (predictor.empty()) {  // nothing scored: one unused row keeps the result attached to the graph
    predictor.push_back(0);
    token.push_back(0);
  }
  const int64_t N = static_cast<int64_t>(predictor.size());
  for (int64_t& p : place)
    if (p < 0) p = N;

  MoonModel::Prepared prepared = model.prepare(batch);
  DecoderOutput out = decoder.forward(prepared.inputs, batch.positions, batch.keep, batch.modality,
                                      model.fire_hook(prepared, batch), nullptr, compute);
  const Tensor hidden = out.hidden.reshape({B * T, C});  // (B*T, C)
  const Device device = hidden.device();

  // The vocabulary projection runs on the N predicting positions only: it dominates the cost at long T.
  std::vector<int64_t> pick(static_cast<size_t>(N));  // (N): flat index into (N, V)
  for (int64_t n = 0; n < N; ++n) pick[n] = n * V + token[n];
  const Tensor rows = index_select(hidden, 0, from_vector(predictor, {N}, DType::I64, device));  // (N, C)
  const Tensor logp = log_softmax(decoder.logits(rows, compute), -1).reshape({N * V});          // (N*V)
  const Tensor picked = index_select(logp, 0, from_vector(pick, {N}, DType::I64, device));      // (N)
  const Tensor scores = concat({picked, zeros({1}, picked.dtype(), device)}, 0);                // (N+1): the last is 0
  return index_select(scores, 0, from_vector(place, {B * T}, DType::I64, device)).reshape({B, T});  // (B, T)
}

}  // namespace moon::model
