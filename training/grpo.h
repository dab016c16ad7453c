// GRPO for reasoning-then-embedding (docs/training.md section 4): rollouts with the KV cache, retrieval and
// format rewards, group-normalised advantages, the clipped policy-gradient loss with a KL penalty to a frozen
// reference, and the statistics the log shows.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/generate.h"
#include "model/moon_model.h"

namespace moon::training {

struct GrpoOptions {
  int64_t group = 4;        // G rollouts per anchor
  int64_t anchors = 4;      // A anchors per step (the first products with image and text)
  int64_t max_tokens = 16;  // new tokens per rollout
  double temperature = 1.0;
  double top_p = 1.0;
  double clip_eps = 0.2;
  double kl_beta = 0.04;
  double format_reward = 0.1;
  std::string negatives = "mean";  // "mean" or "max" over the negatives' similarities
  double weight = 0.1;             // lambda in L = L_con + lambda * L_pg
  int64_t start_step = -1;         // first GRPO step (-1: GRPO off)
};

// The sampled rollouts of A anchors x G.
struct Rollouts {
  int64_t group = 0;
  std::vector<model::InputRow> prompts;       // (A*G) the anchor prompt of each rollout (prompt = true)
  Tensor images;                              // the images the prompts index
  std::vector<int64_t> anchor;                // (A*G) anchor index a of each rollout
  std::vector<std::vector<int64_t>> tokens;   // (A*G) generated tokens (with a final </think> if emitted)
  std::vector<double> reward, retrieval, format, advantage;  // (A*G) filled by the reward functions below
};

// Repeats each anchor prompt G times and samples with model::generate (stop token </think>).
Rollouts sample_rollouts(const model::MoonModel& policy, const std::vector<model::InputRow>& anchor_prompts,
                         const Tensor& images, const model::SpecialTokens& special, const GrpoOptions& options,
                         uint64_t seed);

// The row that embeds / scores a rollout: the prompt's text and image with reasoning = tokens (without a final
// </think>) and has_reasoning.
model::InputRow rollout_row(const Rollouts& rollouts, size_t i, const model::SpecialTokens& special);

// r_fmt of docs/training.md section 4 step 4: 1 or 0.
double format_reward(const std::vector<int64_t>& tokens, const model::SpecialTokens& special);

// Fills retrieval, format, reward and advantage (group_advantages of reward): embeds every rollout row (no
// gradient, in batches of at most 32 rows) and scores it against candidates (N, D) (detached): anchor a's
// positive is row candidate_of_anchor[a], every other row is one of its negatives (r_ret is the positive's
// similarity alone when N = 1).
void retrieval_rewards(const model::MoonModel& policy, Rollouts& rollouts, const model::SpecialTokens& special,
                       const Tensor& candidates, const std::vector<int64_t>& candidate_of_anchor,
                       const GrpoOptions& options);

// A_ag = (r_ag - mean_g r) / (std_g r + 1e-4) per group of `group` consecutive rewards (std divisor G).
std::vector<double> group_advantages(const std::vector<double>& rewards, int64_t group);

// (B, T) u8: the scored tokens of each rollout row in `batch` (assembled from rollout_row): the reasoning tokens
// and the </think> when the rollout generated it.
Tensor scored_token_mask(const model::ModelBatch& batch, const Rollouts& rollouts, const model::SpecialTokens& special);

struct PolicyLoss {
  Tensor loss;                // () L_pg, differentiable in the policy's parameters
  double kl = 0;              // mean kl_t over scored tokens
  double clip_fraction = 0;   // fraction of scored tokens whose ratio was clipped
  double mean_length = 0;     // mean rollout length (tokens)
};

// The per-token part of L_pg (docs/training.md section 4 step 6) from (B, T) f32 log-probabilities: logprob
// (the policy's, differentiable), old_logprob and ref_logprob (detached), mask (B, T) u8 (scored tokens) and one
// advantage per row. A row without scored tokens contributes 0 to the mean over rows. Fills loss, kl and
// clip_fraction (a scored token counts as clipped when its ratio is outside [1 - clip_eps, 1 + clip_eps]).
// policy_loss calls it with old_logprob = logprob.detach(); it is separate so the clipping can be tested.
PolicyLoss clipped_objective(const Tensor& logprob, const Tensor& old_logprob, const Tensor& ref_logprob,
                             const Tensor& mask, const std::vector<double>& advantage, const GrpoOptions& options);

// L_pg of docs/training.md section 4 step 6, using rollouts.advantage.
PolicyLoss policy_loss(const model::MoonModel& policy, const model::MoonModel& reference, const Rollouts& rollouts,
                       const model::SpecialTokens& special, const GrpoOptions& options);

// A frozen copy of a model (same config, parameters copied, no gradients): the KL reference.
std::unique_ptr<model::MoonModel> frozen_copy(const model::MoonModel& model);

}  // namespace moon::training
