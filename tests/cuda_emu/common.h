// Shared helpers of the CUDA emulator test (see README.md): counters, NaN-filled buffers, comparisons.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "cuda_emu_shim.h"
#include "runtime/tensor.h"

namespace emutest {

inline int failures = 0, checks = 0;
inline const float NaN = std::numeric_limits<float>::quiet_NaN();

// Seconds since the previous call (per-suite timing in the "done" lines).
inline double lap() {
  static auto last = std::chrono::steady_clock::now();
  const auto now = std::chrono::steady_clock::now();
  const double s = std::chrono::duration<double>(now - last).count();
  last = now;
  return s;
}
inline void done(const char* suite) {
  std::printf("%-26s done: %5d checks, %d failures, %5ld launches, %5.1f s\n", suite, checks, failures,
              moon::cuda_emu::emu::launches, lap());
  std::fflush(stdout);
}

inline void fail(const std::string& what) {
  ++failures;
  if (failures <= 60) std::printf("  FAIL %s\n", what.c_str());
}

// Runs one case; an emulator error (deadlock, divergent barrier, bad launch) counts as a failure.
template <class F>
void guarded(const char* name, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    ++checks;
    fail(std::string(name) + ": " + e.what());
  }
}

inline float* F(const moon::Tensor& t) { return static_cast<float*>(t.raw_data()); }

// A NaN-filled contiguous tensor of `s` and dtype `dt` starting `offset` elements into a fresh (aligned)
// buffer: offset 0 takes the kernels' vector paths, an odd offset their scalar ones.
inline moon::Tensor nan_tensor(const moon::Shape& s, moon::DType dt = moon::DType::F32, int64_t offset = 0) {
  const int64_t n = moon::shape_numel(s);
  return moon::full({n + offset + 8}, NaN, dt).slice(0, offset, offset + n).view(s);
}

// printf-style formatting into a std::string (case descriptions).
template <class... A>
std::string fmt(const char* f, A... a) {
  char b[512];
  std::snprintf(b, sizeof b, f, a...);
  return b;
}

// Seeded random test values.
struct Random {
  std::mt19937 rng;
  explicit Random(unsigned seed) : rng(seed) {}
  float uni(float a = -1, float b = 1) { return std::uniform_real_distribution<float>(a, b)(rng); }
  int64_t irand(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }
  // data modes: 0 uniform, 1 small integers (ties), 2 uniform with 5% NaN, 3 ties + NaN + +-inf + +-0
  float sample(int mode) {
    if (mode == 0) return uni();
    if (mode == 1) return float(irand(-3, 3));
    if (mode == 2) return irand(0, 19) == 0 ? NaN : uni();
    const int r = int(irand(0, 9));
    if (r == 0) return NaN;
    if (r == 1) return INFINITY;
    if (r == 2) return -INFINITY;
    if (r == 3) return -0.0f;
    if (r == 4) return 0.0f;
    return float(irand(-2, 2));
  }
};

// max |a-b| / (abs + rel |b|) must be <= 1 over n elements; NaN must match NaN, infinities exactly.
inline void cmp(const char* what, const float* a, const float* b, int64_t n, double rel, double abs_, const char* ctx) {
  ++checks;
  for (int64_t i = 0; i < n; ++i) {
    bool bad = false;
    if (std::isnan(b[i]) || std::isnan(a[i])) {
      bad = std::isnan(a[i]) != std::isnan(b[i]);
    } else if (std::isinf(b[i]) || std::isinf(a[i])) {
      bad = a[i] != b[i];
    } else {
      bad = !(std::fabs(double(a[i]) - b[i]) <= abs_ + rel * std::fabs(double(b[i])));
    }
    if (bad) {
      char m[512];
      std::snprintf(m, sizeof m, "%s [%s]: at %ld got %.9g want %.9g", what, ctx, long(i), a[i], b[i]);
      fail(m);
      return;
    }
  }
}
inline void cmp_bits(const char* what, const float* a, const float* b, int64_t n, const char* ctx) {
  ++checks;
  for (int64_t i = 0; i < n; ++i)
    if (std::memcmp(a + i, b + i, 4) != 0) {
      char m[512];
      std::snprintf(m, sizeof m, "%s [%s]: not bitwise equal at %ld: %.9g vs %.9g", what, ctx, long(i), a[i], b[i]);
      fail(m);
      return;
    }
}

// The bf16 suites, one file each (tests/cuda_emu/test_bf16_<family>.cpp); weak, so main() runs the ones
// that exist. Each runs when `only` is empty or names it ("bf16_elementwise", ...).
__attribute__((weak)) void test_bf16_elementwise(const std::string& only);
__attribute__((weak)) void test_bf16_norm(const std::string& only);
__attribute__((weak)) void test_bf16_attention(const std::string& only);
__attribute__((weak)) void test_bf16_index(const std::string& only);

void test_norm_family(const std::string& only);   // norm, loss, rope, adamw, elementwise, dropout
void test_index_family(const std::string& only);  // reduce, index, topk
void test_attention(const std::string& only);
void test_matmul(const std::string& only);        // the cuBLASLt GEMM driver over the emulated cuBLASLt
void test_emulator();                             // the emulator catches planted bugs

}  // namespace emutest
