// The copy-bandwidth ceiling for memory-bound benchmarks: std::memcpy split over the OpenMP threads; and a
// cache eviction run (untimed) before each timed call.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace moon::bench {

// Two buffers of `bytes` each; copy() moves bytes from src to dst with every OpenMP thread copying its own
// contiguous, 64-byte aligned slice. One copy moves 2*bytes (read + write).
struct ParallelMemcpy {
  std::vector<char> src, dst;
  explicit ParallelMemcpy(int64_t bytes) : src(bytes, 1), dst(bytes, 0) {}
  void copy() {
    const int64_t n = static_cast<int64_t>(src.size());
    const char* s = src.data();
    char* d = dst.data();
#pragma omp parallel
    {
      const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
      const int64_t chunk = ((n + nt - 1) / nt + 63) / 64 * 64;
      const int64_t lo = std::min(n, t * chunk), hi = std::min(n, lo + chunk);
      if (hi > lo) std::memcpy(d + lo, s + lo, hi - lo);
    }
  }
};

// Evicts the last-level cache (32 MiB here) by writing a 64 MiB buffer over all threads, so memory-bound
// benchmarks and their memcpy ceiling both start from DRAM instead of whatever the other left in L3.
inline void evict_caches() {
  static std::vector<char> junk(64 << 20);
  static char value = 0;
  ++value;
  const int64_t n = static_cast<int64_t>(junk.size());
  char* p = junk.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i += 1 << 16) std::memset(p + i, value, std::min<int64_t>(1 << 16, n - i));
}

}  // namespace moon::bench
