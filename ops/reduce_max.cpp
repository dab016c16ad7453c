// max over a dimension (values and first-maximum indices), max over all elements, argmax.
#include "ops/cuda/reduce_cuda.h"
#include "ops/float_storage.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

// values[o, j] = max_k in[o, k, j] and indices[o, j] = the first such k, for in viewed as (outer, len, inner)
// (contiguous). NaN wins (it propagates, as in PyTorch). src and values are f32 or bf16 (one dtype): a bf16
// input is widened exactly, so the comparisons are those of the bf16 values and the stored maximum is exact.
void max_middle_cpu(const Tensor& src_t, const Tensor& values_t, const Tensor& indices, int64_t outer, int64_t len,
                    int64_t inner) {
  const Tensor src = f32_input(src_t);
  const F32Output values(values_t);
  const float* in = src.data<float>();
  float* val = values.data<float>();
  int64_t* idx = indices.data<int64_t>();
#pragma omp parallel for schedule(static) if (outer * len * inner > (1 << 15))
  for (int64_t o = 0; o < outer; ++o) {
    const float* p = in + o * len * inner;
    float* v = val + o * inner;
    int64_t* ix = idx + o * inner;
    for (int64_t j = 0; j < inner; ++j) v[j] = p[j], ix[j] = 0;
    for (int64_t k = 1; k < len; ++k) {
      const float* row = p + k * inner;
      for (int64_t j = 0; j < inner; ++j) {  // contiguous over j, so inner > 1 vectorises with blends
        const float x = row[j];
        const bool take = x > v[j] || (x != x && v[j] == v[j]);
        v[j] = take ? x : v[j];
        ix[j] = take ? k : ix[j];
      }
    }
  }
  values.commit();
}

// dx[o, indices[o, j], j] = g[o, j], zero elsewhere (dx is (outer, len, inner), contiguous; g and dx f32 or
// bf16, one dtype: a pure copy of g's values).
void max_backward_cpu(const Tensor& g_t, const Tensor& indices, const Tensor& dx_t, int64_t outer, int64_t len,
                      int64_t inner) {
  const Tensor g = f32_input(g_t);
  const F32Output dx(dx_t);
  const float* pg = g.data<float>();
  const int64_t* ix = indices.data<int64_t>();
  float* d = dx.data<float>();
  const int64_t n = outer * len * inner;
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) d[i] = 0.0f;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < inner; ++j) d[(o * len + ix[o * inner + j]) * inner + j] = pg[o * inner + j];
  dx.commit();
}

using MaxFn = void (*)(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, int64_t);
KernelTable<MaxFn> g_max{"max", {max_middle_cpu, MOON_CUDA_KERNEL(cuda::max_middle)}};
KernelTable<MaxFn> g_max_backward{"max_backward", {max_backward_cpu, MOON_CUDA_KERNEL(cuda::max_middle_backward)}};

struct Split {
  int64_t outer = 1, len = 1, inner = 1;
};
Split split_at(const Shape& s, int64_t dim) {
  Split r;
  for (int64_t d = 0; d < static_cast<int64_t>(s.size()); ++d) (d < dim ? r.outer : d > dim ? r.inner : r.len) *= s[d];
  return r;
}

// Checks and runs the max kernel; returns keepdim-shaped values and indices.
MaxResult max_forward(const Tensor& a, int64_t& dim, const char* op) {
  check_float_storage(op, a);
  const int64_t lo = a.dim() == 0 ? -1 : -a.dim(), hi = a.dim() == 0 ? 0 : a.dim() - 1;
  MOON_CHECK(dim >= lo && dim <= hi, op, ": dim ", dim, " is out of range for ", a.desc(), " (valid: ", lo, "..", hi,
             ")");
  dim = wrap_dim(dim, a.dim(), op);
  const int64_t len = a.dim() == 0 ? 1 : a.size(dim);
  MOON_CHECK(len > 0, op, ": dim ", dim, " of ", a.desc(), " is empty, so it has no maximum");
  Shape kept = a.shape();
  if (a.dim() > 0) kept[dim] = 1;
  MaxResult r{empty(kept, a.dtype(), a.device()), empty(kept, DType::I64, a.device())};  // values: a's dtype
  NoGradGuard ng;
  const Split s = split_at(a.shape(), dim);
  g_max.get(a.device())(a.contiguous(), r.values, r.indices, s.outer, s.len, s.inner);
  return r;
}

Tensor drop_dim(const Tensor& t, int64_t dim) {
  return t.dim() == 0 ? t : t.squeeze(dim);  // a differentiable view
}

}  // namespace

MaxResult max(const Tensor& a, int64_t dim_in, bool keepdim) {
  int64_t dim = dim_in;
  MaxResult r = max_forward(a, dim, "max");
  if (needs_grad({&a})) {
    const Shape in_shape = a.shape();
    const DType in_dtype = a.dtype();
    const Tensor idx = r.indices;  // never written in place: it is ours until returned
    record_op("max", {a}, {r.values}, [in_shape, in_dtype, idx, dim](const std::vector<Tensor>& g) {
      const Split s = split_at(in_shape, dim);
      const Tensor gc = g[0].to(in_dtype).contiguous();
      Tensor dx = empty(in_shape, in_dtype, gc.device());
      g_max_backward.get(gc.device())(gc, idx, dx, s.outer, s.len, s.inner);
      return std::vector<Tensor>{dx};
    });
  }
  if (!keepdim) {
    r.values = drop_dim(r.values, dim);
    r.indices = drop_dim(r.indices, dim);
  }
  return r;
}

Tensor max(const Tensor& a) {
  MOON_CHECK(a.numel() > 0, "max: ", a.desc(), " has no elements, so it has no maximum");
  return max(a.reshape({a.numel()}), 0, false).values;
}

Tensor argmax(const Tensor& a, int64_t dim_in, bool keepdim) {
  int64_t dim = dim_in;
  MaxResult r = max_forward(a, dim, "argmax");
  return keepdim ? r.indices : drop_dim(r.indices, dim);
}

}  // namespace moon
