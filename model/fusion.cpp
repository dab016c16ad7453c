// Multi-head modality fusion (docs/model.md section 8): per head, the pooled state s attends over the row's
// vision features and over its text token embeddings; a softmax gate over {summary, visual, textual} (a
// missing modality's logit at -inf) mixes the three, and out_proj maps the heads to the embedding dim.
#include "model/fusion.h"

#include <cmath>
#include <limits>
#include <string>

#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/norm.h"
#include "runtime/error.h"

namespace moon::model {
namespace {

std::string desc_of(const Tensor& t) { return t.defined() ? t.desc() : std::string("an undefined tensor"); }

}  // namespace

Fusion::Fusion(const ModelConfig& config, ParamStore& params) : config_(config) {
  const int64_t C = config.decoder.hidden, Cv = config.vision.hidden, F = config.fusion.width;
  const int64_t Hf = config.fusion.heads, D = config.embedding.dim;
  auto weight = [&](const std::string& name, int64_t out, int64_t in) {
    return params.normal("fusion." + name + ".weight", {out, in}, 0.02);
  };
  auto bias = [&](const std::string& name, int64_t out) {
    return params.constant("fusion." + name + ".bias", {out}, 0.0);
  };
  q_w_ = weight("q_proj", F, C), q_b_ = bias("q_proj", F);
  s_w_ = weight("summary_proj", F, C), s_b_ = bias("summary_proj", F);
  g_w_ = weight("gate_proj", 3 * Hf, C), g_b_ = bias("gate_proj", 3 * Hf);
  vk_w_ = weight("visual_k_proj", F, Cv), vk_b_ = bias("visual_k_proj", F);
  vv_w_ = weight("visual_v_proj", F, Cv), vv_b_ = bias("visual_v_proj", F);
  tk_w_ = weight("text_k_proj", F, C), tk_b_ = bias("text_k_proj", F);
  tv_w_ = weight("text_v_proj", F, C), tv_b_ = bias("text_v_proj", F);
  o_w_ = weight("out_proj", D, F), o_b_ = bias("out_proj", D);
}

Tensor Fusion::forward(const Tensor& summary, const Tensor& features, const Tensor& has_image,
                       const Tensor& token_embeds, const Tensor& text_mask, const Compute& compute) const {
  const int64_t C = config_.decoder.hidden, Cv = config_.vision.hidden, F = config_.fusion.width;
  const int64_t Hf = config_.fusion.heads, dh = F / Hf;
  MOON_CHECK(summary.defined() && summary.dim() == 2 && summary.size(1) == C, "fusion: summary must be (B, ", C,
             "), got ", desc_of(summary));
  const int64_t B = summary.size(0);
  MOON_CHECK(features.defined() && features.dim() == 3 && features.size(0) == B && features.size(2) == Cv,
             "fusion: features must be (B, N, Cv) = (", B, ", N, ", Cv, "), got ", desc_of(features));
  MOON_CHECK(has_image.defined() && has_image.dtype() == DType::U8 && has_image.shape() == Shape({B}),
             "fusion: has_image must be u8 (", B, "), got ", desc_of(has_image));
  MOON_CHECK(
      token_embeds.defined() && token_embeds.dim() == 3 && token_embeds.size(0) == B && token_embeds.size(2) == C,
      "fusion: token_embeds must be (B, T, C) = (", B, ", T, ", C, "), got ", desc_of(token_embeds));
  const int64_t N = features.size(1), T = token_embeds.size(1);
  MOON_CHECK(text_mask.defined() && text_mask.dtype() == DType::U8 && text_mask.shape() == Shape({B, T}),
             "fusion: text_mask must be u8 (B, T) = (", B, ", ", T, "), got ", desc_of(text_mask));

  // Host-side key masks and the -inf gate mask: (B, N) visual keys, (B, 1, 3) gate logits to drop.
  std::vector<uint8_t> image = has_image.contiguous().to_vector<uint8_t>();  // (B)
  std::vector<uint8_t> text = text_mask.contiguous().to_vector<uint8_t>();   // (B, T)
  std::vector<uint8_t> visual_keep(static_cast<size_t>(B * N));
  std::vector<uint8_t> drop(static_cast<size_t>(B * 3), 0);
  for (int64_t b = 0; b < B; ++b) {
    bool any_text = false;
    for (int64_t t = 0; t < T; ++t) any_text = any_text || text[static_cast<size_t>(b * T + t)] != 0;
    for (int64_t n = 0; n < N; ++n) visual_keep[static_cast<size_t>(b * N + n)] = image[b] != 0;
    drop[static_cast<size_t>(b * 3 + 1)] = image[b] == 0;
    drop[static_cast<size_t>(b * 3 + 2)] = !any_text;
  }

  // (B, L, width) -> (B, Hf, L, dh)
  auto heads = [&](const Tensor& x, int64_t L) { return x.reshape({B, L, Hf, dh}).transpose(1, 2); };
  Tensor q = dense(summary, q_w_, q_b_, compute).reshape({B, Hf, 1, dh});  // (B, Hf, 1, dh)
  AttentionOptions attn;
  attn.scale = 1.0 / std::sqrt(static_cast<double>(dh));
  attn.key_keep = from_vector(visual_keep, {B, N}, DType::U8);  // (B, N)
  Tensor o_v = scaled_dot_product_attention(q, heads(dense(features, vk_w_, vk_b_, compute), N),
                                            heads(dense(features, vv_w_, vv_b_, compute), N), attn);
  attn.key_keep = text_mask.contiguous();  // (B, T)
  Tensor o_t = scaled_dot_product_attention(q, heads(dense(token_embeds, tk_w_, tk_b_, compute), T),
                                            heads(dense(token_embeds, tv_w_, tv_b_, compute), T), attn);
  o_v = o_v.reshape({B, Hf, dh});                                         // (B, Hf, dh), zeros without image
  o_t = o_t.reshape({B, Hf, dh});                                         // (B, Hf, dh), zeros without text
  Tensor o_s = dense(summary, s_w_, s_b_, compute).reshape({B, Hf, dh});  // (B, Hf, dh)

  Tensor logits = dense(summary, g_w_, g_b_, compute).reshape({B, Hf, 3});  // (B, Hf, 3) [summary, visual, text]
  logits = masked_fill(logits, from_vector(drop, {B, 1, 3}, DType::U8), -std::numeric_limits<double>::infinity());
  Tensor g = softmax(logits, -1);  // (B, Hf, 3), exact zeros on dropped modalities
  Tensor mixed = add(add(mul(g.slice(2, 0, 1), o_s), mul(g.slice(2, 1, 2), o_v)), mul(g.slice(2, 2, 3), o_t));
  return dense(mixed.reshape({B, F}), o_w_, o_b_, compute);  // (B, D)
}

}  // namespace moon::model
