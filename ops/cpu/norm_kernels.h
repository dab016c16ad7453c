// CPU kernels for reductions and normalisations (ops/reduce*.cpp, ops/softmax.cpp, ops/layer_norm.cpp,
// ops/rms_norm.cpp). norm_kernels.cpp is compiled once per instruction set (cmake/MultiIsa.cmake); call the
// right copy with MOON_ISA_SELECT(name)(...).
//
// All operands are dense row-major f32 buffers. "Rows" kernels see a (rows, C) matrix and work on each row
// (OpenMP over rows); "(outer, len, inner)" kernels see a tensor reduced or scanned along its middle axis.
#pragma once

#include <cstdint>

namespace moon::cpu {

#define MOON_DECLARE_NORM_KERNELS(isa)                                                                       \
  namespace isa {                                                                                            \
  /* out[o, j] = sum_k in[o, k, j]: a reduction over the middle axis of (outer, len, inner) */                \
  void sum_middle(const float* in, float* out, int64_t outer, int64_t len, int64_t inner);                  \
  /* out[o, k, j] = sum_{k' <= k} in[o, k', j] (or k' >= k when reverse) */                                   \
  void cumsum_middle(const float* in, float* out, int64_t outer, int64_t len, int64_t inner, bool reverse); \
  /* y = softmax(x) (log_softmax when log) per row of (rows, C) */                                           \
  void softmax_rows(const float* x, float* y, int64_t rows, int64_t C, bool log);                            \
  /* dx = y*(g - sum(g*y)) per row (softmax), or dx = g - exp(y)*sum(g) (log_softmax, y = log-probs) */       \
  void softmax_backward_rows(const float* y, const float* g, float* dx, int64_t rows, int64_t C, bool log);  \
  /* y = (x - mean) * rstd * w + b per row; w, b nullable; writes mean[rows], rstd[rows] */                  \
  void layer_norm_rows(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,    \
                       int64_t rows, int64_t C, float eps);                                                  \
  /* dx = rstd*(g*w - mean(g*w) - xhat*mean(g*w*xhat)); dw = sum_rows g*xhat; db = sum_rows g (nullable) */  \
  void layer_norm_backward_rows(const float* x, const float* w, const float* mean, const float* rstd,        \
                                const float* g, float* dx, float* dw, float* db, int64_t rows, int64_t C);   \
  /* y = x * rstd * w per row with rstd = 1/sqrt(mean(x^2) + eps); w nullable; writes rstd[rows] */          \
  void rms_norm_rows(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t C,         \
                     float eps);                                                                             \
  /* dx = rstd*(g*w - xhat*mean(g*w*xhat)) with xhat = x*rstd; dw = sum_rows g*xhat (both nullable) */       \
  void rms_norm_backward_rows(const float* x, const float* w, const float* rstd, const float* g, float* dx,  \
                              float* dw, int64_t rows, int64_t C);                                           \
  }
MOON_DECLARE_NORM_KERNELS(avx512)
MOON_DECLARE_NORM_KERNELS(avx2)
MOON_DECLARE_NORM_KERNELS(generic)
#undef MOON_DECLARE_NORM_KERNELS

}  // namespace moon::cpu
