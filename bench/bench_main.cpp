// moon_bench entry point: Google Benchmark's main. Benchmarks register themselves in bench/bench_*.cpp.
// Run with OMP_NUM_THREADS set to the cores to use; see bench/README.md.
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
