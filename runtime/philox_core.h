// The Philox 4x32-10 rounds and the uniform / normal transforms, written once for the host and the GPU
// (runtime/rng.cpp and runtime/cuda/rng_cuda.cu both include this), so the same (seed, counter) gives the
// same numbers on both devices. Plain C++; the CUDA compiler sees the functions as __host__ __device__.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define MOON_HOST_DEVICE __host__ __device__
#else
#define MOON_HOST_DEVICE
#endif

namespace moon::philox {

// out[0..3] = Philox4x32-10 of the 128-bit counter (counter, 0) under the 64-bit key.
MOON_HOST_DEVICE inline void rounds(uint64_t counter, uint64_t key, uint32_t out[4]) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kMul0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kMul1) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

// A uniform float in [0, 1) from the top 24 bits of a lane.
MOON_HOST_DEVICE inline float unit_float(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }

// lo + span * unit_float(x), rounded the same way on both devices (no fused multiply-add on the GPU).
MOON_HOST_DEVICE inline float uniform_in(float lo, float span, uint32_t x) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(lo, __fmul_rn(span, unit_float(x)));
#else
  return lo + span * unit_float(x);
#endif
}

// mean + std * z in double, rounded to float, the same way on both devices.
MOON_HOST_DEVICE inline float scaled_normal(float mean, float std, double z) {
#ifdef __CUDA_ARCH__
  return static_cast<float>(__dadd_rn(static_cast<double>(mean), __dmul_rn(static_cast<double>(std), z)));
#else
  return static_cast<float>(mean + std * z);
#endif
}

// Four standard normals from four lanes: Box-Muller on lanes (0, 1) and (2, 3), in double.
MOON_HOST_DEVICE inline void normals(const uint32_t r[4], double z[4]) {
  constexpr double kTwoPi = 6.283185307179586476925;
  for (int pair = 0; pair < 2; ++pair) {
    const double u1 = (static_cast<double>(r[2 * pair]) + 1.0) * (1.0 / 4294967296.0);  // (0, 1]
    const double u2 = static_cast<double>(r[2 * pair + 1]) * (1.0 / 4294967296.0);      // [0, 1)
    const double radius = sqrt(-2.0 * log(u1));
    z[2 * pair] = radius * cos(kTwoPi * u2);
    z[2 * pair + 1] = radius * sin(kTwoPi * u2);
  }
}

}  // namespace moon::philox
