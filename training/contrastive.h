// The contrastive losses of docs/training.md section 2: weighted InfoNCE with a learnable clamped temperature,
// same-category hard negatives, dynamic sample filtering, MOON2.0's dual-level alignment and Matryoshka.
// Everything here works on embeddings; training/contrastive_step.h runs the model.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace moon::training {

struct ContrastiveOptions {
  double init_temperature = 0.07;     // train.logit_scale starts at ln(1 / init_temperature)
  double max_logit_scale = 100.0;     // s = exp(clamp(logit_scale, 0, ln(max_logit_scale)))
  double hard_negative_weight = 2.0;  // same-category negatives count this many times (1: off)
  bool inter = true;                  // L_inter (T, V, M queries -> P)
  bool intra = true;                  // L_intra (V <-> T)
  bool filtering = true;              // dynamic sample filtering on L_inter
  double filter_kappa = 10.0;
  double filter_threshold = 0.6;
  double filter_margin = 0.2;         // margin0; decays linearly to 0 over the run
  std::vector<int64_t> matryoshka_dims;  // empty: no Matryoshka loss (none either with inter off)
  double matryoshka_weight = 1.0;
  double aux_weight = 0.0;            // the config's moe.aux_weight (0 without MoE)
};

// The margin of filtering at `step` of `total`: margin0 * max(0, 1 - step / total).
double filter_margin(const ContrastiveOptions& options, int64_t step, int64_t total);

// The temperature parameter train.logit_scale: (1) f32 leaf, requires_grad, value ln(1 / init_temperature).
Tensor make_logit_scale(const ContrastiveOptions& options);
// s = exp(clamp(logit_scale, 0, ln(max_logit_scale))): () f32, differentiable.
Tensor logit_scale_value(const Tensor& logit_scale, const ContrastiveOptions& options);

// H (Nq, Nc) u8: 1 where candidate j != positive[i] has the same category as query i.
Tensor hard_negative_mask(const std::vector<int64_t>& query_category, const std::vector<int64_t>& candidate_category,
                          const std::vector<int64_t>& positive);

// Filtering weights w (Nq) f32, detached (docs/training.md section 2). hard may be undefined (no hard rows).
Tensor filter_weights(const Tensor& queries, const Tensor& candidates, const std::vector<int64_t>& positive,
                      const Tensor& hard, const ContrastiveOptions& options, double margin);

// sum_i w_i CE_i / sum_i w_i with logits_ij = s q_i.k_j (+ ln(hard_weight) where hard). queries (Nq, D),
// candidates (Nc, D), positive[i] in [0, Nc), scale () from logit_scale_value, hard (Nq, Nc) u8 or undefined,
// weights (Nq) f32 or undefined (all 1). Returns () f32, differentiable in queries, candidates and scale.
Tensor info_nce(const Tensor& queries, const Tensor& candidates, const std::vector<int64_t>& positive,
                const Tensor& scale, const Tensor& hard, double hard_weight, const Tensor& weights);

// The embeddings of the four views of a batch (docs/training.md section 1) and which product each row is.
struct ViewEmbeddings {
  Tensor products, text, image, multimodal;  // (n_X, D) each; a view with no rows is undefined
  std::vector<int64_t> product_of_text, product_of_image, product_of_multimodal;  // row -> index into products
  std::vector<int64_t> category;             // (B) category of each product row
  Tensor aux;                                // () mean MoE aux loss over the step's forwards (undefined: none)
};

// The parts of L_con (each () f32; a part that is off or empty is a 0 scalar) and what the log shows.
struct ContrastiveLoss {
  Tensor total;       // L_inter + L_intra + aux_weight * aux + matryoshka_weight * L_mat
  Tensor inter, intra, aux, matryoshka;
  double temperature = 0;       // 1 / s
  double kept_fraction = 1;     // mean filtering weight of L_inter's queries
};

// L_con of docs/training.md section 2 at filtering margin `margin`.
ContrastiveLoss contrastive_loss(const ViewEmbeddings& e, const Tensor& logit_scale, const ContrastiveOptions& options,
                                 double margin);

}  // namespace moon::training
