// Reduction and normalisation kernels, vectorised with vec.h (see norm_kernels.h for each contract).
//
// Row kernels run OpenMP over rows once a call does enough work; each row is processed in kLanes-wide
// vectors with a masked partial vector for the tail, so every C works on every ISA. No std:: functions are
// used here (the three ISA copies must not share out-of-line code, see vec.h).
#include "ops/cpu/norm_kernels.h"

#include <omp.h>

#include <math.h>
#include <string.h>

#include "ops/cpu/vec.h"

#ifndef MOON_ISA_NS
#error "norm_kernels.cpp is compiled once per instruction set: see cmake/MultiIsa.cmake"
#endif

namespace moon::cpu::MOON_ISA_NS {

namespace {

constexpr int64_t kParallelWork = 1 << 15;  // elements below which a kernel stays single-threaded
constexpr int64_t kColBlock = 256;          // columns per block in the middle-axis kernels (in L1)
constexpr float kNegInf = -__builtin_inff();

inline int tail_of(int64_t C, int64_t i) { return static_cast<int>(C - i); }

// Sum of p[0..C).
inline float row_sum(const float* p, int64_t C) {
  vfloat a0 = vzero(), a1 = vzero();
  int64_t i = 0;
  for (; i + 2 * kLanes <= C; i += 2 * kLanes) {
    a0 += vload(p + i);
    a1 += vload(p + i + kLanes);
  }
  for (; i + kLanes <= C; i += kLanes) a0 += vload(p + i);
  if (i < C) a1 += vload_partial(p + i, tail_of(C, i));
  return hsum(a0 + a1);
}

// Sum of a[i] * b[i] over [0, C).
inline float row_dot(const float* a, const float* b, int64_t C) {
  vfloat a0 = vzero(), a1 = vzero();
  int64_t i = 0;
  for (; i + 2 * kLanes <= C; i += 2 * kLanes) {
    a0 = vfma(vload(a + i), vload(b + i), a0);
    a1 = vfma(vload(a + i + kLanes), vload(b + i + kLanes), a1);
  }
  for (; i + kLanes <= C; i += kLanes) a0 = vfma(vload(a + i), vload(b + i), a0);
  if (i < C) a1 = vfma(vload_partial(a + i, tail_of(C, i)), vload_partial(b + i, tail_of(C, i)), a1);
  return hsum(a0 + a1);
}

// Max of p[0..C) (-inf for C == 0).
inline float row_max(const float* p, int64_t C) {
  vfloat m = vset1(kNegInf);
  int64_t i = 0;
  for (; i + kLanes <= C; i += kLanes) m = vmax(m, vload(p + i));
  if (i < C) m = vmax(m, vselect(vlane_index() < tail_of(C, i), vload_partial(p + i, tail_of(C, i)), vset1(kNegInf)));
  return hmax(m);
}

// Sum of exp(p[i] - shift) over [0, C).
inline float row_sum_exp(const float* p, int64_t C, float shift) {
  const vfloat s = vset1(shift);
  vfloat acc = vzero();
  int64_t i = 0;
  for (; i + kLanes <= C; i += kLanes) acc += vexp(vload(p + i) - s);
  if (i < C) {
    const int n = tail_of(C, i);
    acc += vselect(vlane_index() < n, vexp(vload_partial(p + i, n) - s), vzero());
  }
  return hsum(acc);
}

// Per-thread partial sums of per-column reductions (dweight, dbias): threads x C floats, zeroed.
struct Partials {
  float* buf = nullptr;
  int threads = 1;
  int64_t C = 0;
  Partials(int64_t C_, int parts) : threads(omp_get_max_threads()), C(C_) {
    const int64_t n = static_cast<int64_t>(threads) * parts * C;
    buf = new float[n > 0 ? n : 1];
    memset(buf, 0, sizeof(float) * (n > 0 ? n : 1));
  }
  ~Partials() { delete[] buf; }
  float* at(int t, int part) const { return buf + (static_cast<int64_t>(t) * 2 + part) * C; }
  // out[j] = sum over threads of part `part`, column j, in thread order (deterministic).
  void reduce_to(float* out, int part) const {
    for (int64_t j = 0; j < C; ++j) {
      float s = 0;
      for (int t = 0; t < threads; ++t) s += at(t, part)[j];
      out[j] = s;
    }
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Reductions and scans over the middle axis of (outer, len, inner)

void sum_middle(const float* in, float* out, int64_t outer, int64_t len, int64_t inner) {
  const bool par = outer * len * inner > kParallelWork;
  if (inner == 1) {  // each output sums one contiguous row
#pragma omp parallel for schedule(static) if (par)
    for (int64_t o = 0; o < outer; ++o) out[o] = row_sum(in + o * len, len);
    return;
  }
  // Vectorised across inner: each task owns a block of kColBlock columns of one outer slice and adds rows
  // [k0, k1) of that block into an accumulator that stays in L1.
  const int64_t blocks = (inner + kColBlock - 1) / kColBlock;
  auto block_sum = [&](int64_t o, int64_t jb, int64_t k0, int64_t k1, float* dst) {
    const int64_t j0 = jb * kColBlock, w = inner - j0 < kColBlock ? inner - j0 : kColBlock;
    float acc[kColBlock];
    for (int64_t j = 0; j < w; ++j) acc[j] = 0.0f;
    const float* base = in + o * len * inner + j0;
    for (int64_t k = k0; k < k1; ++k) {
      const float* p = base + k * inner;
      int64_t j = 0;
      for (; j + kLanes <= w; j += kLanes) vstore(acc + j, vload(acc + j) + vload(p + j));
      for (; j < w; ++j) acc[j] += p[j];
    }
    for (int64_t j = 0; j < w; ++j) dst[o * inner + j0 + j] = acc[j];
  };
  const int threads = par ? omp_get_max_threads() : 1;
  if (outer * blocks >= threads || len < 8 * threads) {
#pragma omp parallel for schedule(static) if (par)
    for (int64_t task = 0; task < outer * blocks; ++task) block_sum(task / blocks, task % blocks, 0, len, out);
    return;
  }
  // Few column blocks and a long reduced axis (e.g. summing a (rows, C) gradient over rows): also split the
  // reduced axis into one chunk per thread, then add the per-chunk partial sums in chunk order.
  const int64_t chunks = threads, n_out = outer * inner;
  float* partial = new float[chunks * n_out];
#pragma omp parallel for schedule(static) if (par)
  for (int64_t task = 0; task < chunks * outer * blocks; ++task) {
    const int64_t c = task / (outer * blocks), rest = task % (outer * blocks);
    block_sum(rest / blocks, rest % blocks, len * c / chunks, len * (c + 1) / chunks, partial + c * n_out);
  }
  for (int64_t i = 0; i < n_out; ++i) {
    float acc = 0.0f;
    for (int64_t c = 0; c < chunks; ++c) acc += partial[c * n_out + i];
    out[i] = acc;
  }
  delete[] partial;
}

void cumsum_middle(const float* in, float* out, int64_t outer, int64_t len, int64_t inner, bool reverse) {
  const bool par = outer * len * inner > kParallelWork;
  if (inner == 1) {  // a sequential scan per row
#pragma omp parallel for schedule(static) if (par)
    for (int64_t o = 0; o < outer; ++o) {
      const float* p = in + o * len;
      float* q = out + o * len;
      float s = 0.0f;
      if (reverse) {
        for (int64_t k = len - 1; k >= 0; --k) q[k] = s += p[k];
      } else {
        for (int64_t k = 0; k < len; ++k) q[k] = s += p[k];
      }
    }
    return;
  }
  // Vectorised across inner: row k of the output is row k-1 (or k+1) plus row k of the input.
#pragma omp parallel for schedule(static) if (par)
  for (int64_t o = 0; o < outer; ++o) {
    const float* p = in + o * len * inner;
    float* q = out + o * len * inner;
    for (int64_t step = 0; step < len; ++step) {
      const int64_t k = reverse ? len - 1 - step : step;
      const float* x = p + k * inner;
      float* y = q + k * inner;
      const float* prev = step == 0 ? nullptr : (reverse ? y + inner : y - inner);
      int64_t j = 0;
      if (prev) {
        for (; j + kLanes <= inner; j += kLanes) vstore(y + j, vload(prev + j) + vload(x + j));
        for (; j < inner; ++j) y[j] = prev[j] + x[j];
      } else {
        for (; j < inner; ++j) y[j] = x[j];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// softmax / log_softmax over rows

void softmax_rows(const float* x, float* y, int64_t rows, int64_t C, bool log) {
#pragma omp parallel for schedule(static) if (rows * C > kParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = x + r * C;
    float* q = y + r * C;
    // Statistics: the row max, then sum exp(x - max) (max-shifted so huge inputs cannot overflow).
    const float m = row_max(p, C);
    const vfloat vm = vset1(m);
    if (log) {
      // Output: y = (x - max) - log(sum): subtracting max first keeps precision when |max| >> log(sum).
      const vfloat vl = vset1(logf(row_sum_exp(p, C, m)));
      int64_t i = 0;
      for (; i + kLanes <= C; i += kLanes) vstore(q + i, (vload(p + i) - vm) - vl);
      if (i < C) vstore_partial(q + i, (vload_partial(p + i, tail_of(C, i)) - vm) - vl, tail_of(C, i));
    } else {
      // Output: y = exp(x - max) written once while summing, then scaled by 1/sum (y is still in cache).
      vfloat acc = vzero();
      int64_t i = 0;
      for (; i + kLanes <= C; i += kLanes) {
        const vfloat e = vexp(vload(p + i) - vm);
        acc += e;
        vstore(q + i, e);
      }
      if (i < C) {
        const int n = tail_of(C, i);
        const vfloat e = vselect(vlane_index() < n, vexp(vload_partial(p + i, n) - vm), vzero());
        acc += e;
        vstore_partial(q + i, e, n);
      }
      const vfloat inv = vset1(1.0f / hsum(acc));
      for (i = 0; i + kLanes <= C; i += kLanes) vstore(q + i, vload(q + i) * inv);
      if (i < C) vstore_partial(q + i, vload_partial(q + i, tail_of(C, i)) * inv, tail_of(C, i));
    }
  }
}

void softmax_backward_rows(const float* y, const float* g, float* dx, int64_t rows, int64_t C, bool log) {
#pragma omp parallel for schedule(static) if (rows * C > kParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* py = y + r * C;
    const float* pg = g + r * C;
    float* q = dx + r * C;
    int64_t i = 0;
    if (log) {  // dx = g - exp(y) * sum(g)
      const vfloat s = vset1(row_sum(pg, C));
      for (; i + kLanes <= C; i += kLanes) vstore(q + i, vload(pg + i) - vexp(vload(py + i)) * s);
      if (i < C) {
        const int n = tail_of(C, i);
        vstore_partial(q + i, vload_partial(pg + i, n) - vexp(vload_partial(py + i, n)) * s, n);
      }
    } else {  // dx = y * (g - sum(g * y))
      const vfloat d = vset1(row_dot(pg, py, C));
      for (; i + kLanes <= C; i += kLanes) vstore(q + i, vload(py + i) * (vload(pg + i) - d));
      if (i < C) {
        const int n = tail_of(C, i);
        vstore_partial(q + i, vload_partial(py + i, n) * (vload_partial(pg + i, n) - d), n);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// layer_norm over rows

void layer_norm_rows(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                     int64_t rows, int64_t C, float eps) {
#pragma omp parallel for schedule(static) if (rows * C > kParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = x + r * C;
    float* q = y + r * C;
    // Statistics in one pass: sums of (x - k) and (x - k)^2, shifted by the row's first element k so the
    // variance does not cancel catastrophically when |mean| >> std.
    const float k = C > 0 ? p[0] : 0.0f;
    const vfloat vk = vset1(k);
    vfloat s1 = vzero(), s2 = vzero();
    int64_t i = 0;
    for (; i + kLanes <= C; i += kLanes) {
      const vfloat d = vload(p + i) - vk;
      s1 += d;
      s2 = vfma(d, d, s2);
    }
    if (i < C) {
      const int n = tail_of(C, i);
      const vfloat d = vselect(vlane_index() < n, vload_partial(p + i, n) - vk, vzero());
      s1 += d;
      s2 = vfma(d, d, s2);
    }
    const float inv_c = 1.0f / static_cast<float>(C);
    const float m1 = hsum(s1) * inv_c;
    float var = hsum(s2) * inv_c - m1 * m1;
    var = var > 0.0f ? var : 0.0f;
    const float mu = k + m1, rs = 1.0f / sqrtf(var + eps);
    mean[r] = mu;
    rstd[r] = rs;
    // Output: y = (x - mean) * rstd * w + b.
    const vfloat vmu = vset1(mu), vrs = vset1(rs);
    for (i = 0; i + kLanes <= C; i += kLanes) {
      vfloat v = (vload(p + i) - vmu) * vrs;
      if (w) v = v * vload(w + i);
      if (b) v = v + vload(b + i);
      vstore(q + i, v);
    }
    if (i < C) {
      const int n = tail_of(C, i);
      vfloat v = (vload_partial(p + i, n) - vmu) * vrs;
      if (w) v = v * vload_partial(w + i, n);
      if (b) v = v + vload_partial(b + i, n);
      vstore_partial(q + i, v, n);
    }
  }
}

void layer_norm_backward_rows(const float* x, const float* w, const float* mean, const float* rstd,
                              const float* g, float* dx, float* dw, float* db, int64_t rows, int64_t C) {
  Partials part(C, 2);
  const bool par = rows * C > kParallelWork;
#pragma omp parallel if (par)
  {
    float* pw = part.at(omp_get_thread_num(), 0);
    float* pb = part.at(omp_get_thread_num(), 1);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* px = x + r * C;
      const float* pg = g + r * C;
      const vfloat vmu = vset1(mean[r]), vrs = vset1(rstd[r]);
      // Pass 1: a = sum(g*w), c = sum(g*w*xhat); accumulate dw += g*xhat, db += g.
      vfloat a = vzero(), c = vzero();
      int64_t i = 0;
      for (; i < C; i += kLanes) {
        const int n = C - i >= kLanes ? kLanes : tail_of(C, i);
        const vfloat gv = vload_partial(pg + i, n);
        const vfloat xh = (vload_partial(px + i, n) - vmu) * vrs;
        const vfloat gw = w ? gv * vload_partial(w + i, n) : gv;
        a += gw;
        c = vfma(gw, xh, c);
        if (dw) vstore_partial(pw + i, vfma(gv, xh, vload_partial(pw + i, n)), n);
        if (db) vstore_partial(pb + i, vload_partial(pb + i, n) + gv, n);
      }
      if (!dx) continue;
      // Pass 2: dx = rstd * (g*w - mean(g*w) - xhat * mean(g*w*xhat)); zero tail lanes stay unwritten.
      const float inv_c = 1.0f / static_cast<float>(C);
      const vfloat ma = vset1(hsum(a) * inv_c), mc = vset1(hsum(c) * inv_c);
      float* q = dx + r * C;
      for (i = 0; i < C; i += kLanes) {
        const int n = C - i >= kLanes ? kLanes : tail_of(C, i);
        const vfloat gv = vload_partial(pg + i, n);
        const vfloat xh = (vload_partial(px + i, n) - vmu) * vrs;
        const vfloat gw = w ? gv * vload_partial(w + i, n) : gv;
        vstore_partial(q + i, vrs * (gw - ma - xh * mc), n);
      }
    }
  }
  if (dw) part.reduce_to(dw, 0);
  if (db) part.reduce_to(db, 1);
}

// ---------------------------------------------------------------------------------------------------------
// rms_norm over rows

void rms_norm_rows(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t C, float eps) {
#pragma omp parallel for schedule(static) if (rows * C > kParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = x + r * C;
    float* q = y + r * C;
    // Statistics: mean(x^2).
    const float rs = 1.0f / sqrtf(row_dot(p, p, C) / static_cast<float>(C) + eps);
    rstd[r] = rs;
    // Output: y = x * rstd * w.
    const vfloat vrs = vset1(rs);
    int64_t i = 0;
    for (; i + kLanes <= C; i += kLanes) {
      vfloat v = vload(p + i) * vrs;
      if (w) v = v * vload(w + i);
      vstore(q + i, v);
    }
    if (i < C) {
      const int n = tail_of(C, i);
      vfloat v = vload_partial(p + i, n) * vrs;
      if (w) v = v * vload_partial(w + i, n);
      vstore_partial(q + i, v, n);
    }
  }
}

void rms_norm_backward_rows(const float* x, const float* w, const float* rstd, const float* g, float* dx,
                            float* dw, int64_t rows, int64_t C) {
  Partials part(C, 2);
  const bool par = rows * C > kParallelWork;
#pragma omp parallel if (par)
  {
    float* pw = part.at(omp_get_thread_num(), 0);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* px = x + r * C;
      const float* pg = g + r * C;
      const vfloat vrs = vset1(rstd[r]);
      // Pass 1: c = sum(g*w*xhat); accumulate dw += g*xhat.
      vfloat c = vzero();
      int64_t i = 0;
      for (; i < C; i += kLanes) {
        const int n = C - i >= kLanes ? kLanes : tail_of(C, i);
        const vfloat gv = vload_partial(pg + i, n);
        const vfloat xh = vload_partial(px + i, n) * vrs;
        const vfloat gw = w ? gv * vload_partial(w + i, n) : gv;
        c = vfma(gw, xh, c);
        if (dw) vstore_partial(pw + i, vfma(gv, xh, vload_partial(pw + i, n)), n);
      }
      if (!dx) continue;
      // Pass 2: dx = rstd * (g*w - xhat * mean(g*w*xhat)).
      const vfloat mc = vset1(hsum(c) / static_cast<float>(C));
      float* q = dx + r * C;
      for (i = 0; i < C; i += kLanes) {
        const int n = C - i >= kLanes ? kLanes : tail_of(C, i);
        const vfloat gv = vload_partial(pg + i, n);
        const vfloat xh = vload_partial(px + i, n) * vrs;
        const vfloat gw = w ? gv * vload_partial(w + i, n) : gv;
        vstore_partial(q + i, vrs * (gw - xh * mc), n);
      }
    }
  }
  if (dw) part.reduce_to(dw, 0);
}

}  // namespace moon::cpu::MOON_ISA_NS
