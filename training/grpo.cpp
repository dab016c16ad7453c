// GRPO (docs/training.md section 4): rollouts sampled with the KV cache, retrieval + format rewards,
// group-normalised advantages, and the clipped policy-gradient loss with a k3 KL penalty to a frozen reference.
#include "training/grpo.h"

#include <algorithm>
#include <cmath>

#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"
#include "runtime/error.h"

namespace moon::training {
namespace {

constexpr size_t kEmbedBatch = 32;  // rollout rows per embedding forward

// The number of anchors a Rollouts holds (the largest anchor index + 1).
int64_t anchor_count(const Rollouts& rollouts) {
  int64_t n = 0;
  for (int64_t a : rollouts.anchor) n = std::max(n, a + 1);
  return n;
}

// Whether `id` is one of the marker tokens a reasoning may not contain.
bool is_marker(int64_t id, const model::SpecialTokens& s) {
  return id == s.im_start || id == s.image || id == s.image_end || id == s.think || id == s.think_end ||
         id == s.emb || id == s.pad || id == s.eos;
}

// Whether a rollout emitted </think> (its last token).
bool closed(const std::vector<int64_t>& tokens, const model::SpecialTokens& special) {
  return !tokens.empty() && tokens.back() == special.think_end;
}

// Every rollout as its scoring row (rollout_row), in rollout order.
std::vector<model::InputRow> rollout_rows(const Rollouts& rollouts, const model::SpecialTokens& special) {
  std::vector<model::InputRow> rows;
  rows.reserve(rollouts.tokens.size());
  for (size_t i = 0; i < rollouts.tokens.size(); ++i) rows.push_back(rollout_row(rollouts, i, special));
  return rows;
}

// Checks that the per-rollout vectors of `rollouts` agree in length.
void check_rollouts(const Rollouts& rollouts, const char* who) {
  const size_t n = rollouts.tokens.size();
  MOON_CHECK(n > 0, who, ": there are no rollouts");
  MOON_CHECK(rollouts.prompts.size() == n && rollouts.anchor.size() == n, who, ": rollouts hold ", n,
             " token lists but ", rollouts.prompts.size(), " prompts and ", rollouts.anchor.size(), " anchor indices");
}

}  // namespace

Rollouts sample_rollouts(const model::MoonModel& policy, const std::vector<model::InputRow>& anchor_prompts,
                         const Tensor& images, const model::SpecialTokens& special, const GrpoOptions& options,
                         uint64_t seed) {
  MOON_CHECK(options.group >= 1, "grpo: group (", options.group, ") must be >= 1");
  MOON_CHECK(!anchor_prompts.empty(), "grpo: sample_rollouts got no anchor prompts");
  Rollouts out;
  out.group = options.group;
  out.images = images;
  for (size_t a = 0; a < anchor_prompts.size(); ++a) {
    model::InputRow prompt = anchor_prompts[a];
    prompt.prompt = true;  // ends right after <think>
    prompt.has_reasoning = false;
    prompt.reasoning.clear();
    for (int64_t g = 0; g < options.group; ++g) {
      out.prompts.push_back(prompt);
      out.anchor.push_back(static_cast<int64_t>(a));
    }
  }
  model::GenerateOptions gen;
  gen.max_new_tokens = options.max_tokens;
  gen.temperature = options.temperature;
  gen.top_p = options.top_p;
  gen.seed = seed;
  gen.stop_token = special.think_end;
  const model::ModelBatch batch = model::assemble(out.prompts, images, special, policy.config());
  out.tokens = model::generate(policy, batch, gen);
  return out;
}

model::InputRow rollout_row(const Rollouts& rollouts, size_t i, const model::SpecialTokens& special) {
  MOON_CHECK(i < rollouts.tokens.size() && i < rollouts.prompts.size(), "grpo: rollout ", i, " of ",
             rollouts.tokens.size(), " does not exist");
  model::InputRow row = rollouts.prompts[i];
  const std::vector<int64_t>& tokens = rollouts.tokens[i];
  row.prompt = false;
  row.has_reasoning = true;
  row.reasoning.assign(tokens.begin(), tokens.end() - (closed(tokens, special) ? 1 : 0));
  return row;
}

double format_reward(const std::vector<int64_t>& tokens, const model::SpecialTokens& special) {
  if (tokens.size() < 2 || !closed(tokens, special)) return 0.0;
  for (size_t t = 0; t + 1 < tokens.size(); ++t)
    if (is_marker(tokens[t], special)) return 0.0;
  return 1.0;
}

void retrieval_rewards(const model::MoonModel& policy, Rollouts& rollouts, const model::SpecialTokens& special,
                       const Tensor& candidates, const std::vector<int64_t>& candidate_of_anchor,
                       const GrpoOptions& options) {
  check_rollouts(rollouts, "retrieval_rewards");
  MOON_CHECK(options.negatives == "mean" || options.negatives == "max", "grpo: negatives must be \"mean\" or \"max\", got \"",
             options.negatives, "\"");
  const int64_t D = policy.config().embedding.dim;
  MOON_CHECK(candidates.defined() && candidates.dim() == 2 && candidates.size(1) == D && candidates.size(0) >= 1,
             "retrieval_rewards: candidates must be (N, ", D, ") with N >= 1, got ",
             candidates.defined() ? candidates.desc() : std::string("an undefined tensor"));
  const int64_t N = candidates.size(0);
  MOON_CHECK(static_cast<int64_t>(candidate_of_anchor.size()) >= anchor_count(rollouts), "retrieval_rewards: ",
             anchor_count(rollouts), " anchors but candidate_of_anchor has ", candidate_of_anchor.size(), " entries");
  for (size_t a = 0; a < candidate_of_anchor.size(); ++a)
    MOON_CHECK(candidate_of_anchor[a] >= 0 && candidate_of_anchor[a] < N, "retrieval_rewards: candidate_of_anchor[",
               a, "] = ", candidate_of_anchor[a], " is outside the ", N, " candidates");
  const std::vector<float> cand = candidates.detach().contiguous().to(DType::F32).to_vector<float>();  // (N, D)

  // Rollout embeddings, without gradient, in batches.
  const std::vector<model::InputRow> rows = rollout_rows(rollouts, special);
  std::vector<float> emb;  // (A*G, D)
  emb.reserve(rows.size() * static_cast<size_t>(D));
  {
    NoGradGuard no_grad;
    for (size_t start = 0; start < rows.size(); start += kEmbedBatch) {
      const std::vector<model::InputRow> part(rows.begin() + start, rows.begin() + std::min(rows.size(), start + kEmbedBatch));
      const model::ModelBatch batch = model::assemble(part, rollouts.images, special, policy.config());
      const std::vector<float> e = policy.forward(batch).embedding.contiguous().to_vector<float>();
      emb.insert(emb.end(), e.begin(), e.end());
    }
  }

  const size_t n = rows.size();
  rollouts.retrieval.assign(n, 0.0);
  rollouts.format.assign(n, 0.0);
  rollouts.reward.assign(n, 0.0);
  for (size_t i = 0; i < n; ++i) {
    const int64_t pos = candidate_of_anchor[static_cast<size_t>(rollouts.anchor[i])];
    double positive = 0, negative_sum = 0, negative_max = -INFINITY;
    for (int64_t j = 0; j < N; ++j) {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(emb[i * D + d]) * cand[j * D + d];
      if (j == pos) {
        positive = dot;
      } else {
        negative_sum += dot;
        negative_max = std::max(negative_max, dot);
      }
    }
    const double negative = N == 1 ? 0.0 : options.negatives == "max" ? negative_max : negative_sum / (N - 1);
    rollouts.retrieval[i] = positive - negative;
    rollouts.format[i] = format_reward(rollouts.tokens[i], special);
    rollouts.reward[i] = rollouts.retrieval[i] + options.format_reward * rollouts.format[i];
  }
  rollouts.advantage = group_advantages(rollouts.reward, rollouts.group);
}

std::vector<double> group_advantages(const std::vector<double>& rewards, int64_t group) {
  MOON_CHECK(group >= 1, "grpo: group (", group, ") must be >= 1");
  MOON_CHECK(rewards.size() % static_cast<size_t>(group) == 0, "grpo: ", rewards.size(),
             " rewards do not split into groups of ", group);
  std::vector<double> adv(rewards.size());
  const size_t G = static_cast<size_t>(group);
  for (size_t start = 0; start < rewards.size(); start += G) {
    double mean = 0, var = 0;
    for (size_t g = 0; g < G; ++g) mean += rewards[start + g];
    mean /= static_cast<double>(G);
    for (size_t g = 0; g < G; ++g) var += (rewards[start + g] - mean) * (rewards[start + g] - mean);
    const double stddev = std::sqrt(var / static_cast<double>(G));
    for (size_t g = 0; g < G; ++g) adv[start + g] = (rewards[start + g] - mean) / (stddev + 1e-4);
  }
  return adv;
}

Tensor scored_token_mask(const model::ModelBatch& batch, const Rollouts& rollouts, const model::SpecialTokens& special) {
  const int64_t B = batch.rows(), T = batch.token_ids.size(1);
  MOON_CHECK(B == static_cast<int64_t>(rollouts.tokens.size()), "scored_token_mask: the batch has ", B,
             " rows but there are ", rollouts.tokens.size(), " rollouts");
  const std::vector<int64_t> ids = batch.token_ids.to_vector<int64_t>();  // (B, T)
  const std::vector<int64_t> last = batch.emb_index.to_vector<int64_t>();  // (B): the <emb> position
  std::vector<uint8_t> mask(static_cast<size_t>(B * T), 0);                // (B, T)
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<int64_t>& tokens = rollouts.tokens[static_cast<size_t>(b)];
    const bool has_end = closed(tokens, special);
    const int64_t L = static_cast<int64_t>(tokens.size()) - (has_end ? 1 : 0);  // reasoning length
    // Layout ... <think> reasoning(L) </think> <emb>: </think> at last - 1, reasoning from last - 1 - L.
    const int64_t end = last[b] - 1, first = end - L;
    const int64_t* row = ids.data() + b * T;
    bool ok = first >= 1 && last[b] < T && row[last[b]] == special.emb && row[end] == special.think_end &&
              row[first - 1] == special.think;
    for (int64_t t = 0; ok && t < L; ++t) ok = row[first + t] == tokens[static_cast<size_t>(t)];
    MOON_CHECK(ok, "scored_token_mask: batch row ", b, " is not the rollout row of rollout ", b,
               " (assemble the rows from rollout_row, in rollout order)");
    for (int64_t t = first; t < end; ++t) mask[b * T + t] = 1;
    if (has_end) mask[b * T + end] = 1;
  }
  return from_vector(mask, {B, T}, DType::U8);
}

