// gather and scatter_add along one dimension (torch semantics); each is the other's backward.
#include <cstring>
#include <memory>

#include "ops/cuda/index_cuda.h"
#include "ops/float_storage.h"
#include "ops/index.h"
#include "ops/index_util.h"
#include "runtime/autograd.h"
#include "runtime/copy.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

using namespace index_detail;

// out (idx_shape) = x[base(p,q) + idx[p,j,q] * stride(dim)] for every (p, j, q) of the index's shape; x is
// contiguous of x_shape. T only carries the bytes (any dtype of that size).
template <class T>
void gather_cpu_t(T* out, const T* x, const Shape& x_shape, int64_t dim, const int64_t* idx, const Shape& idx_shape) {
  const int64_t pre = outer_size(idx_shape, dim), len = idx_shape[dim], post = inner_size(idx_shape, dim);
  const Strides xs = contiguous_strides(x_shape);
  const int64_t sd = xs[dim], rows = pre * len;
#pragma omp parallel for schedule(static) if (rows * post > (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t p = r / len, o0 = r * post;
    for (int64_t q = 0; q < post; ++q) out[o0 + q] = x[base_offset(p, q, idx_shape, dim, xs) + idx[o0 + q] * sd];
  }
}

// out (idx's shape, contiguous) = x (contiguous) gathered along dim at idx (contiguous i64, checked).
void gather_cpu(const Tensor& out_t, const Tensor& x_t, int64_t dim, const Tensor& idx_t) {
  void* out = out_t.raw_data();
  const void* x = x_t.raw_data();
  const Shape& x_shape = x_t.shape();
  const int64_t* idx = idx_t.data<int64_t>();
  const Shape& idx_shape = idx_t.shape();
  switch (dtype_size(x_t.dtype())) {
    case 1: return gather_cpu_t(static_cast<uint8_t*>(out), static_cast<const uint8_t*>(x), x_shape, dim, idx, idx_shape);
    case 2: return gather_cpu_t(static_cast<uint16_t*>(out), static_cast<const uint16_t*>(x), x_shape, dim, idx, idx_shape);
    case 4: return gather_cpu_t(static_cast<uint32_t*>(out), static_cast<const uint32_t*>(x), x_shape, dim, idx, idx_shape);
    default: return gather_cpu_t(static_cast<uint64_t*>(out), static_cast<const uint64_t*>(x), x_shape, dim, idx, idx_shape);
  }
}

using GatherFn = void (*)(const Tensor&, const Tensor&, int64_t, const Tensor&);
using ScatterAddFn = void (*)(const Tensor&, int64_t, const Tensor&, const Tensor&);
KernelTable<GatherFn> g_gather{"gather", {gather_cpu, MOON_CUDA_KERNEL(cuda::gather_dim)}};
KernelTable<ScatterAddFn> g_scatter_add{"scatter_add",
                                         {scatter_add_tensors_cpu, MOON_CUDA_KERNEL(cuda::scatter_add_dim)}};

// Checks an index against x for gather/scatter_add: same rank, index.size(d) <= x.size(d) off dim, values in
// range. Returns the values as a contiguous i64 tensor on the index's device (our own copy).
Tensor checked_index(const char* op, const Tensor& x, int64_t dim, const Tensor& index) {
  MOON_CHECK(index.dim() == x.dim(), op, ": index ", index.desc(), " must have the rank of the input ", x.desc());
  for (int64_t d = 0; d < x.dim(); ++d)
    MOON_CHECK(d == dim || index.size(d) <= x.size(d), op, ": index ", index.desc(), " is larger than the input ",
               x.desc(), " in dimension ", d, " (only dimension ", dim, " may differ)");
  MOON_CHECK(index.device() == x.device(), op, ": input ", x.desc(), " and index ", index.desc(),
             " are on different devices");
  return checked_index_tensor(index, x.size(dim), op, "index", "index",
                              "entries along dimension " + std::to_string(dim) + " of " + x.desc());
}

// out (x_shape, src's dtype, fresh) = x + src scattered at idx along dim. The sums run in an f32 buffer (x
// widened into it, src read in its own dtype), rounded once into a bf16 result.
Tensor scatter_add_forward(const Tensor& x, const Shape& x_shape, int64_t dim, const Tensor& idx, const Tensor& src) {
  Tensor out = empty(x_shape, DType::F32, src.device());
  if (x.defined())
    copy_elements(out, x);
  else
    fill_elements(out, 0.0);
  Tensor s = src.contiguous();
  g_scatter_add.get(out.device())(out, dim, idx, s);
  return src.dtype() == DType::F32 ? out : out.to(src.dtype());
}

Tensor gather_forward(const Tensor& x, int64_t dim, const Tensor& idx) {
  Tensor out = empty(idx.shape(), x.dtype(), x.device());
  Tensor xc = x.contiguous();
  g_gather.get(xc.device())(out, xc, dim, idx);
  return out;
}

}  // namespace

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  MOON_CHECK(x.defined() && index.defined(), "gather: undefined input or index tensor");
  MOON_CHECK(x.dim() >= 1, "gather: input must have at least one dimension, got ", x.desc());
  dim = wrap_dim(dim, x.dim(), "gather");
  const Tensor values = checked_index("gather", x, dim, index);
  Tensor out;
  {
    NoGradGuard ng;
    out = gather_forward(x, dim, values);  // (index shape)
  }
  if (needs_grad({&x})) {
    check_float_storage("gather", x, "input (for gradients)");
    const Shape x_shape = x.shape();
    const DType x_dtype = x.dtype();
    record_op("gather", {x}, {out}, [values, x_shape, x_dtype, dim](const std::vector<Tensor>& g) {
      // dx = zeros scattered-added with the output gradient at the gathered positions (in x's dtype)
      return std::vector<Tensor>{scatter_add_forward(Tensor(), x_shape, dim, values, g[0].to(x_dtype))};
    });
  }
  return out;
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  MOON_CHECK(x.defined() && index.defined() && src.defined(), "scatter_add: undefined input, index or src tensor");
  check_float_storage("scatter_add", x, "input");
  check_same_dtype("scatter_add", x, src, "src");
  MOON_CHECK(x.dim() >= 1, "scatter_add: input must have at least one dimension, got ", x.desc());
  MOON_CHECK(src.shape() == index.shape(), "scatter_add: src ", src.desc(), " must have the shape of index ",
             index.desc());
  MOON_CHECK(src.device() == x.device(), "scatter_add: input ", x.desc(), " and src ", src.desc(),
             " are on different devices");
  dim = wrap_dim(dim, x.dim(), "scatter_add");
  const Tensor values = checked_index("scatter_add", x, dim, index);
  Tensor out;
  {
    NoGradGuard ng;
    out = scatter_add_forward(x, x.shape(), dim, values, src);  // (x shape)
  }
  if (needs_grad({&x, &src})) {
    const bool gx = x.requires_grad(), gs = src.requires_grad();
    record_op("scatter_add", {x, src}, {out}, [values, dim, gx, gs](const std::vector<Tensor>& g) {
      // dx = g; dsrc = g gathered at the scattered positions
      return std::vector<Tensor>{gx ? g[0] : Tensor(), gs ? gather_forward(g[0], dim, values) : Tensor()};  // g's dtype
    });
  }
  return out;
}

}  // namespace moon
