// Shared helpers of the indexing ops (ops/index.h): reading and range-checking integer index tensors, the
// (outer, n, inner) split of a shape around a dimension, and the deterministic scatter-add kernel.
#pragma once

#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace moon::index_detail {

// The values of an integer index tensor (i64 or i32, CPU, any strides) in row-major order.
std::vector<int64_t> index_values(const Tensor& idx, const char* op, const char* what);

// "[1, 3]": the multi-index of flat position `flat` in `shape`.
std::string position_str(const Shape& shape, int64_t flat);

// Throws unless every value is in [0, n): names the first bad value, its position in `what` and the range.
// `range_of` says what n counts, e.g. "rows of weight f32(50, 8)@cpu".
void check_index_range(const std::vector<int64_t>& values, const Shape& idx_shape, int64_t n, const char* op,
                       const char* what, const std::string& range_of);

// The values of an integer index tensor (i64 or i32, on any device, any strides), checked to lie in [0, n)
// like index_values (`tensor_what` names the tensor) and check_index_range (`what` names a value), with the
// same messages, as a fresh contiguous i64 tensor on the index's device: a copy, so a later in-place write to
// `idx` cannot change what a backward pass reads. On a CUDA device the check runs there and synchronises once
// to read its verdict.
Tensor checked_index_tensor(const Tensor& idx, int64_t n, const char* op, const char* tensor_what, const char* what,
                            const std::string& range_of);

// Sizes of the dimensions before and after `dim` (1 when none).
int64_t outer_size(const Shape& s, int64_t dim);
int64_t inner_size(const Shape& s, int64_t dim);

// out (contiguous f32 of out_shape) += src (contiguous f32 of idx_shape) scattered along dim:
// out[i.., idx[i.., j, k..], k..] += src[i.., j, k..]. Parallel over the positions off `dim`; each output
// element is summed in increasing j, so the result does not depend on the thread count.
void scatter_add_cpu(float* out, const Shape& out_shape, int64_t dim, const int64_t* idx, const Shape& idx_shape,
                     const float* src);
// The same on tensors (the CPU slot of scatter_add and of topk's backward): out (contiguous) += src
// (contiguous, of idx's shape) at idx (contiguous i64) along dim; out and src f32 or bf16, accumulated in f32
// (a bf16 out is widened, accumulated and rounded once).
void scatter_add_tensors_cpu(const Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src);

// The offset in a tensor of `strides` of the element at (pre-coordinates p, post-coordinates q) of `shape`
// around `dim` (coordinate along dim taken as 0): p indexes dims [0, dim), q dims (dim, rank).
int64_t base_offset(int64_t p, int64_t q, const Shape& shape, int64_t dim, const Strides& strides);

}  // namespace moon::index_detail
