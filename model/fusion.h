// Multi-head modality fusion (docs/model.md section 8): the pooled decoder output queries the raw vision
// features and the raw text token embeddings; a per-head gate mixes {summary, visual, textual}.
#pragma once
#include "model/config.h"
#include "model/params.h"

namespace moon::model {

class Fusion {
 public:
  Fusion(const ModelConfig& config, ParamStore& params);  // fusion.*_proj
  // summary (B, C) pooled final hidden state; features (B, N, Cv) raw vision features (zeros on rows without
  // an image); has_image (B) u8; token_embeds (B, T, C) raw token embeddings; text_mask (B, T) u8.
  // Returns f (B, D), to be added to head.proj(summary).
  Tensor forward(const Tensor& summary, const Tensor& features, const Tensor& has_image, const Tensor& token_embeds,
                 const Tensor& text_mask, const Compute& compute) const;

 private:
  ModelConfig config_;
  Tensor q_w_, q_b_, s_w_, s_b_, g_w_, g_b_, vk_w_, vk_b_, vv_w_, vv_b_, tk_w_, tk_b_, tv_w_, tv_b_, o_w_, o_b_;
};

}  // namespace moon::model
