// FIRE (docs/model.md section 6): r_j = proj(merge(norm(x_{l_j}))) and the gated residual added to the vision
// positions of decoder layer d_j's input. Gates start at zero, so a fresh FIRE is exactly the identity.
#include "model/fire.h"

#include <string>

#include "model/inputs.h"
#include "model/vision.h"
#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/norm.h"
#include "runtime/error.h"

namespace moon::model {

Fire::Fire(const ModelConfig& config, ParamStore& params) : config_(config) {
  const auto& fc = config.fire;
  MOON_CHECK(fc.vision_layers.size() == fc.decoder_layers.size(), "fire: vision_layers (", fc.vision_layers.size(),
             " entries) and decoder_layers (", fc.decoder_layers.size(), " entries) must pair up one to one");
  const int64_t Cv = config.vision.hidden, C = config.decoder.hidden, m = config.projector.merge;
  for (size_t j = 0; j < fc.vision_layers.size(); ++j) {
    const std::string p = "fire." + std::to_string(j) + ".";
    Pair pair;
    pair.vision_layer = fc.vision_layers[j];
    pair.decoder_layer = fc.decoder_layers[j];
    pair.norm_w = params.constant(p + "norm.weight", {Cv}, 1.0);
    pair.norm_b = params.constant(p + "norm.bias", {Cv}, 0.0);
    pair.proj_w = params.normal(p + "proj.weight", {C, m * m * Cv}, 0.02);  // (C, m^2 Cv)
    pair.proj_b = params.constant(p + "proj.bias", {C}, 0.0);
    pair.gate = params.constant(p + "gate", {C}, 0.0);  // zero: FIRE starts as the identity
    pairs_.push_back(pair);
  }
}

std::vector<Tensor> Fire::project(const std::vector<Tensor>& layer_outputs, const Compute& compute) const {
  std::vector<Tensor> out;
  for (size_t j = 0; j < pairs_.size(); ++j) {
    const Pair& p = pairs_[j];
    MOON_CHECK(p.vision_layer >= 1 && p.vision_layer <= static_cast<int64_t>(layer_outputs.size()), "fire: pair ", j,
               " reads vision layer ", p.vision_layer, " but the encoder has ", layer_outputs.size(),
               " layer outputs (1-based)");
    const Tensor& x = layer_outputs[static_cast<size_t>(p.vision_layer - 1)];  // (Bi, N, Cv)
    Tensor normed = layer_norm(x, p.norm_w, p.norm_b, config_.vision.layer_norm_eps);
    Tensor merged = merge_patches(normed, config_.projector.merge);  // (Bi, M, m^2 Cv)
    out.push_back(dense(merged, p.proj_w, p.proj_b, compute));       // (Bi, M, C)
  }
  return out;
}

Tensor Fire::inject(int64_t decoder_layer, const Tensor& x, const std::vector<Tensor>& projected,
                    const Tensor& vision_slot) const {
  Tensor y = x;  // (B, T, C)
  bool checked = false;
  for (size_t j = 0; j < pairs_.size(); ++j) {
    const Pair& p = pairs_[j];
    if (p.decoder_layer != decoder_layer) continue;
    if (!checked) {
      MOON_CHECK(projected.size() == pairs_.size(), "fire: ", projected.size(), " projected features for ",
                 pairs_.size(), " pairs; pass the result of Fire::project");
      MOON_CHECK(x.dim() == 3 && x.size(2) == p.gate.size(0), "fire: decoder input ", x.desc(),
                 " must be (B, T, C) with C = ", p.gate.size(0));
      MOON_CHECK(vision_slot.defined() && vision_slot.dtype() == DType::I64 &&
                     vision_slot.shape() == Shape({x.size(0), x.size(1)}),
                 "fire: vision_slot must be i64 (B, T) = (", x.size(0), ", ", x.size(1), "), got ",
                 vision_slot.defined() ? vision_slot.desc() : std::string("an undefined tensor"));
      checked = true;
    }
    const int64_t C = x.size(2);
    const Tensor& r = projected[j];  // (Bi, M, C)
    MOON_CHECK(r.dim() == 3 && r.size(2) == C, "fire: projected feature ", j, " ", r.desc(), " must be (Bi, M, ", C,
               ")");
    PlacedRows placed = place_rows(r.reshape({-1, C}), vision_slot);  // (B, T, C), mask (B, T, 1)
    // x + gate * r: with a zero gate this adds +-0 and gives x back bit for bit (finite r).
    y = where(placed.mask, add(y, mul(placed.rows, p.gate)), y);  // (B, T, C)
  }
  return y;
}

}  // namespace moon::model
