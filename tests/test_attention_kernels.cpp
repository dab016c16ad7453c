// Tests of the CPU attention kernels (ops/cpu/attention_kernels.*): every ISA copy the CPU can run against a
// naive double-precision reference that materialises the softmax, forward (out, lse) and backward (dq, dk, dv).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ops/cpu/attention_kernels.h"
#include "runtime/error.h"

namespace {

using namespace moon::cpu;

TEST_SUITE_BEGIN("kernels");

// ---- Kernel variants ------------------------------------------------------------------------------------

struct Variant {
  const char* name;
  void (*forward)(const AttnParams&, const AttnTensors&);
  void (*backward)(const AttnParams&, const AttnTensors&, const AttnGradTensors&);
};

std::vector<Variant> runnable_variants() {
  std::vector<Variant> v{{"generic", generic::attention_forward, generic::attention_backward}};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    v.push_back({"avx2", avx2::attention_forward, avx2::attention_backward});
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    v.push_back({"avx512", avx512::attention_forward, avx512::attention_backward});
  return v;
}

// ---- Strided (B, H, T, D) tensors -------------------------------------------------------------------------

// Memory order of a (B, H, T, D) view. Gapped: every row of D sits in a row three times longer, as q in a
// fused (B, T, 3, H, D) qkv projection; the elements outside the view stay NaN (inputs: never read them;
// outputs: never write them).
enum class Layout { BHTD, BTHD, BHDT, Gapped };

struct Tensor {
  int64_t B, H, T, D;
  std::vector<float> data;
  int64_t stride[4];

  Tensor(int64_t B_, int64_t H_, int64_t T_, int64_t D_, Layout layout) : B(B_), H(H_), T(T_), D(D_) {
    const int64_t s[4][4] = {{H * T * D, T * D, D, 1},
                             {T * H * D, D, H * D, 1},
                             {H * D * T, D * T, 1, T},
                             {T * 3 * H * D, D, 3 * H * D, 1}};
    std::copy(s[int(layout)], s[int(layout)] + 4, stride);
    data.assign(size_t(B * stride[0]), std::numeric_limits<float>::quiet_NaN());
  }
  float& operator()(int64_t b, int64_t h, int64_t t, int64_t d) {
    return data[size_t(b * stride[0] + h * stride[1] + t * stride[2] + d * stride[3])];
  }
  template <class F>
  void for_each(F f) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < T; ++t)
          for (int64_t d = 0; d < D; ++d) f((*this)(b, h, t, d));
  }
  void randomize(std::mt19937& rng) {
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for_each([&](float& x) { x = u(rng); });
  }
  // Number of elements that are not NaN (all of them in the view after a call, none outside).
  size_t written() const {
    return size_t(std::count_if(data.begin(), data.end(), [](float x) { return !std::isnan(x); }));
  }
};

// ---- Reference -------------------------------------------------------------------------------------------

struct Case {
  int64_t B, Hq, Hkv, Tq, Tk, D;
  bool causal = false;
  int64_t q_offset = 0;
  bool padding = false;        // random padded keys, and in batch 0 every key padded
  Layout q_layout = Layout::BHTD;   // of q, out, dout, dq
  Layout kv_layout = Layout::BHTD;  // of k, v, dk, dv
  float scale_factor = 1.f;         // scale = scale_factor / sqrt(D)
};

struct Problem {
  Case c;
  AttnParams p;
  std::vector<uint8_t> keep;
  Tensor q, k, v, dout;
  Problem(const Case& c_, std::mt19937& rng)
      : c(c_), q(c.B, c.Hq, c.Tq, c.D, c.q_layout), k(c.B, c.Hkv, c.Tk, c.D, c.kv_layout),
        v(c.B, c.Hkv, c.Tk, c.D, c.kv_layout), dout(c.B, c.Hq, c.Tq, c.D, c.q_layout) {
    q.randomize(rng), k.randomize(rng), v.randomize(rng), dout.randomize(rng);
    if (c.padding) {
      keep.resize(size_t(c.B * c.Tk));
      for (size_t i = 0; i < keep.size(); ++i) keep[i] = (rng() % 4 != 0) && i >= size_t(c.Tk);
    }
    p = {c.B, c.Hq, c.Hkv, c.Tq, c.Tk, c.D, float(c.scale_factor / std::sqrt(double(c.D))), c.causal,
         c.q_offset, c.padding ? keep.data() : nullptr};
  }
  bool visible(int64_t b, int64_t i, int64_t j) const {
    if (c.causal && j > i + c.q_offset) return false;
    return keep.empty() || keep[size_t(b * c.Tk + j)];
  }
};

