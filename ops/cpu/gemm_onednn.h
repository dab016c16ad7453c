// Batched strided matrix multiply on the CPU through oneDNN matmul: C[b] = op(A)[b] @ op(B)[b] (+C) (+bias).
//
// Every CPU matmul in moon goes through gemm(). Operands are 3-D strided views; a transposed operand is
// just a view with swapped strides and is consumed in place whenever one of its two inner strides is 1.
// oneDNN primitives are cached (LRU, thread-safe) keyed by shapes, strides, dtype, bias, accumulate and epilogue.
#pragma once
#include <cstddef>
#include <cstdint>

namespace moon::cpu {

enum class GemmDType { F32, BF16 };  // dtype of A and B (bf16 stored as uint16_t); accumulation is f32

// An activation applied to each output element after the bias, in the same pass (not with accumulate).
enum class GemmEpilogue {
  None,
  GeluTanh,  // 0.5 c (1 + tanh(sqrt(2/pi) (c + 0.044715 c^3)))
  GeluErf,   // 0.5 c (1 + erf(c / sqrt 2))
};

// C[b] (M,N) = epilogue(op(A)[b] (M,K) @ op(B)[b] (K,N)  (+ C[b] if accumulate)  (+ bias[j] on every row))
// Operands are strided 3-D views, strides in elements:
//   A element (b,i,k) at A + b*a_stride[0] + i*a_stride[1] + k*a_stride[2]
//   B element (b,k,j) at B + b*b_stride[0] + k*b_stride[1] + j*b_stride[2]
//   C element (b,i,j) at C + b*c_stride[0] + i*c_stride[1] + j*c_stride[2]
// A batch stride of 0 means the operand is shared by every batch (broadcast). Transposed operands are
// just swapped strides: they are consumed without a copy when one of the two inner strides is 1.
struct GemmArgs {
  int64_t batch = 1, M = 0, N = 0, K = 0;
  GemmDType in_dtype = GemmDType::F32;
  const void* A = nullptr; int64_t a_stride[3] = {0, 0, 0};  // (batch, M, K)
  const void* B = nullptr; int64_t b_stride[3] = {0, 0, 0};  // (batch, K, N)
  float* C = nullptr;      int64_t c_stride[3] = {0, 0, 0};  // (batch, M, N); output is always f32
  const float* bias = nullptr;  // (N) or nullptr
  bool accumulate = false;      // C += product (oneDNN sum post-op), else C = product
  GemmEpilogue epilogue = GemmEpilogue::None;  // oneDNN eltwise post-op after the bias
};

// Throws moon::Error on bad arguments (negative sizes, null pointers, an output whose elements overlap)
// and on oneDNN failures.
//
// Copies happen only in these cases (all rare for tensors produced by moon itself):
//  * an input operand (A or B) whose matrix has neither inner stride equal to 1, or whose unit-stride
//    layout overlaps itself (e.g. outer stride 0 = a broadcast row/column): packed into a dense temporary;
//  * an output with c_stride[2] != 1 that cannot be produced by the transposed formulation
//    C^T = B^T A^T (i.e. a bias is given, or c_stride[1] != 1): computed into a dense temporary and
//    scattered back (gathered first when accumulating).
// Batches whose strides oneDNN cannot describe (negative or overlapping batch strides, or both A and B
// broadcast) run as a loop of 2-D primitives over the batch, without copying.
void gemm(const GemmArgs& args);

struct GemmCacheStats { size_t hits = 0, misses = 0, entries = 0; };
GemmCacheStats gemm_cache_stats();
void gemm_cache_clear();  // drops all cached primitives and resets the counters

}  // namespace moon::cpu
