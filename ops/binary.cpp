// Broadcasting binary ops: add, sub, mul, div, maximum, minimum; comparisons eq, gt, lt; in-place add_.
// The op layer: operand checks, output allocation, autograd. The math is in ops/cpu/elementwise_kernels.cpp.
#include "ops/cuda/elementwise_cuda.h"
#include "ops/elementwise.h"
#include "ops/elementwise_common.h"
#include "ops/float_storage.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"

namespace moon {

using cpu::BinaryOp;
using cpu::CompareOp;
using elementwise::check_same_device;
using elementwise::expand_view;
using elementwise::flat_step;
using elementwise::kernel_for;

namespace {

// ---- CPU drivers: one flat run when the operands allow it, else row by row. The kernels are f32: bf16
// operands are widened (elementwise::f32_view keeps broadcast operands broadcast) and bf16 results computed
// into an f32 scratch that commit() rounds once (ops/float_storage.h).

// out = a (op) b; a, b expanded to out's shape (B..., N).
void binary_cpu(BinaryOp op, const Tensor& out, const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = elementwise::f32_view(a_in), b = elementwise::f32_view(b_in);
  const F32Output outo(out);
  float* o = outo.data<float>();
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  const auto row = MOON_ISA_SELECT(binary_row);
  elementwise::for_each_binary_run(out.shape(), a, b, [&](int64_t ia, int64_t sa, int64_t ib, int64_t sb, int64_t io, int64_t n) {
    row(op, pa + ia, sa, pb + ib, sb, o + io, n);
  });
  outo.commit();
}

// ga = g * d(a op b)/da, gb = g * d(a op b)/db over g's shape; a, b expanded to it; ga or gb may be undefined.
void binary_backward_cpu(BinaryOp op, const Tensor& g_in, const Tensor& a_in, const Tensor& b_in, const Tensor& ga,
                         const Tensor& gb) {
  const Tensor g = f32_input(g_in), a = elementwise::f32_view(a_in), b = elementwise::f32_view(b_in);
  const F32Output gao(ga), gbo(gb);
  const float* pg = g.data<float>();
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* pga = gao.data<float>();
  float* pgb = gbo.data<float>();
  const auto row = MOON_ISA_SELECT(binary_backward_row);
  elementwise::for_each_binary_run(g.shape(), a, b, [&](int64_t ia, int64_t sa, int64_t ib, int64_t sb, int64_t io, int64_t n) {
    row(op, pg + io, pa + ia, sa, pb + ib, sb, pga ? pga + io : nullptr, pgb ? pgb + io : nullptr, n);
  });
  gao.commit();
  gbo.commit();
}

// out = a (cmp) b as u8; a, b expanded to out's shape. f32 goes through the vector kernel, integers here.
template <class T>
void compare_scalar_cpu(CompareOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  uint8_t* o = out.data<uint8_t>();
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  cpu::for_each_broadcast_row<2>(out.shape(), {&a.strides(), &b.strides()},
                                 [&](int64_t oo, const std::array<int64_t, 2>& off, int64_t n,
                                     const std::array<int64_t, 2>& step) {
                                   const T* x = pa + off[0];
                                   const T* y = pb + off[1];
                                   for (int64_t i = 0; i < n; ++i) {
                                     const T u = x[i * step[0]], v = y[i * step[1]];
                                     o[oo + i] = op == CompareOp::Eq ? u == v : op == CompareOp::Gt ? u > v : u < v;
                                   }
                                 });
}

// bf16 operands are compared as their (exact) f32 widenings.
void compare_cpu(CompareOp op, const Tensor& out, const Tensor& a_in, const Tensor& b_in) {
  if (a_in.dtype() == DType::I64) return compare_scalar_cpu<int64_t>(op, out, a_in, b_in);
  if (a_in.dtype() == DType::I32) return compare_scalar_cpu<int32_t>(op, out, a_in, b_in);
  if (a_in.dtype() == DType::U8) return compare_scalar_cpu<uint8_t>(op, out, a_in, b_in);
  const Tensor a = elementwise::f32_view(a_in), b = elementwise::f32_view(b_in);
  uint8_t* o = out.data<uint8_t>();
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  const auto row = MOON_ISA_SELECT(compare_row);
  elementwise::for_each_binary_run(out.shape(), a, b, [&](int64_t ia, int64_t sa, int64_t ib, int64_t sb, int64_t io, int64_t n) {
    row(op, pa + ia, sa, pb + ib, sb, o + io, n);
  });
}

// y += alpha * x in place; x expanded to y's shape; y may be any (non-overlapping) view. A bf16 y is updated
// in a contiguous f32 copy of its values, rounded back once.
void axpy_cpu(const Tensor& y_in, const Tensor& x_in, double alpha) {
  const F32Output yo(y_in, true);
  const Tensor& y = yo.get();
  const Tensor x = elementwise::f32_view(x_in);
  float* py = y.data<float>();
  const float* px = x.data<float>();
  const float al = static_cast<float>(alpha);
  const auto row = MOON_ISA_SELECT(axpy_row);
  const int fx = flat_step(x);
  if (y.is_contiguous() && fx >= 0) {
    elementwise::parallel_chunks(y.numel(), [&](int64_t i, int64_t n) { row(py + i, 1, px + i * fx, fx, al, n); });
    yo.commit();
    return;
  }
  // Rows of y walked through y's own strides (its offsets come back as input 0).
  cpu::for_each_broadcast_row<2>(y.shape(), {&y.strides(), &x.strides()},
                                 [&](int64_t, const std::array<int64_t, 2>& off, int64_t n,
                                     const std::array<int64_t, 2>& step) {
                                   row(py + off[0], step[0], px + off[1], step[1], al, n);
                                 });
  yo.commit();
}

using BinaryFn = void (*)(BinaryOp, const Tensor&, const Tensor&, const Tensor&);
using BinaryBackwardFn = void (*)(BinaryOp, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&);
using CompareFn = void (*)(CompareOp, const Tensor&, const Tensor&, const Tensor&);
using AxpyFn = void (*)(const Tensor&, const Tensor&, double);
KernelTable<BinaryFn> g_binary{"binary", {binary_cpu, MOON_CUDA_KERNEL(cuda::binary_forward)}};
KernelTable<BinaryBackwardFn> g_binary_backward{"binary backward",
                                                {binary_backward_cpu, MOON_CUDA_KERNEL(cuda::binary_backward)}};
KernelTable<CompareFn> g_compare{"compare", {compare_cpu, MOON_CUDA_KERNEL(cuda::compare_forward)}};
KernelTable<AxpyFn> g_axpy{"add_", {axpy_cpu, MOON_CUDA_KERNEL(cuda::axpy_inplace)}};

// ---- op layer

// Checks two floating operands of one dtype (f32 or bf16) on one device and returns their broadcast shape.
Shape check_binary(const char* op, const Tensor& a, const Tensor& b) {
  check_same_device(op, a, b);
  check_float_storage(op, a, "operand");
  check_same_dtype(op, a, b, "operand");
  return broadcast_shapes(a.shape(), b.shape(), op);
}

// out = a (op) b with broadcasting, and its backward.
Tensor binary_op(const char* name, BinaryOp op, const Tensor& a, const Tensor& b) {
  const Shape shape = check_binary(name, a, b);
  Tensor out = empty(shape, a.dtype(), a.device());  // broadcast(a, b), the operands' dtype
  kernel_for(g_binary, name, a.device())(op, out, expand_view(a, shape), expand_view(b, shape));
  if (!needs_grad({&a, &b})) return out;

  const Shape sa = a.shape(), sb = b.shape();
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  if (op == BinaryOp::Add || op == BinaryOp::Sub) {
    const bool is_sub = op == BinaryOp::Sub;
    record_op(name, {a, b}, {out}, [sa, sb, ga, gb, is_sub](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{ga ? sum_to(g[0], sa) : Tensor(),
                                 gb ? sum_to(is_sub ? neg(g[0]) : g[0], sb) : Tensor()};
    });
    return out;
  }
  // Mul, Div, Max, Min: one fused kernel gives both full-size gradients, then sum_to undoes broadcasting.
  SavedTensor xa(a, name), xb(b, name);
  record_op(name, {a, b}, {out}, [name, op, xa, xb, ga, gb](const std::vector<Tensor>& grads) {
    const Tensor& x = xa.get();
    const Tensor& y = xb.get();
    const Tensor g = grads[0].contiguous();  // broadcast shape
    const Shape& shape = g.shape();
    // Full-size gradients in the operands' dtype (g has it: autograd converts to the output's dtype); with
    // broadcasting, sum_to then reduces them (bf16: rounded per element here, and again after the sum).
    Tensor gx = ga ? empty(shape, x.dtype(), g.device()) : Tensor();
    Tensor gy = gb ? empty(shape, y.dtype(), g.device()) : Tensor();
    kernel_for(g_binary_backward, name, g.device())(op, g, expand_view(x, shape), expand_view(y, shape), gx, gy);
    return std::vector<Tensor>{ga ? sum_to(gx, x.shape()) : Tensor(), gb ? sum_to(gy, y.shape()) : Tensor()};
  });
  return out;
}

// u8 result of a (cmp) b with broadcasting; not differentiable.
Tensor compare_op(const char* name, CompareOp op, const Tensor& a, const Tensor& b) {
  check_same_device(name, a, b);
  MOON_CHECK(a.dtype() == b.dtype(), name, ": operands have different dtypes: ", a.desc(), " and ", b.desc(),
             "; convert one with .to(dtype)");
  MOON_CHECK(is_float_storage(a.dtype()) || a.dtype() == DType::I64 || a.dtype() == DType::I32 ||
                 a.dtype() == DType::U8,
             name, ": expected f32, bf16, i64, i32 or u8 operands, got ", a.desc(), " and ", b.desc());
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = empty(shape, DType::U8, a.device());
  kernel_for(g_compare, name, a.device())(op, out, expand_view(a, shape), expand_view(b, shape));
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary_op("add", BinaryOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op("sub", BinaryOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op("mul", BinaryOp::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_op("div", BinaryOp::Div, a, b); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary_op("maximum", BinaryOp::Max, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary_op("minimum", BinaryOp::Min, a, b); }

Tensor eq(const Tensor& a, const Tensor& b) { return compare_op("eq", CompareOp::Eq, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare_op("gt", CompareOp::Gt, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare_op("lt", CompareOp::Lt, a, b); }

void add_(Tensor& a, const Tensor& b, double alpha) {
  const char* op = "add_";
  check_binary(op, a, b);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
  MOON_CHECK(shape == a.shape(), op, ": cannot add ", b.desc(), " into ", a.desc(),
             " in place: the broadcast shape ", shape_str(shape), " is not the shape of the destination");
  check_inplace_allowed(a, op);
  kernel_for(g_axpy, op, a.device())(a, expand_view(b, shape), alpha);
  a.bump_version();
}

}  // namespace moon