struct Expected {
  std::vector<double> out, lse, dq, dk, dv;  // (B, H, T, D) contiguous; lse (B, Hq, Tq)
};

// Materialised softmax in double: P = softmax(scale q k^T) over visible keys, out = P v,
// dP = dout v^T, dS = P (dP - rowsum(P dP)), dq = scale dS k, dk = scale dS^T q, dv = P^T dout.
Expected reference(Problem& pr) {
  const Case& c = pr.c;
  const int64_t group = c.Hq / c.Hkv;
  Expected e;
  e.out.assign(size_t(c.B * c.Hq * c.Tq * c.D), 0.0);
  e.dq = e.out;
  e.lse.assign(size_t(c.B * c.Hq * c.Tq), -INFINITY);
  e.dk.assign(size_t(c.B * c.Hkv * c.Tk * c.D), 0.0);
  e.dv = e.dk;
  auto qi = [&](int64_t b, int64_t h, int64_t i) { return size_t(((b * c.Hq + h) * c.Tq + i) * c.D); };
  auto kj = [&](int64_t b, int64_t h, int64_t j) { return size_t(((b * c.Hkv + h) * c.Tk + j) * c.D); };
  std::vector<double> P(size_t(c.Tk)), dP(size_t(c.Tk));
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t i = 0; i < c.Tq; ++i) {
        const int64_t g = h / group;
        double mx = -INFINITY;
        for (int64_t j = 0; j < c.Tk; ++j) {
          P[size_t(j)] = -INFINITY;
          if (!pr.visible(b, i, j)) continue;
          double s = 0;
          for (int64_t d = 0; d < c.D; ++d) s += double(pr.q(b, h, i, d)) * pr.k(b, g, j, d);
          P[size_t(j)] = s * pr.p.scale;
          mx = std::max(mx, P[size_t(j)]);
        }
        if (mx == -INFINITY) continue;  // sees no key: out 0, lse -inf, no gradient
        double l = 0;
        for (double& x : P) l += x = std::exp(x - mx);
        e.lse[size_t((b * c.Hq + h) * c.Tq + i)] = mx + std::log(l);
        double delta = 0;
        for (int64_t j = 0; j < c.Tk; ++j) {
          double& pj = P[size_t(j)];
          pj /= l;
          dP[size_t(j)] = 0;
          for (int64_t d = 0; d < c.D; ++d) {
            e.out[qi(b, h, i) + size_t(d)] += pj * pr.v(b, g, j, d);
            dP[size_t(j)] += double(pr.dout(b, h, i, d)) * pr.v(b, g, j, d);
          }
          delta += pj * dP[size_t(j)];
        }
        for (int64_t j = 0; j < c.Tk; ++j) {
          const double pj = P[size_t(j)], ds = pj * (dP[size_t(j)] - delta);
          for (int64_t d = 0; d < c.D; ++d) {
            e.dq[qi(b, h, i) + size_t(d)] += pr.p.scale * ds * pr.k(b, g, j, d);
            e.dk[kj(b, g, j) + size_t(d)] += pr.p.scale * ds * pr.q(b, h, i, d);
            e.dv[kj(b, g, j) + size_t(d)] += pj * pr.dout(b, h, i, d);
          }
        }
      }
  return e;
}

// ---- Comparison --------------------------------------------------------------------------------------------

// Checks every element of `got` (a strided view) against the contiguous `want`: all finite, and
// |got - want| <= tol * max(1, max |want|).
void check_close(const char* what, Tensor& got, const std::vector<double>& want, double tol) {
  double scale = 1, worst = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  bool finite = true;
  size_t n = 0;
  got.for_each([&](float g) {
    finite = finite && std::isfinite(g);
    worst = std::max(worst, std::abs(double(g) - want[n++]));
  });
  INFO(std::string(what) << ": max error " << worst << " (reference magnitude " << scale << ")");
  CHECK(finite);
  CHECK(got.written() == want.size());  // nothing written outside the view
  CHECK(worst <= tol * scale);
}

