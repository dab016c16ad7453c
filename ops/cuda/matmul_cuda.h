// CUDA half of the GEMM behind matmul / bmm / linear (ops/matmul.cpp). Plain C++ declaration, safe to
// include in any build; defined in ops/cuda/matmul_cuda.cu (CUDA builds only) and referenced through
// MOON_CUDA_KERNEL. The linear bias gradient (column_sum) is in ops/cuda/norm_cuda.h.
#pragma once

#include "ops/cpu/gemm_onednn.h"
#include "runtime/device.h"

namespace moon::cuda {

// One batched strided GEMM on a CUDA device, with the contract of cpu::gemm (ops/cpu/gemm_onednn.h):
//   C[b] (M,N) = epilogue(A[b] (M,K) @ B[b] (K,N)  (+ C[b] if accumulate)  (+ bias[j] on every row))
// The epilogue may be GeluTanh (cuBLASLt's GELU); GeluErf is refused (the op layer applies gelu() then).
// A, B f32 or bf16 (args.in_dtype), C f32, bias dense f32 (N) or nullptr; all pointers on `device`.
// Through cuBLASLt with f32 accumulation (CUBLAS_COMPUTE_32F, no TF32). Operands whose strides cuBLASLt
// cannot describe are packed into dense temporaries; an output it cannot describe is computed into one and
// scattered back.
void gemm(const cpu::GemmArgs& args, Device device);

}  // namespace moon::cuda
