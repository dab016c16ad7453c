// Self-checks of the emulator: it must catch the bugs it exists for, or the other suites could pass while it
// is broken. A planted missing __syncthreads must give a wrong result under both scheduling policies (the
// same kernel with the barrier must be exact); a divergent barrier, a barrier only some threads reach, a
// shuffle in a partial warp and launches over the hardware limits must be reported.
#include <string>

#include "common.h"
#include "emu/runtime/cuda/kernel_util.cuh"

namespace moon::cuda_emu {
namespace {

// Tree sum of 1..256 in shared memory; with `planted` the barrier between the writes and the first
// reduction step is missing (the bug a mutation test plants).
__global__ void tree_sum_kernel(float* out, bool planted) {
  static float sh[256];
  emu::shared_fill(&sh, sizeof(sh));
  const int t = int(threadIdx.x);
  sh[t] = float(t + 1);
  if (!planted) __syncthreads();
  for (int s = 128; s > 0; s >>= 1) {
    if (t < s) sh[t] += sh[t + s];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = sh[0];
}

// The backend's own block_sum (from the converted runtime/cuda/kernel_util.cuh) over the whole block.
__global__ void block_sum_kernel(float* out) {
  static float scratch[32];
  emu::shared_fill(&scratch, sizeof(scratch));
  const float v = block_sum(float(threadIdx.x + 1), scratch);
  if (threadIdx.x == 0) out[blockIdx.x] = v;
}

__global__ void divergent_barrier_kernel() {
  if (threadIdx.x < 32)
    __syncthreads();
  else
    __syncthreads();
}
__global__ void partial_barrier_kernel() {
  if (threadIdx.x < 32) __syncthreads();
}
__global__ void shuffle_kernel(float* out) { out[threadIdx.x] = warp_sum(1.0f); }
__global__ void big_static_shared_kernel(float* out) {
  static float big[13 * 1024];  // 52 KiB
  emu::shared_fill(&big, sizeof(big));
  out[0] = 0.0f;
}
__global__ void empty_kernel() {}

}  // namespace
}  // namespace moon::cuda_emu

namespace emutest {

void test_emulator() {
  namespace E = moon::cuda_emu;
  namespace emu = moon::cuda_emu::emu;
  const int saved = emu::policy;
  float out[1024];
  const float want = 256.0f * 257.0f / 2.0f;
  for (int pol : {0, 1}) {
    emu::policy = pol;
    for (int rep = 0; rep < 3; ++rep) {
      guarded("emulator tree_sum", [&] {
        ++checks;
        out[0] = out[1] = 0.0f;
        emu::Launch(2, 256).run([&] { E::tree_sum_kernel(out, false); });
        if (out[0] != want || out[1] != want) fail("emulator: the correct tree sum is wrong (policy " + std::to_string(pol) + ")");
      });
      guarded("emulator planted bug", [&] {
        ++checks;
        out[0] = out[1] = want;
        emu::Launch(2, 256).run([&] { E::tree_sum_kernel(out, true); });
        if (out[0] == want && out[1] == want)
          fail("emulator: a planted missing __syncthreads went unnoticed (policy " + std::to_string(pol) + ")");
      });
    }
    for (unsigned threads : {32u, 96u, 256u, 1024u})
      guarded("emulator block_sum", [&] {
        ++checks;
        emu::Launch(3, threads).run([&] { E::block_sum_kernel(out); });
        const float w = float(threads) * float(threads + 1) / 2.0f;
        if (out[0] != w || out[2] != w) fail("emulator: block_sum of " + std::to_string(threads) + " threads is wrong");
      });
  }
  emu::policy = saved;
  // Errors the emulator must report (each launch must throw emu::Error).
  auto must_throw = [&](const char* what, auto&& f) {
    ++checks;
    try {
      f();
      fail(std::string("emulator: not reported: ") + what);
    } catch (const emu::Error&) {
    }
  };
  must_throw("threads at different __syncthreads", [&] { emu::Launch(1, 64).run([] { E::divergent_barrier_kernel(); }); });
  must_throw("a __syncthreads only some threads reach", [&] { emu::Launch(1, 64).run([] { E::partial_barrier_kernel(); }); });
  must_throw("a warp shuffle in a partial warp", [&] { emu::Launch(1, 48).run([&] { E::shuffle_kernel(out); }); });
  must_throw("static shared memory over 48 KiB", [&] { emu::Launch(1, 32).run([&] { E::big_static_shared_kernel(out); }); });
  must_throw("a block of 1025 threads", [&] { emu::Launch(1, 1025).run([] { E::empty_kernel(); }); });
  must_throw("block.z of 65", [&] { emu::Launch(1, E::dim3(1, 1, 65)).run([] { E::empty_kernel(); }); });
  must_throw("grid.y of 65536", [&] { emu::Launch(E::dim3(1, 65536), 32).run([] { E::empty_kernel(); }); });
  must_throw("an empty grid", [&] { emu::Launch(0, 32).run([] { E::empty_kernel(); }); });
  must_throw("64 KiB of dynamic shared memory without opting in",
             [&] { emu::Launch(1, 32, 64 * 1024).run([] { E::empty_kernel(); }); });
  guarded("emulator opt-in", [&] {
    ++checks;
    E::cudaFuncSetAttribute(&E::empty_kernel, E::cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024);
    emu::Launch(1, 32, 64 * 1024).run([] { E::empty_kernel(); });  // allowed after opting in
  });
  done("emulator");
}

}  // namespace emutest
