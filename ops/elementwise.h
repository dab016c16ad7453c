// Elementwise ops. Binary ops broadcast (numpy rules). All are differentiable; CPU kernels are vectorised.
#pragma once

#include "runtime/tensor.h"

namespace moon {

// ---- binary, broadcasting
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);

// ---- with a scalar
Tensor add_scalar(const Tensor& a, double s);
Tensor scale(const Tensor& a, double s);  // a * s
Tensor pow(const Tensor& a, double exponent);

// ---- unary
Tensor neg(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor rsqrt(const Tensor& a);
Tensor abs(const Tensor& a);
Tensor square(const Tensor& a);
Tensor tanh(const Tensor& a);
Tensor sigmoid(const Tensor& a);
Tensor relu(const Tensor& a);
enum class GeluApprox { Erf, Tanh };
Tensor gelu(const Tensor& a, GeluApprox approx = GeluApprox::Erf);
Tensor silu(const Tensor& a);
Tensor clamp(const Tensor& a, double lo, double hi);

// ---- selection (masks are u8, nonzero = true; they broadcast)
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor masked_fill(const Tensor& a, const Tensor& mask, double value);

// ---- comparisons (not differentiable; u8 results)
Tensor eq(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);

// ---- in place (not recorded by autograd; refused on tensors that require grad while grad mode is on)
void add_(Tensor& a, const Tensor& b, double alpha = 1.0);  // a += alpha * b
void mul_(Tensor& a, double s);                              // a *= s

// ---- operators
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator*(const Tensor& a, double s) { return scale(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return scale(a, s); }
inline Tensor operator+(const Tensor& a, double s) { return add_scalar(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return add_scalar(a, -s); }

}  // namespace moon
