// CPU kernels of the elementwise ops (ops/elementwise.h): the math, on raw f32 pointers.
//
// elementwise_kernels.cpp is compiled once per instruction set (cmake/MultiIsa.cmake); call the right copy
// with MOON_ISA_SELECT(unary_forward)(...). The op layer (ops/binary.cpp, ops/unary.cpp) checks operands,
// allocates outputs and records autograd; it calls
//   * a kernel over the whole tensor as one flat run, split into chunks across OpenMP threads for big
//     tensors, when every operand is dense with the output's shape or a single broadcast value; else
//   * the kernel once per output row from cpu::for_each_broadcast_row (ops/cpu/broadcast.h), which
//     parallelises over rows.
// Kernels are single-threaded. A kernel reads input k at p_k[i * s_k], where the inner stride s_k is 1
// (contiguous: vector path), 0 (a broadcast scalar: vector path with one broadcast value) or anything else
// (a strided view: scalar path). Outputs and gradients are contiguous.
#pragma once

#include <cstdint>

namespace moon::cpu {

// Unary maps y = f(x; p0, p1).
enum class UnaryOp : int {
  Neg,        // -x
  Exp,        // e^x
  Log,        // ln x
  Sqrt,       // sqrt x
  Rsqrt,      // 1 / sqrt x
  Abs,        // |x|
  Square,     // x^2
  Tanh,       // tanh x
  Sigmoid,    // 1 / (1 + e^-x)
  Relu,       // max(x, 0)
  GeluErf,    // x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
  GeluTanh,   // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  Silu,       // x * sigmoid(x)
  Clamp,      // min(max(x, p0), p1)
  AddScalar,  // x + p0
  Scale,      // x * p0
  Pow,        // x^p0 (NaN for a negative x and a non-integer p0, like std::pow)
};

// Broadcasting binary maps out = f(a, b); the differentiable ones.
enum class BinaryOp : int { Add, Sub, Mul, Div, Max, Min };
// Comparisons, u8 results (1 = true).
enum class CompareOp : int { Eq, Gt, Lt };

#define MOON_DECLARE_ELEMENTWISE_KERNELS(isa)                                                                  \
  namespace isa {                                                                                            \
  /* y[i] = f(x[i]) for i < n, contiguous. */                                                               \
  void unary_forward(UnaryOp op, float p0, float p1, const float* x, float* y, int64_t n);                  \
  /* dx[i] = g[i] * f'(x[i]), contiguous; reads y if non-null, else x (see unary_backward_needs). */   \
  void unary_backward(UnaryOp op, float p0, float p1, const float* x, const float* y, const float* g,        \
                      float* dx, int64_t n);                                                                 \
  /* out[i] = a[i*sa] (op) b[i*sb], i < n. */                                                                \
  void binary_row(BinaryOp op, const float* a, int64_t sa, const float* b, int64_t sb, float* out,           \
                  int64_t n);                                                                                \
  /* Mul, Div, Max, Min: ga[i] = g[i] * d(op)/da, gb[i] = g[i] * d(op)/db at (a[i*sa], b[i*sb]); g, ga, gb    \
     contiguous; ga or gb may be null (not wanted). Max/Min split g evenly on ties. */                        \
  void binary_backward_row(BinaryOp op, const float* g, const float* a, int64_t sa, const float* b,          \
                           int64_t sb, float* ga, float* gb, int64_t n);                                     \
  /* out[i] = a[i*sa] (op) b[i*sb] ? 1 : 0. */                                                               \
  void compare_row(CompareOp op, const float* a, int64_t sa, const float* b, int64_t sb, uint8_t* out,       \
                   int64_t n);                                                                               \
  /* out[i] = c[i*sc] ? a[i*sa] : b[i*sb]. */                                                                \
  void where_row(const uint8_t* c, int64_t sc, const float* a, int64_t sa, const float* b, int64_t sb,       \
                 float* out, int64_t n);                                                                     \
  /* ga[i] = c[i*sc] ? g[i] : 0, gb[i] = c[i*sc] ? 0 : g[i]; g, ga, gb contiguous, ga or gb may be null. */   \
  void where_backward_row(const uint8_t* c, int64_t sc, const float* g, float* ga, float* gb, int64_t n);   \
  /* y[i*sy] += alpha * x[i*sx] (in place). */                                                               \
  void axpy_row(float* y, int64_t sy, const float* x, int64_t sx, float alpha, int64_t n);                  \
  /* y[i*sy] *= s (in place). */                                                                             \
  void scale_row(float* y, int64_t sy, float s, int64_t n);                                                 \
  }
MOON_DECLARE_ELEMENTWISE_KERNELS(avx512)
MOON_DECLARE_ELEMENTWISE_KERNELS(avx2)
MOON_DECLARE_ELEMENTWISE_KERNELS(generic)
#undef MOON_DECLARE_ELEMENTWISE_KERNELS

// What unary_backward reads for each op: the input x, the forward output y, or neither.
struct UnaryBackwardNeeds {
  bool x, y;
};
constexpr UnaryBackwardNeeds unary_backward_needs(UnaryOp op) {
  switch (op) {
    case UnaryOp::Exp:
    case UnaryOp::Sqrt:
    case UnaryOp::Rsqrt:
    case UnaryOp::Tanh:
    case UnaryOp::Sigmoid: return {false, true};
    case UnaryOp::Neg:
    case UnaryOp::AddScalar:
    case UnaryOp::Scale: return {false, false};
    default: return {true, false};
  }
}

}  // namespace moon::cpu
