// Indexing and shape-combining ops: embedding, index_select, gather, scatter_add, concat, stack, split,
// chunk, topk. All are differentiable in their floating inputs; integer index tensors (i64 or i32) carry no
// gradient. Backward scatters are deterministic (a fixed summation order, whatever the thread count).
// Out-of-range indices are a moon::Error naming the value, its position and the valid range.
// bf16: every floating input may be f32 or bf16 (one dtype per call); results and gradients take the input's
// dtype. The copies (embedding, index_select, gather, concat, split, topk values) are exact; the sums
// (scatter_add, the embedding / index_select / gather backward) accumulate in f32 and round once.
#pragma once

#include <vector>

#include "runtime/tensor.h"

namespace moon {

// weight (V, C) f32 or bf16, ids (...) i64/i32 with values in [0, V) -> (..., C) in weight's dtype:
// out[..., :] = weight[ids[...], :].
Tensor embedding(const Tensor& weight, const Tensor& ids);

// x (..., n, ...) along `dim`, index (L) i64/i32 in [0, n) -> x with size L along dim. Any dtype.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);

// torch.gather: index has x's rank, index.size(d) <= x.size(d) for d != dim; out has index's shape and
// out[i..., j, k...] = x[i..., index[i..., j, k...], k...] (j along dim). Any dtype for x.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);

// out = x with src added at index along dim: out[i..., index[i..., j, k...], k...] += src[i..., j, k...].
// src must have index's shape; index.size(d) <= x.size(d) for d != dim. f32 or bf16 (x and src share it;
// the sums run in f32, rounded once). Gradients flow to x and src.
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);

// Joins tensors of one dtype whose shapes agree except along dim. Any dtype.
Tensor concat(const std::vector<Tensor>& tensors, int64_t dim);
// Joins tensors of equal shape along a new dimension `dim` (in [0, rank]).
Tensor stack(const std::vector<Tensor>& tensors, int64_t dim);
// Splits x along dim into pieces of the given sizes (summing to x.size(dim)); each piece is a fresh copy.
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
// Splits x along dim into `chunks` equal pieces (x.size(dim) must be divisible by chunks).
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim);

struct TopKResult {
  Tensor values;   // x's dtype, x's shape with k along dim, sorted (descending if largest, else ascending)
  Tensor indices;  // i64, positions along dim; equal values keep the lower position first
};
// The k largest (or smallest) entries of x along dim. NaN counts as larger than every number.
TopKResult topk(const Tensor& x, int64_t k, int64_t dim = -1, bool largest = true);

}  // namespace moon
