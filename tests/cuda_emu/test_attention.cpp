// The converted ops/cuda/attention_cuda.cu entry points (forward, and backward with its delta kernel) on host
// buffers in several layouts (BHTD, BTHD, BHDT, gapped rows), against a double-precision reference: causal
// with q offsets, key padding, grouped-query heads, every head-size tier, queries that see no key, empty sizes.
#include <algorithm>
#include <random>
#include <vector>

#include "common.h"
#include "emu/ops/cuda/attention_cuda.h"

namespace emutest {
namespace {
using namespace moon;
namespace cuda = moon::cuda_emu;
using cpu::AttnParams;

// A (B, H, T, D) view of a NaN-filled host buffer with a layout: 0 = BHTD, 1 = BTHD, 2 = BHDT, 3 = gapped (row
// stride D+3).
struct View {
  Tensor buf, view; int64_t s[4]; int64_t B, H, T, D;
  View(int64_t B_, int64_t H_, int64_t T_, int64_t D_, int layout) : B(B_), H(H_), T(T_), D(D_) {
    int64_t n = B * H * T * D;
    if (layout == 0) { s[3] = 1; s[2] = D; s[1] = T * D; s[0] = H * T * D; }
    if (layout == 1) { s[3] = 1; s[1] = D; s[2] = H * D; s[0] = T * H * D; }
    if (layout == 2) { s[2] = 1; s[3] = T; s[1] = T * D; s[0] = H * T * D; }
    if (layout == 3) { s[3] = 1; s[2] = D + 3; s[1] = T * (D + 3); s[0] = H * T * (D + 3); n = B * H * T * (D + 3); }
    buf = full({n + 1}, std::numeric_limits<float>::quiet_NaN());
    view = make_view(buf, {B, H, T, D}, {s[0], s[1], s[2], s[3]}, 0);
  }
  float& at(int64_t b, int64_t h, int64_t t, int64_t d) { return F(buf)[b * s[0] + h * s[1] + t * s[2] + d * s[3]]; }
};

struct Case { int64_t B, Hq, Hkv, Tq, Tk, D; bool causal = false; int64_t q_offset = 0; bool padding = false;
  int ql = 0, kl = 0; float sharp = 1.f; };

void report(const char* what, double err, double tol, const Case& c) {
  ++checks;
  if (!(err <= tol)) { char m[400]; snprintf(m, sizeof m, "attention %s err %.3g (B=%ld Hq=%ld Hkv=%ld Tq=%ld Tk=%ld D=%ld causal=%d off=%ld pad=%d)", what, err,
    c.B, c.Hq, c.Hkv, c.Tq, c.Tk, c.D, c.causal, c.q_offset, c.padding); fail(m); }
}

void run_case(const Case& c) {
  std::mt19937 rng(42);
  std::normal_distribution<float> N(0.f, 1.f);
  View q(c.B, c.Hq, c.Tq, c.D, c.ql), k(c.B, c.Hkv, c.Tk, c.D, c.kl), v(c.B, c.Hkv, c.Tk, c.D, c.kl), dout(c.B, c.Hq, c.Tq, c.D, c.ql);
  View out(c.B, c.Hq, c.Tq, c.D, c.ql), dq(c.B, c.Hq, c.Tq, c.D, c.ql), dk(c.B, c.Hkv, c.Tk, c.D, c.kl), dv(c.B, c.Hkv, c.Tk, c.D, c.kl);
  for (auto* x : {&q, &k, &v, &dout})
    for (int64_t b = 0; b < x->B; ++b) for (int64_t h = 0; h < x->H; ++h) for (int64_t i = 0; i < x->T; ++i) for (int64_t d = 0; d < x->D; ++d)
      x->at(b, h, i, d) = N(rng) * (x == &q ? c.sharp : 1.f);
  std::vector<uint8_t> keep(size_t(c.B * c.Tk), 1);
  if (c.padding) for (int64_t b = 0; b < c.B; ++b) for (int64_t j = 0; j < c.Tk; ++j) keep[b * c.Tk + j] = (b == 1) ? 0 : ((j * 7 + b) % 5 != 0);
  AttnParams p{c.B, c.Hq, c.Hkv, c.Tq, c.Tk, c.D, float(1.0 / std::sqrt(double(c.D))), c.causal, c.q_offset, c.padding ? keep.data() : nullptr};
  Tensor lse_t = full({c.B, c.Hq, c.Tq}, std::nanf(""));
  cuda::attention_forward(p, q.view, k.view, v.view, out.view, lse_t);
  cuda::attention_backward(p, q.view, k.view, v.view, out.view, lse_t, dout.view, dq.view, dk.view, dv.view);
  const float* lse = F(lse_t);

  // reference in double
  double eo = 0, no = 0, el = 0, edq = 0, ndq = 0, edk = 0, ndk = 0, edv = 0, ndv = 0;
  std::vector<double> rdk(size_t(c.B * c.Hkv * c.Tk * c.D), 0), rdv(rdk.size(), 0);
  const int64_t grp = c.Hq / c.Hkv;
  for (int64_t b = 0; b < c.B; ++b) for (int64_t h = 0; h < c.Hq; ++h) for (int64_t i = 0; i < c.Tq; ++i) {
    int64_t kh = h / grp;
    std::vector<double> s(size_t(c.Tk)); std::vector<char> vis(size_t(c.Tk));
    double m = -INFINITY;
    for (int64_t j = 0; j < c.Tk; ++j) {
      vis[j] = keep[b * c.Tk + j] && (!c.causal || j <= i + c.q_offset);
      double x = 0; for (int64_t d = 0; d < c.D; ++d) x += double(q.at(b, h, i, d)) * k.at(b, kh, j, d);
      s[j] = x * p.scale; if (vis[j]) m = std::max(m, s[j]);
    }
    double l = 0; for (int64_t j = 0; j < c.Tk; ++j) if (vis[j]) l += std::exp(s[j] - m);
    std::vector<double> P(size_t(c.Tk), 0.0);
    for (int64_t j = 0; j < c.Tk; ++j) if (vis[j]) P[j] = std::exp(s[j] - m) / l;
    double rl = l == 0 ? -INFINITY : m + std::log(l), gl = lse[(b * c.Hq + h) * c.Tq + i];
    if (std::isinf(rl)) { if (!(std::isinf(gl) && gl < 0)) el = INFINITY; } else el = std::max(el, std::fabs(rl - gl));
    std::vector<double> o(size_t(c.D), 0);
    for (int64_t d = 0; d < c.D; ++d) { for (int64_t j = 0; j < c.Tk; ++j) o[d] += P[j] * v.at(b, kh, j, d);
      double e = o[d] - out.at(b, h, i, d); eo += std::isnan(e) ? INFINITY : e * e; no += o[d] * o[d]; }
    std::vector<double> dP(size_t(c.Tk), 0); double delt = 0;
    for (int64_t d = 0; d < c.D; ++d) delt += double(dout.at(b, h, i, d)) * o[d];
    for (int64_t j = 0; j < c.Tk; ++j) for (int64_t d = 0; d < c.D; ++d) dP[j] += double(dout.at(b, h, i, d)) * v.at(b, kh, j, d);
    for (int64_t d = 0; d < c.D; ++d) {
      double gq = 0; for (int64_t j = 0; j < c.Tk; ++j) gq += P[j] * (dP[j] - delt) * k.at(b, kh, j, d) * p.scale;
      double e = gq - dq.at(b, h, i, d); edq += std::isnan(e) ? INFINITY : e * e; ndq += gq * gq;
    }
    for (int64_t j = 0; j < c.Tk; ++j) for (int64_t d = 0; d < c.D; ++d) {
      size_t ix = size_t(((b * c.Hkv + kh) * c.Tk + j) * c.D + d);
      rdk[ix] += P[j] * (dP[j] - delt) * q.at(b, h, i, d) * p.scale;
      rdv[ix] += P[j] * dout.at(b, h, i, d);
    }
  }
  for (int64_t b = 0; b < c.B; ++b) for (int64_t h = 0; h < c.Hkv; ++h) for (int64_t j = 0; j < c.Tk; ++j) for (int64_t d = 0; d < c.D; ++d) {
    size_t ix = size_t(((b * c.Hkv + h) * c.Tk + j) * c.D + d);
    double e = rdk[ix] - dk.at(b, h, j, d); edk += std::isnan(e) ? INFINITY : e * e; ndk += rdk[ix] * rdk[ix];
    e = rdv[ix] - dv.at(b, h, j, d); edv += std::isnan(e) ? INFINITY : e * e; ndv += rdv[ix] * rdv[ix];
  }
  const double tol = 1e-10;
  report("out", eo / std::max(no, 1e-30), tol, c); report("lse", el, 1e-4, c);
  report("dq", edq / std::max(ndq, 1e-30), tol, c); report("dk", edk / std::max(ndk, 1e-30), tol, c); report("dv", edv / std::max(ndv, 1e-30), tol, c);
}

}  // namespace

void test_attention(const std::string& only) {
  if (!only.empty() && only != "attention") return;
  std::vector<Case> cases = {
    {1, 1, 1, 5, 7, 3},
    {2, 1, 1, 1, 3, 1}, {2, 1, 1, 3, 5, 17},
    {2, 2, 2, 17, 127, 32},
    {1, 2, 2, 127, 3, 64},
    {1, 1, 1, 130, 200, 80},
    {1, 2, 2, 65, 66, 128},
    {1, 1, 1, 70, 100, 64, false, 0, false, 0, 0, 8.f},
    {1, 2, 2, 127, 127, 64, true},
    {2, 1, 1, 17, 150, 32, true, 133},
    {1, 2, 2, 70, 3, 32, true, -67},
    {3, 2, 2, 33, 100, 80, false, 0, true},
    {2, 2, 2, 127, 127, 32, true, 0, true},
    {2, 4, 2, 65, 65, 128, true},
    {2, 4, 1, 17, 127, 32, false, 0, true},
    {2, 4, 2, 130, 77, 64, true, -53, false, 1, 2},
    {2, 2, 1, 70, 70, 32, true, 0, false, 3, 3},
    {1, 2, 1, 40, 70, 200, true, 10, true, 1, 2},
    {1, 1, 1, 0, 5, 8}, {1, 1, 1, 4, 0, 8},
  };
  for (const Case& c : cases) guarded("attention", [&] { run_case(c); });
  done("attention");
}

}  // namespace emutest
