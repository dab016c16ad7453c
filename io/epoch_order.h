// The order in which a data loader visits products: a seeded permutation per epoch, a pure function of
// (seed, epoch, count), so that a resumed run visits exactly what the uninterrupted run would have.
#pragma once

#include <cstdint>
#include <vector>

namespace moon::io {

// A permutation of [0, count) for `epoch` (Fisher-Yates driven by Philox keyed by seed, counter by epoch).
// With shuffle off it is the identity.
std::vector<int64_t> epoch_order(uint64_t seed, int64_t epoch, int64_t count, bool shuffle);

// An independent random stream id for (epoch, product), used to key a product's augmentation.
uint64_t sample_stream(int64_t epoch, int64_t product_index);

}  // namespace moon::io
