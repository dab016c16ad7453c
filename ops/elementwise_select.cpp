// Selection by u8 masks: where(cond, a, b) and masked_fill(a, mask, value), broadcasting, with backward.
// The op layer; the math is in ops/cpu/elementwise_kernels.cpp.
#include "ops/cuda/elementwise_cuda.h"
#include "ops/elementwise.h"
#include "ops/elementwise_common.h"
#include "ops/float_storage.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"

namespace moon {

using elementwise::check_same_device;
using elementwise::expand_view;
using elementwise::flat_step;
using elementwise::kernel_for;

namespace {

// The CPU kernels are f32: bf16 values are widened (elementwise::f32_view keeps broadcast operands
// broadcast) and bf16 results computed into an f32 scratch that commit() rounds (exactly: a selection of
// widened bf16 values) into the output (ops/float_storage.h).

// out = cond ? a : b; cond (u8), a, b expanded to out's shape.
void where_cpu(const Tensor& out_in, const Tensor& cond, const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = elementwise::f32_view(a_in), b = elementwise::f32_view(b_in);
  const F32Output outo(out_in);
  const Tensor& out = outo.get();
  float* o = out.data<float>();
  const uint8_t* pc = cond.data<uint8_t>();
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  const auto row = MOON_ISA_SELECT(where_row);
  const int fc = flat_step(cond), fa = flat_step(a), fb = flat_step(b);
  if (fc >= 0 && fa >= 0 && fb >= 0) {
    elementwise::parallel_chunks(out.numel(), [&](int64_t i, int64_t n) {
      row(pc + i * fc, fc, pa + i * fa, fa, pb + i * fb, fb, o + i, n);
    });
    outo.commit();
    return;
  }
  cpu::for_each_broadcast_row<3>(out.shape(), {&cond.strides(), &a.strides(), &b.strides()},
                                 [&](int64_t oo, const std::array<int64_t, 3>& off, int64_t n,
                                     const std::array<int64_t, 3>& step) {
                                   row(pc + off[0], step[0], pa + off[1], step[1], pb + off[2], step[2], o + oo, n);
                                 });
  outo.commit();
}

// ga = cond ? g : 0, gb = cond ? 0 : g over g's shape; cond expanded to it; ga or gb may be undefined.
void where_backward_cpu(const Tensor& cond, const Tensor& g_in, const Tensor& ga, const Tensor& gb) {
  const Tensor g = f32_input(g_in);
  const F32Output gao(ga), gbo(gb);
  const uint8_t* pc = cond.data<uint8_t>();
  const float* pg = g.data<float>();
  float* pga = gao.data<float>();
  float* pgb = gbo.data<float>();
  const auto row = MOON_ISA_SELECT(where_backward_row);
  const int fc = flat_step(cond);
  if (fc >= 0) {
    elementwise::parallel_chunks(g.numel(), [&](int64_t i, int64_t n) {
      row(pc + i * fc, fc, pg + i, pga ? pga + i : nullptr, pgb ? pgb + i : nullptr, n);
    });
    gao.commit();
    gbo.commit();
    return;
  }
  cpu::for_each_broadcast_row<1>(g.shape(), {&cond.strides()},
                                 [&](int64_t oo, const std::array<int64_t, 1>& off, int64_t n,
                                     const std::array<int64_t, 1>& step) {
                                   row(pc + off[0], step[0], pg + oo, pga ? pga + oo : nullptr,
                                       pgb ? pgb + oo : nullptr, n);
                                 });
  gao.commit();
  gbo.commit();
}

using WhereFn = void (*)(const Tensor&, const Tensor&, const Tensor&, const Tensor&);
using WhereBackwardFn = void (*)(const Tensor&, const Tensor&, const Tensor&, const Tensor&);
KernelTable<WhereFn> g_where{"where", {where_cpu, MOON_CUDA_KERNEL(cuda::where_forward)}};
KernelTable<WhereBackwardFn> g_where_backward{"where backward",
                                              {where_backward_cpu, MOON_CUDA_KERNEL(cuda::where_backward)}};

void check_mask(const char* op, const Tensor& mask, const Tensor& a) {
  MOON_CHECK(mask.dtype() == DType::U8, op, ": the mask must be u8 (nonzero = true), got ", mask.desc(),
             "; build it with a comparison (eq, gt, lt) or .to(DType::U8)");
  check_same_device(op, mask, a);
}

}  // namespace

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  const char* op = "where";
  check_mask(op, cond, a);
  check_same_device(op, a, b);
  check_float_storage(op, a, "value");
  check_same_dtype(op, a, b, "value");
  const Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), op), b.shape(), op);
  Tensor out = empty(shape, a.dtype(), a.device());  // broadcast(cond, a, b), the values' dtype
  kernel_for(g_where, op, a.device())(out, expand_view(cond, shape), expand_view(a, shape), expand_view(b, shape));
  if (needs_grad({&a, &b})) {
    const Tensor c = cond.detach();  // masks are never written in place by the ops that consume them
    const Shape sa = a.shape(), sb = b.shape();
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    SavedTensor sc(c, op);
    const DType dtype = a.dtype();
    record_op(op, {a, b}, {out}, [sc, sa, sb, ga, gb, dtype](const std::vector<Tensor>& grads) {
      const Tensor g = grads[0].contiguous();  // in the output's dtype
      Tensor gx = ga ? empty(g.shape(), dtype, g.device()) : Tensor();
      Tensor gy = gb ? empty(g.shape(), dtype, g.device()) : Tensor();
      kernel_for(g_where_backward, "where", g.device())(expand_view(sc.get(), g.shape()), g, gx, gy);
      return std::vector<Tensor>{ga ? sum_to(gx, sa) : Tensor(), gb ? sum_to(gy, sb) : Tensor()};
    });
  }
  return out;
}

Tensor masked_fill(const Tensor& a, const Tensor& mask, double value) {
  const char* op = "masked_fill";
  check_mask(op, mask, a);
  check_float_storage(op, a, "tensor");
  const Shape shape = broadcast_shapes(a.shape(), mask.shape(), op);
  Tensor out = empty(shape, a.dtype(), a.device());  // broadcast(a, mask), a's dtype
  // out = mask ? value : a, with value as a broadcast 1-element tensor of a's dtype (bf16: value rounded).
  const Tensor fill = full({}, value, a.dtype(), a.device());
  kernel_for(g_where, op, a.device())(out, expand_view(mask, shape), expand_view(fill, shape), expand_view(a, shape));
  if (needs_grad({&a})) {
    const Shape sa = a.shape();
    SavedTensor sm(mask.detach(), op);
    const DType dtype = a.dtype();
    record_op(op, {a}, {out}, [sm, sa, dtype](const std::vector<Tensor>& grads) {
      const Tensor g = grads[0].contiguous();  // in the output's dtype
      Tensor ga = empty(g.shape(), dtype, g.device());
      kernel_for(g_where_backward, "masked_fill", g.device())(expand_view(sm.get(), g.shape()), g, Tensor(), ga);
      return std::vector<Tensor>{sum_to(ga, sa)};
    });
  }
  return out;
}

}  // namespace moon
