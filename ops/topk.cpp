// topk along one dimension (MoE routing): sorted values and i64 indices; backward scatters the values'
// gradient back to the chosen positions.
#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>

#include "ops/cuda/index_cuda.h"
#include "ops/float_storage.h"
#include "ops/index.h"
#include "ops/index_util.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

using namespace index_detail;

// a ranks before b when taking the largest: NaN counts as the largest value.
inline bool greater_nan(float a, float b) {
  const bool na = std::isnan(a), nb = std::isnan(b);
  if (na || nb) return na && !nb;
  return a > b;
}
inline bool less_nan(float a, float b) {
  const bool na = std::isnan(a), nb = std::isnan(b);
  if (na || nb) return !na && nb;
  return a < b;
}

// For every (o, i) row of x (outer, n, inner) contiguous: the k best entries along n, sorted, written to
// values/indices (outer, k, inner). Ties keep the lower position first.
void topk_cpu(float* values, int64_t* indices, const float* x, int64_t outer, int64_t n, int64_t inner, int64_t k,
              bool largest) {
  const int64_t rows = outer * inner;
#pragma omp parallel if (rows * n > (1 << 15))
  {
    std::vector<float> row(static_cast<size_t>(n));
    std::vector<int64_t> order(static_cast<size_t>(n));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t o = r / inner, i = r % inner;
      const float* src = x + o * n * inner + i;
      for (int64_t t = 0; t < n; ++t) row[t] = src[t * inner];
      std::iota(order.begin(), order.end(), 0);
      auto before = [&](int64_t a, int64_t b) {
        const float va = row[a], vb = row[b];
        if (largest) {
          if (greater_nan(va, vb)) return true;
          if (greater_nan(vb, va)) return false;
        } else {
          if (less_nan(va, vb)) return true;
          if (less_nan(vb, va)) return false;
        }
        return a < b;
      };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
      float* vo = values + o * k * inner + i;
      int64_t* io = indices + o * k * inner + i;
      for (int64_t j = 0; j < k; ++j) {
        vo[j * inner] = row[order[j]];
        io[j * inner] = order[j];
      }
    }
  }
}

// Tensor form of topk_cpu (values, indices: (outer, k, inner) contiguous; x contiguous). x and values share a
// dtype (f32 or bf16): a bf16 x is widened exactly, so the comparisons and the stored values are exact.
void topk_tensors_cpu(const Tensor& values, const Tensor& indices, const Tensor& x, int64_t outer, int64_t n,
                      int64_t inner, int64_t k, bool largest) {
  const Tensor xf = f32_input(x);
  const F32Output vo(values);
  topk_cpu(vo.data<float>(), indices.data<int64_t>(), xf.data<float>(), outer, n, inner, k, largest);
  vo.commit();
}

using TopkFn = void (*)(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, int64_t, int64_t, bool);
using TopkBackwardFn = void (*)(const Tensor&, int64_t, const Tensor&, const Tensor&);
KernelTable<TopkFn> g_topk{"topk", {topk_tensors_cpu, MOON_CUDA_KERNEL(cuda::topk_rows)}};
KernelTable<TopkBackwardFn> g_topk_backward{"topk backward",
                                            {scatter_add_tensors_cpu, MOON_CUDA_KERNEL(cuda::scatter_add_dim)}};

}  // namespace

TopKResult topk(const Tensor& x, int64_t k, int64_t dim, bool largest) {
  MOON_CHECK(x.defined(), "topk: undefined input");
  check_float_storage("topk", x, "input");
  MOON_CHECK(x.dim() >= 1, "topk: input must have at least one dimension, got ", x.desc());
  dim = wrap_dim(dim, x.dim(), "topk");
  const int64_t n = x.size(dim);
  MOON_CHECK(k >= 0 && k <= n, "topk: k = ", k, " is out of range for dimension ", dim, " of ", x.desc(),
             " (valid k: 0..", n, ")");
  const int64_t outer = outer_size(x.shape(), dim), inner = inner_size(x.shape(), dim);
  Shape out_shape = x.shape();  // x's shape with k along dim
  out_shape[dim] = k;
  TopKResult res{empty(out_shape, x.dtype(), x.device()), empty(out_shape, DType::I64, x.device())};
  {
    NoGradGuard ng;
    Tensor xc = x.contiguous();  // (outer, n, inner)
    if (res.values.numel() > 0)
      g_topk.get(xc.device())(res.values, res.indices, xc, outer, n, inner, k, largest);
  }
  if (needs_grad({&x})) {
    Tensor idx;  // our own copy: the returned indices may be written in place before the backward runs
    {
      NoGradGuard ng;
      idx = res.indices.clone();
    }
    const Shape x_shape = x.shape();
    const DType x_dtype = x.dtype();
    record_op("topk", {x}, {res.values, res.indices}, [idx, x_shape, x_dtype, dim](const std::vector<Tensor>& g) {
      // dx = zeros with the values' gradient written back at the chosen positions (x's dtype; the chosen
      // positions of a row are distinct, so each element receives at most one value: a copy)
      Tensor gv = g[0].to(x_dtype).contiguous();
      Tensor gx = zeros(x_shape, x_dtype, gv.device());
      g_topk_backward.get(gv.device())(gx, dim, idx, gv);
      return std::vector<Tensor>{gx};
    });
  }
  return res;
}

}  // namespace moon
