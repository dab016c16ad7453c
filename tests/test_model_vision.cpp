// The vision side of the model (docs/model.md sections 2, 3, 6, 8): ViT encoder, patch merge, bicubic position
// interpolation, projector, FIRE and modality fusion. Forwards are checked against naive double-precision
// references written from the spec (loops, no tensor ops), gradients against central finite differences,
// the bicubic matrix against numbers printed by torch 1.13.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "model/fire.h"
#include "model/fusion.h"
#include "model/inputs.h"
#include "model/moon_model.h"
#include "model/vision.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"
#include "runtime/rng.h"
#include "test_util.h"

using namespace moon;
using namespace moon::model;
using moon::test::error_of;

namespace {

using Vec = std::vector<double>;

// A small ViT: patch 4, width 8, 2 heads, 2 layers, MLP 16.
VisionConfig tiny_vision(const std::string& style, int64_t image_size = 8) {
  VisionConfig v;
  v.style = style;
  v.image_size = image_size;
  v.patch_size = 4;
  v.hidden = 8;
  v.layers = 2;
  v.heads = 2;
  v.mlp = 16;
  v.act = style == "clip" ? "quick_gelu" : "gelu_tanh";
  v.layer_norm_eps = 1e-6;
  return v;
}

// A whole-model config around tiny_vision (decoder width 8, fusion 2 heads of 4, embedding 6), validated.
ModelConfig tiny_model(const std::string& style, int64_t merge, int64_t image_size = 8) {
  ModelConfig c;
  c.vision = tiny_vision(style, image_size);
  c.projector.merge = merge;
  c.projector.hidden = 12;
  c.decoder.vocab = 32;
  c.decoder.hidden = 8;
  c.decoder.layers = 2;
  c.decoder.heads = 2;
  c.decoder.kv_heads = 1;
  c.decoder.mlp = 16;
  c.moe.mlp = 16;
  c.fusion.enabled = true;
  c.fusion.heads = 2;
  c.fusion.width = 8;
  c.fire.enabled = true;
  c.fire.vision_layers = {1, 2, 2};
  c.fire.decoder_layers = {0, 1, 0};
  c.embedding.dim = 6;
  c.embedding.matryoshka = {};
  c.validate();
  return c;
}

// Every parameter redrawn: base + stddev * normal, base 1 for norm weights (so the checks see real values
// everywhere: nonzero biases and gates, attention that is not uniform). Order-free like the init: each parameter draws
// from its own stream, keyed by its name.
void randomize(ParamStore& ps, uint64_t seed, double stddev) {
  for (const auto& [name, p] : ps.all()) {
    const bool norm_weight = name.find("norm") != std::string::npos && name.ends_with(".weight");
    Generator gen(seed ^ fnv1a64(name));
    Tensor v = randn(p.shape(), gen);
    mul_(v, stddev);
    if (norm_weight) v = add_scalar(v, 1.0);
    ps.assign(name, v, "test");
  }
}

Vec get(const ParamStore& ps, const std::string& name) { return ps.get(name).to_vector<double>(); }

// Worst |got - want| / (1 + |want|) must stay within tol.
void check_close(const Tensor& got, const Vec& want, double tol, const std::string& what) {
  Vec g = got.contiguous().to_vector<double>();
  REQUIRE(g.size() == want.size());
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    double e = std::abs(g[i] - want[i]) / (1.0 + std::abs(want[i]));
    if (!(e <= worst)) worst = e, at = i;
  }
  INFO(what, ": worst error ", worst, " at ", at, " (got ", g[at], ", want ", want[at], ")");
  CHECK(worst <= tol);
}

// ---- naive references (double)

// (n, out) = x (n, in) W^T + b; b may be empty.
Vec ref_linear(const Vec& x, int64_t n, int64_t in, const Vec& w, const Vec& b, int64_t out) {
  Vec y(static_cast<size_t>(n * out));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = b.empty() ? 0.0 : b[o];
      for (int64_t i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
      y[r * out + o] = s;
    }
  return y;
}

// LayerNorm over rows of c.
Vec ref_layer_norm(const Vec& x, int64_t n, int64_t c, const Vec& w, const Vec& b, double eps) {
  Vec y(x.size());
  for (int64_t r = 0; r < n; ++r) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < c; ++i) mean += x[r * c + i] / c;
    for (int64_t i = 0; i < c; ++i) var += (x[r * c + i] - mean) * (x[r * c + i] - mean) / c;
    for (int64_t i = 0; i < c; ++i) y[r * c + i] = (x[r * c + i] - mean) / std::sqrt(var + eps) * w[i] + b[i];
  }
  return y;
}

double ref_act(double v, const std::string& act) {
  if (act == "gelu_tanh") return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
  if (act == "gelu") return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
  return v / (1 + std::exp(-1.702 * v));  // quick_gelu
}

// Multi-head attention of one sequence: q (Lq, c), k and v (Lk, c), H heads, keys kept where keep (empty:
// all); a query with no key gets zeros.
Vec ref_attention(const Vec& q, const Vec& k, const Vec& v, int64_t Lq, int64_t Lk, int64_t c, int64_t H,
                  const std::vector<uint8_t>& keep) {
  const int64_t dh = c / H;
  Vec out(static_cast<size_t>(Lq * c), 0.0);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < Lq; ++i) {
      Vec w(static_cast<size_t>(Lk), 0.0);
      double mx = -1e300, total = 0;
      for (int64_t j = 0; j < Lk; ++j) {
        if (!keep.empty() && !keep[j]) continue;
        double s = 0;
        for (int64_t d = 0; d < dh; ++d) s += q[i * c + h * dh + d] * k[j * c + h * dh + d];
        w[j] = s / std::sqrt(static_cast<double>(dh));
        mx = std::max(mx, w[j]);
      }
      for (int64_t j = 0; j < Lk; ++j)
        if (keep.empty() || keep[j]) total += (w[j] = std::exp(w[j] - mx));
      if (total == 0) continue;
      for (int64_t j = 0; j < Lk; ++j)
        if (keep.empty() || keep[j])
          for (int64_t d = 0; d < dh; ++d) out[i * c + h * dh + d] += w[j] / total * v[j * c + h * dh + d];
    }
  return out;
}

