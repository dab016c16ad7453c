// Row-wise kernel plumbing shared by ops/cuda/norm_cuda.cu and ops/cuda/loss_cuda.cu: warp-per-row or
// block-per-row geometry with the matching reductions, and kW-wide (float4 or scalar) loads and stores.
// CUDA-only header.
#pragma once

#include "runtime/cuda/kernel_util.cuh"

namespace moon::cuda {

constexpr int64_t kWarpRowMax = 1024;  // widest row handled by one warp
constexpr int kRowsPerBlock = 4;       // rows (warps) per block in warp-per-row mode

// Row geometry and reductions for warp-per-row (kWarpRow) or block-per-row kernels. In warp mode the rows of
// one block differ per warp and no block barrier is used; in block mode every thread of the block walks the
// same rows, so the barriers inside block_sum / block_max are reached uniformly.
template <bool kWarpRow>
struct Row {
  __device__ static int64_t first() {
    return kWarpRow ? int64_t{blockIdx.x} * blockDim.y + threadIdx.y : int64_t{blockIdx.x};
  }
  __device__ static int64_t step() { return kWarpRow ? int64_t{gridDim.x} * blockDim.y : int64_t{gridDim.x}; }
  __device__ static int lane() { return static_cast<int>(threadIdx.x); }
  __device__ static int width() { return static_cast<int>(blockDim.x); }
  __device__ static float sum(float v, float* scratch) { return kWarpRow ? warp_sum(v) : block_sum(v, scratch); }
  __device__ static float max(float v, float* scratch) { return kWarpRow ? warp_max(v) : block_max(v, scratch); }
};

// kW consecutive floats: one float4 (kW == 4, 16-byte aligned) or one float.
template <int kW>
__device__ __forceinline__ void load(const float* p, float (&v)[kW]) {
  if constexpr (kW == 4) {
    const float4 t = *reinterpret_cast<const float4*>(p);
    v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
  } else {
    v[0] = *p;
  }
}
template <int kW>
__device__ __forceinline__ void store(float* p, const float (&v)[kW]) {
  if constexpr (kW == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    *p = v[0];
  }
}

}  // namespace moon::cuda
