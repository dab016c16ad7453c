// CUDA halves of the row normalisations (ops/softmax.cpp, ops/layer_norm.cpp, ops/rms_norm.cpp), the
// linear bias gradient (ops/matmul.cpp) and rope (ops/rope.cpp). Plain C++ declarations, safe to include
// in any build; defined in ops/cuda/norm_cuda.cu and ops/cuda/rope_cuda.cu (CUDA builds only) and
// referenced through MOON_CUDA_KERNEL. Same signatures and contracts as the CPU functions in those files.
// Floating tensors are f32 or bf16 (bf16 activations): all activation operands of one call (x, w, b, y, g,
// dx, dw, db) share a dtype; statistics (mean, rstd) and rope's cos/sin tables are always f32. Each kernel
// computes in f32 and rounds once on store (ops/float_storage.h).
#pragma once

#include <cstdint>

#include "runtime/tensor.h"

namespace moon::cuda {

// y = softmax(x) (log_softmax when log) per row of contiguous (rows, C), f32 or bf16.
void softmax(const Tensor& x, const Tensor& y, int64_t rows, int64_t C, bool log);
// dx = y * (g - sum(g*y)) per row (softmax), or g - exp(y) * sum(g) (log_softmax); all contiguous (rows, C).
void softmax_backward(const Tensor& y, const Tensor& g, const Tensor& dx, int64_t rows, int64_t C, bool log);

// y = (x - mean) * rstd * w + b per row of contiguous x (..., C); writes mean and rstd (rows). w, b may be
// undefined.
void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                const Tensor& rstd, double eps);
// dx, dw, db (each undefined when not wanted) from x, w (may be undefined), mean, rstd and the gradient g.
void layer_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd, const Tensor& g,
                         const Tensor& dx, const Tensor& dw, const Tensor& db);

// y = x * rstd * w per row with rstd = 1 / sqrt(mean(x^2) + eps); writes rstd (rows); w may be undefined.
void rms_norm(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& rstd, double eps);
// dx, dw (each undefined when not wanted) from x, w (may be undefined), rstd and the gradient g.
void rms_norm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& g, const Tensor& dx,
                       const Tensor& dw);

// out[j] = sum_i g[i, j] over the rows of a (R, C) view with any strides (the linear bias gradient); g and
// out each f32 or bf16 (summed in f32, rounded once into out); deterministic (fixed-order two-pass reduction).
void column_sum(const Tensor& g, const Tensor& out);

// rope (ops/rope.cpp): cos/sin tables (B*T, half) f32 from positions (T) or (B, T) i64/i32 (contiguous, on
// the tables' device), angles computed in double like the CPU.
void rope_tables(const Tensor& positions, int64_t B, int64_t T, int64_t half, double theta, const Tensor& cos_t,
                 const Tensor& sin_t);
// y = rotate(x, sign * angle) for every (b, h, t) row of D = 2 * half; x, y contiguous (B, H, T, D), both
// f32 or both bf16 (tables f32).
void rope(const Tensor& x, const Tensor& y, const Tensor& cos_t, const Tensor& sin_t, int64_t B, int64_t H, int64_t T,
          int64_t half, float sign);

}  // namespace moon::cuda
