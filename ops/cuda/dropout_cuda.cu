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

// y[4c + l] = unit(philox(offset + c, seed)[l]) >= p ? x[4c + l] * scale : 0 for each group c, for storage
// T = float or __nv_bfloat16 (the product in f32, rounded once on store: the f32 kernel's result on the
// widened input, rounded); vector loads and stores of whole groups when `vec` (x, y aligned to
// kVecBytes<T>): ~100 integer ops + 4 FLOPs per group, 8 B per element in f32 (4 B in bf16).
template <class T>
__global__ void dropout_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, uint64_t seed, uint64_t offset,
                               float p, float scale, bool vec) {
  const int64_t groups = (n + 3) / 4;
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < groups; c += int64_t{gridDim.x} * blockDim.x) {
    uint32_t r[4];
    philox::rounds(offset + static_cast<uint64_t>(c), seed, r);
    const int64_t base = c * 4;
    if (vec && base + 4 <= n) {
      float v[4];
      load_floats<4>(x + base, v);
      for (int l = 0; l < 4; ++l) v[l] = philox::unit_float(r[l]) >= p ? v[l] * scale : 0.0f;
      store_floats<4>(y + base, v);
    } else {
      for (int l = 0; l < 4 && base + l < n; ++l)
        y[base + l] = from_float<T>(philox::unit_float(r[l]) >= p ? to_float(x[base + l]) * scale : 0.0f);
    }
  }
}

}  // namespace

void dropout_forward(const Tensor& in, const Tensor& out, uint64_t seed, uint64_t offset, float p, float scale) {
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceGuard guard(out.device());
  MOON_CHECK(in.dtype() == out.dtype(), "dropout: ", in.desc(), " and ", out.desc(), " must share a dtype");
  visit_float("dropout", out, [&](auto storage) {
    using T = decltype(storage);
    const T* x = cptr<T>(in);
    T* y = ptr<T>(out);
    const bool vec = aligned(x, kVecBytes<T>) && aligned(y, kVecBytes<T>);
    dropout_kernel<T><<<blocks_for((n + 3) / 4, kThreads), kThreads, 0, stream_of(out)>>>(x, y, n, seed, offset, p,
                                                                                         scale, vec);
    MOON_CUDA_LAUNCH_CHECK("dropout_kernel");
  });
}

}  // namespace moon::cuda