void check_lse(const std::vector<float>& got, const std::vector<double>& want, double tol) {
  double worst = 0;
  bool same_inf = true;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isinf(want[i]) || std::isinf(got[i]))
      same_inf = same_inf && got[i] == want[i];
    else
      worst = std::max(worst, std::abs(double(got[i]) - want[i]));
  }
  INFO("lse: max error " << worst);
  CHECK(same_inf);
  CHECK(worst <= tol * 10);
}

void run_case(const Case& c, double tol = 1e-5) {
  std::mt19937 rng(1234);
  Problem pr(c, rng);
  const Expected e = reference(pr);
  for (const Variant& var : runnable_variants()) {
    INFO("isa " << var.name << ", B=" << c.B << " Hq=" << c.Hq << " Hkv=" << c.Hkv << " Tq=" << c.Tq
                << " Tk=" << c.Tk << " D=" << c.D << " causal=" << c.causal << " q_offset=" << c.q_offset
                << " padding=" << c.padding);
    Tensor out(c.B, c.Hq, c.Tq, c.D, c.q_layout), dq(c.B, c.Hq, c.Tq, c.D, c.q_layout);
    Tensor dk(c.B, c.Hkv, c.Tk, c.D, c.kv_layout), dv(c.B, c.Hkv, c.Tk, c.D, c.kv_layout);
    std::vector<float> lse(size_t(c.B * c.Hq * c.Tq), std::nanf(""));
    AttnTensors t{pr.q.data.data(), {}, pr.k.data.data(), {}, pr.v.data.data(), {}, out.data.data(), {},
                  lse.data()};
    std::copy_n(pr.q.stride, 4, t.q_stride), std::copy_n(pr.k.stride, 4, t.k_stride);
    std::copy_n(pr.v.stride, 4, t.v_stride), std::copy_n(out.stride, 4, t.out_stride);
    var.forward(pr.p, t);
    check_close("out", out, e.out, tol);
    check_lse(lse, e.lse, tol);

    AttnGradTensors g{pr.dout.data.data(), {}, dq.data.data(), {}, dk.data.data(), {}, dv.data.data(), {}};
    std::copy_n(pr.dout.stride, 4, g.dout_stride), std::copy_n(dq.stride, 4, g.dq_stride);
    std::copy_n(dk.stride, 4, g.dk_stride), std::copy_n(dv.stride, 4, g.dv_stride);
    var.backward(pr.p, t, g);
    check_close("dq", dq, e.dq, tol);
    check_close("dk", dk, e.dk, tol);
    check_close("dv", dv, e.dv, tol);
  }
}

}  // namespace

TEST_CASE("attention kernels: full attention, odd lengths and head sizes") {
  run_case({.B = 2, .Hq = 2, .Hkv = 2, .Tq = 17, .Tk = 127, .D = 32});
  run_case({.B = 1, .Hq = 2, .Hkv = 2, .Tq = 127, .Tk = 3, .D = 64});
  run_case({.B = 1, .Hq = 1, .Hkv = 1, .Tq = 130, .Tk = 200, .D = 80});
  run_case({.B = 1, .Hq = 2, .Hkv = 2, .Tq = 65, .Tk = 66, .D = 128});
  for (int64_t T : {1, 3})
    for (int64_t D : {1, 3, 17}) run_case({.B = 2, .Hq = 1, .Hkv = 1, .Tq = T, .Tk = T + 2, .D = D});
  run_case({.B = 1, .Hq = 1, .Hkv = 1, .Tq = 1, .Tk = 1, .D = 64});
}

TEST_CASE("attention kernels: sharp softmax (large scores exercise the online rescaling)") {
  run_case({.B = 1, .Hq = 2, .Hkv = 2, .Tq = 70, .Tk = 300, .D = 64, .scale_factor = 8.f}, 2e-5);
}

