// Philox draws on the GPU: the same numbers as philox_uniform_cpu / philox_normal_cpu for the same
// (seed, offset), from the shared rounds and transforms of runtime/philox_core.h.
#include "runtime/cuda/kernel_util.cuh"
#include "runtime/philox_core.h"
#include "runtime/rng.h"

namespace moon {

namespace {

// out[4c + lane] = lo + span * unit(philox(offset + c, seed)[lane]): ~100 integer ops per 4 values, 4 B out each.
__global__ void philox_uniform_kernel(float* out, int64_t n, uint64_t seed, uint64_t offset, float lo, float span) {
  const int64_t groups = (n + 3) / 4;
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < groups; c += int64_t{gridDim.x} * blockDim.x) {
    uint32_t r[4];
    philox::rounds(offset + static_cast<uint64_t>(c), seed, r);
    for (int lane = 0; lane < 4 && c * 4 + lane < n; ++lane) out[c * 4 + lane] = philox::uniform_in(lo, span, r[lane]);
  }
}

// out[4c + lane] = mean + std * BoxMuller(philox(offset + c, seed))[lane], in double: 4 B out per value.
__global__ void philox_normal_kernel(float* out, int64_t n, uint64_t seed, uint64_t offset, float mean, float std) {
  const int64_t groups = (n + 3) / 4;
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < groups; c += int64_t{gridDim.x} * blockDim.x) {
    uint32_t r[4];
    philox::rounds(offset + static_cast<uint64_t>(c), seed, r);
    double z[4];
    philox::normals(r, z);
    for (int lane = 0; lane < 4 && c * 4 + lane < n; ++lane) out[c * 4 + lane] = philox::scaled_normal(mean, std, z[lane]);
  }
}

}  // namespace

void philox_uniform_cuda(float* out, int64_t n, uint64_t seed, uint64_t offset, float lo, float hi, int device) {
  if (n == 0) return;
  const Device d = cuda_device(device);
  cuda::DeviceGuard guard(d);
  philox_uniform_kernel<<<cuda::blocks_for((n + 3) / 4, 256), 256, 0, cuda::stream(d)>>>(out, n, seed, offset, lo, hi - lo);
  MOON_CUDA_LAUNCH_CHECK("philox_uniform_kernel");
}

void philox_normal_cuda(float* out, int64_t n, uint64_t seed, uint64_t offset, float mean, float std, int device) {
  if (n == 0) return;
  const Device d = cuda_device(device);
  cuda::DeviceGuard guard(d);
  philox_normal_kernel<<<cuda::blocks_for((n + 3) / 4, 256), 256, 0, cuda::stream(d)>>>(out, n, seed, offset, mean, std);
  MOON_CUDA_LAUNCH_CHECK("philox_normal_kernel");
}

}  // namespace moon
