// Copy bandwidth in GB/s (bytes read + written): the parallel memcpy ceiling on its own, and moon's copy
// (Tensor::clone) next to it on the same byte count; caches evicted (untimed) before every timed call.
#include <string>

#include "bench/bench_common.h"
#include "bench/bench_memory.h"
#include "runtime/tensor.h"

namespace moon::bench {
namespace {

void bm_memcpy(benchmark::State& state, int64_t bytes) {
  ParallelMemcpy mc(bytes);
  // evicting inside the timed call would count it; time the copy alone after an untimed eviction
  mc.copy();
  for (auto _ : state) {
    evict_caches();
    const auto t0 = Clock::now();
    mc.copy();
    state.SetIterationTime(seconds_since(t0));
  }
  state.counters["GB"] = benchmark::Counter(2.0 * bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void bm_clone(benchmark::State& state, int64_t rows, int64_t cols) {
  Tensor x = randn({rows, cols});  // (rows, cols)
  const int64_t bytes = x.numel() * 4;
  ParallelMemcpy mc(bytes);
  Tensor y;
  run_paired(
      state, 2.0 * bytes, "GB", [&] { mc.copy(); },
      [&] {
        y = Tensor();
        y = x.clone();
      },
      [] { evict_caches(); });
}

const int kRegistered = [] {
  for (auto [r, c] : {std::pair<int64_t, int64_t>{4096, 896}, {1024, 4864}}) {
    const std::string shape = std::to_string(r) + "x" + std::to_string(c);
    benchmark::RegisterBenchmark(("memcpy/" + shape).c_str(), bm_memcpy, r * c * 4)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("clone/" + shape).c_str(), bm_clone, r, c)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  return 0;
}();

}  // namespace
}  // namespace moon::bench