PolicyLoss clipped_objective(const Tensor& logprob, const Tensor& old_logprob, const Tensor& ref_logprob,
                             const Tensor& mask, const std::vector<double>& advantage, const GrpoOptions& options) {
  MOON_CHECK(logprob.dim() == 2, "clipped_objective: logprob must be (B, T), got ", logprob.desc());
  const int64_t B = logprob.size(0), T = logprob.size(1);
  for (const Tensor* t : {&old_logprob, &ref_logprob, &mask})
    MOON_CHECK(t->shape() == logprob.shape(), "clipped_objective: ", t->desc(), " does not match logprob ", logprob.desc());
  MOON_CHECK(static_cast<int64_t>(advantage.size()) == B, "clipped_objective: ", advantage.size(),
             " advantages for ", B, " rows");
  MOON_CHECK(options.clip_eps >= 0 && options.clip_eps < 1, "grpo: clip_eps (", options.clip_eps, ") must be in [0, 1)");
  const std::vector<uint8_t> scored = mask.to(DType::U8).to_vector<uint8_t>();  // (B, T)
  std::vector<float> weight(static_cast<size_t>(B * T), 0.0f);  // (B, T): 1 / (scored tokens of the row) / B
  std::vector<float> adv(static_cast<size_t>(B));               // (B)
  int64_t total = 0;
  for (int64_t b = 0; b < B; ++b) {
    int64_t count = 0;
    for (int64_t t = 0; t < T; ++t) count += scored[b * T + t] != 0;
    total += count;
    for (int64_t t = 0; t < T; ++t)
      if (scored[b * T + t]) weight[b * T + t] = static_cast<float>(1.0 / (static_cast<double>(count) * B));
    adv[b] = static_cast<float>(advantage[b]);
  }
  const Tensor A = from_vector(adv, {B, 1});                  // (B, 1)
  const Tensor old = old_logprob.detach(), ref = ref_logprob.detach();
  const Tensor ratio = exp(logprob - old);                     // (B, T)
  const Tensor clipped = clamp(ratio, 1.0 - options.clip_eps, 1.0 + options.clip_eps);
  const Tensor pg = neg(minimum(ratio * A, clipped * A));      // (B, T)
  const Tensor diff = ref - logprob;                           // (B, T)
  const Tensor kl = exp(diff) - diff - 1.0;                    // (B, T) k3 estimator, >= 0
  const Tensor per_token = pg + kl * options.kl_beta;
  PolicyLoss out;
  out.loss = sum(per_token * from_vector(weight, {B, T}));     // () mean over rows of each row's token mean

  // Statistics over the scored tokens.
  const std::vector<float> kl_v = kl.detach().contiguous().to_vector<float>(), r_v = ratio.detach().contiguous().to_vector<float>();
  double kl_sum = 0;
  int64_t clipped_count = 0;
  for (int64_t i = 0; i < B * T; ++i) {
    if (!scored[i]) continue;
    kl_sum += kl_v[i];
    clipped_count += std::abs(static_cast<double>(r_v[i]) - 1.0) > options.clip_eps;
  }
  out.kl = total ? kl_sum / static_cast<double>(total) : 0.0;
  out.clip_fraction = total ? static_cast<double>(clipped_count) / static_cast<double>(total) : 0.0;
  return out;
}

