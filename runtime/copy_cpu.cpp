// CPU element copies and fills over arbitrary strides and dtypes.
#include <algorithm>
#include <cstring>

#include "runtime/copy.h"
#include "runtime/cuda/copy_cuda.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

struct bf16_t { uint16_t bits; };
struct f16_t { uint16_t bits; };

template <class T> inline double to_double(T x) { return static_cast<double>(x); }
template <> inline double to_double(bf16_t x) { return bf16_to_f32(x.bits); }
template <> inline double to_double(f16_t x) { return f16_to_f32(x.bits); }

template <class T> inline T from_double(double x) { return static_cast<T>(x); }
template <> inline bf16_t from_double(double x) { return bf16_t{f32_to_bf16(static_cast<float>(x))}; }
template <> inline f16_t from_double(double x) { return f16_t{f32_to_f16(static_cast<float>(x))}; }

// Converts one element; float -> float stays in float so that f32 copies are exact and fast.
template <class D, class S> inline D convert(S x) {
  if constexpr (std::is_same_v<D, S>) return x;
  else if constexpr (std::is_same_v<D, float> && std::is_same_v<S, bf16_t>) return bf16_to_f32(x.bits);
  else if constexpr (std::is_same_v<D, bf16_t> && std::is_same_v<S, float>) return bf16_t{f32_to_bf16(x)};
  else return from_double<D>(to_double(x));
}

template <class F>
auto visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::BF16: return f(bf16_t{});
    case DType::F16: return f(f16_t{});
    case DType::I32: return f(int32_t{});
    case DType::I64: return f(int64_t{});
    case DType::U8: return f(uint8_t{});
  }
  fail("copy: unknown dtype");
}

// Calls body(dst_offset, src_offset, n, dst_inner_stride, src_inner_stride) for each innermost row.
template <class Body>
void for_each_row(const Shape& shape, const Strides& ds, const Strides& ss, Body&& body) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  if (nd == 0) {
    body(0, 0, 1, 1, 1);
    return;
  }
  const int64_t inner = shape[nd - 1];
  const int64_t rows = shape_numel(shape) / (inner ? inner : 1);
  if (inner == 0) return;
#pragma omp parallel for schedule(static) if (rows * inner > (1 << 16) && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rem = r, doff = 0, soff = 0;
    for (int64_t d = nd - 2; d >= 0; --d) {
      const int64_t idx = rem % shape[d];
      rem /= shape[d];
      doff += idx * ds[d];
      soff += idx * ss[d];
    }
    body(doff, soff, inner, ds[nd - 1], ss[nd - 1]);
  }
}

// f32 <-> bf16 between contiguous tensors: parallel chunks, branch-free loops the compiler vectorises
// (the same rounding as f32_to_bf16: nearest even, NaN stays a quiet NaN). Mixed-precision GEMMs convert
// every weight and activation this way, so it is on the hot path of the bf16 compute mode.
void convert_flat(const Tensor& dst, const Tensor& src) {
  const int64_t n = dst.numel(), chunk = 1 << 15;
  const int64_t chunks = (n + chunk - 1) / chunk;
  const bool to_bf16 = dst.dtype() == DType::BF16;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * chunk, hi = std::min(n, lo + chunk);
    if (to_bf16) {
      const float* s = static_cast<const float*>(src.raw_data());
      uint16_t* d = static_cast<uint16_t*>(dst.raw_data());
      for (int64_t i = lo; i < hi; ++i) {
        uint32_t u;  // the f32 bits (memcpy: no aliasing through a uint32_t pointer)
        std::memcpy(&u, s + i, 4);
        const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        const uint32_t quiet_nan = (u >> 16) | 0x40u;
        d[i] = static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
      }
    } else {
      const uint16_t* s = static_cast<const uint16_t*>(src.raw_data());
      float* d = static_cast<float*>(dst.raw_data());
      for (int64_t i = lo; i < hi; ++i) {
        const uint32_t u = static_cast<uint32_t>(s[i]) << 16;
        std::memcpy(d + i, &u, 4);
      }
    }
  }
}

