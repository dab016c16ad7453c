// FIRE, fine-grained residual enhancement (docs/model.md section 6): intermediate ViT features, projected to
// the decoder width, added through zero-initialised gates to the vision positions of early decoder layers.
#pragma once
#include <vector>

#include "model/config.h"
#include "model/params.h"

namespace moon::model {

class Fire {
 public:
  Fire(const ModelConfig& config, ParamStore& params);  // fire.{j}.{norm,proj,gate}
  // r_j for every pair j: (Bi, M, C), from VisionOutput::layer_outputs.
  std::vector<Tensor> project(const std::vector<Tensor>& layer_outputs, const Compute& compute) const;
  // x (B, T, C) -> x + gate_j * r_j[vision_slot] at vision positions, for every pair j whose decoder layer is
  // `decoder_layer` (x unchanged if none). vision_slot (B, T) i64 (-1 off vision positions).
  Tensor inject(int64_t decoder_layer, const Tensor& x, const std::vector<Tensor>& projected,
                const Tensor& vision_slot) const;

 private:
  ModelConfig config_;
  struct Pair {
    int64_t vision_layer, decoder_layer;
    Tensor norm_w, norm_b, proj_w, proj_b, gate;
  };
  std::vector<Pair> pairs_;
};

}  // namespace moon::model
