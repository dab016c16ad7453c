// layer_norm over the last dimension (forward, fused backward; CPU kernels in ops/cpu/norm_kernels.cpp).
// x, weight and bias are f32 or bf16 (one dtype); y, dx, dw, db take it, mean / rstd stay f32 (bf16 is
// computed in f32 and rounded once; dw / db are reduced in f32).
#include "ops/cpu/isa.h"
#include "ops/cpu/norm_kernels.h"
#include "ops/cuda/norm_cuda.h"
#include "ops/float_storage.h"
#include "ops/norm.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

// y = (x - mean) * rstd * w + b per row of x (rows, C); writes mean, rstd (rows). w, b undefined = none.
void layer_norm_cpu(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                    const Tensor& rstd, double eps) {
  const int64_t C = x.size(-1), rows = x.numel() / C;
  const Tensor xf = f32_input(x), wf = f32_input(w), bf = f32_input(b);
  const F32Output yo(y);
  MOON_ISA_SELECT(layer_norm_rows)(xf.data<float>(), wf.defined() ? wf.data<float>() : nullptr,
                                   bf.defined() ? bf.data<float>() : nullptr, yo.data<float>(), mean.data<float>(),
                                   rstd.data<float>(), rows, C, static_cast<float>(eps));
  yo.commit();
}
// dx, dw, db (each undefined when not wanted) from x, w, the saved statistics and the output gradient g.
void layer_norm_backward_cpu(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                             const Tensor& g, const Tensor& dx, const Tensor& dw, const Tensor& db) {
  const int64_t C = x.size(-1), rows = x.numel() / C;
  const Tensor xf = f32_input(x), wf = f32_input(w), gf = f32_input(g);
  const F32Output dxo(dx), dwo(dw), dbo(db);
  MOON_ISA_SELECT(layer_norm_backward_rows)(xf.data<float>(), wf.defined() ? wf.data<float>() : nullptr,
                                            mean.data<float>(), rstd.data<float>(), gf.data<float>(),
                                            dxo.data<float>(), dwo.data<float>(), dbo.data<float>(), rows, C);
  dxo.commit();
  dwo.commit();
  dbo.commit();
}

using LayerNormFn = void (*)(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                             const Tensor&, double);
using LayerNormBackwardFn = void (*)(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                     const Tensor&, const Tensor&, const Tensor&);
KernelTable<LayerNormFn> g_layer_norm{"layer_norm", {layer_norm_cpu, MOON_CUDA_KERNEL(cuda::layer_norm)}};
KernelTable<LayerNormBackwardFn> g_layer_norm_backward{"layer_norm_backward",
                                                           {layer_norm_backward_cpu, MOON_CUDA_KERNEL(cuda::layer_norm_backward)}};

// Checks that an optional per-channel parameter is (C), of x's dtype, on x's device.
void check_param(const char* op, const char* what, const Tensor& p, const Tensor& x) {
  if (!p.defined()) return;
  check_same_dtype(op, x, p, what);
  MOON_CHECK(p.device() == x.device(), op, ": ", what, " ", p.desc(), " must be on the device of the input ",
             x.desc());
  MOON_CHECK(p.dim() == 1 && p.size(0) == x.size(-1), op, ": ", what, " has shape ", p.shape_str(), " but the input ",
             x.desc(), " needs (", x.size(-1), "): one value per element of the last dimension");
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  check_float_storage("layer_norm", x, "input");
  MOON_CHECK(x.dim() >= 1 && x.size(-1) > 0, "layer_norm: the input ", x.desc(),
             " needs a non-empty last dimension to normalise over");
  MOON_CHECK(eps >= 0, "layer_norm: eps must be >= 0, got ", eps);
  check_param("layer_norm", "weight", weight, x);
  check_param("layer_norm", "bias", bias, x);
  Shape rows_shape = x.shape();
  rows_shape.pop_back();
  Tensor out = empty(x.shape(), x.dtype(), x.device());             // (..., C)
  Tensor mean = empty(rows_shape, DType::F32, x.device());          // (...)
  Tensor rstd = empty(rows_shape, DType::F32, x.device());          // (...)
  Tensor xc, wc;
  {
    NoGradGuard ng;
    xc = x.contiguous();
    wc = weight.defined() ? weight.contiguous() : Tensor();
    const Tensor bc = bias.defined() ? bias.contiguous() : Tensor();
    if (x.numel() > 0) g_layer_norm.get(x.device())(xc, wc, bc, out, mean, rstd, eps);
  }
  if (needs_grad({&x, &weight, &bias})) {
    SavedTensor sx(xc, "layer_norm"), sw(wc, "layer_norm");
    const bool gx = x.requires_grad(), gw = weight.defined() && weight.requires_grad(),
               gb = bias.defined() && bias.requires_grad();
    record_op("layer_norm", {x, weight, bias}, {out}, [sx, sw, mean, rstd, gx, gw, gb](const std::vector<Tensor>& g) {
      const Tensor& x = sx.get();
      const Tensor w = sw.defined() ? sw.get() : Tensor();
      const int64_t C = x.size(-1);
      Tensor dx = gx ? empty(x.shape(), x.dtype(), x.device()) : Tensor();
      Tensor dw = gw ? empty({C}, x.dtype(), x.device()) : Tensor();  // the weight's dtype (= x's)
      Tensor db = gb ? empty({C}, x.dtype(), x.device()) : Tensor();
      if (x.numel() > 0) {
        const Tensor gc = (g[0].dtype() == x.dtype() ? g[0] : g[0].to(x.dtype())).contiguous();
        g_layer_norm_backward.get(x.device())(x, w, mean, rstd, gc, dx, dw, db);
      } else {
        if (gw) dw.zero_();
        if (gb) db.zero_();
      }
      return std::vector<Tensor>{dx, dw, db};
    });
  }
  return out;
}

}  // namespace moon
