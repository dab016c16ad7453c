// Dropout on the GPU (declared in ops/cuda/elementwise_cuda.h): the CPU's mask bit for bit, from the shared
// Philox rounds of runtime/philox_core.h. One thread per group of 4 consecutive elements makes one Philox
// call at counter offset + group, lane l of it deciding element 4 * group + l; every element is written by
// exactly one thread, so the result is deterministic.
#include "ops/cuda/elementwise_cuda.h"
#include "runtime/cuda/kernel_util.cuh"
#include "runtime/philox_core.h"

namespace moon::cuda {

namespace {

constexpr int kThreads = 256;

// y[4c + l] = unit(philox(offset + c, seed)[l]) >= p ? x[4c + l] * scale : 0 for each group c; float4 loads
// and stores for whole groups when `vec` (x, y 16-byte aligned): ~100 integer ops + 4 FLOPs per group, 8 B per
// element.
__global__ void dropout_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n, uint64_t seed,
                               uint64_t offset, float p, float scale, bool vec) {
  const int64_t groups = (n + 3) / 4;
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < groups; c += int64_t{gridDim.x} * blockDim.x) {
    uint32_t r[4];
    philox::rounds(offset + static_cast<uint64_t>(c), seed, r);
    const int64_t base = c * 4;
    if (vec && base + 4 <= n) {
      float4 v = reinterpret_cast<const float4*>(x)[c];
      v.x = philox::unit_float(r[0]) >= p ? v.x * scale : 0.0f;
      v.y = philox::unit_float(r[1]) >= p ? v.y * scale : 0.0f;
      v.z = philox::unit_float(r[2]) >= p ? v.z * scale : 0.0f;
      v.w = philox::unit_float(r[3]) >= p ? v.w * scale : 0.0f;
      reinterpret_cast<float4*>(y)[c] = v;
    } else {
      for (int l = 0; l < 4 && base + l < n; ++l)
        y[base + l] = philox::unit_float(r[l]) >= p ? x[base + l] * scale : 0.0f;
    }
  }
}

}  // namespace

void dropout_forward(const Tensor& in, const Tensor& out, uint64_t seed, uint64_t offset, float p, float scale) {
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceGuard guard(out.device());
  const float* x = cptr<float>(in);
  float* y = ptr<float>(out);
  const bool vec = aligned(x, 16) && aligned(y, 16);
  dropout_kernel<<<blocks_for((n + 3) / 4, kThreads), kThreads, 0, stream_of(out)>>>(x, y, n, seed, offset, p, scale,
                                                                                     vec);
  MOON_CUDA_LAUNCH_CHECK("dropout_kernel");
}

}  // namespace moon::cuda
