// MoonModel: wiring of vision encoder, projector, decoder, FIRE, pooling, fusion and head (docs/model.md).
#include "model/moon_model.h"

#include <algorithm>
#include <cmath>

#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/loss.h"
#include "ops/matmul.h"
#include "ops/reduce.h"
#include "runtime/error.h"

namespace moon::model {
namespace {

// (B, 1) f32: 1 where v[b] != value (a non-differentiable row mask).
Tensor ne_scalar_mask(const Tensor& v, int64_t value) {
  std::vector<float> m;
  for (int64_t x : v.to_vector<int64_t>()) m.push_back(x != value ? 1.0f : 0.0f);
  return from_vector(m, {v.size(0), 1});
}

}  // namespace

MoonModel::MoonModel(const ModelConfig& config) : config_(config), params_(config.init_seed) {
  config_.validate();
  vision_ = std::make_unique<VisionEncoder>(config_.vision, params_);
  projector_ = std::make_unique<Projector>(config_, params_);
  decoder_ = std::make_unique<Decoder>(config_, params_);
  if (config_.fire.enabled) fire_ = std::make_unique<Fire>(config_, params_);
  if (config_.fusion.enabled) fusion_ = std::make_unique<Fusion>(config_, params_);
  head_w_ = params_.normal("head.proj.weight", {config_.embedding.dim, config_.decoder.hidden}, 0.02);
  head_b_ = params_.constant("head.proj.bias", {config_.embedding.dim}, 0.0);
  if (config_.embedding.architecture == "dual") {
    image_head_w_ = params_.normal("head.image_proj.weight", {config_.embedding.dim, config_.vision.hidden}, 0.02);
    image_head_b_ = params_.constant("head.image_proj.bias", {config_.embedding.dim}, 0.0);
  }
}

MoonModel::Prepared MoonModel::prepare(const ModelBatch& batch) const {
  const int64_t C = config_.decoder.hidden;
  Prepared p;
  p.token_embeds = decoder_->embed(batch.token_ids);  // (B, T, C)
  p.inputs = p.token_embeds;
  if (!batch.pixels.defined() || batch.pixels.size(0) == 0) return p;
  VisionOutput vo = vision_->forward(batch.pixels, compute_);
  p.features = vo.features;                                        // (Bi, N, Cv)
  Tensor vision_tokens = projector_->forward(vo.features, compute_);  // (Bi, M, C)
  PlacedRows placed = place_rows(vision_tokens.reshape({-1, C}), batch.vision_slot);  // (B, T, C)
  p.inputs = where(placed.mask, placed.rows, p.token_embeds);
  if (fire_) p.fire = fire_->project(vo.layer_outputs, compute_);
  return p;
}

std::function<Tensor(int64_t, const Tensor&)> MoonModel::fire_hook(const Prepared& prepared,
                                                                   const ModelBatch& batch) const {
  if (!fire_ || prepared.fire.empty()) return nullptr;
  const Fire* fire = fire_.get();
  const std::vector<Tensor>* r = &prepared.fire;
  Tensor slots = batch.vision_slot;
  return [fire, r, slots](int64_t layer, const Tensor& x) { return fire->inject(layer, x, *r, slots); };
}

Tensor MoonModel::pool(const Tensor& hidden, const Tensor& pool_mask, const Tensor& emb_index) const {
  const int64_t B = hidden.size(0), T = hidden.size(1), C = hidden.size(2);
  if (config_.embedding.pooling == "mean") {
    Tensor mask = pool_mask.to(DType::F32).reshape({B, T, 1});
    Tensor count = maximum(sum(mask, {1}), ones({1}));      // (B, 1); a row with nothing to pool gives 0
    return div(sum(mul(hidden, mask), {1}), count);        // (B, C)
  }
  std::vector<int64_t> at = emb_index.to_vector<int64_t>();
  for (int64_t b = 0; b < B; ++b) at[b] += b * T;
  return index_select(hidden.reshape({B * T, C}), 0, from_vector(at, {B}, DType::I64));  // (B, C)
}

ModelOutput MoonModel::forward_dual(const ModelBatch& batch) const {
  const int64_t B = batch.rows(), T = batch.token_ids.size(1);
  // Text tower: the decoder over each row's tokens without the image span (<image>, vision, </image>).
  const std::vector<int64_t> slot = batch.vision_slot.to_vector<int64_t>();
  std::vector<uint8_t> keep = batch.keep.to_vector<uint8_t>(), pool_mask = batch.pool_mask.to_vector<uint8_t>();
  std::vector<int64_t> positions(static_cast<size_t>(B * T), 0);
  for (int64_t b = 0; b < B; ++b) {
    int64_t first = T, last = -1;  // the vision slots of the row; <image> and </image> sit right outside them
    for (int64_t t = 0; t < T; ++t)
      if (slot[static_cast<size_t>(b * T + t)] >= 0) first = std::min(first, t), last = t;
    int64_t next = 0;
    for (int64_t t = 0; t < T; ++t) {
      const size_t i = static_cast<size_t>(b * T + t);
      if (last >= 0 && t >= first - 1 && t <= last + 1) keep[i] = pool_mask[i] = 0;
      if (keep[i]) positions[i] = next++;
    }
  }
  Tensor text_keep = from_vector(keep, {B, T}, DType::U8), text_pool = from_vector(pool_mask, {B, T}, DType::U8);
  Tensor text_modality = zeros({B}, DType::I64);  // the router sees every text-tower row as text
  DecoderOutput dec = decoder_->forward(decoder_->embed(batch.token_ids), from_vector(positions, {B, T}, DType::I64),
                                        text_keep, text_modality, nullptr, nullptr, compute_);
  ModelOutput out;
  out.hidden = dec.hidden;  // (B, T, C)
  out.aux_loss = dec.aux_loss;
  out.router_counts = dec.router_counts;
  out.pooled = pool(out.hidden, text_pool, batch.emb_index);                  // (B, C)
  Tensor text = l2_normalize(dense(out.pooled, head_w_, head_b_, compute_), -1);  // (B, D)
  Tensor has_text = ne_scalar_mask(batch.modality, 1);                        // (B, 1) f32
  Tensor z = mul(text, has_text);
  if (batch.pixels.defined() && batch.pixels.size(0) > 0) {
    // Image tower: mean of the vision features, then its own head.
    Tensor features = vision_->forward(batch.pixels, compute_).features;      // (Bi, N, Cv)
    Tensor image = l2_normalize(dense(mean(features, {1}), image_head_w_, image_head_b_, compute_), -1);  // (Bi, D)
    PlacedRows placed = place_rows(image, batch.image_row);                    // (B, D)
    z = add(z, where(placed.mask, placed.rows, zeros({1})));
  }
  out.embedding = l2_normalize(z, -1);
  return out;
}

ModelOutput MoonModel::forward(const ModelBatch& batch) const {
  MOON_CHECK(batch.rows() > 0, "model: empty batch");
  if (config_.embedding.architecture == "dual") return forward_dual(batch);
  const int64_t B = batch.rows();
  Prepared p = prepare(batch);
  DecoderOutput dec = decoder_->forward(p.inputs, batch.positions, batch.keep, batch.modality, fire_hook(p, batch),
                                        nullptr, compute_);
  ModelOutput out;
  out.hidden = dec.hidden;  // (B, T, C)
  out.aux_loss = dec.aux_loss;
  out.router_counts = dec.router_counts;
  out.pooled = pool(out.hidden, batch.pool_mask, batch.emb_index);  // (B, C)
  Tensor z = dense(out.pooled, head_w_, head_b_, compute_);  // (B, D)
  if (fusion_) {
    Tensor features;  // (B, N, Cv): the row's vision features, zeros for rows without an image
    if (p.features.defined()) {
      PlacedRows picked = place_rows(p.features, batch.image_row);  // (B, N, Cv)
      features = where(picked.mask, picked.rows, zeros({1}));
    } else {
      features = zeros({B, config_.vision.patches(), config_.vision.hidden});
    }
    z = add(z, fusion_->forward(out.pooled, features, batch.has_image, p.token_embeds, batch.text_mask, compute_));
  }
  out.embedding = l2_normalize(z, -1);
  return out;
}

Tensor embedding_prefix(const Tensor& embedding, int64_t d) {
  MOON_CHECK(d >= 1 && d <= embedding.size(-1), "embedding_prefix: size ", d, " must be in [1, ",
             embedding.size(-1), "]");
  return l2_normalize(embedding.slice(-1, 0, d), -1);
}

Tensor parity_loss(const ModelOutput& out, const ModelConfig& config) {
  const int64_t B = out.embedding.size(0);
  MOON_CHECK(B % 2 == 0, "parity_loss: needs an even number of rows, got ", B);
  Tensor a = out.embedding.slice(0, 0, B / 2), b = out.embedding.slice(0, B / 2, B);
  Tensor logits = scale(matmul(a, b.mT()), 1.0 / 0.05);
  Tensor loss = cross_entropy(logits, arange(0, static_cast<double>(B / 2), 1.0, DType::I64));
  if (config.moe.enabled) loss = add(loss, scale(out.aux_loss, config.moe.aux_weight));
  return loss;
}

}  // namespace moon::model