struct RefVit {
  Vec features;             // (Bi, N, Cv)
  std::vector<Vec> layers;  // [l] (Bi, N, Cv)
};

// The ViT of docs/model.md section 2 by loops: conv-style patch embedding, 2-D bicubic position resize.
RefVit ref_vit(const VisionConfig& vc, const ParamStore& ps, const Vec& pix, int64_t Bi, int64_t S) {
  const int64_t P = vc.patch_size, Cv = vc.hidden, g = S / P, N = g * g, g0 = vc.grid();
  const bool cls = vc.class_token();
  const int64_t first = cls ? 1 : 0, L = N + first;
  const std::string pre = "vision_model.";
  const double eps = vc.layer_norm_eps;
  Vec W = get(ps, pre + "embeddings.patch_embedding.weight");  // (Cv, 3, P, P)
  Vec bias = cls ? Vec(Cv, 0.0) : get(ps, pre + "embeddings.patch_embedding.bias");
  Vec pos = get(ps, pre + "embeddings.position_embedding.weight");  // (N0 [+1], Cv)
  Vec posg(static_cast<size_t>(N * Cv));                            // (N, Cv) at grid g
  Vec A = bicubic_matrix(g0, g).to_vector<double>();                // (g, g0)
  for (int64_t i = 0; i < g; ++i)
    for (int64_t j = 0; j < g; ++j)
      for (int64_t c = 0; c < Cv; ++c) {
        double s = 0;
        for (int64_t a = 0; a < g0; ++a)
          for (int64_t b = 0; b < g0; ++b) {
            const double wgt = g == g0 ? double(a == i && b == j) : A[i * g0 + a] * A[j * g0 + b];
            s += wgt * pos[(first + a * g0 + b) * Cv + c];
          }
        posg[(i * g + j) * Cv + c] = s;
      }
  RefVit out;
  out.layers.resize(static_cast<size_t>(vc.layers));
  for (int64_t img = 0; img < Bi; ++img) {
    Vec x(static_cast<size_t>(L * Cv));
    if (cls) {
      Vec ce = get(ps, pre + "embeddings.class_embedding");
      for (int64_t c = 0; c < Cv; ++c) x[c] = ce[c] + pos[c];
    }
    for (int64_t gy = 0; gy < g; ++gy)
      for (int64_t gx = 0; gx < g; ++gx)
        for (int64_t o = 0; o < Cv; ++o) {
          double s = bias[o];
          for (int64_t ch = 0; ch < 3; ++ch)
            for (int64_t py = 0; py < P; ++py)
              for (int64_t px = 0; px < P; ++px)
                s += W[((o * 3 + ch) * P + py) * P + px] * pix[((img * 3 + ch) * S + gy * P + py) * S + gx * P + px];
          x[(first + gy * g + gx) * Cv + o] = s + posg[(gy * g + gx) * Cv + o];
        }
    if (cls)
      x = ref_layer_norm(x, L, Cv, get(ps, pre + "pre_layrnorm.weight"), get(ps, pre + "pre_layrnorm.bias"), eps);
    for (int64_t l = 0; l < vc.layers; ++l) {
      const std::string p = pre + "encoder.layers." + std::to_string(l) + ".";
      auto lin = [&](const Vec& in, int64_t n, int64_t i, const std::string& name, int64_t o) {
        return ref_linear(in, n, i, get(ps, p + name + ".weight"), get(ps, p + name + ".bias"), o);
      };
      Vec a = ref_layer_norm(x, L, Cv, get(ps, p + "layer_norm1.weight"), get(ps, p + "layer_norm1.bias"), eps);
      Vec att = ref_attention(lin(a, L, Cv, "self_attn.q_proj", Cv), lin(a, L, Cv, "self_attn.k_proj", Cv),
                              lin(a, L, Cv, "self_attn.v_proj", Cv), L, L, Cv, vc.heads, {});
      Vec o = lin(att, L, Cv, "self_attn.out_proj", Cv);
      for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
      Vec m = ref_layer_norm(x, L, Cv, get(ps, p + "layer_norm2.weight"), get(ps, p + "layer_norm2.bias"), eps);
      Vec f = lin(m, L, Cv, "mlp.fc1", vc.mlp);
      for (double& v : f) v = ref_act(v, vc.act);
      Vec f2 = lin(f, L, vc.mlp, "mlp.fc2", Cv);
      for (size_t i = 0; i < x.size(); ++i) x[i] += f2[i];
      out.layers[l].insert(out.layers[l].end(), x.begin() + first * Cv, x.end());
    }
    Vec fin =
        ref_layer_norm(x, L, Cv, get(ps, pre + "post_layernorm.weight"), get(ps, pre + "post_layernorm.bias"), eps);
    out.features.insert(out.features.end(), fin.begin() + first * Cv, fin.end());
  }
  return out;
}

// merge by the index formula of docs/model.md section 3 (any m): (Bi, N, c) -> (Bi, N/m^2, m^2 c).
Vec ref_merge(const Vec& u, int64_t Bi, int64_t N, int64_t c, int64_t m) {
  const int64_t g = static_cast<int64_t>(std::llround(std::sqrt(double(N)))), h = g / m;
  Vec out(u.size());
  for (int64_t b = 0; b < Bi; ++b)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < h; ++j)
        for (int64_t dy = 0; dy < m; ++dy)
          for (int64_t dx = 0; dx < m; ++dx)
            for (int64_t ch = 0; ch < c; ++ch)
              out[((b * h * h + i * h + j) * m * m + dy * m + dx) * c + ch] =
                  u[(b * N + (m * i + dy) * g + m * j + dx) * c + ch];
  return out;
}

// ---- finite differences

struct Probe {
  Tensor t;  // a contiguous f32 leaf that requires grad
  std::string what;
  std::vector<int64_t> at;  // element indices; empty = first, middle, last
};

