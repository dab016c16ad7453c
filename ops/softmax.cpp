// softmax and log_softmax along any dimension (forward, backward; CPU kernels in ops/cpu/norm_kernels.cpp).
// The kernels work on rows of a contiguous (rows, C) matrix; a dimension other than the last is moved last
// with a transposed copy and moved back after. f32 or bf16: the output and dx take x's dtype (bf16 is computed
// in f32 and rounded once).
#include "ops/cpu/isa.h"
#include "ops/cpu/norm_kernels.h"
#include "ops/cuda/norm_cuda.h"
#include "ops/float_storage.h"
#include "ops/norm.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

// y = softmax / log_softmax of each row of x (rows, C), both contiguous.
void softmax_cpu(const Tensor& x, const Tensor& y, int64_t rows, int64_t C, bool log) {
  const Tensor xf = f32_input(x);
  const F32Output yo(y);
  MOON_ISA_SELECT(softmax_rows)(xf.data<float>(), yo.data<float>(), rows, C, log);
  yo.commit();
}
// dx from the saved output y and the output gradient g, per row (all contiguous (rows, C)).
void softmax_backward_cpu(const Tensor& y, const Tensor& g, const Tensor& dx, int64_t rows, int64_t C, bool log) {
  const Tensor yf = f32_input(y), gf = f32_input(g);
  const F32Output dxo(dx);
  MOON_ISA_SELECT(softmax_backward_rows)(yf.data<float>(), gf.data<float>(), dxo.data<float>(), rows, C, log);
  dxo.commit();
}

using SoftmaxFn = void (*)(const Tensor&, const Tensor&, int64_t, int64_t, bool);
using SoftmaxBackwardFn = void (*)(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, bool);
KernelTable<SoftmaxFn> g_softmax{"softmax", {softmax_cpu, MOON_CUDA_KERNEL(cuda::softmax)}};
KernelTable<SoftmaxBackwardFn> g_softmax_backward{"softmax_backward",
                                                  {softmax_backward_cpu, MOON_CUDA_KERNEL(cuda::softmax_backward)}};

const char* op_name(bool log) { return log ? "log_softmax" : "softmax"; }

// Moves `dim` last and makes the result contiguous (no copy when it already is last and contiguous).
Tensor to_rows(const Tensor& t, int64_t dim) {
  const bool last = t.dim() == 0 || dim == t.dim() - 1;
  return (last ? t : t.transpose(dim, -1)).contiguous();
}
// The inverse of to_rows for a result computed in row layout: a fresh tensor in the original layout.
Tensor from_rows(const Tensor& r, int64_t dim) {
  const bool last = r.dim() == 0 || dim == r.dim() - 1;
  return last ? r : r.transpose(dim, -1).contiguous();
}

Tensor softmax_forward(const Tensor& x, int64_t dim, bool log) {
  NoGradGuard ng;
  const Tensor src = to_rows(x, dim);  // (rows, C)
  const int64_t C = x.dim() == 0 ? 1 : x.size(dim);
  Tensor out = empty(src.shape(), x.dtype(), x.device());
  if (src.numel() > 0) g_softmax.get(x.device())(src, out, src.numel() / C, C, log);
  return from_rows(out, dim);
}

Tensor softmax_backward(const Tensor& y, const Tensor& g, int64_t dim, bool log) {
  NoGradGuard ng;
  const Tensor ys = to_rows(y, dim), gs = to_rows(g.dtype() == y.dtype() ? g : g.to(y.dtype()), dim);
  const int64_t C = y.dim() == 0 ? 1 : y.size(dim);
  Tensor dx = empty(ys.shape(), y.dtype(), y.device());
  if (ys.numel() > 0) g_softmax_backward.get(y.device())(ys, gs, dx, ys.numel() / C, C, log);
  return from_rows(dx, dim);
}

Tensor softmax_impl(const Tensor& x, int64_t dim_in, bool log) {
  const char* op = op_name(log);
  check_float_storage(op, x, "tensor");
  const int64_t lo = x.dim() == 0 ? -1 : -x.dim(), hi = x.dim() == 0 ? 0 : x.dim() - 1;
  MOON_CHECK(dim_in >= lo && dim_in <= hi, op, ": dim ", dim_in, " is out of range for ", x.desc(), " (valid: ", lo,
             "..", hi, ")");
  const int64_t dim = wrap_dim(dim_in, x.dim(), op);
  Tensor out = softmax_forward(x, dim, log);
  if (needs_grad({&x})) {
    SavedTensor saved(out, op);
    record_op(op, {x}, {out}, [saved, dim, log](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{softmax_backward(saved.get(), g[0], dim, log)};
    });
  }
  return out;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, true); }

}  // namespace moon