void copy_cpu(const Tensor& dst, const Tensor& src) {
  if (dst.numel() == 0) return;
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    const size_t bytes = static_cast<size_t>(dst.numel()) * dtype_size(dst.dtype());
    char* d = static_cast<char*>(dst.raw_data());
    const char* s = static_cast<const char*>(src.raw_data());
    const int64_t chunks = static_cast<int64_t>((bytes + (1 << 20) - 1) >> 20);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int64_t c = 0; c < chunks; ++c) {
      const size_t lo = static_cast<size_t>(c) << 20, hi = std::min(bytes, lo + (size_t{1} << 20));
      std::memcpy(d + lo, s + lo, hi - lo);
    }
    return;
  }
  if (dst.is_contiguous() && src.is_contiguous() &&
      ((dst.dtype() == DType::BF16 && src.dtype() == DType::F32) ||
       (dst.dtype() == DType::F32 && src.dtype() == DType::BF16))) {
    convert_flat(dst, src);
    return;
  }
  visit_dtype(dst.dtype(), [&](auto dtag) {
    using D = decltype(dtag);
    visit_dtype(src.dtype(), [&](auto stag) {
      using S = decltype(stag);
      D* d = static_cast<D*>(dst.raw_data());
      const S* s = static_cast<const S*>(src.raw_data());
      for_each_row(dst.shape(), dst.strides(), src.strides(),
                   [&](int64_t doff, int64_t soff, int64_t n, int64_t dst_step, int64_t src_step) {
                     D* dp = d + doff;
                     const S* sp = s + soff;
                     if (dst_step == 1 && src_step == 1) {
                       for (int64_t i = 0; i < n; ++i) dp[i] = convert<D>(sp[i]);
                     } else {
                       for (int64_t i = 0; i < n; ++i) dp[i * dst_step] = convert<D>(sp[i * src_step]);
                     }
                   });
    });
  });
}

void fill_cpu(const Tensor& dst, double value) {
  visit_dtype(dst.dtype(), [&](auto tag) {
    using D = decltype(tag);
    const D v = from_double<D>(value);
    D* d = static_cast<D*>(dst.raw_data());
    for_each_row(dst.shape(), dst.strides(), dst.strides(), [&](int64_t off, int64_t, int64_t n, int64_t step, int64_t) {
      for (int64_t i = 0; i < n; ++i) d[off + i * step] = v;
    });
  });
}

}  // namespace

KernelTable<void (*)(const Tensor&, const Tensor&)> g_copy_kernels{"copy", {copy_cpu, MOON_CUDA_KERNEL(cuda::copy_elements)}};
KernelTable<void (*)(const Tensor&, double)> g_fill_kernels{"fill", {fill_cpu, MOON_CUDA_KERNEL(cuda::fill_elements)}};

void copy_elements(const Tensor& dst, const Tensor& src) {
  MOON_CHECK(dst.shape() == src.shape(), "copy: destination ", dst.desc(), " and source ", src.desc(),
             " have different shapes");
  if (dst.device() == src.device()) {
    g_copy_kernels.get(dst.device())(dst, src);
    return;
  }
  // Crossing devices goes through the CUDA backend's copy (it handles host <-> device).
  g_copy_kernels.get(cuda_device())(dst, src);
}

void fill_elements(const Tensor& dst, double value) { g_fill_kernels.get(dst.device())(dst, value); }

double element_as_double(const Tensor& t, int64_t i) {
  MOON_CHECK(t.device().is_cpu(), "element_as_double: tensor ", t.desc(), " is not on the CPU");
  int64_t off = 0, rem = i;
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    off += (rem % t.size(d)) * t.stride(d);
    rem /= t.size(d);
  }
  return visit_dtype(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    return to_double(static_cast<const T*>(t.raw_data())[off]);
  });
}

}  // namespace moon
