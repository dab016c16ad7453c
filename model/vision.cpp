// The ViT vision encoder (SigLIP / CLIP), the patch merge, the bicubic position-interpolation matrix and the
// projector into the decoder width: docs/model.md sections 2, 3 and 9. Built only from differentiable ops.
#include "model/vision.h"

#include <cmath>
#include <string>

#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "runtime/error.h"

namespace moon::model {
namespace {

// torch's cubic convolution kernel (a = -0.75) for |x| <= 1 and for 1 < |x| < 2.
double cubic_near(double x, double a) { return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0; }
double cubic_far(double x, double a) { return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a; }

// The ViT MLP activation named by vision.act.
Tensor activation(const Tensor& x, const std::string& act) {
  if (act == "gelu_tanh") return gelu(x, GeluApprox::Tanh);
  if (act == "gelu") return gelu(x, GeluApprox::Erf);
  if (act == "quick_gelu") return mul(x, sigmoid(scale(x, 1.702)));
  fail("vision: unknown activation '", act, "' (expected gelu_tanh, quick_gelu or gelu)");
}

// Checks pixels against (Bi, 3, S, S) f32 with S a positive multiple of the patch size.
void check_pixels(const Tensor& pixels, int64_t patch) {
  MOON_CHECK(pixels.defined(), "vision: pixels is undefined; expected (Bi, 3, S, S) f32");
  const std::string expected =
      "expected (Bi, 3, S, S) f32 with S a positive multiple of the patch size " + std::to_string(patch);
  MOON_CHECK(pixels.dim() == 4, "vision: pixels ", pixels.desc(), " has rank ", pixels.dim(), "; ", expected);
  MOON_CHECK(pixels.dtype() == DType::F32, "vision: pixels ", pixels.desc(), " is not f32; ", expected);
  MOON_CHECK(pixels.size(0) >= 1, "vision: pixels ", pixels.desc(), " holds no image; ", expected);
  MOON_CHECK(pixels.size(1) == 3, "vision: pixels ", pixels.desc(), " has ", pixels.size(1), " channels, not 3; ",
             expected);
  MOON_CHECK(pixels.size(2) == pixels.size(3), "vision: pixels ", pixels.desc(), " is not square; ", expected);
  MOON_CHECK(pixels.size(2) >= patch && pixels.size(2) % patch == 0, "vision: pixels ", pixels.desc(), " has side ",
             pixels.size(2), ", not a multiple of the patch size; ", expected);
}

}  // namespace

// ---------------------------------------------------------------------------------------------- encoder

VisionEncoder::VisionEncoder(const VisionConfig& config, ParamStore& params) : config_(config) {
  const int64_t Cv = config.hidden, P = config.patch_size, I = config.mlp;
  const std::string pre = "vision_model.";
  const double out_std = 0.02 / std::sqrt(2.0 * static_cast<double>(config.layers));
  patch_w_ = params.normal(pre + "embeddings.patch_embedding.weight", {Cv, 3, P, P}, 0.02);  // (Cv, 3, P, P)
  if (!config.class_token()) patch_b_ = params.constant(pre + "embeddings.patch_embedding.bias", {Cv}, 0.0);
  if (config.class_token()) class_emb_ = params.normal(pre + "embeddings.class_embedding", {Cv}, 0.02);
  const int64_t positions = config.patches() + (config.class_token() ? 1 : 0);
  pos_emb_ = params.normal(pre + "embeddings.position_embedding.weight", {positions, Cv}, 0.02);  // (N[+1], Cv)
  if (config.class_token()) {
    pre_ln_w_ = params.constant(pre + "pre_layrnorm.weight", {Cv}, 1.0);
    pre_ln_b_ = params.constant(pre + "pre_layrnorm.bias", {Cv}, 0.0);
  }
  for (int64_t i = 0; i < config.layers; ++i) {
    const std::string p = pre + "encoder.layers." + std::to_string(i) + ".";
    Layer l;
    l.ln1_w = params.constant(p + "layer_norm1.weight", {Cv}, 1.0);
    l.ln1_b = params.constant(p + "layer_norm1.bias", {Cv}, 0.0);
    l.q_w = params.normal(p + "self_attn.q_proj.weight", {Cv, Cv}, 0.02);
    l.q_b = params.constant(p + "self_attn.q_proj.bias", {Cv}, 0.0);
    l.k_w = params.normal(p + "self_attn.k_proj.weight", {Cv, Cv}, 0.02);
    l.k_b = params.constant(p + "self_attn.k_proj.bias", {Cv}, 0.0);
    l.v_w = params.normal(p + "self_attn.v_proj.weight", {Cv, Cv}, 0.02);
    l.v_b = params.constant(p + "self_attn.v_proj.bias", {Cv}, 0.0);
    l.o_w = params.normal(p + "self_attn.out_proj.weight", {Cv, Cv}, out_std);
    l.o_b = params.constant(p + "self_attn.out_proj.bias", {Cv}, 0.0);
    l.ln2_w = params.constant(p + "layer_norm2.weight", {Cv}, 1.0);
    l.ln2_b = params.constant(p + "layer_norm2.bias", {Cv}, 0.0);
    l.fc1_w = params.normal(p + "mlp.fc1.weight", {I, Cv}, 0.02);
    l.fc1_b = params.constant(p + "mlp.fc1.bias", {I}, 0.0);
    l.fc2_w = params.normal(p + "mlp.fc2.weight", {Cv, I}, out_std);
    l.fc2_b = params.constant(p + "mlp.fc2.bias", {Cv}, 0.0);
    layers_.push_back(l);
  }
  post_ln_w_ = params.constant(pre + "post_layernorm.weight", {Cv}, 1.0);
  post_ln_b_ = params.constant(pre + "post_layernorm.bias", {Cv}, 0.0);
}

VisionOutput VisionEncoder::forward(const Tensor& pixels, const Compute& compute) const {
  const int64_t P = config_.patch_size, Cv = config_.hidden, H = config_.heads, dh = Cv / H;
  const double eps = config_.layer_norm_eps;
  check_pixels(pixels, P);
  const int64_t Bi = pixels.size(0), S = pixels.size(2), g = S / P, N = g * g;
  const bool cls = config_.class_token();
  const int64_t first = cls ? 1 : 0;  // index of the first patch token
  const int64_t L = N + first;        // tokens per image

  // (Bi, 3, S, S) -> (Bi, 3, g, P, g, P) -> (Bi, g, g, 3, P, P) -> (Bi, N, 3*P*P), patches row-major
  Tensor patches = pixels.reshape({Bi, 3, g, P, g, P}).permute({0, 2, 4, 1, 3, 5}).reshape({Bi, N, 3 * P * P});
  Tensor x = dense(patches, patch_w_.reshape({Cv, 3 * P * P}), patch_b_, compute);  // (Bi, N, Cv)
  if (cls) x = concat({class_emb_.reshape({1, 1, Cv}).expand({Bi, 1, Cv}), x}, 1);  // (Bi, N+1, Cv)

  Tensor pos = pos_emb_;  // (L, Cv) at the config's size
  const int64_t g0 = config_.grid();
  if (g != g0) {
    Tensor grid = pos_emb_.slice(0, first, first + g0 * g0);                         // (g0*g0, Cv)
    Tensor resize = bicubic_matrix(g0, g);                                           // (g, g0)
    Tensor rows = matmul(resize, grid.reshape({g0, g0 * Cv})).reshape({g, g0, Cv});  // (g, g0, Cv) along y
    Tensor both = matmul(resize, rows).reshape({N, Cv});                             // (g, g, Cv) along x
    pos = cls ? concat({pos_emb_.slice(0, 0, 1), both}, 0) : both;                   // (L, Cv)
  }
  x = add(x, pos);  // (Bi, L, Cv)
  if (cls) x = layer_norm(x, pre_ln_w_, pre_ln_b_, eps);

  AttentionOptions attn;  // full attention, scale 1/sqrt(dh)
  attn.scale = 1.0 / std::sqrt(static_cast<double>(dh));
  VisionOutput out;
  for (const Layer& l : layers_) {
    Tensor a = layer_norm(x, l.ln1_w, l.ln1_b, eps);  // (Bi, L, Cv)
    // (Bi, L, Cv) -> (Bi, H, L, dh)
    auto heads = [&](const Tensor& w, const Tensor& b) {
      return dense(a, w, b, compute).reshape({Bi, L, H, dh}).transpose(1, 2);
    };
    Tensor o = scaled_dot_product_attention(heads(l.q_w, l.q_b), heads(l.k_w, l.k_b), heads(l.v_w, l.v_b), attn);
    o = o.transpose(1, 2).reshape({Bi, L, Cv});          // (Bi, L, Cv)
    Tensor h = add(x, dense(o, l.o_w, l.o_b, compute));  // (Bi, L, Cv)
    Tensor m = layer_norm(h, l.ln2_w, l.ln2_b, eps);
    m = config_.act == "quick_gelu"
            ? activation(dense(m, l.fc1_w, l.fc1_b, compute), config_.act)
            : dense_gelu(m, l.fc1_w, l.fc1_b, config_.act == "gelu_tanh" ? GeluApprox::Tanh : GeluApprox::Erf, compute);
    m = dense(m, l.fc2_w, l.fc2_b, compute);  // (Bi, L, Cv)
    x = add(h, m);                                            // (Bi, L, Cv)
    out.layer_outputs.push_back(cls ? x.slice(1, 1, L) : x);  // (Bi, N, Cv)
  }
  Tensor last = cls ? x.slice(1, 1, L) : x;                      // (Bi, N, Cv)
  out.features = layer_norm(last, post_ln_w_, post_ln_b_, eps);  // (Bi, N, Cv)
  return out;
}

// ---------------------------------------------------------------------------------------------- helpers

Tensor merge_patches(const Tensor& tokens, int64_t merge) {
  MOON_CHECK(tokens.defined() && tokens.dim() == 3, "merge_patches: expected tokens (Bi, N, c), got ",
             tokens.defined() ? tokens.desc() : std::string("an undefined tensor"));
  MOON_CHECK(merge >= 1, "merge_patches: the merge must be >= 1, got ", merge);
  if (merge == 1) return tokens;
  const int64_t Bi = tokens.size(0), N = tokens.size(1), c = tokens.size(2);
  int64_t g = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(N))));
  MOON_CHECK(g * g == N, "merge_patches: tokens ", tokens.desc(), " has N = ", N, " patches, not a square grid (g*g)");
  MOON_CHECK(g % merge == 0, "merge_patches: the patch grid side g = ", g, " of tokens ", tokens.desc(),
             " is not divisible by the merge ", merge, "; use an image side that is a multiple of merge * patch size");
  const int64_t h = g / merge;
  // (Bi, N, c) -> (Bi, i, dy, j, dx, c) -> (Bi, i, j, dy, dx, c) -> (Bi, h*h, m*m*c)
  return tokens.reshape({Bi, h, merge, h, merge, c})
      .permute({0, 1, 3, 2, 4, 5})
      .reshape({Bi, h * h, merge * merge * c});
}

