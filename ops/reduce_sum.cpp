// sum / mean over dimensions, sum_to (the backward of broadcasting) and cumsum.
#include <algorithm>
#include <numeric>

#include "ops/cpu/isa.h"
#include "ops/cpu/norm_kernels.h"
#include "ops/cuda/reduce_cuda.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

// out (outer, inner) = sum over the middle axis of src viewed as (outer, len, inner); src contiguous f32.
void sum_middle_cpu(const Tensor& src, const Tensor& out, int64_t outer, int64_t len, int64_t inner) {
  MOON_ISA_SELECT(sum_middle)(src.data<float>(), out.data<float>(), outer, len, inner);
}
// out = inclusive scan of src along the middle axis of (outer, len, inner), from the end when reverse.
void cumsum_middle_cpu(const Tensor& src, const Tensor& out, int64_t outer, int64_t len, int64_t inner, bool reverse) {
  MOON_ISA_SELECT(cumsum_middle)(src.data<float>(), out.data<float>(), outer, len, inner, reverse);
}
using CumsumFn = void (*)(const Tensor&, const Tensor&, int64_t, int64_t, int64_t, bool);
KernelTable<CumsumFn> g_cumsum{"cumsum", {cumsum_middle_cpu, MOON_CUDA_KERNEL(cuda::cumsum_middle)}};

// Scans `a` along dim (forward: prefix sums; reverse: suffix sums, the backward of cumsum).
Tensor cumsum_forward(const Tensor& a, int64_t dim, bool reverse) {
  Tensor out = empty(a.shape(), DType::F32, a.device());
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
// one contiguous run.
Tensor sum_dims_forward(const Tensor& a, const std::vector<int64_t>& dims) {
  Shape kept_shape = a.shape();
  for (int64_t d : dims) kept_shape[d] = 1;
  Tensor out = empty(kept_shape, DType::F32, a.device());  // keepdim shape
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

}  // namespace

Tensor sum(const Tensor& a, const std::vector<int64_t>& dims_in, bool keepdim) {
  MOON_CHECK(a.dtype() == DType::F32, "sum: expected an f32 tensor, got ", a.desc(), "; convert with .to(DType::F32)");
  const std::vector<int64_t> dims = normalise_dims(dims_in, a.dim(), "sum");
  Tensor out = sum_dims_forward(a, dims);
  if (!keepdim) {
    NoGradGuard ng;
    out = out.view(drop_dims(out.shape(), dims));
  }
  if (needs_grad({&a})) {
    const Shape in_shape = a.shape();
    Shape kept = in_shape;
    for (int64_t d : dims) kept[d] = 1;
    record_op("sum", {a}, {out}, [in_shape, kept](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{g[0].reshape(kept).expand(in_shape).contiguous()};
    });
  }
  return out;
}

Tensor sum(const Tensor& a) {
  std::vector<int64_t> all(a.dim());
  std::iota(all.begin(), all.end(), 0);
  return sum(a, all, false);
}

Tensor mean(const Tensor& a, const std::vector<int64_t>& dims_in, bool keepdim) {
  MOON_CHECK(a.dtype() == DType::F32, "mean: expected an f32 tensor, got ", a.desc(), "; convert with .to(DType::F32)");
  const std::vector<int64_t> dims = normalise_dims(dims_in, a.dim(), "mean");
  int64_t count = 1;
  for (int64_t d : dims) count *= a.size(d);
  return scale(sum(a, dims, keepdim), 1.0 / static_cast<double>(std::max<int64_t>(count, 1)));
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
  MOON_CHECK(a.dtype() == DType::F32, "cumsum: expected an f32 tensor, got ", a.desc(), "; convert with .to(DType::F32)");
  const int64_t dim = wrap_dim(dim_in, a.dim(), "cumsum");
  Tensor out = cumsum_forward(a, dim, false);
  if (needs_grad({&a}))
    record_op("cumsum", {a}, {out}, [dim](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{cumsum_forward(g[0], dim, true)};  // d/dx_k = sum_{i >= k} g_i
    });
  return out;
}

}  // namespace moon
