// Unary elementwise ops (forward, backward, CPU kernels).
#include "ops/elementwise.h"
#include "runtime/autograd.h"

namespace moon {

Tensor scale(const Tensor& a, double s) {
  MOON_CHECK(a.dtype() == DType::F32, "scale: expected an f32 tensor, got ", a.desc());
  Tensor src = a.contiguous();
  Tensor out = empty(a.shape(), DType::F32, a.device());
  const float* x = src.data<float>();
  float* y = out.data<float>();
  const float f = static_cast<float>(s);
  for (int64_t i = 0; i < out.numel(); ++i) y[i] = x[i] * f;
  if (needs_grad({&a}))
    record_op("scale", {a}, {out}, [s](const std::vector<Tensor>& g) { return std::vector<Tensor>{scale(g[0], s)}; });
  return out;
}

Tensor neg(const Tensor& a) { return scale(a, -1.0); }

}  // namespace moon