// One OpenMP thread for its scope: the hundreds of tiny forwards of a finite-difference check are dominated
// by parallel-region overhead (and by spin-waiting when the machine is busy), not by arithmetic.
struct SingleThread {
  int previous = omp_get_max_threads();
  SingleThread() { omp_set_num_threads(1); }
  ~SingleThread() { omp_set_num_threads(previous); }
};

// d/dt of sum_k <outs_k, R_k> (R_k fixed random) by autograd vs central differences at the probed elements.
void check_gradients(const std::function<std::vector<Tensor>()>& run, const std::vector<Probe>& probes, uint64_t seed,
                     double eps = 2e-2, double tol_abs = 1e-3, double tol_rel = 3e-3) {
  SingleThread single_thread;
  std::vector<Tensor> outs = run();
  Generator gen(seed);
  std::vector<Tensor> R;
  for (const Tensor& o : outs) R.push_back(randn(o.shape(), gen));
  Tensor loss;
  for (size_t k = 0; k < outs.size(); ++k) {
    Tensor term = sum(mul(outs[k], R[k]));
    loss = loss.defined() ? add(loss, term) : term;
  }
  for (const Probe& p : probes) Tensor(p.t).zero_grad();
  loss.backward();
  auto value = [&] {
    NoGradGuard no_grad;
    std::vector<Tensor> o = run();
    double s = 0;
    for (size_t k = 0; k < o.size(); ++k) {
      Vec a = o[k].contiguous().to_vector<double>(), r = R[k].to_vector<double>();
      for (size_t i = 0; i < a.size(); ++i) s += a[i] * r[i];
    }
    return s;
  };
  for (const Probe& p : probes) {
    REQUIRE(p.t.grad().defined());
    Vec analytic = p.t.grad().contiguous().to_vector<double>();
    const int64_t n = p.t.numel();
    std::vector<int64_t> at = p.at.empty() ? std::vector<int64_t>{0, n / 2, n - 1} : p.at;
    float* d = p.t.data<float>();
    for (int64_t i : at) {
      // five-point stencil (error O(eps^4)); the steps actually taken in f32 are used
      const float keep = d[i];
      auto at_offset = [&](double k) {
        d[i] = keep + static_cast<float>(k * eps);
        const double v = value();
        return std::pair<double, double>{double(d[i]) - double(keep), v};
      };
      auto [h1, p1] = at_offset(1);
      auto [m1, n1] = at_offset(-1);
      auto [h2, p2] = at_offset(2);
      auto [m2, n2] = at_offset(-2);
      d[i] = keep;
      const double numeric = (4.0 / 3.0) * (p1 - n1) / (h1 - m1) - (1.0 / 3.0) * (p2 - n2) / (h2 - m2);
      INFO(p.what, "[", i, "]: autograd ", analytic[i], ", finite difference ", numeric);
      CHECK(std::abs(analytic[i] - numeric) <= tol_abs + tol_rel * std::abs(numeric));
    }
  }
}

Tensor random_tensor(const Shape& shape, uint64_t seed, bool grad = false) {
  Generator gen(seed);
  Tensor t = randn(shape, gen);
  if (grad) t.set_requires_grad(true);
  return t;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  Tensor x = a.contiguous(), y = b.contiguous();
  return x.shape() == y.shape() && std::memcmp(x.raw_data(), y.raw_data(), size_t(x.numel()) * 4) == 0;
}

}  // namespace

