// Shared helpers of the indexing ops: index reading, range checks, and the scatter-add kernel.
#include "ops/index_util.h"

#include <sstream>

#include "ops/cuda/index_cuda.h"
#include "ops/float_storage.h"
#include "runtime/autograd.h"
#include "runtime/copy.h"
#include "runtime/dispatch.h"

namespace moon::index_detail {

namespace {

[[noreturn]] void fail_out_of_range(int64_t v, const Shape& idx_shape, int64_t pos, int64_t n, const char* op,
                                    const char* what, const std::string& range_of) {
  fail(op, ": ", what, " ", v, " at position ", what, position_str(idx_shape, pos),
       " is out of range: valid values are 0..", n - 1, " (", n, " ", range_of,
       "); check how the indices were built (vocabulary size, dimension sizes)");
}

// The position of the first value of idx (contiguous i64) outside [0, n), or -1; *value gets that value.
int64_t first_out_of_range_cpu(const Tensor& idx, int64_t n, int64_t* value) {
  const int64_t* p = idx.data<int64_t>();
  for (int64_t i = 0; i < idx.numel(); ++i)
    if (p[i] < 0 || p[i] >= n) {
      *value = p[i];
      return i;
    }
  return -1;
}

using FirstBadFn = int64_t (*)(const Tensor&, int64_t, int64_t*);
KernelTable<FirstBadFn> g_first_bad{"index range check",
                                    {first_out_of_range_cpu, MOON_CUDA_KERNEL(cuda::first_out_of_range)}};

}  // namespace

std::vector<int64_t> index_values(const Tensor& idx, const char* op, const char* what) {
  MOON_CHECK(idx.defined(), op, ": ", what, " is an undefined tensor");
  MOON_CHECK(idx.dtype() == DType::I64 || idx.dtype() == DType::I32, op, ": ", what,
             " must be an integer tensor (i64 or i32), got ", idx.desc(), "; convert with .to(DType::I64)");
  MOON_CHECK(idx.device().is_cpu(), op, ": ", what, " ", idx.desc(), " must be on the CPU for this kernel");
  Tensor c;
  {
    NoGradGuard ng;
    c = idx.contiguous();
  }
  const int64_t n = c.numel();
  std::vector<int64_t> v(static_cast<size_t>(n));
  if (c.dtype() == DType::I64) {
    const int64_t* p = c.data<int64_t>();
    for (int64_t i = 0; i < n; ++i) v[i] = p[i];
  } else {
    const int32_t* p = c.data<int32_t>();
    for (int64_t i = 0; i < n; ++i) v[i] = p[i];
  }
  return v;
}

std::string position_str(const Shape& shape, int64_t flat) {
  std::vector<int64_t> coord(shape.size(), 0);
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    coord[d] = shape[d] > 0 ? flat % shape[d] : 0;
    flat = shape[d] > 0 ? flat / shape[d] : 0;
  }
  std::ostringstream os;
  os << "[";
  for (size_t d = 0; d < coord.size(); ++d) os << (d ? ", " : "") << coord[d];
  os << "]";
  return os.str();
}

void check_index_range(const std::vector<int64_t>& values, const Shape& idx_shape, int64_t n, const char* op,
                       const char* what, const std::string& range_of) {
  for (size_t i = 0; i < values.size(); ++i) {
    const int64_t v = values[i];
    if (v >= 0 && v < n) continue;
    fail_out_of_range(v, idx_shape, static_cast<int64_t>(i), n, op, what, range_of);
  }
}

Tensor checked_index_tensor(const Tensor& idx, int64_t n, const char* op, const char* tensor_what, const char* what,
                            const std::string& range_of) {
  MOON_CHECK(idx.defined(), op, ": ", tensor_what, " is an undefined tensor");
  if (idx.device().is_cpu()) {
    const std::vector<int64_t> values = index_values(idx, op, tensor_what);
    check_index_range(values, idx.shape(), n, op, what, range_of);
    return from_vector(values, idx.shape(), DType::I64);
  }
  MOON_CHECK(idx.dtype() == DType::I64 || idx.dtype() == DType::I32, op, ": ", tensor_what,
             " must be an integer tensor (i64 or i32), got ", idx.desc(), "; convert with .to(DType::I64)");
  Tensor c = empty(idx.shape(), DType::I64, idx.device());
  {
    NoGradGuard ng;
    copy_elements(c, idx);  // contiguous, converted from i32 where needed, and our own copy
  }
  int64_t value = 0;
  const int64_t pos = g_first_bad.get(c.device())(c, n, &value);
  if (pos >= 0) fail_out_of_range(value, idx.shape(), pos, n, op, what, range_of);
  return c;
}

int64_t outer_size(const Shape& s, int64_t dim) {
  int64_t r = 1;
  for (int64_t d = 0; d < dim; ++d) r *= s[d];
  return r;
}

int64_t inner_size(const Shape& s, int64_t dim) {
  int64_t r = 1;
  for (int64_t d = dim + 1; d < static_cast<int64_t>(s.size()); ++d) r *= s[d];
  return r;
}

int64_t base_offset(int64_t p, int64_t q, const Shape& shape, int64_t dim, const Strides& strides) {
  int64_t off = 0;
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d > dim; --d) {
    off += (q % shape[d]) * strides[d];
    q /= shape[d];
  }
  for (int64_t d = dim - 1; d >= 0; --d) {
    off += (p % shape[d]) * strides[d];
    p /= shape[d];
  }
  return off;
}

// out[base(p,q) + idx[p,j,q] * stride(dim)] += src[p,j,q]: one (p, q) row per iteration, j in order.
void scatter_add_cpu(float* out, const Shape& out_shape, int64_t dim, const int64_t* idx, const Shape& idx_shape,
                     const float* src) {
  const int64_t pre = outer_size(idx_shape, dim), len = idx_shape[dim], post = inner_size(idx_shape, dim);
  const Strides os = contiguous_strides(out_shape);
  const int64_t sd = os[dim];
  const int64_t rows = pre * post;
#pragma omp parallel for schedule(static) if (rows * len > (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t p = r / post, q = r % post;
    const int64_t base = base_offset(p, q, idx_shape, dim, os);
    const int64_t s0 = p * len * post + q;
    for (int64_t j = 0; j < len; ++j) out[base + idx[s0 + j * post] * sd] += src[s0 + j * post];
  }
}

void scatter_add_tensors_cpu(const Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src) {
  const F32Output acc(out, true);
  const Tensor sf = f32_input(src);
  scatter_add_cpu(acc.data<float>(), out.shape(), dim, idx.data<int64_t>(), idx.shape(), sf.data<float>());
  acc.commit();
}

}  // namespace moon::index_detail
