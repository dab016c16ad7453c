// Unary elementwise ops and the ops with a scalar (add_scalar, scale, pow, clamp), plus in-place mul_.
// The op layer: checks, output allocation, autograd with fused backward kernels (one pass computes
// g * f'(x)). The math is in ops/cpu/elementwise_kernels.cpp.
#include <cmath>

#include "ops/cuda/elementwise_cuda.h"
#include "ops/elementwise.h"
#include "ops/elementwise_common.h"
#include "ops/float_storage.h"
#include "runtime/autograd.h"

namespace moon {

using cpu::UnaryOp;
using elementwise::kernel_for;

namespace {

// ---- CPU drivers. The kernels are f32: bf16 tensors are widened with f32_input and bf16 results computed
// into an f32 scratch that commit() rounds once (ops/float_storage.h).

// y = f(x); x and y contiguous, same shape.
void unary_cpu(UnaryOp op, float p0, float p1, const Tensor& x_in, const Tensor& y) {
  const Tensor x = f32_input(x_in);
  const F32Output yo(y);
  const float* px = x.data<float>();
  float* py = yo.data<float>();
  const auto fwd = MOON_ISA_SELECT(unary_forward);
  elementwise::parallel_chunks(y.numel(), [&](int64_t i, int64_t n) { fwd(op, p0, p1, px + i, py + i, n); });
  yo.commit();
}

// dx = g * f'(x), reading x or the forward output y (undefined when not needed); all contiguous.
void unary_backward_cpu(UnaryOp op, float p0, float p1, const Tensor& x_in, const Tensor& y_in, const Tensor& g_in,
                        const Tensor& dx) {
  const Tensor x = f32_input(x_in), y = f32_input(y_in), g = f32_input(g_in);
  const F32Output dxo(dx);
  const float* px = x.defined() ? x.data<float>() : nullptr;
  const float* py = y.defined() ? y.data<float>() : nullptr;
  const float* pg = g.data<float>();
  float* pd = dxo.data<float>();
  const auto bwd = MOON_ISA_SELECT(unary_backward);
  elementwise::parallel_chunks(dx.numel(), [&](int64_t i, int64_t n) {
    bwd(op, p0, p1, px ? px + i : nullptr, py ? py + i : nullptr, pg + i, pd + i, n);
  });
  dxo.commit();
}

// a *= s in place; a may be any (non-overlapping) view. A bf16 a is scaled in a contiguous f32 copy of its
// values, rounded back once.
void scale_inplace_cpu(const Tensor& a_in, double s) {
  const F32Output ao(a_in, true);
  const Tensor& a = ao.get();
  float* p = a.data<float>();
  const float f = static_cast<float>(s);
  const auto row = MOON_ISA_SELECT(scale_row);
  if (a.is_contiguous()) {
    elementwise::parallel_chunks(a.numel(), [&](int64_t i, int64_t n) { row(p + i, 1, f, n); });
  } else {
    cpu::for_each_broadcast_row<1>(a.shape(), {&a.strides()},
                                   [&](int64_t, const std::array<int64_t, 1>& off, int64_t n,
                                       const std::array<int64_t, 1>& step) { row(p + off[0], step[0], f, n); });
  }
  ao.commit();
}

using UnaryFn = void (*)(UnaryOp, float, float, const Tensor&, const Tensor&);
using UnaryBackwardFn = void (*)(UnaryOp, float, float, const Tensor&, const Tensor&, const Tensor&, const Tensor&);
using ScaleInplaceFn = void (*)(const Tensor&, double);
KernelTable<UnaryFn> g_unary{"unary", {unary_cpu, MOON_CUDA_KERNEL(cuda::unary_forward)}};
KernelTable<UnaryBackwardFn> g_unary_backward{"unary backward",
                                              {unary_backward_cpu, MOON_CUDA_KERNEL(cuda::unary_backward)}};
KernelTable<ScaleInplaceFn> g_scale_inplace{"mul_", {scale_inplace_cpu, MOON_CUDA_KERNEL(cuda::scale_inplace)}};

// ---- op layer

// y = f(a; p0, p1), and its backward dx = g * f'(.) in one fused kernel, saving x or y as it needs.
Tensor unary_op(const char* name, UnaryOp op, const Tensor& a, double p0 = 0.0, double p1 = 0.0) {
  check_float_storage(name, a, "tensor");
  const float f0 = static_cast<float>(p0), f1 = static_cast<float>(p1);
  Tensor x;
  {
    NoGradGuard ng;
    x = a.contiguous();  // a itself when already contiguous
  }
  Tensor out = empty(a.shape(), a.dtype(), a.device());
  kernel_for(g_unary, name, a.device())(op, f0, f1, x, out);
  if (needs_grad({&a})) {
    const cpu::UnaryBackwardNeeds need = cpu::unary_backward_needs(op);
    const SavedTensor sx = need.x ? SavedTensor(x, name) : SavedTensor();
    const SavedTensor sy = need.y ? SavedTensor(out, name) : SavedTensor();
    const DType dtype = a.dtype();
    record_op(name, {a}, {out}, [name, op, f0, f1, sx, sy, dtype](const std::vector<Tensor>& g) {
      const Tensor gc = g[0].contiguous();  // in the output's dtype, which is a's
      Tensor dx = empty(gc.shape(), dtype, gc.device());
      kernel_for(g_unary_backward, name, gc.device())(op, f0, f1, sx.defined() ? sx.get() : Tensor(),
                                                       sy.defined() ? sy.get() : Tensor(), gc, dx);
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

}  // namespace

Tensor neg(const Tensor& a) { return unary_op("neg", UnaryOp::Neg, a); }
Tensor exp(const Tensor& a) { return unary_op("exp", UnaryOp::Exp, a); }
Tensor log(const Tensor& a) { return unary_op("log", UnaryOp::Log, a); }
Tensor sqrt(const Tensor& a) { return unary_op("sqrt", UnaryOp::Sqrt, a); }
Tensor rsqrt(const Tensor& a) { return unary_op("rsqrt", UnaryOp::Rsqrt, a); }
Tensor abs(const Tensor& a) { return unary_op("abs", UnaryOp::Abs, a); }
Tensor square(const Tensor& a) { return unary_op("square", UnaryOp::Square, a); }
Tensor tanh(const Tensor& a) { return unary_op("tanh", UnaryOp::Tanh, a); }
Tensor sigmoid(const Tensor& a) { return unary_op("sigmoid", UnaryOp::Sigmoid, a); }
Tensor relu(const Tensor& a) { return unary_op("relu", UnaryOp::Relu, a); }
Tensor silu(const Tensor& a) { return unary_op("silu", UnaryOp::Silu, a); }

Tensor gelu(const Tensor& a, GeluApprox approx) {
  return approx == GeluApprox::Tanh ? unary_op("gelu_tanh", UnaryOp::GeluTanh, a)
                                    : unary_op("gelu", UnaryOp::GeluErf, a);
}

Tensor clamp(const Tensor& a, double lo, double hi) {
  MOON_CHECK(!(lo > hi), "clamp: lower bound ", lo, " is above upper bound ", hi, " for ", a.desc(),
             "; pass lo <= hi (use +-infinity for a one-sided clamp)");
  return unary_op("clamp", UnaryOp::Clamp, a, lo, hi);
}

Tensor add_scalar(const Tensor& a, double s) { return unary_op("add_scalar", UnaryOp::AddScalar, a, s); }
Tensor scale(const Tensor& a, double s) { return unary_op("scale", UnaryOp::Scale, a, s); }

Tensor pow(const Tensor& a, double exponent) {
  MOON_CHECK(std::isfinite(exponent), "pow: the exponent must be finite, got ", exponent, " for ", a.desc());
  return unary_op("pow", UnaryOp::Pow, a, exponent);
}

void mul_(Tensor& a, double s) {
  check_float_storage("mul_", a, "tensor");
  check_inplace_allowed(a, "mul_");
  kernel_for(g_scale_inplace, "mul_", a.device())(a, s);
  a.bump_version();
}

}  // namespace moon
