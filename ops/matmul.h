// Matrix products: matmul (PyTorch semantics), linear and bmm. Every CPU product runs through the oneDNN
// wrapper ops/cpu/gemm_onednn.h; transposed and broadcast operands are passed as strided views, never copied.
//
// dtypes: both operands f32, or both bf16. bf16 products accumulate in f32 and return an f32 result.
// Gradients: always f32 (also for bf16 inputs: the f32 GEMM output is returned as is, not rounded back to
// bf16; the autograd engine converts it where a bf16 leaf needs it). For bf16 inputs the incoming gradient
// is rounded to bf16 once, so the backward GEMMs also run on bf16 operands with f32 accumulation.
#pragma once

#include "ops/elementwise.h"
#include "runtime/tensor.h"

namespace moon {

// a @ b, like torch.matmul:
//   (K) @ (K) -> ()            (M, K) @ (K) -> (M)            (K) @ (K, N) -> (N)
//   (..., M, K) @ (..., K, N) -> (broadcast(...), M, N)      batch dimensions broadcast (numpy rules);
//   a 1-D operand gets a dimension of 1 prepended (a) or appended (b), removed again from the result.
// Backward: dA = dC @ B^T, dB = A^T @ dC by the same GEMM on swapped strides, summed over broadcast batch
// dimensions (folded into the GEMM's inner dimension where the strides allow, else accumulated by the GEMM).
Tensor matmul(const Tensor& a, const Tensor& b);

// x @ weight^T + bias:  x (..., in), weight (out, in), bias (out) or undefined  ->  (..., out).
// weight is consumed transposed by strides (no copy); bias goes through the GEMM's bias. The bias is f32
// (a bf16 bias is converted). Backward: dx = dy @ W, dW = dy^T x over all leading dims flattened into one
// GEMM, db = column sums of dy.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// The same with the result in `out_dtype`, the operands' dtype or f32: f32 keeps a bf16 product's f32
// accumulation unrounded (bf16 GEMM operands with f32 activations, the model's bf16 compute mode).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, DType out_dtype);

// gelu(linear(x, weight, bias), approx). Without autograd (inference) the activation runs in the GEMM's
// epilogue, in the same pass as the product and the bias (oneDNN: both forms; cuBLASLt: the tanh form);
// with autograd, or an erf GELU on CUDA, it is linear() then gelu().
Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias, GeluApprox approx);
Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias, GeluApprox approx, DType out_dtype);

// Batched product with no broadcasting: (B, M, K) @ (B, K, N) -> (B, M, N).
Tensor bmm(const Tensor& a, const Tensor& b);

}  // namespace moon
