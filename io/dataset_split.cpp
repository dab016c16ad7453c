// Hash-based split assignment (see io/dataset_split.h).
#include "io/dataset_split.h"

#include <cmath>

#include "runtime/error.h"

namespace moon::io {

uint64_t stable_hash(std::string_view text, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a offset basis
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ull;  // FNV prime
  }
  // SplitMix64 finaliser over the FNV value and the seed: every output bit depends on every input bit.
  uint64_t z = h + 0x9e3779b97f4a7c15ull * (seed + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double unit_interval(std::string_view id, uint64_t seed) {
  return static_cast<double>(stable_hash(id, seed) >> 11) * 0x1.0p-53;
}

std::string assign_split(std::string_view id, uint64_t seed, const SplitFractions& f) {
  MOON_CHECK(f.train >= 0 && f.val >= 0 && f.test >= 0 && std::fabs(f.train + f.val + f.test - 1.0) < 1e-6,
             "split fractions must be non-negative and sum to 1, got train ", f.train, " val ", f.val, " test ", f.test);
  const double u = unit_interval(id, seed);
  if (u < f.train) return "train";
  if (u < f.train + f.val) return "val";
  return "test";
}

std::string assign_train_val(std::string_view id, uint64_t seed, double val_fraction) {
  MOON_CHECK(val_fraction >= 0 && val_fraction <= 1, "the val fraction must be in [0, 1], got ", val_fraction);
  return unit_interval(id, seed) < val_fraction ? "val" : "train";
}

}  // namespace moon::io
