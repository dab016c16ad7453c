// bf16 activations on the CPU (suite `bf16`): every registered op takes bf16 inputs, returns bf16 outputs
// (f32 for losses), gives input gradients in their input's dtype, and agrees with the same values run in f32
// (ops/float_storage.h, check_bf16_consistency in ops/device_parity.h). The `cuda` suite then compares the
// GPU's bf16 kernels with these CPU results.
#include "ops/device_parity.h"
#include "ops/elementwise.h"
#include "ops/norm.h"
#include "test_util.h"

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