Tensor bicubic_matrix(int64_t in, int64_t out) {
  MOON_CHECK(in >= 1 && out >= 1, "bicubic_matrix: sizes must be >= 1, got in ", in, ", out ", out);
  const double a = -0.75;
  const double step = static_cast<double>(in) / static_cast<double>(out);  // torch: input / output size
  std::vector<float> w(static_cast<size_t>(out * in), 0.0f);               // (out, in) row-major
  for (int64_t o = 0; o < out; ++o) {
    const double src = (static_cast<double>(o) + 0.5) * step - 0.5;  // not clamped at 0 for cubic
    const double base = std::floor(src);
    const double t = src - base;
    const double coeff[4] = {cubic_far(t + 1.0, a), cubic_near(t, a), cubic_near(1.0 - t, a), cubic_far(2.0 - t, a)};
    for (int k = 0; k < 4; ++k) {
      int64_t idx = static_cast<int64_t>(base) - 1 + k;
      idx = idx < 0 ? 0 : (idx > in - 1 ? in - 1 : idx);  // clamped border
      w[static_cast<size_t>(o * in + idx)] += static_cast<float>(coeff[k]);
    }
  }
  return from_vector(w, {out, in});
}

// ---------------------------------------------------------------------------------------------- projector

Projector::Projector(const ModelConfig& config, ParamStore& params) : merge_(config.projector.merge) {
  const int64_t in = merge_ * merge_ * config.vision.hidden, Hp = config.projector.hidden, C = config.decoder.hidden;
  w1_ = params.normal("projector.linear_1.weight", {Hp, in}, 0.02);  // (Hp, m^2 Cv)
  b1_ = params.constant("projector.linear_1.bias", {Hp}, 0.0);
  w2_ = params.normal("projector.linear_2.weight", {C, Hp}, 0.02);  // (C, Hp)
  b2_ = params.constant("projector.linear_2.bias", {C}, 0.0);
}

Tensor Projector::forward(const Tensor& features, const Compute& compute) const {
  Tensor merged = merge_patches(features, merge_);  // (Bi, M, m^2 Cv)
  MOON_CHECK(merged.size(2) == w1_.size(1), "projector: features ", features.desc(), " have width ", features.size(2),
             " but the projector expects the vision width ", w1_.size(1) / (merge_ * merge_));
  Tensor h = dense_gelu(merged, w1_, b1_, GeluApprox::Erf, compute);  // (Bi, M, Hp)
  return dense(h, w2_, b2_, compute);                                  // (Bi, M, C)
}

}  // namespace moon::model
