// rms_norm over the last dimension, Qwen2 / LLaMA form: x * rsqrt(mean(x^2) + eps) * weight (forward, fused
// backward; CPU kernels in ops/cpu/norm_kernels.cpp). x and weight are f32 or bf16 (one dtype); y, dx, dw take
// it, rstd stays f32 (bf16 is computed in f32 and rounded once; dw is reduced in f32).
#include "ops/cpu/isa.h"
#include "ops/cpu/norm_kernels.h"
#include "ops/cuda/norm_cuda.h"
#include "ops/float_storage.h"
#include "ops/norm.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

float* ptr_or_null(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }

// y = x * rstd * w per row of x (rows, C); writes rstd (rows). w undefined = none.
void rms_norm_cpu(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& rstd, double eps) {
  const int64_t C = x.size(-1), rows = x.numel() / C;
  const Tensor xf = f32_input(x), wf = f32_input(w);
  const F32Output yo(y);
  MOON_ISA_SELECT(rms_norm_rows)(xf.data<float>(), ptr_or_null(wf), yo.data<float>(), rstd.data<float>(), rows, C,
                                 static_cast<float>(eps));
  yo.commit();
}
// dx, dw (each undefined when not wanted) from x, w, the saved rstd and the output gradient g.
void rms_norm_backward_cpu(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& g, const Tensor& dx,
                           const Tensor& dw) {
  const int64_t C = x.size(-1), rows = x.numel() / C;
  const Tensor xf = f32_input(x), wf = f32_input(w), gf = f32_input(g);
  const F32Output dxo(dx), dwo(dw);
  MOON_ISA_SELECT(rms_norm_backward_rows)(xf.data<float>(), ptr_or_null(wf), rstd.data<float>(), gf.data<float>(),
                                          dxo.data<float>(), dwo.data<float>(), rows, C);
  dxo.commit();
  dwo.commit();
}

using RmsNormFn = void (*)(const Tensor&, const Tensor&, const Tensor&, const Tensor&, double);
using RmsNormBackwardFn = void (*)(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                   const Tensor&);
KernelTable<RmsNormFn> g_rms_norm{"rms_norm", {rms_norm_cpu, MOON_CUDA_KERNEL(cuda::rms_norm)}};
KernelTable<RmsNormBackwardFn> g_rms_norm_backward{"rms_norm_backward",
                                                       {rms_norm_backward_cpu, MOON_CUDA_KERNEL(cuda::rms_norm_backward)}};

}  // namespace

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  check_float_storage("rms_norm", x, "input");
  MOON_CHECK(x.dim() >= 1 && x.size(-1) > 0, "rms_norm: the input ", x.desc(),
             " needs a non-empty last dimension to normalise over");
  MOON_CHECK(eps >= 0, "rms_norm: eps must be >= 0, got ", eps);
  if (weight.defined()) {
    check_same_dtype("rms_norm", x, weight, "weight");
    MOON_CHECK(weight.device() == x.device(), "rms_norm: weight ", weight.desc(),
               " must be on the device of the input ", x.desc());
    MOON_CHECK(weight.dim() == 1 && weight.size(0) == x.size(-1), "rms_norm: weight has shape ", weight.shape_str(),
               " but the input ", x.desc(), " needs (", x.size(-1), "): one value per element of the last dimension");
  }
  Shape rows_shape = x.shape();
  rows_shape.pop_back();
  Tensor out = empty(x.shape(), x.dtype(), x.device());     // (..., C)
  Tensor rstd = empty(rows_shape, DType::F32, x.device());  // (...)
  Tensor xc, wc;
  {
    NoGradGuard ng;
    xc = x.contiguous();
    wc = weight.defined() ? weight.contiguous() : Tensor();
    if (x.numel() > 0) g_rms_norm.get(x.device())(xc, wc, out, rstd, eps);
  }
  if (needs_grad({&x, &weight})) {
    SavedTensor sx(xc, "rms_norm"), sw(wc, "rms_norm");
    const bool gx = x.requires_grad(), gw = weight.defined() && weight.requires_grad();
    record_op("rms_norm", {x, weight}, {out}, [sx, sw, rstd, gx, gw](const std::vector<Tensor>& g) {
      const Tensor& x = sx.get();
      const Tensor w = sw.defined() ? sw.get() : Tensor();
      Tensor dx = gx ? empty(x.shape(), x.dtype(), x.device()) : Tensor();
      Tensor dw = gw ? empty({x.size(-1)}, x.dtype(), x.device()) : Tensor();  // the weight's dtype (= x's)
      if (x.numel() > 0)
        g_rms_norm_backward.get(x.device())(x, w, rstd,
                                            (g[0].dtype() == x.dtype() ? g[0] : g[0].to(x.dtype())).contiguous(), dx,
                                            dw);
      else if (gw)
        dw.zero_();
      return std::vector<Tensor>{dx, dw};
    });
  }
  return out;
}

}  // namespace moon
