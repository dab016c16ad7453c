// CUDA halves of the elementwise op family (ops/unary.cpp, ops/binary.cpp, ops/elementwise_select.cpp) and
// of dropout (ops/dropout.cpp). Plain C++ declarations, safe to include in any build; defined only in a build
// with the CUDA backend (ops/cuda/elementwise_cuda.cu, ops/cuda/dropout_cuda.cu) and referenced through
// MOON_CUDA_KERNEL. Each takes exactly what the CPU function in the op's kernel table takes, with the same
// meaning; the math matches ops/cpu/elementwise_kernels.cpp.
//
// Floating tensors are f32 or bf16, and all floating tensors of one call share that dtype (the op layer checks
// it; the entry points refuse a mismatch). A bf16 call computes in f32 and rounds each stored element once,
// so it equals the f32 kernel run on the widened inputs, rounded to bf16, bit for bit.
#pragma once

#include <cstdint>

#include "ops/cpu/elementwise_kernels.h"
#include "runtime/tensor.h"

namespace moon::cuda {

// y = f(x; p0, p1); x and y contiguous, same shape.
void unary_forward(cpu::UnaryOp op, float p0, float p1, const Tensor& x, const Tensor& y);
// dx = g * f'(.), reading the forward output y when defined, else x (as cpu::unary_backward_needs says;
// Neg, AddScalar and Scale read neither); all contiguous.
void unary_backward(cpu::UnaryOp op, float p0, float p1, const Tensor& x, const Tensor& y, const Tensor& g,
                    const Tensor& dx);
// a *= s in place; a may be any non-overlapping view.
void scale_inplace(const Tensor& a, double s);

// out = a (op) b; out contiguous, a and b expanded to out's shape (stride 0 on broadcast dimensions).
void binary_forward(cpu::BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b);
// ga = g * d(a op b)/da, gb = g * d(a op b)/db over g's shape (g, ga, gb contiguous; a, b expanded to it);
// ga or gb may be undefined. Max / Min split g evenly on ties.
void binary_backward(cpu::BinaryOp op, const Tensor& g, const Tensor& a, const Tensor& b, const Tensor& ga,
                     const Tensor& gb);
// out (u8, contiguous) = a (cmp) b ? 1 : 0 for f32, bf16, i64, i32 or u8 operands (a and b of one dtype)
// expanded to out's shape.
void compare_forward(cpu::CompareOp op, const Tensor& out, const Tensor& a, const Tensor& b);
// y += alpha * x in place; x expanded to y's shape; y may be any non-overlapping view.
void axpy_inplace(const Tensor& y, const Tensor& x, double alpha);

// out = cond ? a : b; cond (u8, nonzero = true), a, b expanded to out's (contiguous) shape.
void where_forward(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b);
// ga = cond ? g : 0, gb = cond ? 0 : g over g's shape (g, ga, gb contiguous; cond expanded to it); ga or gb
// may be undefined.
void where_backward(const Tensor& cond, const Tensor& g, const Tensor& ga, const Tensor& gb);

// out[i] = in[i] * scale where unit_float(philox(offset + i/4, seed)[i%4]) >= p, else 0 (in, out contiguous,
// same numel and dtype): the same mask as the CPU's dropout for the same (seed, offset), in either dtype.
void dropout_forward(const Tensor& in, const Tensor& out, uint64_t seed, uint64_t offset, float p, float scale);

}  // namespace moon::cuda
