// Row-wise kernel plumbing shared by ops/cuda/norm_cuda.cu and ops/cuda/loss_cuda.cu: warp-per-row or
// block-per-row geometry with the matching reductions, kW-wide (float4 or scalar) loads and stores, the
// online max / sum-of-exp statistics of a row, and the launch that picks the geometry from the row length.
// Rows are stored as T = float or __nv_bfloat16 (bf16 activations): loaded to f32, computed in f32, rounded
// once on store. CUDA-only header.
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

// kW consecutive elements of storage type T (float or __nv_bfloat16) as floats: one vector access (kW == 4,
// the pointer aligned to kVecBytes<T>: float4 or 4 bf16 in 8 bytes) or one scalar; stores round to T once.
template <int kW, class T>
__device__ __forceinline__ void load(const T* p, float (&v)[kW]) {
  load_floats<kW>(p, v);
}
template <int kW, class T>
__device__ __forceinline__ void store(T* p, const float (&v)[kW]) {
  store_floats<kW>(p, v);
}

// A row's max M, sum S of exp(x - M) and, with kSumX, its plain sum, in one online pass over its kW-groups:
// each thread keeps a running max and rescales its sum when the max grows, then the row's threads combine
// (max, then sum of exp, then plain sum). Rows of -inf only give M = -inf, S = 0.
struct RowSoftmaxStats {
  float max, sum_exp, sum;
};
template <bool kWarpRow, int kW, bool kSumX, class T>
__device__ __forceinline__ RowSoftmaxStats row_softmax_stats(const T* xr, int64_t groups, float* scratch) {
  using R = Row<kWarpRow>;
  float m = -INFINITY, s = 0.0f, sx = 0.0f;
  for (int64_t gi = R::lane(); gi < groups; gi += R::width()) {
    float v[kW];
    load<kW>(xr + gi * kW, v);
    float vm = v[0];
    for (int k = 0; k < kW; ++k) {
      vm = fmaxf(vm, v[k]);
      if constexpr (kSumX) sx += v[k];
    }
    const float nm = fmaxf(m, vm);
    if (nm == -INFINITY) continue;  // only -inf so far: exp() of them is 0 (the CPU agrees)
    s = s * expf(m - nm);
    for (int k = 0; k < kW; ++k) s += expf(v[k] - nm);
    m = nm;
  }
  RowSoftmaxStats st{R::max(m, scratch), 0.0f, 0.0f};
  s = m == -INFINITY ? 0.0f : s * expf(m - st.max);
  st.sum_exp = R::sum(s, scratch);
  if constexpr (kSumX) st.sum = R::sum(sx, scratch);
  return st;
}

// Launches kernel<kWarpRow, kW> over `rows` rows of C with the geometry for C: warp per row when narrow,
// else a block of up to 1024 threads (about 4 groups of kW elements per thread).
template <template <bool, int> class K, class... Args>
void launch_rows(const char* name, cudaStream_t s, int64_t rows, int64_t C, bool vec, Args... args) {
  const int64_t groups = vec ? C / 4 : C;
  if (C <= kWarpRowMax) {
    const dim3 block(32, kRowsPerBlock);
    const unsigned grid = blocks_for(rows, kRowsPerBlock, int64_t{1} << 20);
    if (vec) K<true, 4>::launch(grid, block, s, args...);
    else K<true, 1>::launch(grid, block, s, args...);
  } else {
    int threads = 128;
    while (threads < 1024 && threads * 4 < groups) threads *= 2;
    const unsigned grid = blocks_for(rows, 1, int64_t{1} << 20);
    if (vec) K<false, 4>::launch(grid, dim3(threads), s, args...);
    else K<false, 1>::launch(grid, dim3(threads), s, args...);
  }
  MOON_CUDA_LAUNCH_CHECK(name);
}

}  // namespace moon::cuda
