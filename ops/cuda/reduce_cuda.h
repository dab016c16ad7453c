// CUDA kernels of the reductions: sum and cumsum over the middle axis of an (outer, len, inner) view
// (ops/reduce_sum.cpp), max with first-maximum indices and its backward (ops/reduce_max.cpp), and the row
// l2 normalisation with its backward (ops/similarity.cpp). Plain C++ declarations: safe in any build;
// defined only with the CUDA backend (ops/cuda/reduce_cuda.cu). Same signatures and semantics as the CPU
// functions in those files' kernel tables.
#pragma once

#include "runtime/tensor.h"

namespace moon::cuda {

// out (outer, inner) = sum over k of src (outer, len, inner) contiguous f32; len == 0 gives zeros.
void sum_middle(const Tensor& src, const Tensor& out, int64_t outer, int64_t len, int64_t inner);
// out = inclusive scan of src along the middle axis of (outer, len, inner), from the end when reverse.
void cumsum_middle(const Tensor& src, const Tensor& out, int64_t outer, int64_t len, int64_t inner, bool reverse);
// values (outer, inner) = max over k, indices = the first such k; NaN wins (the first NaN).
void max_middle(const Tensor& src, const Tensor& values, const Tensor& indices, int64_t outer, int64_t len,
                int64_t inner);
// dx (outer, len, inner) = g (outer, inner) at k == indices[o, j], zero elsewhere.
void max_middle_backward(const Tensor& g, const Tensor& indices, const Tensor& dx, int64_t outer, int64_t len,
                         int64_t inner);
// y (R, D) = rows of x / max(||row||, eps), norm (R, f32) = ||row||; x has unit column stride. x, y (and g, dx
// below) f32 or bf16, one dtype: computed in f32, rounded once on store.
void l2_normalize_rows(const Tensor& x, float eps, const Tensor& y, const Tensor& norm);
// dx (R, D) from g (R, D, unit column stride), the saved output y and the norms.
void l2_normalize_rows_backward(const Tensor& g, const Tensor& y, const Tensor& norm, float eps, const Tensor& dx);

}  // namespace moon::cuda