TEST_SUITE("model_vision") {
  TEST_CASE("bicubic_matrix equals torch interpolate(mode=bicubic, align_corners=False)") {
    // Printed by torch 1.13 (/usr/bin/python3): interpolate of the identity, (out, in) rows. A 2-D resize of
    // a random grid by torch equals A x A^T with these matrices to 4e-16 (it is separable).
    const std::vector<std::vector<double>> up46 = {{1.08680556, -0.0868055556, 0, 0},
                                                   {0.5, 0.59375, -0.09375, 0},
                                                   {-0.0868055556, 0.943287037, 0.16087963, -0.0173611111},
                                                   {-0.0173611111, 0.16087963, 0.943287037, -0.0868055556},
                                                   {0, -0.09375, 0.59375, 0.5},
                                                   {0, 0, -0.0868055556, 1.08680556}};
    const std::vector<std::vector<double>> down64 = {{0.7734375, 0.26171875, -0.03515625, 0, 0, 0},
                                                     {-0.03515625, 0.26171875, 0.87890625, -0.10546875, 0, 0},
                                                     {0, 0, -0.10546875, 0.87890625, 0.26171875, -0.03515625},
                                                     {0, 0, 0, -0.03515625, 0.26171875, 0.7734375}};
    const std::vector<std::vector<double>> up25 = {
        {1.11025, -0.11025}, {0.918, 0.082}, {0.5, 0.5}, {0.082, 0.918}, {-0.11025, 1.11025}};
    const std::vector<std::vector<double>> down43 = {{0.856481481, 0.16087963, -0.0173611111, 0},
                                                     {-0.09375, 0.59375, 0.59375, -0.09375},
                                                     {0, -0.0173611111, 0.16087963, 0.856481481}};
    auto check = [](int64_t in, int64_t out, const std::vector<std::vector<double>>& want) {
      Tensor m = bicubic_matrix(in, out);
      REQUIRE(m.shape() == Shape({out, in}));
      Vec got = m.to_vector<double>();
      for (int64_t o = 0; o < out; ++o)
        for (int64_t i = 0; i < in; ++i) {
          INFO("bicubic_matrix(", in, ", ", out, ")[", o, ", ", i, "]");
          CHECK(got[o * in + i] == doctest::Approx(want[o][i]).epsilon(1e-6));
        }
    };
    check(4, 6, up46);
    check(6, 4, down64);
    check(2, 5, up25);
    check(4, 3, down43);
    Vec same = bicubic_matrix(5, 5).to_vector<double>();  // the same size is the identity
    for (int64_t i = 0; i < 25; ++i) CHECK(same[i] == (i % 6 == 0 ? 1.0 : 0.0));
  }

  TEST_CASE("merge_patches follows the index formula (arange input), m = 1 is the identity") {
    const int64_t Bi = 2, g = 4, N = g * g, c = 3;
    Tensor u = arange(0, double(Bi * N * c)).reshape({Bi, N, c});
    Tensor merged = merge_patches(u, 2);
    REQUIRE(merged.shape() == Shape({Bi, N / 4, 4 * c}));
    Vec m = merged.contiguous().to_vector<double>();
    for (int64_t b = 0; b < Bi; ++b)
      for (int64_t i = 0; i < g / 2; ++i)
        for (int64_t j = 0; j < g / 2; ++j)
          for (int64_t dy = 0; dy < 2; ++dy)
            for (int64_t dx = 0; dx < 2; ++dx)
              for (int64_t ch = 0; ch < c; ++ch) {
                const double want = double((b * N + (2 * i + dy) * g + 2 * j + dx) * c + ch);
                CHECK(m[((b * (g / 2) + i) * (g / 2) + j) * 4 * c + (2 * dy + dx) * c + ch] == want);
              }
    CHECK(merge_patches(u, 1).same(u));
    CHECK(error_of([&] {
            merge_patches(arange(0, 2 * 9 * 3).reshape({2, 9, 3}), 2);
          }) ==
          "merge_patches: the patch grid side g = 3 of tokens f32(2, 9, 3)@cpu is not divisible by the merge 2; use "
          "an image side that is a multiple of merge * patch size");
    CHECK(error_of([&] {
            merge_patches(arange(0, 2 * 8 * 3).reshape({2, 8, 3}), 2);
          }) == "merge_patches: tokens f32(2, 8, 3)@cpu has N = 8 patches, not a square grid (g*g)");
  }

  TEST_CASE("output shapes: siglip and clip, merge 1 and 2, the config's size and interpolated sizes") {
    for (const char* style : {"siglip", "clip"})
      for (int64_t merge : {1, 2})
        for (int64_t side : {8, 16, 24}) {
          INFO(std::string(style), " merge ", merge, " side ", side);
          ModelConfig cfg = tiny_model(style, merge);
          ParamStore ps(1);
          VisionEncoder vit(cfg.vision, ps);
          Projector proj(cfg, ps);
          Fire fire(cfg, ps);
          const int64_t Bi = 3, g = side / 4, N = g * g, M = N / (merge * merge);
          VisionOutput vo = vit.forward(random_tensor({Bi, 3, side, side}, 7), Compute{});
          CHECK(vo.features.shape() == Shape({Bi, N, 8}));
          REQUIRE(vo.layer_outputs.size() == 2);
          for (const Tensor& l : vo.layer_outputs) CHECK(l.shape() == Shape({Bi, N, 8}));
          CHECK(proj.forward(vo.features, Compute{}).shape() == Shape({Bi, M, 8}));
          std::vector<Tensor> r = fire.project(vo.layer_outputs, Compute{});
          REQUIRE(r.size() == 3);
          for (const Tensor& t : r) CHECK(t.shape() == Shape({Bi, M, 8}));
        }
    // parameter names and shapes of docs/model.md
    ParamStore clip_ps(0), siglip_ps(0);
    VisionEncoder clip(tiny_vision("clip"), clip_ps), siglip(tiny_vision("siglip"), siglip_ps);
    CHECK(clip_ps.get("vision_model.embeddings.position_embedding.weight").shape() == Shape({5, 8}));
    CHECK(clip_ps.get("vision_model.embeddings.class_embedding").shape() == Shape({8}));
    CHECK(clip_ps.contains("vision_model.pre_layrnorm.bias"));
    CHECK(!clip_ps.contains("vision_model.embeddings.patch_embedding.bias"));
    CHECK(siglip_ps.get("vision_model.embeddings.position_embedding.weight").shape() == Shape({4, 8}));
    CHECK(siglip_ps.get("vision_model.embeddings.patch_embedding.weight").shape() == Shape({8, 3, 4, 4}));
    CHECK(siglip_ps.get("vision_model.encoder.layers.1.mlp.fc1.weight").shape() == Shape({16, 8}));
    CHECK(!siglip_ps.contains("vision_model.embeddings.class_embedding"));
    CHECK(siglip_ps.all().size() == 5 + 2 * 16);
    CHECK(clip_ps.all().size() == 7 + 2 * 16);
  }

  TEST_CASE("VisionEncoder forward equals the naive reference (every style, activation, resized grids)") {
    struct Case {
      const char* style;
      const char* act;
      int64_t side;
    };
    for (Case cs : {Case{"siglip", "gelu_tanh", 8}, Case{"siglip", "gelu", 16}, Case{"siglip", "gelu_tanh", 12},
                    Case{"clip", "quick_gelu", 8}, Case{"clip", "quick_gelu", 16}, Case{"clip", "gelu", 4}}) {
      INFO(std::string(cs.style), " ", cs.act, " side ", cs.side);
      VisionConfig vc = tiny_vision(cs.style);
      vc.act = cs.act;
      ParamStore ps(3);
      VisionEncoder vit(vc, ps);
      randomize(ps, 11, 0.4);
      const int64_t Bi = 2;
      Tensor pixels = random_tensor({Bi, 3, cs.side, cs.side}, 5);
      VisionOutput vo = vit.forward(pixels, Compute{});
      RefVit ref = ref_vit(vc, ps, pixels.to_vector<double>(), Bi, cs.side);
      check_close(vo.features, ref.features, 1e-4, "features");
      check_close(vo.layer_outputs[0], ref.layers[0], 1e-4, "layer 1");
      check_close(vo.layer_outputs[1], ref.layers[1], 1e-4, "layer 2");
      // bf16 compute stays close to f32
      VisionOutput vb = vit.forward(pixels, Compute{DType::BF16});
      check_close(vb.features, ref.features, 6e-2, "features (bf16 compute)");
      // Inference with the GELU fused into the fc1 GEMM (moon embed / eval), in f32 and bf16 compute.
      NoGradGuard no_grad;
      check_close(vit.forward(pixels, Compute{DType::F32, true}).features, ref.features, 1e-4, "features (fused)");
      check_close(vit.forward(pixels, Compute{DType::BF16, true}).features, ref.features, 6e-2,
                  "features (fused, bf16 compute)");
    }
  }

  TEST_CASE("Projector forward equals merge + linear_1 + gelu(erf) + linear_2") {
    for (int64_t merge : {1, 2}) {
      ModelConfig cfg = tiny_model("siglip", merge);
      ParamStore ps(2);
      Projector proj(cfg, ps);
      randomize(ps, 3, 0.3);
      const int64_t Bi = 2, N = 16, Cv = 8, M = N / (merge * merge), in = merge * merge * Cv;
      Tensor f = random_tensor({Bi, N, Cv}, 9);
      Vec h = ref_linear(ref_merge(f.to_vector<double>(), Bi, N, Cv, merge), Bi * M, in,
                         get(ps, "projector.linear_1.weight"), get(ps, "projector.linear_1.bias"), 12);
      for (double& v : h) v = ref_act(v, "gelu");
      Vec want = ref_linear(h, Bi * M, 12, get(ps, "projector.linear_2.weight"), get(ps, "projector.linear_2.bias"), 8);
      check_close(proj.forward(f, Compute{}), want, 1e-5, "projector");
      NoGradGuard no_grad;
      check_close(proj.forward(f, Compute{DType::F32, true}), want, 1e-5, "projector (fused GELU)");
    }
  }

  TEST_CASE("VisionEncoder gradients match finite differences (siglip, clip, resized)") {
    // siglip at the config's size, clip resized (each style and both position paths once)
    for (auto [style, side] : {std::pair<const char*, int64_t>{"siglip", 8}, {"clip", 12}}) {
      INFO(std::string(style), " side ", side);
      VisionConfig vc = tiny_vision(style);
      ParamStore ps(4);
      VisionEncoder vit(vc, ps);
      randomize(ps, 21, 0.4);
      Tensor pixels = random_tensor({2, 3, side, side}, 6, true);
      auto run = [&] {
        VisionOutput vo = vit.forward(pixels, Compute{});
        return std::vector<Tensor>{vo.features, vo.layer_outputs[0]};
      };
      const std::string p = "vision_model.";
      std::vector<Probe> probes = {{pixels, "pixels", {}},
                                   {ps.get(p + "embeddings.patch_embedding.weight"), "patch_embedding.weight", {}},
                                   {ps.get(p + "embeddings.position_embedding.weight"), "position_embedding", {}},
                                   {ps.get(p + "encoder.layers.0.self_attn.q_proj.weight"), "q_proj.weight", {}},
                                   {ps.get(p + "encoder.layers.0.self_attn.k_proj.bias"), "k_proj.bias", {}},
                                   {ps.get(p + "encoder.layers.1.self_attn.v_proj.weight"), "v_proj.weight", {}},
                                   {ps.get(p + "encoder.layers.1.mlp.fc1.weight"), "fc1.weight", {}},
                                   {ps.get(p + "encoder.layers.0.layer_norm1.weight"), "layer_norm1.weight", {}},
                                   {ps.get(p + "post_layernorm.bias"), "post_layernorm.bias", {}}};
      if (vc.class_token()) {
        probes.push_back({ps.get(p + "embeddings.class_embedding"), "class_embedding", {}});
        probes.push_back({ps.get(p + "pre_layrnorm.weight"), "pre_layrnorm.weight", {}});
      } else {
        probes.push_back({ps.get(p + "embeddings.patch_embedding.bias"), "patch_embedding.bias", {}});
      }
      check_gradients(run, probes, 99);
    }
  }

  TEST_CASE("bad pixel shapes are errors naming the expected shape") {
    ParamStore ps(0);
    VisionEncoder vit(tiny_vision("siglip"), ps);
    auto err = [&](const Tensor& px) { return error_of([&] { vit.forward(px, Compute{}); }); };
    const std::string want = "; expected (Bi, 3, S, S) f32 with S a positive multiple of the patch size 4";
    CHECK(err(zeros({2, 3, 8})) == "vision: pixels f32(2, 3, 8)@cpu has rank 3" + want);
    CHECK(err(zeros({2, 1, 8, 8})) == "vision: pixels f32(2, 1, 8, 8)@cpu has 1 channels, not 3" + want);
    CHECK(err(zeros({2, 3, 8, 12})) == "vision: pixels f32(2, 3, 8, 12)@cpu is not square" + want);
    CHECK(err(zeros({2, 3, 10, 10})) ==
          "vision: pixels f32(2, 3, 10, 10)@cpu has side 10, not a multiple of the patch size" + want);
    CHECK(err(zeros({2, 3, 0, 0})) ==
          "vision: pixels f32(2, 3, 0, 0)@cpu has side 0, not a multiple of the patch size" + want);
    CHECK(err(zeros({0, 3, 8, 8})) == "vision: pixels f32(0, 3, 8, 8)@cpu holds no image" + want);
    CHECK(err(zeros({2, 3, 8, 8}, DType::BF16)) == "vision: pixels bf16(2, 3, 8, 8)@cpu is not f32" + want);
    CHECK(err(Tensor()) == "vision: pixels is undefined; expected (Bi, 3, S, S) f32");
    // a grid the projector cannot merge
    ModelConfig cfg = tiny_model("siglip", 2);
    ParamStore ps2(0);
    VisionEncoder vit2(cfg.vision, ps2);
    Projector proj(cfg, ps2);
    VisionOutput vo = vit2.forward(zeros({1, 3, 12, 12}), Compute{});
    CHECK(error_of([&] { proj.forward(vo.features, Compute{}); }) ==
          "merge_patches: the patch grid side g = 3 of tokens f32(1, 9, 8)@cpu is not divisible by the merge 2; use "
          "an image side that is a multiple of merge * patch size");
  }
}

