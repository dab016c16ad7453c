// The CUDA backend against the CPU (suite `cuda`): every registered op forward and backward on fresh random
// inputs in f32 (and bf16 where the op takes it), the caching allocator, copies, fills, Philox parity, error
// messages and determinism. Without a GPU each case returns at once, and the ctest entry reports the suite
// as skipped ("skipped: no CUDA device", see tests/main.cpp).
#include <random>

#include "ops/attention.h"
#include "ops/device_parity.h"
#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/loss.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "runtime/allocator.h"
#include "runtime/autograd.h"
#include "runtime/copy.h"
#include "runtime/rng.h"
#include "test_util.h"
#include "tiny_step.h"

using namespace moon;
using moon::test::contains;
using moon::test::error_of;
using moon::test::tiny_step;

namespace {

#define MOON_NEED_CUDA()                             \
  do {                                               \
    if (!cuda_available()) {                         \
      MESSAGE("skipped: no CUDA device");            \
      return;                                        \
    }                                                \
  } while (0)

// A seed that differs from run to run (fresh inputs), printed so that a failure can be replayed with
// MOON_TEST_SEED=<seed>.
uint64_t fresh_seed() {
  static const uint64_t seed = [] {
    if (const char* s = std::getenv("MOON_TEST_SEED")) return static_cast<uint64_t>(std::strtoull(s, nullptr, 10));
    return (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  }();
  return seed;
}

// The size hints of the parity sweep: MOON_CUDA_TEST_SIZES="3,17" narrows them (compute-sanitizer runs).
std::vector<int64_t> test_sizes(std::vector<int64_t> fallback) {
  const char* s = std::getenv("MOON_CUDA_TEST_SIZES");
  if (!s || !*s) return fallback;
  std::vector<int64_t> out;
  for (const char* p = s; *p;) {
    char* end = nullptr;
    const long long v = std::strtoll(p, &end, 10);
    if (end == p) break;
    out.push_back(v);
    p = *end == ',' ? end + 1 : end;
  }
  return out.empty() ? fallback : out;
}

}  // namespace

TEST_SUITE("cuda") {
  TEST_CASE("every registered op matches the CPU in f32, forward and backward, on fresh random inputs") {
    MOON_NEED_CUDA();
    const uint64_t seed = fresh_seed();
    MESSAGE("seed ", seed, " (replay with MOON_TEST_SEED=", seed, ")");
    int failures = 0, checked = 0;
    for (const OpInfo& op : op_registry()) {
      for (int64_t n : test_sizes({1, 3, 17, 127})) {
        const ParityResult r = check_op_parity(op, n, seed + static_cast<uint64_t>(n), cuda_device());
        ++checked;
        if (!r.ok) {
          ++failures;
          MESSAGE(op.name, " n=", n, " (", r.desc, "): ", r.message);
        }
      }
    }
    MESSAGE(checked, " op cases checked, ", failures, " failed");
    CHECK(failures == 0);
  }

  TEST_CASE("every op matches the CPU in bf16") {
    MOON_NEED_CUDA();
    const uint64_t seed = fresh_seed();
    ParityOptions opt;
    opt.dtype = DType::BF16;
    int failures = 0, ran = 0;
    for (const OpInfo& op : op_registry()) {
      for (int64_t n : test_sizes({3, 17, 127})) {
        const ParityResult r = check_op_parity(op, n, seed + static_cast<uint64_t>(n), cuda_device(), opt);
        ++ran;
        if (!r.ok || r.skipped) {  // every op takes bf16 (suite bf16 checks the CPU side)
          ++failures;
          MESSAGE(op.name, " n=", n, " bf16 (", r.desc, "): ", r.message);
        }
      }
    }
    MESSAGE(ran, " bf16 op cases checked, ", failures, " failed");
    CHECK(ran > 0);
    CHECK(failures == 0);
  }

  TEST_CASE("every op's forward and backward are bitwise deterministic on the GPU") {
    MOON_NEED_CUDA();
    const uint64_t seed = fresh_seed();
    int failures = 0;
    for (const OpInfo& op : op_registry()) {
      std::string why;
      bool same = false;
      try {
        same = op_backward_is_deterministic(op, 127, seed, cuda_device(), &why);
      } catch (const std::exception& e) {
        why = e.what();
      }
      if (!same) {
        ++failures;
        MESSAGE(op.name, ": ", why);
      }
    }
    CHECK(failures == 0);
  }

  TEST_CASE("a training step run twice gives bitwise-identical gradients, and matches the CPU") {
    MOON_NEED_CUDA();
    const std::vector<Tensor> a = tiny_step(cuda_device(), 7), b = tiny_step(cuda_device(), 7);
    const std::vector<Tensor> c = tiny_step(kCPU, 7);
    for (size_t i = 0; i < a.size(); ++i) {
      CHECK(bitwise_equal(a[i], b[i]));
      CHECK(normalised_mse(a[i], c[i]) < 1e-9);
    }
  }

  TEST_CASE("a bf16 training step run twice gives bitwise-identical f32 master gradients, close to the CPU's") {
    MOON_NEED_CUDA();
    const std::vector<Tensor> a = tiny_step(cuda_device(), 7, DType::BF16), b = tiny_step(cuda_device(), 7, DType::BF16);
    const std::vector<Tensor> c = tiny_step(kCPU, 7, DType::BF16);
    for (size_t i = 0; i < a.size(); ++i) {
      CHECK(a[i].dtype() == DType::F32);
      CHECK(bitwise_equal(a[i], b[i]));
      CHECK(normalised_mse(a[i], c[i]) < 1e-3);  // bf16 roundings may flip differently between the devices
    }
  }

  TEST_CASE("caching allocator: a repeated step calls cudaMalloc only the first time; bytes are tracked") {
    MOON_NEED_CUDA();
    Allocator& a = allocator_for(cuda_device());
    tiny_step(cuda_device(), 1);  // warm-up: fills the cache
    cuda_synchronize();
    const AllocatorStats before = a.stats();
    for (int i = 0; i < 3; ++i) tiny_step(cuda_device(), 1);
    cuda_synchronize();
    const AllocatorStats after = a.stats();
    CHECK(after.system_allocs == before.system_allocs);
    CHECK(after.allocs > before.allocs);
    CHECK(after.current_bytes == before.current_bytes);
    CHECK(after.peak_bytes >= after.current_bytes);
    {
      Tensor big = empty({1 << 20}, DType::F32, cuda_device());  // 4 MiB
      CHECK(a.stats().current_bytes >= before.current_bytes + (size_t{4} << 20));
    }
    CHECK(a.stats().cached_bytes >= (size_t{4} << 20));
    a.empty_cache();
    CHECK(a.stats().cached_bytes == 0);
  }

  TEST_CASE("copies: host <-> device round trips for every dtype, strided views and on-device conversion") {
    MOON_NEED_CUDA();
    Generator g(fresh_seed());
    const Tensor src = randn({5, 7, 3}, g);  // f32 (5, 7, 3)
    for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8}) {
      const Tensor host = (dt == DType::U8 ? scale(abs(src), 10.0) : src).to(dt);  // u8: values in [0, 255]
      CHECK(bitwise_equal(host.to(cuda_device()).to(kCPU), host));
      // strided on the device: a transpose made contiguous there equals the CPU's
      const Tensor t = host.to(cuda_device()).transpose(0, 2).contiguous();
      CHECK(bitwise_equal(t, host.transpose(0, 2).contiguous()));
      // conversion on the device equals conversion on the host
      CHECK(bitwise_equal(src.to(cuda_device()).to(dt), src.to(dt)));
      CHECK(bitwise_equal(host.to(cuda_device()).to(DType::F32), host.to(DType::F32)));
    }
    // a large transfer crosses the staging buffers several times
    const Tensor big = randn({5 << 20}, g);  // 20 MiB
    CHECK(bitwise_equal(big.to(cuda_device()).to(kCPU), big));
    // copy_ into a strided device view
    Tensor dst = zeros({4, 6}, DType::F32, cuda_device());
    Tensor col = dst.slice(1, 1, 3);  // (4, 2) view, row stride 6
    col.copy_(ones({4, 2}));
    const std::vector<float> v = dst.to_vector<float>();
    CHECK(v[0] == 0.0f);
    CHECK(v[1] == 1.0f);
    CHECK(v[2] == 1.0f);
    CHECK(v[3] == 0.0f);
  }

  TEST_CASE("fill on the device for every dtype") {
    MOON_NEED_CUDA();
    for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8}) {
      CHECK(bitwise_equal(full({3, 5}, 3.0, dt, cuda_device()), full({3, 5}, 3.0, dt)));
    }
  }

  TEST_CASE("Philox: the same seed gives the same numbers on the CPU and the GPU") {
    MOON_NEED_CUDA();
    const uint64_t seed = fresh_seed();
    for (int64_t n : {1, 3, 4, 1001, 1 << 20}) {
      Generator gc(seed), gg(seed);
      CHECK(bitwise_equal(rand({n}, gc, -2.0, 3.0), rand({n}, gg, -2.0, 3.0, DType::F32, cuda_device())));
      const std::vector<float> a = randn({n}, gc).to_vector<float>();
      const std::vector<float> b = randn({n}, gg, DType::F32, cuda_device()).to_vector<float>();
      // Box-Muller in double on both sides: equal after rounding to f32, but the libm of each device may
      // differ in the last bit of a double, so allow one f32 ulp.
      int64_t differ = 0;
      for (size_t i = 0; i < a.size(); ++i)
        if (a[i] != b[i]) {
          ++differ;
          CHECK(std::fabs(a[i] - b[i]) <= 1.2e-7f * std::max(1.0f, std::fabs(a[i])));
        }
      CHECK(differ * 1000 <= n);  // essentially all equal
      CHECK(gc.offset() == gg.offset());
    }
    Generator gc(seed), gg(seed);
    const Tensor x = ones({1000});
    CHECK(bitwise_equal(dropout(x, 0.3, true, gc), dropout(x.to(cuda_device()), 0.3, true, gg)));
  }

  TEST_CASE("errors name the device and say what to do") {
    MOON_NEED_CUDA();
    const int n = cuda_device_count();
    const std::string e = error_of([&] { empty({4}, DType::F32, cuda_device(n + 3)); });
    CHECK(contains(e, "no CUDA device"));
    const std::string mixed = error_of([&] { add(ones({2}), ones({2}, DType::F32, cuda_device())); });
    CHECK(contains(mixed, "different devices"));
    CHECK(contains(mixed, ".to(device)"));
  }
}
