// CUDA rope (ops/rope.cpp): the cos/sin tables computed on the device in double, exactly as the CPU builds
// them, and the rotation of each (b, h, t) row, written without contraction so it rounds like the CPU.
// bf16 activations: x and y are stored as T (float or __nv_bfloat16), rotated in f32 and rounded once on store
// (the f32 rotation of the widened x, rounded, bit for bit); the tables are always f32.
#include <cmath>

#include "ops/cuda/norm_cuda.h"
#include "runtime/cuda/kernel_util.cuh"

namespace moon::cuda {

namespace {

// cos_t/sin_t[(b*T + t)*half + i] = cos/sin(pos * theta^(-2i / (2 half))), angle in double.
// Per entry: 1 pow + 1 sincos in double, 12 bytes (position read, two floats written).
template <class P>
__global__ void rope_tables_kernel(const P* __restrict__ pos, bool per_batch, int64_t B, int64_t T, int64_t half,
                                   double theta, float* __restrict__ cos_t, float* __restrict__ sin_t) {
  const int64_t n = B * T * half;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = e % half, bt = e / half;
    const int64_t b = bt / T, t = bt % T;
    const double p = static_cast<double>(static_cast<int64_t>(pos[per_batch ? b * T + t : t]));
    const double angle = p * pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(2 * half));
    cos_t[e] = static_cast<float>(cos(angle));
    sin_t[e] = static_cast<float>(sin(angle));
  }
}

// y[.., i] = x1 c - x2 s', y[.., i + half] = x2 c + x1 s' with s' = sign * s, per pair of a (B, H, T, D) row.
// Per pair: 6 FLOP, 16 bytes of x/y (+8 of tables, shared by the H heads).
template <class S>  // storage type (T is the sequence length here)
__global__ void rope_kernel(const S* __restrict__ x, S* __restrict__ y, const float* __restrict__ cos_t,
                            const float* __restrict__ sin_t, int64_t H, int64_t T, int64_t half, int64_t pairs,
                            float sign) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < pairs; e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = e % half, row = e / half;  // row = (b*H + h)*T + t
    const int64_t t = row % T, b = row / (H * T);
    const int64_t tab = (b * T + t) * half + i;
    const S* xr = x + row * 2 * half;
    S* yr = y + row * 2 * half;
    const float c = cos_t[tab], sn = sign * sin_t[tab];
    const float x1 = to_float(xr[i]), x2 = to_float(xr[i + half]);
    yr[i] = from_float<S>(__fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, sn)));
    yr[i + half] = from_float<S>(__fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, sn)));
  }
}

}  // namespace

void rope_tables(const Tensor& positions, int64_t B, int64_t T, int64_t half, double theta, const Tensor& cos_t,
                 const Tensor& sin_t) {
  const int64_t n = B * T * half;
  if (n == 0) return;
  DeviceGuard guard(cos_t.device());
  MOON_CHECK(positions.device() == cos_t.device() && positions.is_contiguous(),
             "rope: internal error: positions must be contiguous on ", cos_t.device().str());
  constexpr int kThreads = 256;
  const unsigned grid = blocks_for(n, kThreads);
  const cudaStream_t s = stream_of(cos_t);
  const bool per_batch = positions.dim() == 2;
  if (positions.dtype() == DType::I64) {
    rope_tables_kernel<int64_t><<<grid, kThreads, 0, s>>>(cptr<int64_t>(positions), per_batch, B, T, half, theta,
                                                          ptr<float>(cos_t), ptr<float>(sin_t));
  } else {
    MOON_CHECK(positions.dtype() == DType::I32, "rope: positions must be i64 or i32, got ", positions.desc());
    rope_tables_kernel<int32_t><<<grid, kThreads, 0, s>>>(cptr<int32_t>(positions), per_batch, B, T, half, theta,
                                                          ptr<float>(cos_t), ptr<float>(sin_t));
  }
  MOON_CUDA_LAUNCH_CHECK("rope_tables_kernel");
}

void rope(const Tensor& x, const Tensor& y, const Tensor& cos_t, const Tensor& sin_t, int64_t B, int64_t H, int64_t T,
          int64_t half, float sign) {
  const int64_t pairs = B * H * T * half;
  if (pairs == 0) return;
  DeviceGuard guard(x.device());
  constexpr int kThreads = 256;
  visit_float("rope", x, [&](auto tag) {
    using S = decltype(tag);
    rope_kernel<S><<<blocks_for(pairs, kThreads), kThreads, 0, stream_of(x)>>>(
        cptr<S>(x), ptr<S>(y), cptr<float>(cos_t), cptr<float>(sin_t), H, T, half, pairs, sign);
    MOON_CUDA_LAUNCH_CHECK("rope_kernel");
  });
}

}  // namespace moon::cuda