TEST_SUITE("model_vision") {
  // Shared FIRE fixture: 3 rows (image+text, text only, image+text), T = 7, Bi = 2 images of M = 4 tokens.
  struct FireCase {
    ModelConfig cfg = tiny_model("siglip", 2);
    ParamStore ps{5};
    Fire fire{cfg, ps};
    std::vector<Tensor> layers = {random_tensor({2, 16, 8}, 31, true), random_tensor({2, 16, 8}, 32, true)};
    Tensor x = random_tensor({3, 7, 8}, 33, true);
    Tensor slots = from_vector(std::vector<int64_t>{-1, 0,  1,  2,  3,  -1, -1,  //
                                                    -1, -1, -1, -1, -1, -1, -1,  //
                                                    -1, -1, 4,  5,  6,  7,  -1},
                               {3, 7}, DType::I64);
  };

  TEST_CASE("FIRE with fresh (zero) gates is exactly the identity; proj gets zero gradient, the gate does not") {
    FireCase fc;
    std::vector<Tensor> r = fc.fire.project(fc.layers, Compute{});
    Tensor y0 = fc.fire.inject(0, fc.x, r, fc.slots);
    Tensor y1 = fc.fire.inject(1, y0, r, fc.slots);
    CHECK(bitwise_equal(y0, fc.x));
    CHECK(bitwise_equal(y1, fc.x));
    CHECK(fc.fire.inject(5, fc.x, r, fc.slots).same(fc.x));  // no pair at layer 5
    sum(mul(y1, random_tensor({3, 7, 8}, 34))).backward();
    for (int j = 0; j < 3; ++j) {
      const std::string p = "fire." + std::to_string(j) + ".";
      INFO(p);
      for (const char* name : {"proj.weight", "proj.bias", "norm.weight"}) {
        Tensor g = fc.ps.get(p + name).grad();
        REQUIRE(g.defined());
        for (double v : g.to_vector<double>()) CHECK(v == 0.0);
      }
      double gate_norm = 0;
      for (double v : fc.ps.get(p + "gate").grad().to_vector<double>()) gate_norm += std::abs(v);
      CHECK(gate_norm > 0.1);
    }
  }

  TEST_CASE("FIRE with nonzero gates equals x + sum_j gate_j * r_j[slot] at vision positions") {
    FireCase fc;
    randomize(fc.ps, 8, 0.5);
    std::vector<Tensor> r = fc.fire.project(fc.layers, Compute{});
    const int64_t Bi = 2, N = 16, Cv = 8, C = 8, M = 4;
    // r_j by hand: layer norm, merge by the index formula, linear
    for (int j = 0; j < 3; ++j) {
      const std::string p = "fire." + std::to_string(j) + ".";
      Vec normed = ref_layer_norm(fc.layers[fc.cfg.fire.vision_layers[j] - 1].to_vector<double>(), Bi * N, Cv,
                                  get(fc.ps, p + "norm.weight"), get(fc.ps, p + "norm.bias"), 1e-6);
      Vec want = ref_linear(ref_merge(normed, Bi, N, Cv, 2), Bi * M, 4 * Cv, get(fc.ps, p + "proj.weight"),
                            get(fc.ps, p + "proj.bias"), C);
      check_close(r[j], want, 1e-5, p + "r");
    }
    std::vector<int64_t> slots = fc.slots.to_vector<int64_t>();
    for (int64_t layer : {0, 1}) {
      Vec want = fc.x.to_vector<double>();
      for (int j = 0; j < 3; ++j) {
        if (fc.cfg.fire.decoder_layers[j] != layer) continue;
        Vec gate = get(fc.ps, "fire." + std::to_string(j) + ".gate"), rj = r[j].to_vector<double>();
        for (int64_t bt = 0; bt < 21; ++bt)
          if (slots[bt] >= 0)
            for (int64_t c = 0; c < C; ++c) want[bt * C + c] += gate[c] * rj[slots[bt] * C + c];
      }
      check_close(fc.fire.inject(layer, fc.x, r, fc.slots), want, 1e-6, "inject layer " + std::to_string(layer));
    }
    // positions off the image are untouched bit for bit
    Tensor y = fc.fire.inject(0, fc.x, r, fc.slots);
    CHECK(bitwise_equal(y.select(1, 0), fc.x.select(1, 0)));
    CHECK(bitwise_equal(y.select(0, 1), fc.x.select(0, 1)));
  }

  TEST_CASE("FIRE gradients match finite differences (nonzero gates)") {
    FireCase fc;
    randomize(fc.ps, 9, 0.5);
    auto run = [&] {
      std::vector<Tensor> r = fc.fire.project(fc.layers, Compute{});
      Tensor y = fc.fire.inject(0, fc.x, r, fc.slots);
      return std::vector<Tensor>{fc.fire.inject(1, y, r, fc.slots)};
    };
    check_gradients(run,
                    {{fc.x, "x", {0, 8, 17, 130, 160}},
                     {fc.layers[0], "layer 1 output", {}},
                     {fc.layers[1], "layer 2 output", {}},
                     {fc.ps.get("fire.0.norm.weight"), "fire.0.norm.weight", {}},
                     {fc.ps.get("fire.2.norm.bias"), "fire.2.norm.bias", {}},
                     {fc.ps.get("fire.1.proj.weight"), "fire.1.proj.weight", {}},
                     {fc.ps.get("fire.2.proj.bias"), "fire.2.proj.bias", {}},
                     {fc.ps.get("fire.0.gate"), "fire.0.gate", {}},
                     {fc.ps.get("fire.1.gate"), "fire.1.gate", {}}},
                    77);
  }

  TEST_CASE("FIRE errors name the tensor") {
    FireCase fc;
    std::vector<Tensor> r = fc.fire.project(fc.layers, Compute{});
    CHECK(error_of([&] {
            fc.fire.inject(0, fc.x, r, zeros({3, 7}, DType::I64).slice(1, 0, 6));
          }) == "fire: vision_slot must be i64 (B, T) = (3, 7), got i64(3, 6)@cpu");
    CHECK(error_of([&] { fc.fire.inject(0, fc.x, {r[0]}, fc.slots); }) ==
          "fire: 1 projected features for 3 pairs; pass the result of Fire::project");
    CHECK(error_of([&] { fc.fire.project({fc.layers[0]}, Compute{}); }) ==
          "fire: pair 1 reads vision layer 2 but the encoder has 1 layer outputs (1-based)");
  }

  // Shared fusion fixture: B = 4 rows: image+text, image only, text only, image+text with 2 text keys.
  struct FusionCase {
    ModelConfig cfg = tiny_model("siglip", 2);
    ParamStore ps{6};
    Fusion fusion{cfg, ps};
    Tensor summary = random_tensor({4, 8}, 41, true);
    Tensor features = random_tensor({4, 16, 8}, 42, true);
    Tensor has_image = from_vector(std::vector<uint8_t>{1, 1, 0, 1}, {4}, DType::U8);
    Tensor embeds = random_tensor({4, 5, 8}, 43, true);
    Tensor text_mask = from_vector(std::vector<uint8_t>{1, 1, 1, 0, 0,  //
                                                        0, 0, 0, 0, 0,  //
                                                        0, 1, 1, 1, 1,  //
                                                        0, 1, 0, 1, 0},
                                   {4, 5}, DType::U8);
    Tensor run() { return fusion.forward(summary, features, has_image, embeds, text_mask, Compute{}); }
  };

  // docs/model.md section 8 by loops.
  Vec ref_fusion(FusionCase & fc) {
    const int64_t B = 4, C = 8, Cv = 8, F = 8, Hf = 2, dh = 4, N = 16, T = 5, D = 6;
    auto P = [&](const std::string& n) { return get(fc.ps, "fusion." + n); };
    auto lin = [&](const Vec& x, int64_t n, int64_t in, const std::string& name, int64_t out) {
      return ref_linear(x, n, in, P(name + ".weight"), P(name + ".bias"), out);
    };
    Vec s = fc.summary.to_vector<double>(), feats = fc.features.to_vector<double>(),
        emb = fc.embeds.to_vector<double>();
    std::vector<uint8_t> img = fc.has_image.to_vector<uint8_t>(), tm = fc.text_mask.to_vector<uint8_t>();
    Vec out;
    for (int64_t b = 0; b < B; ++b) {
      Vec sb(s.begin() + b * C, s.begin() + (b + 1) * C);
      Vec fb(feats.begin() + b * N * Cv, feats.begin() + (b + 1) * N * Cv);
      Vec eb(emb.begin() + b * T * C, emb.begin() + (b + 1) * T * C);
      std::vector<uint8_t> vis_keep(N, img[b]), txt_keep(tm.begin() + b * T, tm.begin() + (b + 1) * T);
      bool any_text = false;
      for (uint8_t k : txt_keep) any_text = any_text || k;
      Vec q = lin(sb, 1, C, "q_proj", F);
      Vec ov = ref_attention(q, lin(fb, N, Cv, "visual_k_proj", F), lin(fb, N, Cv, "visual_v_proj", F), 1, N, F, Hf,
                             vis_keep);
      Vec ot =
          ref_attention(q, lin(eb, T, C, "text_k_proj", F), lin(eb, T, C, "text_v_proj", F), 1, T, F, Hf, txt_keep);
      Vec os = lin(sb, 1, C, "summary_proj", F);
      Vec logits = lin(sb, 1, C, "gate_proj", 3 * Hf);
      Vec mixed(F);
      for (int64_t h = 0; h < Hf; ++h) {
        const bool on[3] = {true, img[b] != 0, any_text};
        double mx = -1e300, total = 0, w[3];
        for (int k = 0; k < 3; ++k)
          if (on[k]) mx = std::max(mx, logits[h * 3 + k]);
        for (int k = 0; k < 3; ++k) total += (w[k] = on[k] ? std::exp(logits[h * 3 + k] - mx) : 0.0);
        for (int64_t d = 0; d < dh; ++d) {
          const int64_t i = h * dh + d;
          mixed[i] = (w[0] * os[i] + w[1] * ov[i] + w[2] * ot[i]) / total;
        }
      }
      Vec f = lin(mixed, 1, F, "out_proj", D);
      out.insert(out.end(), f.begin(), f.end());
    }
    return out;
  }

  TEST_CASE("Fusion forward equals the naive reference (rows with and without image / text)") {
    FusionCase fc;
    randomize(fc.ps, 12, 0.5);
    Tensor f = fc.run();
    REQUIRE(f.shape() == Shape({4, 6}));
    check_close(f, ref_fusion(fc), 1e-5, "fusion");
    CHECK(fc.ps.get("fusion.gate_proj.weight").shape() == Shape({6, 8}));
    CHECK(fc.ps.get("fusion.visual_k_proj.weight").shape() == Shape({8, 8}));
    CHECK(fc.ps.get("fusion.out_proj.weight").shape() == Shape({6, 8}));
  }

  TEST_CASE("Fusion: a missing modality has weight exactly 0 (its inputs change nothing, get zero gradient)") {
    FusionCase fc;
    randomize(fc.ps, 13, 0.5);
    Tensor base = fc.run();
    {
      NoGradGuard no_grad;
      float* feats = fc.features.data<float>();  // row 2 has no image: scribble over its features
      for (int64_t i = 2 * 128; i < 3 * 128; ++i) feats[i] = 100.0f * std::sin(float(i));
      float* emb = fc.embeds.data<float>();  // row 1 has no text, row 3 masks keys 0, 2, 4
      for (int64_t i = 40; i < 80; ++i) emb[i] = -50.0f;
      for (int64_t t : {0, 2, 4})
        for (int64_t c = 0; c < 8; ++c) emb[(3 * 5 + t) * 8 + c] = 7.0f;
    }
    Tensor again = fc.run();
    CHECK(bitwise_equal(again, base));
    sum(mul(again, random_tensor({4, 6}, 44))).backward();
    Vec gf = fc.features.grad().to_vector<double>(), ge = fc.embeds.grad().to_vector<double>();
    double row0 = 0;
    for (int64_t i = 0; i < 128; ++i) row0 += std::abs(gf[i]);
    CHECK(row0 > 1e-3);
    for (int64_t i = 2 * 128; i < 3 * 128; ++i) CHECK(gf[i] == 0.0);
    for (int64_t i = 40; i < 80; ++i) CHECK(ge[i] == 0.0);
    // all three gate logits of a row without image and text: only the summary remains
    Tensor none = from_vector(std::vector<uint8_t>(20, 0), {4, 5}, DType::U8);
    Tensor no_image = zeros({4}, DType::U8);
    Tensor only_summary = fc.fusion.forward(fc.summary, fc.features, no_image, fc.embeds, none, Compute{});
    Vec os = ref_linear(fc.summary.to_vector<double>(), 4, 8, get(fc.ps, "fusion.summary_proj.weight"),
                        get(fc.ps, "fusion.summary_proj.bias"), 8);
    check_close(only_summary,
                ref_linear(os, 4, 8, get(fc.ps, "fusion.out_proj.weight"), get(fc.ps, "fusion.out_proj.bias"), 6), 1e-5,
                "summary only");
  }

  TEST_CASE("Fusion gradients match finite differences") {
    FusionCase fc;
    randomize(fc.ps, 14, 0.5);
    auto run = [&] { return std::vector<Tensor>{fc.run()}; };
    std::vector<Probe> probes = {{fc.summary, "summary", {}},
                                 {fc.features, "features", {0, 77, 300, 500}},
                                 {fc.embeds, "token_embeds", {0, 20, 100, 150}}};
    for (const char* n :
         {"q_proj.weight", "summary_proj.bias", "gate_proj.weight", "gate_proj.bias", "visual_k_proj.weight",
          "visual_v_proj.bias", "text_k_proj.weight", "text_v_proj.weight", "out_proj.weight", "out_proj.bias"})
      probes.push_back({fc.ps.get(std::string("fusion.") + n), n, {}});
    check_gradients(run, probes, 55);
  }

  TEST_CASE("Fusion shape errors name the tensor") {
    FusionCase fc;
    CHECK(error_of([&] {
            fc.fusion.forward(fc.summary, fc.features, fc.has_image, fc.embeds, zeros({4, 5}), Compute{});
          }) == "fusion: text_mask must be u8 (B, T) = (4, 5), got f32(4, 5)@cpu");
    CHECK(error_of([&] {
            fc.fusion.forward(fc.summary, fc.features.slice(0, 0, 3), fc.has_image, fc.embeds, fc.text_mask, Compute{});
          }) == "fusion: features must be (B, N, Cv) = (4, N, 8), got f32(3, 16, 8)@cpu");
  }
}

