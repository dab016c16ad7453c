// Deterministic train/val/test splits: a product's split is a pure function of its id and a seed (a stable
// 64-bit hash, identical on every machine and compiler), so adding products never moves existing ones.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace moon::io {

struct SplitFractions {
  double train = 0.8, val = 0.1, test = 0.1;  // non-negative, summing to 1
};

// FNV-1a over the bytes of `text`, then mixed with `seed` through the SplitMix64 finaliser.
uint64_t stable_hash(std::string_view text, uint64_t seed);

// A uniform number in [0, 1) drawn from (id, seed).
double unit_interval(std::string_view id, uint64_t seed);

// "train", "val" or "test" for `id`. Throws moon::Error if the fractions are negative or do not sum to 1.
std::string assign_split(std::string_view id, uint64_t seed, const SplitFractions& fractions = {});

// For sources that ship their own test set (Fashion-MNIST): "val" for a `val_fraction` of the ids, else
// "train".
std::string assign_train_val(std::string_view id, uint64_t seed, double val_fraction);

}  // namespace moon::io
