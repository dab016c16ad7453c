// l2_normalize and cosine_similarity_matrix (see ops/loss.h). f32 or bf16 operands; results and gradients take
// the operands' dtype (bf16 is computed in f32 and rounded once), the saved norms stay f32.
#include "ops/cpu/isa.h"
#include "ops/cpu/loss_kernels.h"
#include "ops/cuda/reduce_cuda.h"
#include "ops/float_storage.h"
#include "ops/loss.h"
#include "ops/matmul.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

// y (R, D) = rows of x / max(||row||, eps), norm (R) = ||row||; x has unit column stride.
void l2_normalize_cpu(const Tensor& x, float eps, const Tensor& y, const Tensor& norm) {
  const int64_t R = y.size(0), D = y.size(1);
  const Tensor xf = f32_input(x);  // a contiguous copy when bf16: use its row stride
  const F32Output yo(y);
  MOON_ISA_SELECT(l2_normalize_rows)(xf.data<float>(), R, D, R > 1 ? xf.stride(0) : D, eps, yo.data<float>(),
                                     norm.data<float>());
  yo.commit();
}

// dx (R, D) from g (R, D, unit column stride), the saved output y and norms.
void l2_normalize_backward_cpu(const Tensor& g, const Tensor& y, const Tensor& norm, float eps, const Tensor& dx) {
  const int64_t R = y.size(0), D = y.size(1);
  const Tensor gf = f32_input(g), yf = f32_input(y);
  const F32Output dxo(dx);
  MOON_ISA_SELECT(l2_normalize_backward_rows)(gf.data<float>(), R > 1 ? gf.stride(0) : D, yf.data<float>(),
                                              norm.data<float>(), R, D, eps, dxo.data<float>());
  dxo.commit();
}

using L2Fn = void (*)(const Tensor&, float, const Tensor&, const Tensor&);
using L2BackFn = void (*)(const Tensor&, const Tensor&, const Tensor&, float, const Tensor&);
KernelTable<L2Fn> g_l2{"l2_normalize", {l2_normalize_cpu, MOON_CUDA_KERNEL(cuda::l2_normalize_rows)}};
KernelTable<L2BackFn> g_l2_back{"l2_normalize backward",
                                {l2_normalize_backward_cpu, MOON_CUDA_KERNEL(cuda::l2_normalize_rows_backward)}};

// t (..., D) as (R, D) rows with a unit column stride, without copying when the leading dims collapse.
Tensor as_rows(const Tensor& t) {
  const int64_t D = t.dim() == 0 ? 1 : t.size(-1);
  const int64_t R = D == 0 ? 0 : t.numel() / D;
  if (t.dim() >= 1 && (t.stride(-1) == 1 || D == 1)) {
    // Leading dims collapse into one row stride when each stride is the next one times its size.
    bool ok = true;
    int64_t rs = 0, expect = -1;
    for (int64_t d = t.dim() - 2; d >= 0; --d) {
      if (t.size(d) == 1) continue;
      if (expect < 0) {
        rs = t.stride(d);
        expect = rs * t.size(d);
      } else if (t.stride(d) == expect) {
        expect *= t.size(d);
      } else {
        ok = false;
        break;
      }
    }
    if (ok) return make_view(t, {R, D}, {expect < 0 ? D : rs, 1}, t.offset());
  }
  NoGradGuard ng;
  const Tensor c = t.contiguous();
  return make_view(c, {R, D}, {D, 1}, c.offset());
}

// l2_normalize along the last dim.
Tensor l2_normalize_last(const Tensor& x, double eps) {
  const Tensor rows = as_rows(x);  // (R, D)
  const int64_t R = rows.size(0), D = rows.size(1);
  Tensor y = empty(x.shape(), x.dtype(), x.device());
  Tensor norm = empty({R}, DType::F32, x.device());
  const Tensor y2 = make_view(y, {R, D}, {D, 1}, 0);
  if (R * D > 0) g_l2.get(x.device())(rows, static_cast<float>(eps), y2, norm);
  if (needs_grad({&x})) {
    const Shape shape = x.shape();
    const float e = static_cast<float>(eps);
    SavedTensor sy(y, "l2_normalize");
    record_op("l2_normalize", {x}, {y}, [sy, norm, shape, R, D, e, dt = x.dtype()](const std::vector<Tensor>& g) {
      Tensor dx = empty(shape, dt, norm.device());
      if (R * D > 0) {
        const Tensor& yy = sy.get();
        g_l2_back.get(norm.device())(as_rows(g[0]), make_view(yy, {R, D}, {D, 1}, yy.offset()), norm, e,
                                     make_view(dx, {R, D}, {D, 1}, 0));
      }
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

}  // namespace

Tensor l2_normalize(const Tensor& x, int64_t dim, double eps) {
  MOON_CHECK(x.defined(), "l2_normalize: undefined tensor");
  check_float_storage("l2_normalize", x, "tensor");
  MOON_CHECK(x.dim() >= 1, "l2_normalize: ", x.desc(), " has no dimension to normalise");
  MOON_CHECK(eps > 0, "l2_normalize: eps = ", eps, " must be positive (it bounds 1/||x||)");
  const int64_t d = wrap_dim(dim, x.dim(), "l2_normalize");
  if (d == x.dim() - 1) return l2_normalize_last(x, eps);
  // Another dim: normalise the transposed view along its last dim and transpose back (dense result).
  return l2_normalize_last(x.transpose(d, -1), eps).transpose(d, -1).contiguous();
}

Tensor cosine_similarity_matrix(const Tensor& a, const Tensor& b, double eps) {
  MOON_CHECK(a.defined() && b.defined(), "cosine_similarity_matrix: an operand is an undefined tensor");
  MOON_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(1), "cosine_similarity_matrix: ", a.desc(), " and ",
             b.desc(), ": expected a (N, D) and b (M, D) with the same D");
  check_float_storage("cosine_similarity_matrix", a, "operand a");
  check_same_dtype("cosine_similarity_matrix", a, b, "operand b");
  // matmul of two bf16 operands may return f32 or bf16: the result takes the operands' dtype either way.
  const Tensor s = matmul(l2_normalize(a, -1, eps), l2_normalize(b, -1, eps).mT());  // (N, M)
  return s.dtype() == a.dtype() ? s : s.to(a.dtype());
}

}  // namespace moon