TEST_CASE("attention kernels: causal, top-left and KV-cache alignment") {
  run_case({.B = 1, .Hq = 2, .Hkv = 2, .Tq = 127, .Tk = 127, .D = 64, .causal = true});
  run_case({.B = 2, .Hq = 1, .Hkv = 1, .Tq = 17, .Tk = 150, .D = 32, .causal = true, .q_offset = 133});
  run_case({.B = 1, .Hq = 1, .Hkv = 1, .Tq = 1, .Tk = 127, .D = 64, .causal = true, .q_offset = 126});
  // More queries than keys with q_offset = Tk - Tq < 0: the first 67 queries see nothing.
  run_case({.B = 1, .Hq = 2, .Hkv = 2, .Tq = 70, .Tk = 3, .D = 32, .causal = true, .q_offset = -67});
  run_case({.B = 1, .Hq = 1, .Hkv = 1, .Tq = 200, .Tk = 140, .D = 80, .causal = true});
}

TEST_CASE("attention kernels: key padding, including a batch with every key padded") {
  run_case({.B = 3, .Hq = 2, .Hkv = 2, .Tq = 33, .Tk = 100, .D = 80, .padding = true});
  run_case({.B = 2, .Hq = 2, .Hkv = 2, .Tq = 127, .Tk = 127, .D = 32, .causal = true, .padding = true});
}

TEST_CASE("attention kernels: grouped-query attention") {
  run_case({.B = 2, .Hq = 4, .Hkv = 2, .Tq = 65, .Tk = 65, .D = 128, .causal = true});
  run_case({.B = 2, .Hq = 4, .Hkv = 1, .Tq = 17, .Tk = 127, .D = 32, .padding = true});
  run_case({.B = 1, .Hq = 4, .Hkv = 1, .Tq = 130, .Tk = 130, .D = 64, .causal = true});
}

TEST_CASE("attention kernels: non-contiguous views") {
  // q, out, dout, dq as (B, T, H, D) memory; k, v, dk, dv as (B, H, D, T) memory (D not contiguous).
  run_case({.B = 2, .Hq = 4, .Hkv = 2, .Tq = 130, .Tk = 77, .D = 64, .causal = true, .q_offset = -53,
            .q_layout = Layout::BTHD, .kv_layout = Layout::BHDT});
  run_case({.B = 2, .Hq = 2, .Hkv = 2, .Tq = 17, .Tk = 100, .D = 80, .padding = true, .q_layout = Layout::BTHD});
  // Views into fused qkv-like buffers, with NaN between the viewed rows.
  run_case({.B = 2, .Hq = 2, .Hkv = 1, .Tq = 70, .Tk = 70, .D = 32, .causal = true,
            .q_layout = Layout::Gapped, .kv_layout = Layout::Gapped});
}

TEST_CASE("attention kernels: forward without lse, and empty shapes") {
  for (const Variant& var : runnable_variants()) {
    std::vector<float> q(64, 0.5f), k(64, 0.25f), v(64, 1.f), out(64, -1.f);
    const AttnParams p{1, 1, 1, 4, 4, 16, 0.25f, false, 0, nullptr};
    const AttnTensors t{q.data(), {64, 64, 16, 1}, k.data(), {64, 64, 16, 1}, v.data(), {64, 64, 16, 1},
                        out.data(), {64, 64, 16, 1}, nullptr};
    var.forward(p, t);
    for (float x : out) CHECK(x == doctest::Approx(1.f));
    AttnParams none = p;
    none.Tk = 0;  // no keys at all: out = 0
    var.forward(none, t);
    for (float x : out) CHECK(x == 0.f);
  }
}

TEST_CASE("attention kernels: invalid parameters throw") {
  const AttnTensors t{};
  const AttnGradTensors g{};
  AttnParams p{1, 4, 3, 1, 1, 8, 1.f, false, 0, nullptr};  // 3 kv heads do not divide 4 q heads
  CHECK_THROWS_AS(generic::attention_forward(p, t), moon::Error);
  CHECK_THROWS_AS(generic::attention_backward(p, t, g), moon::Error);
  p.Hkv = 2;
  p.D = 0;
  CHECK_THROWS_AS(generic::attention_forward(p, t), moon::Error);
}

TEST_SUITE_END();
