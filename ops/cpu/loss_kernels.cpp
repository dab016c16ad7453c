// CPU kernels for cross_entropy and l2_normalize (see loss_kernels.h), vectorised with vec.h and
// OpenMP-parallel over rows. Compiled once per instruction set.
#include "ops/cpu/loss_kernels.h"

#include <math.h>

#include "ops/cpu/vec.h"

#ifndef MOON_ISA_NS
#error "loss_kernels.cpp is compiled once per instruction set: see cmake/MultiIsa.cmake"
#endif

namespace moon::cpu::MOON_ISA_NS {
namespace {

constexpr int64_t kParallelWork = 1 << 15;  // elements below which a kernel stays single-threaded

// Row maximum and row sum of p[0..n).
inline void row_max_sum(const float* p, int64_t n, float& max_out, float& sum_out) {
  vfloat vm = vset1(-__builtin_inff()), vs = vzero();
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const vfloat v = vload(p + j);
    vm = vmax(vm, v);
    vs += v;
  }
  float m = hmax(vm), s = hsum(vs);
  for (; j < n; ++j) {
    m = p[j] > m ? p[j] : m;
    s += p[j];
  }
  max_out = m;
  sum_out = s;
}

// sum_j exp(p[j] - m); when out != nullptr also out[j] = exp(p[j] - m).
inline float row_exp_sum(const float* p, int64_t n, float m, float* out) {
  const vfloat vm = vset1(m);
  vfloat vs = vzero();
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const vfloat e = vexp(vload(p + j) - vm);
    if (out) vstore(out + j, e);
    vs += e;
  }
  if (j < n) {
    const int rem = static_cast<int>(n - j);
    const vfloat e = vexp(vload_partial(p + j, rem) - vm);
    if (out) vstore_partial(out + j, e, rem);
    vs += vselect(vlane_index() < vset1i(rem), e, vzero());  // the padding lanes hold exp(-m)
  }
  return hsum(vs);
}

inline void row_scale(float* p, int64_t n, float s) {
  const vfloat vs = vset1(s);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) vstore(p + j, vload(p + j) * vs);
  for (; j < n; ++j) p[j] *= s;
}

inline float row_dot(const float* a, const float* b, int64_t n) {
  vfloat acc = vzero();
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) acc = vfma(vload(a + j), vload(b + j), acc);
  float s = hsum(acc);
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

}  // namespace

// Fused log-softmax + smoothed NLL per row (and the softmax for backward).
double cross_entropy_rows(const float* x, int64_t N, int64_t C, int64_t row_stride, const int64_t* targets,
                          int64_t target_stride, int64_t ignore_index, float smoothing, float* probs) {
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (N * C > kParallelWork)
  for (int64_t i = 0; i < N; ++i) {
    const int64_t t = targets[i * target_stride];
    if (t == ignore_index) continue;
    const float* row = x + i * row_stride;
    float m, sx;
    row_max_sum(row, C, m, sx);
    float* pr = probs ? probs + i * C : nullptr;
    const float s = row_exp_sum(row, C, m, pr);
    if (pr) row_scale(pr, C, 1.0f / s);
    const float lse = m + logf(s);
    total += static_cast<double>(lse - (1.0f - smoothing) * row[t] - smoothing * (sx / static_cast<float>(C)));
  }
  return total;
}

// Gradient of the mean smoothed cross-entropy with respect to the logits, from the saved softmax.
void cross_entropy_backward_rows(const float* probs, const int64_t* targets, int64_t target_stride, int64_t N,
                                 int64_t C, int64_t ignore_index, float smoothing, float scale, float* dx) {
#pragma omp parallel for schedule(static) if (N * C > kParallelWork)
  for (int64_t i = 0; i < N; ++i) {
    const int64_t t = targets[i * target_stride];
    float* d = dx + i * C;
    int64_t j = 0;
    if (t == ignore_index) {
      for (; j + kLanes <= C; j += kLanes) vstore(d + j, vzero());
      for (; j < C; ++j) d[j] = 0.0f;
      continue;
    }
    const float* p = probs + i * C;
    const vfloat vs = vset1(scale), vu = vset1(smoothing / static_cast<float>(C));
    for (; j + kLanes <= C; j += kLanes) vstore(d + j, (vload(p + j) - vu) * vs);
    for (; j < C; ++j) d[j] = (p[j] - smoothing / static_cast<float>(C)) * scale;
    d[t] -= (1.0f - smoothing) * scale;
  }
}

// Row-wise L2 normalisation with the norm clamped below at eps.
void l2_normalize_rows(const float* x, int64_t R, int64_t D, int64_t row_stride, float eps, float* y,
                       float* norm) {
#pragma omp parallel for schedule(static) if (R * D > kParallelWork)
  for (int64_t i = 0; i < R; ++i) {
    const float* r = x + i * row_stride;
    const float n = sqrtf(row_dot(r, r, D));
    norm[i] = n;
    const vfloat inv = vset1(1.0f / (n > eps ? n : eps));
    float* o = y + i * D;
    int64_t j = 0;
    for (; j + kLanes <= D; j += kLanes) vstore(o + j, vload(r + j) * inv);
    for (; j < D; ++j) o[j] = r[j] * inv[0];
  }
}

// Backward of l2_normalize_rows: the projection of g orthogonal to y, over the norm (or g / eps when clamped).
void l2_normalize_backward_rows(const float* g, int64_t g_row_stride, const float* y, const float* norm, int64_t R,
                                int64_t D, float eps, float* dx) {
#pragma omp parallel for schedule(static) if (R * D > kParallelWork)
  for (int64_t i = 0; i < R; ++i) {
    const float* gr = g + i * g_row_stride;
    const float* yr = y + i * D;
    float* o = dx + i * D;
    const bool clamped = !(norm[i] > eps);
    const float inv = 1.0f / (clamped ? eps : norm[i]);
    const float dot = clamped ? 0.0f : row_dot(gr, yr, D);
    const vfloat vinv = vset1(inv), vdot = vset1(dot);
    int64_t j = 0;
    for (; j + kLanes <= D; j += kLanes) vstore(o + j, (vload(gr + j) - vload(yr + j) * vdot) * vinv);
    for (; j < D; ++j) o[j] = (gr[j] - yr[j] * dot) * inv;
  }
}

}  // namespace moon::cpu::MOON_ISA_NS
