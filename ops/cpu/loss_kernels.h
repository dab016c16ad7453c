// CPU kernels for the losses and similarities (ops/cross_entropy.cpp, ops/similarity.cpp).
// loss_kernels.cpp is compiled once per instruction set (cmake/MultiIsa.cmake); call the right copy with
// MOON_ISA_SELECT(name)(...). Rows are f32 with unit column stride and any row stride (in elements);
// outputs are dense.
#pragma once

#include <cstdint>

namespace moon::cpu {

#define MOON_DECLARE_LOSS_KERNELS(isa)                                                                         \
  namespace isa {                                                                                              \
  /* Per row i of x (N, C): loss[i] = lse(x_i) - (1-s) x_i[t_i] - s mean(x_i), or 0 when t_i == ignore; when   \
     probs != nullptr also probs[i, :] = softmax(x_i) (dense (N, C); ignored rows left unwritten).            \
     Returns the sum of loss[i] over rows, in double. Targets must be valid (checked by the caller). */       \
  double cross_entropy_rows(const float* x, int64_t N, int64_t C, int64_t row_stride, const int64_t* targets, \
                            int64_t target_stride, int64_t ignore_index, float smoothing, float* probs);      \
  /* dx[i, :] = (probs[i, :] - s/C - (1-s) onehot(t_i)) * scale, or 0 on ignored rows; dx dense (N, C) */   \
  void cross_entropy_backward_rows(const float* probs, const int64_t* targets, int64_t target_stride,         \
                                   int64_t N, int64_t C, int64_t ignore_index, float smoothing, float scale,  \
                                   float* dx);                                                                 \
  /* y[i, :] = x_i / max(||x_i||, eps); norm[i] = ||x_i||; y dense (R, D) */                                  \
  void l2_normalize_rows(const float* x, int64_t R, int64_t D, int64_t row_stride, float eps, float* y,       \
                         float* norm);                                                                         \
  /* dx[i, :] = (g_i - y_i <g_i, y_i>) / norm[i] when norm[i] > eps, else g_i / eps; g any row stride */      \
  void l2_normalize_backward_rows(const float* g, int64_t g_row_stride, const float* y, const float* norm,    \
                                  int64_t R, int64_t D, float eps, float* dx);                                 \
  }
MOON_DECLARE_LOSS_KERNELS(avx512)
MOON_DECLARE_LOSS_KERNELS(avx2)
MOON_DECLARE_LOSS_KERNELS(generic)
#undef MOON_DECLARE_LOSS_KERNELS

}  // namespace moon::cpu
