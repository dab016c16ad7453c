// sum / mean over dimensions, and sum_to (the backward of broadcasting).
#include <algorithm>
#include <numeric>

#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

// out[r] = sum of in[r*len .. r*len+len) for r < rows: a row-wise sum of a contiguous (rows, len) block.
void row_sum_cpu(const float* in, float* out, int64_t rows, int64_t len) {
#pragma omp parallel for schedule(static) if (rows * len > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = in + r * len;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= len; i += 8)
      for (int k = 0; k < 8; ++k) acc[k] += p[i + k];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < len; ++i) s += p[i];
    out[r] = s;
  }
}

// Sums `a` over `dims` (sorted, unique) with keepdim: kept dimensions move first, reduced last, so every
// output element sums one contiguous run.
Tensor sum_dims_forward(const Tensor& a, const std::vector<int64_t>& dims) {
  std::vector<int64_t> order;
  Shape kept_shape = a.shape();
  int64_t len = 1;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (!std::binary_search(dims.begin(), dims.end(), d)) order.push_back(d);
  for (int64_t d : dims) {
    order.push_back(d);
    len *= a.size(d);
    kept_shape[d] = 1;
  }
  Tensor src;
  {
    NoGradGuard ng;
    src = a.permute(order).contiguous();
  }
  Tensor out = empty(kept_shape, DType::F32, a.device());
  MOON_CHECK(a.device().is_cpu(), "sum: no kernel for device ", a.device().str());
  row_sum_cpu(src.data<float>(), out.data<float>(), shape_numel(kept_shape), len);
  return out;
}

std::vector<int64_t> normalise_dims(const std::vector<int64_t>& dims, int64_t ndim, const char* op) {
  std::vector<int64_t> d;
  for (int64_t x : dims) d.push_back(wrap_dim(x, ndim, op));
  std::sort(d.begin(), d.end());
  MOON_CHECK(std::adjacent_find(d.begin(), d.end()) == d.end(), op, ": a dimension is repeated in the reduction");
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
  MOON_CHECK(a.dtype() == DType::F32, "sum: expected an f32 tensor, got ", a.desc());
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

}  // namespace moon
