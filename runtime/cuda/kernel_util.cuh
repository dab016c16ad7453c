// Shared plumbing of the CUDA kernels: typed device pointers with checks, the stream of a tensor, launch
// sizes, strided indexing of any view, warp and block reductions, and bf16 loads. CUDA-only header.
//
// Conventions for every kernel file (runtime/cuda/, ops/cuda/):
//   * launch on stream_of(tensor) and follow each launch with MOON_CUDA_LAUNCH_CHECK("kernel_name");
//   * set the device with cuda::DeviceGuard guard(tensor.device()) at the top of each host entry point;
//   * one line above each kernel says what it computes and its FLOP and byte counts per element or row;
//   * no float atomics where the order of additions would change results between runs (determinism).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "runtime/cuda/context.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/tensor.h"

namespace moon::cuda {

// ---- host side

// The device pointer of t's first element, checking the device type and the element type.
template <class T>
T* ptr(const Tensor& t) {
  MOON_CHECK(t.device().is_cuda(), "cuda kernel: tensor ", t.desc(), " is not on a CUDA device");
  return static_cast<T*>(t.raw_data());
}
template <class T>
const T* cptr(const Tensor& t) {
  return ptr<T>(t);
}

inline cudaStream_t stream_of(const Tensor& t) { return stream(t.device()); }

// Blocks of `threads` to cover n items, capped (grid-stride loops cover the rest).
inline unsigned blocks_for(int64_t n, int threads, int64_t cap = 65535LL * 8) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > cap) b = cap;
  return static_cast<unsigned>(b);
}

// True when p is aligned for `bytes`-wide vector loads.
inline bool aligned(const void* p, int bytes) { return (reinterpret_cast<uintptr_t>(p) % bytes) == 0; }

// An N-d view walked by linear index: the row-major index over `size` maps to sum(index_d * stride_d).
// Dimensions of size 1 are dropped and dimensions that are contiguous in every operand that shares the
// walk can be merged by the caller (see merge_dims in runtime/cuda/kernel_util.cu).
constexpr int kMaxDims = 10;
struct Indexer {
  int ndim = 0;
  int64_t size[kMaxDims];
  int64_t stride[kMaxDims];

  __host__ __device__ int64_t offset(int64_t linear) const {
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t i = linear % size[d];
      linear /= size[d];
      off += i * stride[d];
    }
    return off;
  }
};
// The indexer of a tensor's shape and strides (in elements); throws beyond kMaxDims.
Indexer make_indexer(const Shape& shape, const Strides& strides);
inline Indexer make_indexer(const Tensor& t) { return make_indexer(t.shape(), t.strides()); }

// Walks of several same-shape views with the fewest dimensions: size-1 dimensions dropped, and a dimension
// merged into the next inner one where every view is contiguous across the pair. One indexer per view, all
// with the same sizes.
std::vector<Indexer> merge_dims(const Shape& shape, const std::vector<const Strides*>& views);

// ---- device side

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum (or max, with kMax) over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `scratch` is 32 floats of shared memory; the block is synchronised before return, so scratch may be
// reused. Each warp reduces its values, the warps' results meet in scratch, and every warp reduces those.
template <bool kMax>
__device__ __forceinline__ float block_reduce(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = kMax ? warp_max(v) : warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : (kMax ? -INFINITY : 0.0f);
  v = kMax ? warp_max(v) : warp_sum(v);
  __syncthreads();
  return v;
}
__device__ __forceinline__ float block_sum(float v, float* scratch) { return block_reduce<false>(v, scratch); }
__device__ __forceinline__ float block_max(float v, float* scratch) { return block_reduce<true>(v, scratch); }

// ---- element storage: f32 or bf16 (bf16 activations). Kernels are templated on the storage type T
// (float or __nv_bfloat16); they load to f32, compute in f32 and round once on store, the way the CPU runs a
// bf16 tensor through its f32 kernel (ops/float_storage.h), so the two agree bit for bit on the arithmetic.

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) {
  return __uint_as_float(static_cast<uint32_t>(__bfloat16_as_ushort(x)) << 16);
}

// f32 -> bf16 bits rounded to nearest even, NaN kept a quiet NaN: runtime/dtype.h's f32_to_bf16, bit for bit.
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// The storage value of f: f itself, or f rounded to bf16.
template <class T>
__device__ __forceinline__ T from_float(float f) {
  if constexpr (std::is_same_v<T, float>) return f;
  else return __ushort_as_bfloat16(f32_to_bf16_bits(f));
}

// kW consecutive elements of storage type T as floats: one 4*sizeof(T)-byte vector access when kW == 4 (the
// pointer must be aligned to kVecBytes<T>), else one scalar.
template <class T>
constexpr int kVecBytes = 4 * static_cast<int>(sizeof(T));  // float4: 16 bytes; 4 bf16: 8 bytes

template <int kW, class T>
__device__ __forceinline__ void load_floats(const T* p, float (&v)[kW]) {
  if constexpr (kW == 4 && std::is_same_v<T, float>) {
    const float4 t = *reinterpret_cast<const float4*>(p);
    v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
  } else if constexpr (kW == 4) {
    const uint2 t = *reinterpret_cast<const uint2*>(p);  // 4 bf16: low half first (little endian)
    v[0] = __uint_as_float(t.x << 16), v[1] = __uint_as_float(t.x & 0xffff0000u);
    v[2] = __uint_as_float(t.y << 16), v[3] = __uint_as_float(t.y & 0xffff0000u);
  } else {
    static_assert(kW == 1, "load_floats: kW is 1 or 4");
    v[0] = to_float(*p);
  }
}
template <int kW, class T>
__device__ __forceinline__ void store_floats(T* p, const float (&v)[kW]) {
  if constexpr (kW == 4 && std::is_same_v<T, float>) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  } else if constexpr (kW == 4) {
    uint2 t;
    t.x = static_cast<uint32_t>(f32_to_bf16_bits(v[0])) | (static_cast<uint32_t>(f32_to_bf16_bits(v[1])) << 16);
    t.y = static_cast<uint32_t>(f32_to_bf16_bits(v[2])) | (static_cast<uint32_t>(f32_to_bf16_bits(v[3])) << 16);
    *reinterpret_cast<uint2*>(p) = t;
  } else {
    static_assert(kW == 1, "store_floats: kW is 1 or 4");
    *p = from_float<T>(v[0]);
  }
}

// Calls f(T{}) with T the device storage type of a floating tensor's dtype: float for f32, __nv_bfloat16 for
// bf16; any other dtype is a moon::Error naming `op` and the tensor.
template <class F>
void visit_float(const char* op, const Tensor& t, F&& f) {
  if (t.dtype() == DType::F32) return f(float{});
  MOON_CHECK(t.dtype() == DType::BF16, op, ": the CUDA kernel takes f32 or bf16, got ", t.desc());
  return f(__nv_bfloat16{});
}

}  // namespace moon::cuda
