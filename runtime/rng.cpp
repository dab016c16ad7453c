#include "runtime/rng.h"

#include <cmath>

namespace moon {

std::array<uint32_t, 4> philox4x32(uint64_t counter, uint64_t key) {
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
  return {c0, c1, c2, c3};
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
    for (int64_t lane = 0; lane < 4 && c * 4 + lane < n; ++lane) out[c * 4 + lane] = lo + span * u32_to_unit_float(r[lane]);
  }
}

void philox_normal_cpu(float* out, int64_t n, uint64_t seed, uint64_t offset, float mean, float std) {
  constexpr double kTwoPi = 6.283185307179586476925;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t c = 0; c < (n + 3) / 4; ++c) {
    const auto r = philox4x32(offset + static_cast<uint64_t>(c), seed);
    double z[4];
    for (int pair = 0; pair < 2; ++pair) {
      const double u1 = (static_cast<double>(r[2 * pair]) + 1.0) * (1.0 / 4294967296.0);  // (0, 1]
      const double u2 = static_cast<double>(r[2 * pair + 1]) * (1.0 / 4294967296.0);      // [0, 1)
      const double radius = std::sqrt(-2.0 * std::log(u1));
      z[2 * pair] = radius * std::cos(kTwoPi * u2);
      z[2 * pair + 1] = radius * std::sin(kTwoPi * u2);
    }
    for (int64_t lane = 0; lane < 4 && c * 4 + lane < n; ++lane)
      out[c * 4 + lane] = static_cast<float>(mean + std * z[lane]);
  }
}

}  // namespace moon
