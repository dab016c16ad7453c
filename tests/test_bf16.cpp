// bf16 activations on the CPU (suite `bf16`): every registered op takes bf16 inputs, returns bf16 outputs
// (f32 for losses), gives input gradients in their input's dtype, and agrees with the same values run in f32
// (ops/float_storage.h, check_bf16_consistency in ops/device_parity.h). The `cuda` suite then compares the
// GPU's bf16 kernels with these CPU results.
#include "ops/device_parity.h"
#include "ops/elementwise.h"
#include "ops/norm.h"
#include "test_util.h"
#include "tiny_step.h"

using namespace moon;
using moon::test::contains;
using moon::test::error_of;

TEST_SUITE("bf16") {
  TEST_CASE("every op takes bf16 and matches its f32 run") {
    int failures = 0, checked = 0;
    for (const OpInfo& op : op_registry()) {
      for (int64_t n : {1, 3, 17}) {
        const ParityResult r = check_bf16_consistency(op, n, 1234 + static_cast<uint64_t>(n));
        ++checked;
        if (!r.ok) {
          ++failures;
          MESSAGE(op.name, " n=", n, " (", r.desc, "): ", r.message);
        }
      }
    }
    MESSAGE(checked, " bf16 op cases checked, ", failures, " failed");
    CHECK(checked > 0);
    CHECK(failures == 0);
  }

  TEST_CASE("a bf16 training step on f32 master weights gives f32 gradients close to the f32 step's") {
    const std::vector<Tensor> lo = moon::test::tiny_step(kCPU, 7, DType::BF16);
    const std::vector<Tensor> hi = moon::test::tiny_step(kCPU, 7, DType::F32);
    for (size_t i = 0; i < lo.size(); ++i) {
      REQUIRE(lo[i].defined());
      CHECK(lo[i].dtype() == DType::F32);
      const double e = normalised_mse(lo[i], hi[i]);
      MESSAGE("weight ", i, ": nmse bf16 vs f32 step ", e);
      CHECK(e < 1e-3);  // every activation rounded to bf16 (relative 2^-9) through nine ops: ~4e-5 seen
    }
  }

  TEST_CASE("a bf16 result is the f32 result rounded once") {
    Generator g(7);
    const Tensor x = randn({5, 33}, g).to(DType::BF16);      // (5, 33) bf16
    const Tensor y = gelu(x);                                   // (5, 33) bf16
    const Tensor ref = gelu(x.to(DType::F32)).to(DType::BF16);  // rounded once
    REQUIRE(y.dtype() == DType::BF16);
    CHECK(y.to_vector<float>() == ref.to_vector<float>());
  }

  TEST_CASE("mixed f32 and bf16 operands are refused, naming both") {
    Generator g(8);
    const Tensor x = randn({4, 8}, g).to(DType::BF16);
    const Tensor w = randn({8}, g);  // f32
    const std::string e = error_of([&] { (void)layer_norm(x, w, Tensor(), 1e-5); });
    CHECK(contains(e, "layer_norm"));
    CHECK(contains(e, "bf16"));
    CHECK(contains(e, "f32"));
    CHECK(contains(e, "DType::BF16"));
  }
}
