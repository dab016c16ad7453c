// The ViT vision encoder (Hugging Face SigLIP / CLIP names) and the projector into the decoder width.
// docs/model.md sections 2 and 3.
#pragma once
#include <vector>

#include "model/config.h"
#include "model/params.h"

namespace moon::model {

struct VisionOutput {
  Tensor features;                    // (Bi, N, Cv): post_layernorm of the last layer, class token dropped
  std::vector<Tensor> layer_outputs;  // [l-1] = (Bi, N, Cv) output of layer l (1-based), class token dropped
};

class VisionEncoder {
 public:
  // Registers the vision_model.* parameters in `params` (docs/model.md section 9 for the init).
  VisionEncoder(const VisionConfig& config, ParamStore& params);
  // pixels (Bi, 3, S', S') f32 normalised, S' a multiple of the patch size (position embeddings are
  // interpolated when S' != config.image_size). Wrong shapes are errors naming the expected shape.
  VisionOutput forward(const Tensor& pixels, const Compute& compute) const;
  const VisionConfig& config() const { return config_; }

 private:
  VisionConfig config_;
  // parameter handles, see vision.cpp
  struct Layer {
    Tensor ln1_w, ln1_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
  };
  Tensor patch_w_, patch_b_, class_emb_, pos_emb_, pre_ln_w_, pre_ln_b_, post_ln_w_, post_ln_b_;
  std::vector<Layer> layers_;
};

// (Bi, N = g*g, c) -> (Bi, N/m^2, m^2*c): the 2x2 patch merge of docs/model.md section 3 (identity for m = 1).
Tensor merge_patches(const Tensor& tokens, int64_t merge);

// The (out, in) matrix W with W @ v == torch interpolate(v, size=out, mode="bicubic", align_corners=False)
// along one axis (cubic convolution a = -0.75, clamped border indices).
Tensor bicubic_matrix(int64_t in, int64_t out);

class Projector {
 public:
  Projector(const ModelConfig& config, ParamStore& params);  // projector.linear_{1,2}
  // features (Bi, N, Cv) -> vision tokens (Bi, M, C)
  Tensor forward(const Tensor& features, const Compute& compute) const;

 private:
  int64_t merge_;
  Tensor w1_, b1_, w2_, b2_;
};

}  // namespace moon::model