PolicyLoss policy_loss(const model::MoonModel& policy, const model::MoonModel& reference, const Rollouts& rollouts,
                       const model::SpecialTokens& special, const GrpoOptions& options) {
  check_rollouts(rollouts, "policy_loss");
  MOON_CHECK(rollouts.advantage.size() == rollouts.tokens.size(), "policy_loss: ", rollouts.advantage.size(),
             " advantages for ", rollouts.tokens.size(), " rollouts (run retrieval_rewards or group_advantages first)");
  const model::ModelBatch batch = model::assemble(rollout_rows(rollouts, special), rollouts.images, special, policy.config());
  const Tensor mask = scored_token_mask(batch, rollouts, special);  // (B, T) u8
  const Tensor lp = model::token_logprobs(policy, batch, mask);     // (B, T) with gradient, 0 off the mask
  Tensor ref;
  {
    NoGradGuard no_grad;
    ref = model::token_logprobs(reference, batch, mask);  // (B, T)
  }
  PolicyLoss out = clipped_objective(lp, lp.detach(), ref, mask, rollouts.advantage, options);
  double length = 0;
  for (const auto& t : rollouts.tokens) length += static_cast<double>(t.size());
  out.mean_length = length / static_cast<double>(rollouts.tokens.size());
  return out;
}

std::unique_ptr<model::MoonModel> frozen_copy(const model::MoonModel& model) {
  auto copy = std::make_unique<model::MoonModel>(model.config());
  copy->compute() = model.compute();
  NoGradGuard no_grad;
  for (const auto& [name, value] : model.params().all()) copy->params().assign(name, value.detach(), "the policy");
  for (const auto& entry : copy->params().all()) {
    Tensor param = entry.second;  // a handle: switching it off freezes the copy's parameter
    param.set_requires_grad(false);
  }
  return copy;
}

}  // namespace moon::training