TEST_SUITE("model_vision") {
  // 4 rows: image+text, image only, text only, image+text (images of side `side`).
  ModelBatch mixed_batch(const ModelConfig& cfg, int64_t side, uint64_t seed) {
    Generator gen(seed);
    std::vector<InputRow> rows(4);
    rows[0].text = {9, 10, 11, 12};
    rows[0].image = 0;
    rows[1].image = 1;
    rows[2].text = {13, 14, 15, 16, 17, 18};
    rows[3].text = {19, 20};
    rows[3].image = 2;
    return assemble(rows, randn({3, 3, side, side}, gen), SpecialTokens{}, cfg);
  }

  TEST_CASE("MoonModel: FIRE with fresh gates gives exactly the model without FIRE (also at another image size)") {
    for (int64_t side : {8, 16}) {
      INFO("side ", side);
      ModelConfig on = tiny_model("clip", 2);
      ModelConfig off = on;
      off.fire.enabled = false;
      MoonModel with_fire(on), without(off);
      ModelBatch batch = mixed_batch(on, side, 3);
      ModelOutput a = with_fire.forward(batch), b = without.forward(batch);
      CHECK(bitwise_equal(a.hidden, b.hidden));
      CHECK(bitwise_equal(a.embedding, b.embedding));
      // nonzero gates change the hidden state at vision positions
      randomize(with_fire.params(), 4, 0.5);
      randomize(without.params(), 4, 0.5);
      for (int j = 0; j < 3; ++j) {
        NoGradGuard no_grad;
        Tensor gate = with_fire.params().get("fire." + std::to_string(j) + ".gate");
        gate.zero_();
      }
      CHECK(bitwise_equal(with_fire.forward(batch).embedding, without.forward(batch).embedding));
      {
        NoGradGuard no_grad;
        Tensor(with_fire.params().get("fire.0.gate")).fill_(0.5);
      }
      CHECK(!bitwise_equal(with_fire.forward(batch).embedding, without.forward(batch).embedding));
    }
  }

  TEST_CASE(
      "MoonModel with FIRE and fusion: parity-loss gradients reach every vision-side parameter and match "
      "finite differences") {
    ModelConfig cfg = tiny_model("siglip", 2);
    MoonModel model(cfg);
    randomize(model.params(), 5, 0.3);
    ModelBatch batch = mixed_batch(cfg, 8, 6);
    auto run = [&] { return std::vector<Tensor>{parity_loss(model.forward(batch), cfg)}; };
    Tensor loss = run()[0];
    model.params().zero_grad();
    loss.backward();
    for (const auto& [name, p] : model.params().all()) {
      if (!(name.starts_with("vision_model.") || name.starts_with("projector.") || name.starts_with("fire.") ||
            name.starts_with("fusion.")))
        continue;
      INFO(name);
      REQUIRE(p.grad().defined());
      double total = 0;
      for (double v : p.grad().to_vector<double>()) total += std::abs(v);
      // key biases are the only exact zeros: softmax does not change when every score moves by q.b_k
      if (name.find("k_proj.bias") == std::string::npos) CHECK(total > 0);
    }
    const ParamStore& ps = model.params();
    check_gradients(run,
                    {{ps.get("vision_model.embeddings.patch_embedding.weight"), "patch_embedding.weight", {}},
                     {ps.get("vision_model.encoder.layers.0.mlp.fc2.weight"), "layers.0.fc2.weight", {}},
                     {ps.get("projector.linear_1.weight"), "projector.linear_1.weight", {}},
                     {ps.get("fire.0.gate"), "fire.0.gate", {}},
                     {ps.get("fire.1.proj.weight"), "fire.1.proj.weight", {}},
                     {ps.get("fusion.gate_proj.weight"), "fusion.gate_proj.weight", {}},
                     {ps.get("fusion.visual_v_proj.weight"), "fusion.visual_v_proj.weight", {}},
                     {ps.get("fusion.text_k_proj.weight"), "fusion.text_k_proj.weight", {}}},
                    66);
  }
}
