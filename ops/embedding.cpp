// embedding and index_select: row gathers along one dimension, and their deterministic backward
// (rows scattered back with a counting sort by index, so repeated indices sum in a fixed order). The gathers
// copy raw elements (any dtype, bf16 included); the backward sums in f32 and rounds once into a bf16 gradient.
#include <cstring>
#include <memory>

#include "ops/cuda/index_cuda.h"
#include "ops/float_storage.h"
#include "ops/index.h"
#include "ops/index_util.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

using namespace index_detail;

// dst (outer, L, row) = src (outer, n, row) rows picked by ids (L): a byte copy of each selected row.
void gather_rows_cpu(void* dst, const void* src, const int64_t* ids, int64_t outer, int64_t n, int64_t len,
                     int64_t row_bytes) {
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  const int64_t rows = outer * len;
#pragma omp parallel for schedule(static) if (rows * row_bytes > (1 << 18))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r / len, j = r % len;
    std::memcpy(d + r * row_bytes, s + (o * n + ids[j]) * row_bytes, static_cast<size_t>(row_bytes));
  }
}

// dst (outer, V, C) = sum over j with ids[j] == v of src (outer, N, C)[o, j, :], every row written (zeros
// where no id hits it). A counting sort groups the positions of each id in increasing j; each output row
// is then summed by one thread in that order, so the result is bitwise independent of the thread count.
void scatter_rows_cpu(float* dst, const float* src, const int64_t* ids, int64_t outer, int64_t V, int64_t N,
                      int64_t C) {
  std::vector<int64_t> start(static_cast<size_t>(V + 1), 0), order(static_cast<size_t>(N));
  for (int64_t j = 0; j < N; ++j) ++start[ids[j] + 1];
  for (int64_t v = 0; v < V; ++v) start[v + 1] += start[v];
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  for (int64_t j = 0; j < N; ++j) order[fill[ids[j]]++] = j;
  const int64_t rows = outer * V;
#pragma omp parallel for schedule(dynamic, 16) if ((outer * N + rows) * C > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r / V, v = r % V;
    float* d = dst + r * C;
    const int64_t b = start[v], e = start[v + 1];
    if (b == e) {
      std::memset(d, 0, static_cast<size_t>(C) * sizeof(float));
      continue;
    }
    const float* s0 = src + (o * N + order[b]) * C;
    for (int64_t c = 0; c < C; ++c) d[c] = s0[c];
    for (int64_t k = b + 1; k < e; ++k) {
      const float* s = src + (o * N + order[k]) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) d[c] += s[c];
    }
  }
}

// Tensor forms of the two kernels (dst, src contiguous; ids a contiguous, checked i64 tensor on their device).
void gather_rows_tensors_cpu(const Tensor& dst, const Tensor& src, const Tensor& ids, int64_t outer, int64_t n,
                             int64_t len, int64_t row_bytes) {
  gather_rows_cpu(dst.raw_data(), src.raw_data(), ids.data<int64_t>(), outer, n, len, row_bytes);
}
// dst and src share a dtype (f32 or bf16): a bf16 src is widened and the f32 sums rounded once into dst.
void scatter_rows_tensors_cpu(const Tensor& dst, const Tensor& src, const Tensor& ids, int64_t outer, int64_t V,
                              int64_t N, int64_t C) {
  const Tensor sf = f32_input(src);
  const F32Output d(dst);
  scatter_rows_cpu(d.data<float>(), sf.data<float>(), ids.data<int64_t>(), outer, V, N, C);
  d.commit();
}

using GatherRowsFn = void (*)(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, int64_t, int64_t);
using ScatterRowsFn = void (*)(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, int64_t, int64_t);
KernelTable<GatherRowsFn> g_gather_rows{"embedding/index_select",
                                        {gather_rows_tensors_cpu, MOON_CUDA_KERNEL(cuda::gather_rows)}};
