// sum / mean over dimensions, sum_to (the backward of broadcasting) and cumsum.
#include <algorithm>
#include <numeric>

#include "ops/cpu/isa.h"
#include "ops/cpu/norm_kernels.h"
#include "ops/cuda/reduce_cuda.h"
#include "ops/elementwise.h"
#include "ops/float_storage.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

// out (outer, inner) = sum over the middle axis of src viewed as (outer, len, inner); src and out contiguous,
// each f32 or bf16 (a bf16 src is widened, the f32 sum rounded once into a bf16 out).
void sum_middle_cpu(const Tensor& src, const Tensor& out, int64_t outer, int64_t len, int64_t inner) {
  const Tensor sf = f32_input(src);
  const F32Output of(out);
  MOON_ISA_SELECT(sum_middle)(sf.data<float>(), of.data<float>(), outer, len, inner);
  of.commit();
}
// out = inclusive scan of src along the middle axis of (outer, len, inner), from the end when reverse. The
// running sum is f32; a bf16 out gets each stored element rounded once.
void cumsum_middle_cpu(const Tensor& src, const Tensor& out, int64_t outer, int64_t len, int64_t inner, bool reverse) {
  const Tensor sf = f32_input(src);
  const F32Output of(out);
  MOON_ISA_SELECT(cumsum_middle)(sf.data<float>(), of.data<float>(), outer, len, inner, reverse);
  of.commit();
}
using CumsumFn = void (*)(const Tensor&, const Tensor&, int64_t, int64_t, int64_t, bool);
KernelTable<CumsumFn> g_cumsum{"cumsum", {cumsum_middle_cpu, MOON_CUDA_KERNEL(cuda::cumsum_middle)}};

// Scans `a` along dim (forward: prefix sums; reverse: suffix sums, the backward of cumsum); a's dtype.
Tensor cumsum_forward(const Tensor& a, int64_t dim, bool reverse) {
  Tensor out = empty(a.shape(), a.dtype(), a.device());
  NoGradGuard ng;
  Tensor src = a.contiguous();
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (d != dim) (d < dim ? outer : inner) *= a.size(d);
  g_cumsum.get(a.device())(src, out, outer, a.dim() == 0 ? 1 : a.size(dim), inner, reverse);
  return out;
}

using SumMiddleFn = void (*)(const Tensor&, const Tensor&, int64_t, int64_t, int64_t);
KernelTable<SumMiddleFn> g_sum_middle{"sum", {sum_middle_cpu, MOON_CUDA_KERNEL(cuda::sum_middle)}};

// Sums `a` over `dims` (sorted, unique) with keepdim. When the reduced dims are one consecutive block
// (innermost, outermost or in the middle) the contiguous input is read in place as (outer, len, inner);
// otherwise kept dimensions move first and reduced ones last (a permuted copy), so each output element sums
// one contiguous run. The sum is taken in f32 and stored as `out_dtype` (rounded once when bf16).
Tensor sum_dims_forward(const Tensor& a, const std::vector<int64_t>& dims, DType out_dtype) {
  Shape kept_shape = a.shape();
  for (int64_t d : dims) kept_shape[d] = 1;
  Tensor out = empty(kept_shape, out_dtype, a.device());  // keepdim shape
  NoGradGuard ng;
  const bool block = dims.empty() || dims.back() - dims.front() + 1 == static_cast<int64_t>(dims.size());
  int64_t outer = 1, len = 1, inner = 1;
  Tensor src;
  if (block) {
    src = a.contiguous();
    const int64_t lo = dims.empty() ? a.dim() : dims.front(), hi = dims.empty() ? a.dim() - 1 : dims.back();
    for (int64_t d = 0; d < a.dim(); ++d) (d < lo ? outer : d > hi ? inner : len) *= a.size(d);
  } else {
    std::vector<int64_t> order;
    for (int64_t d = 0; d < a.dim(); ++d)
      if (!std::binary_search(dims.begin(), dims.end(), d)) order.push_back(d);
    for (int64_t d : dims) {
      order.push_back(d);
      len *= a.size(d);
    }
    src = a.permute(order).contiguous();
    outer = shape_numel(kept_shape);
  }
  g_sum_middle.get(a.device())(src, out, outer, len, inner);
  return out;
}

