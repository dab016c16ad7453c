#include "runtime/rng.h"

#include <cmath>

#include "runtime/philox_core.h"

namespace moon {

std::array<uint32_t, 4> philox4x32(uint64_t counter, uint64_t key) {
  std::array<uint32_t, 4> r;
  philox::rounds(counter, key, r.data());
  return r;
}

Generator& default_generator() {
  static Generator g(0);
  return g;
}

void manual_seed(uint64_t seed) { default_generator().set_state(seed, 0); }

void philox_uniform_cpu(float* out, int64_t n, uint64_t seed, uint64_t offset, float lo, float hi) {
  const float span = hi - lo;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t c = 0; c < (n + 3) / 4; ++c) {
    const auto r = philox4x32(offset + static_cast<uint64_t>(c), seed);
    for (int64_t lane = 0; lane < 4 && c * 4 + lane < n; ++lane) out[c * 4 + lane] = philox::uniform_in(lo, span, r[lane]);
  }
}

void philox_normal_cpu(float* out, int64_t n, uint64_t seed, uint64_t offset, float mean, float std) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t c = 0; c < (n + 3) / 4; ++c) {
    uint32_t r[4];
    philox::rounds(offset + static_cast<uint64_t>(c), seed, r);
    double z[4];
    philox::normals(r, z);
    for (int64_t lane = 0; lane < 4 && c * 4 + lane < n; ++lane)
      out[c * 4 + lane] = philox::scaled_normal(mean, std, z[lane]);
  }
}

}  // namespace moon
