// Generation with the KV cache (reasoning rollouts) and log-probabilities of given tokens (policy gradient).
#pragma once
#include <cstdint>
#include <vector>

#include "model/moon_model.h"

namespace moon::model {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  double temperature = 0.0;  // 0 = greedy (argmax, ties: lowest id)
  double top_p = 1.0;        // nucleus sampling: smallest set of tokens whose probability reaches top_p
  uint64_t seed = 0;         // Philox key: the same seed draws the same tokens
  int64_t stop_token = -1;   // e.g. </think>: a row stops after emitting it (the token is included)
};

// prompt: assembled rows with InputRow::prompt (ending in <think>), any lengths (right-padded).
// Returns each row's new tokens. Runs one batched prefill of the prompts (vision, FIRE, MoE included), then
// one decoder step per token against a preallocated KV cache, under NoGradGuard.
std::vector<std::vector<int64_t>> generate(const MoonModel& model, const ModelBatch& prompt,
                                           const GenerateOptions& options);

// log p(token_ids[b, t] | tokens before t) for t >= 1 (0 at t = 0 and wherever keep is 0 or the token is a
// vision placeholder): (B, T) f32, differentiable in the parameters. The prediction is read at the row's
// previous kept position (t - 1 in right-padded batches); a row's first kept token scores 0.
// only: optional (B, T) mask; where it is 0 the result is 0 too, and the vocabulary projection (the larger
// part of the cost) is skipped. GRPO passes the reasoning tokens it scores.
Tensor token_logprobs(const MoonModel& model, const ModelBatch& batch, const Tensor& only = Tensor());

}  // namespace moon::model