std::vector<int64_t> normalise_dims(const std::vector<int64_t>& dims, int64_t ndim, const char* op) {
  std::vector<int64_t> d;
  for (int64_t x : dims) d.push_back(wrap_dim(x, ndim, op));
  std::sort(d.begin(), d.end());
  MOON_CHECK(std::adjacent_find(d.begin(), d.end()) == d.end(), op, ": a dimension is repeated in the reduction over ",
             shape_str(dims), " of a ", ndim, "-d tensor; list each dimension once");
  return d;
}

Shape drop_dims(const Shape& keep, const std::vector<int64_t>& dims) {
  Shape s;
  for (int64_t d = 0; d < static_cast<int64_t>(keep.size()); ++d)
    if (!std::binary_search(dims.begin(), dims.end(), d)) s.push_back(keep[d]);
  return s;
}

// sum over the normalised dims into an `out_dtype` result (a's dtype, or f32 for mean's bf16 path); the
// gradient comes back in a's dtype.
Tensor sum_as(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim, DType out_dtype) {
  Tensor out = sum_dims_forward(a, dims, out_dtype);
  if (!keepdim) {
    NoGradGuard ng;
    out = out.view(drop_dims(out.shape(), dims));
  }
  if (needs_grad({&a})) {
    const Shape in_shape = a.shape();
    const DType in_dtype = a.dtype();
    Shape kept = in_shape;
    for (int64_t d : dims) kept[d] = 1;
    record_op("sum", {a}, {out}, [in_shape, in_dtype, kept](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{g[0].reshape(kept).expand(in_shape).contiguous().to(in_dtype)};
    });
  }
  return out;
}

}  // namespace

Tensor sum(const Tensor& a, const std::vector<int64_t>& dims_in, bool keepdim) {
  check_float_storage("sum", a);
  const std::vector<int64_t> dims = normalise_dims(dims_in, a.dim(), "sum");
  return sum_as(a, dims, keepdim, a.dtype());
}

Tensor sum(const Tensor& a) {
  std::vector<int64_t> all(a.dim());
  std::iota(all.begin(), all.end(), 0);
  return sum(a, all, false);
}

Tensor mean(const Tensor& a, const std::vector<int64_t>& dims_in, bool keepdim) {
  check_float_storage("mean", a);
  const std::vector<int64_t> dims = normalise_dims(dims_in, a.dim(), "mean");
  int64_t count = 1;
  for (int64_t d : dims) count *= a.size(d);
  const double inv = 1.0 / static_cast<double>(std::max<int64_t>(count, 1));
  // The f32 sum scaled in f32, then stored in a's dtype (for bf16: the f32 mean of the widened input, rounded
  // once; the gradient likewise is scaled in f32 and rounded once into a's dtype). For f32 the .to() is a no-op.
  return scale(sum_as(a, dims, keepdim, DType::F32), inv).to(a.dtype());
}

Tensor mean(const Tensor& a) {
  std::vector<int64_t> all(a.dim());
  std::iota(all.begin(), all.end(), 0);
  return mean(a, all, false);
}

Tensor sum_to(const Tensor& a, const Shape& shape) {
  if (a.shape() == shape) return a;
  MOON_CHECK(shape.size() <= a.shape().size(), "sum_to: cannot reduce ", a.desc(), " to ", shape_str(shape));
  const int64_t lead = a.dim() - static_cast<int64_t>(shape.size());
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (d < lead) {
      dims.push_back(d);
      continue;
    }
    const int64_t want = shape[d - lead];
    MOON_CHECK(want == a.size(d) || want == 1, "sum_to: cannot reduce ", a.desc(), " to ", shape_str(shape));
    if (want == 1 && a.size(d) != 1) dims.push_back(d);
  }
  Tensor s = dims.empty() ? a : sum(a, dims, true);
  return s.reshape(shape);
}

Tensor cumsum(const Tensor& a, int64_t dim_in) {
  check_float_storage("cumsum", a);
  const int64_t dim = wrap_dim(dim_in, a.dim(), "cumsum");
  Tensor out = cumsum_forward(a, dim, false);
  if (needs_grad({&a}))
    record_op("cumsum", {a}, {out}, [dim](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{cumsum_forward(g[0], dim, true)};  // d/dx_k = sum_{i >= k} g_i
    });
  return out;
}

}  // namespace moon
