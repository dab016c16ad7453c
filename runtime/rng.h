// Counter-based random numbers (Philox 4x32-10). A draw is a pure function of (seed, counter), so CPU
// and GPU kernels produce the same numbers for the same seed, in any order and in parallel, and a resumed
// run continues the same stream by restoring (seed, offset).
//
// Element i of a draw that starts at counter `offset` uses counter offset + i/4, lane i%4. Uniform floats
// take the top 24 bits of a lane; normals pair lanes (0,1) and (2,3) through Box-Muller.
#pragma once

#include <array>
#include <cstdint>

namespace moon {

// Philox 4x32 with 10 rounds: 128-bit counter (here a 64-bit counter, high words 0) and 64-bit key.
std::array<uint32_t, 4> philox4x32(uint64_t counter, uint64_t key);

inline float u32_to_unit_float(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }  // [0,1)

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed, offset_ = offset; }
  // Reserves the counters for n values (4 per counter) and returns the first counter.
  uint64_t reserve(uint64_t n_values) {
    const uint64_t first = offset_;
    offset_ += (n_values + 3) / 4;
    return first;
  }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

Generator& default_generator();
void manual_seed(uint64_t seed);

// out[i] for i in [0, n): uniform in [lo, hi) / normal(mean, std), drawn from counters starting at `offset`.
void philox_uniform_cpu(float* out, int64_t n, uint64_t seed, uint64_t offset, float lo, float hi);
void philox_normal_cpu(float* out, int64_t n, uint64_t seed, uint64_t offset, float mean, float std);
// The same draws into device memory on `device`'s stream (runtime/cuda/rng_cuda.cu; CUDA builds only).
void philox_uniform_cuda(float* out, int64_t n, uint64_t seed, uint64_t offset, float lo, float hi, int device);
void philox_normal_cuda(float* out, int64_t n, uint64_t seed, uint64_t offset, float mean, float std, int device);

}  // namespace moon
