// Shared helpers for the moon_bench programs (bench/*.cpp).
//
// Every benchmark times "ours" and a peer (or ceiling) in the SAME iteration, back to back, so both see the
// same machine noise. The iteration time reported to Google Benchmark (manual time) is ours; the counters
// are:
//   <unit>        ours, as a rate (GFLOP or GB, shown per second), from the manual time
//   peer_<unit>/s the peer's rate over the same iterations
//   ratio         ours / peer (rate ratio, >1 means ours is faster)
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace moon::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Runs the benchmark loop: each iteration calls peer() then ours() (timing each), reports ours as the
// iteration time and sets the rate counters. `work` is the amount per call (flops or bytes) and `scale`
// converts it to the unit (1e-9 for GFLOP/s and GB/s). `setup()` runs untimed before each call of the peer
// and of ours (to drop gradients, or to evict the caches); pass a no-op lambda when none is needed.
// `peer_work` is the peer's amount per call when it differs (e.g. a causal attention against a full GEMM).
template <class Peer, class Ours, class Setup>
void run_paired(benchmark::State& state, double work, double peer_work, const char* unit, Peer&& peer,
                Ours&& ours, Setup&& setup) {
  // warm-up: primitive creation, allocator caches, page faults
  peer();
  setup();
  ours();
  double peer_total = 0.0, ours_total = 0.0;
  for (auto _ : state) {
    setup();
    auto t0 = Clock::now();
    peer();
    peer_total += seconds_since(t0);
    setup();
    t0 = Clock::now();
    ours();
    const double t = seconds_since(t0);
    ours_total += t;
    state.SetIterationTime(t);
  }
  const double n = static_cast<double>(state.iterations());
  state.counters[unit] = benchmark::Counter(work * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters[std::string("peer_") + unit + "/s"] = benchmark::Counter(peer_total > 0 ? peer_work * n * 1e-9 / peer_total : 0);
  state.counters["ratio"] =
      benchmark::Counter(ours_total > 0 && peer_total > 0 ? (work / ours_total) / (peer_work / peer_total) : 0);
}

template <class Peer, class Ours, class Setup>
void run_paired(benchmark::State& state, double work, const char* unit, Peer&& peer, Ours&& ours, Setup&& setup) {
  run_paired(state, work, work, unit, peer, ours, setup);
}

// Same, for a benchmark without peer (the peer itself, e.g. memcpy bandwidth): only the <unit> counter.
template <class Ours>
void run_single(benchmark::State& state, double work, const char* unit, Ours&& ours) {
  ours();
  for (auto _ : state) {
    const auto t0 = Clock::now();
    ours();
    state.SetIterationTime(seconds_since(t0));
  }
  state.counters[unit] = benchmark::Counter(work * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace moon::bench
