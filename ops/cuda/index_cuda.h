// CUDA kernels of the indexing ops: concat/split block copies (ops/concat.cpp), gather and scatter_add along
// a dimension (ops/gather.cpp), row gathers and their deterministic backward for embedding / index_select
// (ops/embedding.cpp), top-k selection (ops/topk.cpp) and the range check of device index tensors
// (ops/index_util.cpp). Plain C++ declarations: safe in any build; defined only with the CUDA backend
// (ops/cuda/index_cuda.cu, ops/cuda/topk_cuda.cu). Same signatures and semantics as the CPU functions in the
// op files' kernel tables; every index tensor here is a contiguous i64 tensor on the data's device whose
// values have already been checked to be in range.
#pragma once

#include "runtime/tensor.h"

namespace moon::cuda {

// dst[o * dst_stride .. + bytes) = src[o * src_stride .. + bytes) for o < rows (strides in bytes), on `device`.
void copy_blocks(Device device, void* dst, int64_t dst_stride, const void* src, int64_t src_stride, int64_t rows,
                 int64_t bytes);

// out (idx shape, contiguous) = x (contiguous, any dtype) gathered along dim at idx (contiguous i64).
void gather_dim(const Tensor& out, const Tensor& x, int64_t dim, const Tensor& idx);
// out (contiguous f32 or bf16) += src (contiguous f32 or bf16 of idx's shape) scattered along dim at idx; each
// output element accumulates its contributions in f32 in increasing position along dim (the CPU's order); a
// bf16 out is accumulated in an f32 copy and rounded once.
void scatter_add_dim(const Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src);

// dst (outer, len, row_bytes) = src (outer, n, row_bytes) rows picked by ids (len values).
void gather_rows(const Tensor& dst, const Tensor& src, const Tensor& ids, int64_t outer, int64_t n, int64_t len,
                 int64_t row_bytes);
// dst (outer, V, C) = sum over j with ids[j] == v of src (outer, N, C)[o, j, :], in increasing j; rows no
// id hits are zero. dst and src share a dtype (f32 or bf16); the sums are f32, rounded once on store.
// Deterministic (stable sort of the ids, then one ordered sum per segment).
void scatter_rows(const Tensor& dst, const Tensor& src, const Tensor& ids, int64_t outer, int64_t V, int64_t N,
                  int64_t C);

// For every (o, i) row of x (outer, n, inner) contiguous f32 or bf16: the k best entries along n, sorted (NaN
// counts as the largest value; ties keep the lower position first), into values (x's dtype, exact) / indices
// (i64) (outer, k, inner).
void topk_rows(const Tensor& values, const Tensor& indices, const Tensor& x, int64_t outer, int64_t n, int64_t inner,
               int64_t k, bool largest);

// The flat position of the first value of idx (contiguous i64) outside [0, n), or -1; *value gets that
// value. Synchronises the stream (the answer is needed on the host to throw the error).
int64_t first_out_of_range(const Tensor& idx, int64_t n, int64_t* value);

}  // namespace moon::cuda
