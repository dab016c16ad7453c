// Modality-driven mixture of experts (docs/model.md section 5): f32 router softmax over y + modality
// embedding, top-k with renormalised weights, tokens grouped per expert (one SwiGLU GEMM chain each),
// the load-balance loss over kept tokens and the router counts per modality.
#include "model/moe.h"

#include <cmath>
#include <string>
#include <vector>

#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"
#include "runtime/error.h"

namespace moon::model {

MoeFFN::MoeFFN(const ModelConfig& config, ParamStore& params, int64_t layer) : config_(config) {
  const int64_t C = config.decoder.hidden, E = config.moe.experts, I = config.moe.mlp;
  const double out_std = 0.02 / std::sqrt(2.0 * static_cast<double>(config.decoder.layers));  // down_proj
  const std::string p = "model.layers." + std::to_string(layer) + ".mlp.";
  router_w_ = params.normal(p + "gate.weight", {E, C}, 0.02);                      // (E, C)
  modality_emb_ = params.normal(p + "modality_embedding.weight", {3, C}, 0.02);  // (3, C)
  for (int64_t e = 0; e < E; ++e) {
    const std::string q = p + "experts." + std::to_string(e) + ".";
    Expert ex;
    ex.gate_w = params.normal(q + "gate_proj.weight", {I, C}, 0.02);     // (I, C)
    ex.up_w = params.normal(q + "up_proj.weight", {I, C}, 0.02);         // (I, C)
    ex.down_w = params.normal(q + "down_proj.weight", {C, I}, out_std);  // (C, I)
    experts_.push_back(std::move(ex));
  }
}

MoeOutput MoeFFN::forward(const Tensor& x, const Tensor& modality, const Tensor& keep, const Compute& compute) const {
  const int64_t E = config_.moe.experts, K = config_.moe.top_k, C = config_.decoder.hidden;
  MOON_CHECK(x.dim() == 3 && x.size(2) == C, "moe: input must be (B, T, ", C, "), got ", x.desc());
  const int64_t B = x.size(0), T = x.size(1), N = B * T;
  MOON_CHECK(modality.dim() == 1 && modality.size(0) == B && modality.dtype() == DType::I64,
             "moe: modality must be i64 (", B, "), got ", modality.desc());
  MOON_CHECK(keep.dim() == 2 && keep.size(0) == B && keep.size(1) == T && keep.dtype() == DType::U8,
             "moe: keep must be u8 (", B, ", ", T, "), got ", keep.desc());
  const std::vector<int64_t> row_modality = modality.to_vector<int64_t>();  // (B)
  for (int64_t b = 0; b < B; ++b)
    MOON_CHECK(row_modality[b] >= 0 && row_modality[b] <= 2, "moe: modality[", b, "] = ", row_modality[b],
               " must be 0 (text), 1 (image) or 2 (image + text)");

  // Router: p = softmax(gate(y + modality_embedding[c])) in f32.
  Tensor mod = embedding(modality_emb_, modality).reshape({B, 1, C});                  // (B, 1, C)
  Tensor scores = dense(add(x, mod), router_w_, Tensor(), compute).reshape({N, E});  // (N, E)
  Tensor probs = softmax(scores, -1);                                                  // (N, E) f32
  TopKResult top = topk(probs, K, -1);                                                 // (N, K) sorted, ties low index
  Tensor weights = div(top.values, sum(top.values, {1}, true));                        // (N, K) renormalised
  const std::vector<int64_t> chosen = top.indices.to_vector<int64_t>();               // (N*K) token-major

  // Group the (token, slot) assignments per expert. sorted_slot[a] is where assignment a = n*K + j lands in
  // the expert-major concatenation of the experts' outputs.
  std::vector<std::vector<int64_t>> rows_of(E);  // per expert: token indices, ascending
  std::vector<std::vector<int64_t>> assign_of(E);
  for (int64_t a = 0; a < N * K; ++a) {
    rows_of[chosen[a]].push_back(a / K);
    assign_of[chosen[a]].push_back(a);
  }
  std::vector<int64_t> sorted_slot(static_cast<size_t>(N * K));
  Tensor flat = x.reshape({N, C});  // (N, C)
  std::vector<Tensor> expert_out;   // per used expert: (n_e, C)
  int64_t filled = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n_e = static_cast<int64_t>(rows_of[e].size());
    if (n_e == 0) continue;
    for (int64_t i = 0; i < n_e; ++i) sorted_slot[assign_of[e][i]] = filled + i;
    filled += n_e;
    const Expert& ex = experts_[e];
    Tensor xe = index_select(flat, 0, from_vector(rows_of[e], {n_e}, DType::I64));   // (n_e, C)
    Tensor h = mul(silu(dense(xe, ex.gate_w, Tensor(), compute)), dense(xe, ex.up_w, Tensor(), compute));  // (n_e, I)
    expert_out.push_back(dense(h, ex.down_w, Tensor(), compute));                   // (n_e, C)
  }
  // Back to token-major order: (N*K, C) -> (N, K, C), weighted sum over the K slots.
  Tensor all_out = expert_out.size() == 1 ? expert_out[0] : concat(expert_out, 0);  // (N*K, C) expert-major
  Tensor per_slot = index_select(all_out, 0, from_vector(sorted_slot, {N * K}, DType::I64)).reshape({N, K, C});
  Tensor y = sum(mul(per_slot, weights.reshape({N, K, 1})), {1}).reshape({B, T, C});  // (B, T, C)

  // Load balance over kept tokens: E * sum_e f_e P_e; counts (E, 3) per modality.
  const std::vector<uint8_t> kept = keep.to_vector<uint8_t>();  // (N)
  std::vector<int64_t> counts(static_cast<size_t>(E * 3), 0);   // (E, 3) row-major
  std::vector<float> assigned(static_cast<size_t>(E), 0.0f);    // (E) assignments of kept tokens
  int64_t n_kept = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (!kept[n]) continue;
    ++n_kept;
    for (int64_t j = 0; j < K; ++j) {
      const int64_t e = chosen[n * K + j];
      ++counts[e * 3 + row_modality[n / T]];
      assigned[e] += 1.0f;
    }
  }
  MoeOutput out;
  out.y = y;
  out.counts = from_vector(counts, {E, 3}, DType::I64);
  if (n_kept == 0) {
    out.aux = scalar_tensor(0.0);
    return out;
  }
  const double denom = static_cast<double>(K * n_kept);
  for (auto& f : assigned) f = static_cast<float>(f / denom);  // f_e
  Tensor keep_col = keep.reshape({N, 1}).to(DType::F32);                                           // (N, 1)
  Tensor mean_prob = scale(sum(mul(probs, keep_col), {0}), 1.0 / static_cast<double>(n_kept));  // (E) P_e
  out.aux = scale(sum(mul(mean_prob, from_vector(assigned, {E}))), static_cast<double>(E));      // ()
  return out;
}

}  // namespace moon::model