KernelTable<ScatterRowsFn> g_scatter_rows{"embedding/index_select backward",
                                          {scatter_rows_tensors_cpu, MOON_CUDA_KERNEL(cuda::scatter_rows)}};

// The gradient (outer, V, C) of a row gather, in the input's dtype, given the output gradient (outer, N, C)
// and the checked ids.
Tensor scatter_rows(const Tensor& grad, const Tensor& ids, const Shape& in_shape, DType in_dtype, int64_t outer,
                    int64_t V, int64_t C) {
  Tensor g = grad.to(in_dtype).contiguous();
  check_float_storage("embedding/index_select backward", g, "gradient");
  Tensor out = empty(in_shape, in_dtype, g.device());
  g_scatter_rows.get(g.device())(out, g, ids, outer, V, ids.numel(), C);
  return out;
}

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  MOON_CHECK(weight.defined() && ids.defined(), "embedding: undefined weight or ids tensor");
  MOON_CHECK(weight.dim() == 2 && is_float_storage(weight.dtype()),
             "embedding: weight must be an f32 or bf16 (V, C) table, got ", weight.desc());
  MOON_CHECK(weight.device() == ids.device(), "embedding: weight ", weight.desc(), " and ids ", ids.desc(),
             " are on different devices; move ids with .to()");
  const int64_t V = weight.size(0), C = weight.size(1);
  const Tensor values = checked_index_tensor(ids, V, "embedding", "ids", "id", "rows of weight " + weight.desc());
  Shape out_shape = ids.shape();  // (..., C)
  out_shape.push_back(C);
  Tensor out = empty(out_shape, weight.dtype(), weight.device());
  {
    NoGradGuard ng;
    Tensor w = weight.contiguous();  // (V, C)
    g_gather_rows.get(w.device())(out, w, values, 1, V, values.numel(),
                                  C * static_cast<int64_t>(dtype_size(weight.dtype())));
  }
  if (needs_grad({&weight})) {
    const Shape w_shape = weight.shape();
    const DType w_dtype = weight.dtype();
    record_op("embedding", {weight}, {out}, [values, w_shape, w_dtype, V, C](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{scatter_rows(g[0], values, w_shape, w_dtype, 1, V, C)};  // (V, C)
    });
  }
  return out;
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  MOON_CHECK(x.defined() && index.defined(), "index_select: undefined input or index tensor");
  MOON_CHECK(x.dim() >= 1, "index_select: input must have at least one dimension, got ", x.desc());
  MOON_CHECK(index.dim() == 1, "index_select: index must be 1-D, got ", index.desc(), "; flatten it first");
  MOON_CHECK(x.device() == index.device(), "index_select: input ", x.desc(), " and index ", index.desc(),
             " are on different devices");
  dim = wrap_dim(dim, x.dim(), "index_select");
  const int64_t n = x.size(dim), outer = outer_size(x.shape(), dim), inner = inner_size(x.shape(), dim);
  const Tensor values = checked_index_tensor(index, n, "index_select", "index", "index",
                                             "entries along dimension " + std::to_string(dim) + " of " + x.desc());
  const int64_t len = index.size(0);
  Shape out_shape = x.shape();  // x's shape with len along dim
  out_shape[dim] = len;
  Tensor out = empty(out_shape, x.dtype(), x.device());
  {
    NoGradGuard ng;
    Tensor xc = x.contiguous();  // (outer, n, inner)
    g_gather_rows.get(xc.device())(out, xc, values, outer, n, len, inner * static_cast<int64_t>(dtype_size(x.dtype())));
  }
  if (needs_grad({&x})) {
    check_float_storage("index_select", x, "input (for gradients)");
    const Shape x_shape = x.shape();
    const DType x_dtype = x.dtype();
    record_op("index_select", {x}, {out}, [values, x_shape, x_dtype, outer, n, inner](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{scatter_rows(g[0], values, x_shape, x_dtype, outer, n, inner)};
    });
  }
  return out;
}

}  // namespace moon
