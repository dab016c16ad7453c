// Broadcasting binary ops: add, sub, mul, div (forward, backward, CPU kernels).
#include "ops/cpu/broadcast.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

enum class BinaryKind { Add, Sub, Mul, Div };

template <BinaryKind K>
inline float apply_binary(float x, float y) {
  if constexpr (K == BinaryKind::Add) return x + y;
  if constexpr (K == BinaryKind::Sub) return x - y;
  if constexpr (K == BinaryKind::Mul) return x * y;
  return x / y;
}

// out[i] = a[i] (op) b[i] over the broadcast shape of out; a and b already expanded to out's shape.
template <BinaryKind K>
void binary_cpu(const Tensor& out, const Tensor& a, const Tensor& b) {
  float* o = out.data<float>();
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  cpu::for_each_broadcast_row<2>(out.shape(), {&a.strides(), &b.strides()},
                                 [&](int64_t oo, const std::array<int64_t, 2>& off, int64_t n,
                                     const std::array<int64_t, 2>& step) {
                                   const float* x = pa + off[0];
                                   const float* y = pb + off[1];
                                   float* z = o + oo;
                                   if (step[0] == 1 && step[1] == 1) {
                                     for (int64_t i = 0; i < n; ++i) z[i] = apply_binary<K>(x[i], y[i]);
                                   } else if (step[0] == 1 && step[1] == 0) {
                                     const float s = *y;
                                     for (int64_t i = 0; i < n; ++i) z[i] = apply_binary<K>(x[i], s);
                                   } else {
                                     for (int64_t i = 0; i < n; ++i)
                                       z[i] = apply_binary<K>(x[i * step[0]], y[i * step[1]]);
                                   }
                                 });
}

using BinaryFn = void (*)(const Tensor&, const Tensor&, const Tensor&);
KernelTable<BinaryFn> g_add{"add", {binary_cpu<BinaryKind::Add>, nullptr}};
KernelTable<BinaryFn> g_sub{"sub", {binary_cpu<BinaryKind::Sub>, nullptr}};
KernelTable<BinaryFn> g_mul{"mul", {binary_cpu<BinaryKind::Mul>, nullptr}};
KernelTable<BinaryFn> g_div{"div", {binary_cpu<BinaryKind::Div>, nullptr}};

// Checks operands, broadcasts them and runs the kernel into a new output.
Tensor binary_forward(const KernelTable<BinaryFn>& table, const Tensor& a, const Tensor& b) {
  MOON_CHECK(a.device() == b.device(), table.op, ": operands are on different devices: ", a.desc(), " and ", b.desc());
  MOON_CHECK(a.dtype() == DType::F32 && b.dtype() == DType::F32, table.op, ": expected f32 operands, got ", a.desc(),
             " and ", b.desc(), "; convert with .to(DType::F32)");
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), table.op);
  Tensor out = empty(shape, DType::F32, a.device());
  NoGradGuard ng;
  table.get(a.device())(out, a.expand(shape), b.expand(shape));
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(g_add, a, b);
  if (needs_grad({&a, &b})) {
    const Shape sa = a.shape(), sb = b.shape();
    record_op("add", {a, b}, {out}, [sa, sb](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{sum_to(g[0], sa), sum_to(g[0], sb)};
    });
  }
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(g_sub, a, b);
  if (needs_grad({&a, &b})) {
    const Shape sa = a.shape(), sb = b.shape();
    record_op("sub", {a, b}, {out}, [sa, sb](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{sum_to(g[0], sa), sum_to(neg(g[0]), sb)};
    });
  }
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(g_mul, a, b);
  if (needs_grad({&a, &b})) {
    SavedTensor sa(a, "mul"), sb(b, "mul");
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    record_op("mul", {a, b}, {out}, [sa, sb, ga, gb](const std::vector<Tensor>& g) {
      const Tensor& x = sa.get();
      const Tensor& y = sb.get();
      return std::vector<Tensor>{ga ? sum_to(mul(g[0], y), x.shape()) : Tensor(),
                                 gb ? sum_to(mul(g[0], x), y.shape()) : Tensor()};
    });
  }
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(g_div, a, b);
  if (needs_grad({&a, &b})) {
    SavedTensor sa(a, "div"), sb(b, "div");
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    record_op("div", {a, b}, {out}, [sa, sb, ga, gb](const std::vector<Tensor>& g) {
      const Tensor& x = sa.get();
      const Tensor& y = sb.get();
      Tensor gx = div(g[0], y);  // d(x/y)/dx = 1/y
      return std::vector<Tensor>{ga ? sum_to(gx, x.shape()) : Tensor(),
                                 gb ? sum_to(neg(mul(gx, div(x, y))), y.shape()) : Tensor()};
    });
  }
  return out;
}

}  // namespace moon
