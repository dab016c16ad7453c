#include "io/epoch_order.h"

#include <cstddef>
#include <numeric>
#include <utility>

#include "runtime/rng.h"

namespace moon::io {

std::vector<int64_t> epoch_order(uint64_t seed, int64_t epoch, int64_t count, bool shuffle) {
  std::vector<int64_t> order(static_cast<size_t>(count));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (!shuffle) return order;
  // Counter space: epoch in the high 24 bits, draw index below; the key mixes in a constant so that the
  // order stream differs from augmentation streams that share the seed.
  const uint64_t key = seed ^ 0x6a09e667f3bcc909ull;
  const uint64_t base = static_cast<uint64_t>(epoch) << 40;
  for (int64_t i = count - 1; i > 0; --i) {
    const auto r = philox4x32(base + static_cast<uint64_t>(i), key);
    const uint64_t wide = (static_cast<uint64_t>(r[0]) << 32) | r[1];
    const int64_t j = static_cast<int64_t>(wide % static_cast<uint64_t>(i + 1));  // bias < 2^-32 for any count
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

uint64_t sample_stream(int64_t epoch, int64_t product_index) {
  return (static_cast<uint64_t>(epoch) << 40) ^ static_cast<uint64_t>(product_index);
}

}  // namespace moon::io
