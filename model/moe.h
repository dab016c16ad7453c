// Modality-driven mixture of experts (docs/model.md section 5): a decoder layer's FFN as E SwiGLU experts
// with top-k routing; the router sees the token plus a learned embedding of its row's modality composition.
#pragma once
#include "model/config.h"
#include "model/params.h"

namespace moon::model {

struct MoeOutput {
  Tensor y;       // (B, T, C)
  Tensor aux;     // () f32 load-balance loss of this layer (differentiable)
  Tensor counts;  // (E, 3) i64: kept tokens routed to each expert (any of its k slots), per modality
};

class MoeFFN {
 public:
  MoeFFN(const ModelConfig& config, ParamStore& params, int64_t layer);  // model.layers.{layer}.mlp.*
  // x (B, T, C) FFN input; modality (B) i64 in {0, 1, 2}; keep (B, T) u8 (only kept tokens count in aux and
  // counts; padded tokens are still computed). Tokens are grouped per expert: one GEMM chain per expert.
  MoeOutput forward(const Tensor& x, const Tensor& modality, const Tensor& keep, const Compute& compute) const;

 private:
  ModelConfig config_;
  Tensor router_w_, modality_emb_;
  struct Expert {
    Tensor gate_w, up_w, down_w;
  };
  std::vector<Expert> experts_;
};

}  // namespace moon::model
