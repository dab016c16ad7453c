// cross_entropy / l2_normalize / cosine_similarity_matrix: errors, all-ignored batches, clamped norms,
// and agreement of the fused cross-entropy with an explicit log-softmax at a large class count.
#include <doctest/doctest.h>

#include "tests/test_util.h"

#include <cmath>
#include <string>

#include "ops/cpu/isa.h"
#include "ops/elementwise.h"
#include "ops/loss.h"
#include "runtime/autograd.h"

using namespace moon;
using moon::test::contains;
using moon::test::error_of;

namespace {

Tensor targets_of(const std::vector<int64_t>& v) {
  return from_vector(v, {static_cast<int64_t>(v.size())}, DType::I64);
}

}  // namespace

TEST_SUITE("ops") {

TEST_CASE("cross_entropy: argument errors") {
  CHECK(error_of([] { cross_entropy(zeros({3, 4}), targets_of({0, 5, 1})); })
            .find("targets[1] = 5 is outside [0, 4)") != std::string::npos);
  CHECK(error_of([] { cross_entropy(zeros({3, 4}), targets_of({0, 1})); }).find("must be i64 (N) with N = 3") !=
        std::string::npos);
  CHECK(error_of([] { cross_entropy(zeros({2, 3, 4}), targets_of({0, 1})); }).find("reshape") != std::string::npos);
  CHECK(error_of([] { cross_entropy(zeros({2, 4}), targets_of({0, 1}), -100, 1.5); }).find("label_smoothing") !=
        std::string::npos);
  CHECK(error_of([] { l2_normalize(zeros({2, 3}), 2); }).find("l2_normalize") != std::string::npos);
  CHECK(error_of([] { cosine_similarity_matrix(zeros({2, 3}), zeros({2, 4})); }).find("same D") != std::string::npos);
}

TEST_CASE("cross_entropy: every row ignored gives loss 0 and zero gradient, no NaN") {
  // Chosen behaviour: 0 (PyTorch returns NaN from 0/0); the gradient is all zeros.
  Tensor x = randn({4, 7}).set_requires_grad();
  Tensor loss = cross_entropy(x, targets_of({-100, -100, -100, -100}));
  CHECK(loss.item() == 0.0);
  loss.backward();
  REQUIRE(x.grad().defined());
  for (double v : x.grad().to_vector<double>()) CHECK(v == 0.0);
}

TEST_CASE("cross_entropy: matches log-softmax at a large class count, every ISA") {
  const int64_t N = 5, C = 1003;
  Tensor x = randn({N, C}) * 3.0;
  const std::vector<int64_t> t = {3, -100, 1002, 0, 517};
  // Reference in double.
  const auto xv = x.to_vector<double>();
  double total = 0;
  int count = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (t[i] < 0) continue;
    double m = -INFINITY, s = 0, sx = 0;
    for (int64_t j = 0; j < C; ++j) m = std::max(m, xv[i * C + j]);
    for (int64_t j = 0; j < C; ++j) s += std::exp(xv[i * C + j] - m), sx += xv[i * C + j];
    total += m + std::log(s) - 0.9 * xv[i * C + t[i]] - 0.1 * sx / C;
    ++count;
  }
  const cpu::Isa original = cpu::cpu_isa();
  for (cpu::Isa isa : {cpu::Isa::AVX512, cpu::Isa::AVX2, cpu::Isa::Generic}) {
    try {
      cpu::set_cpu_isa(isa);
    } catch (const Error&) {
      continue;
    }
    INFO("isa ", cpu::isa_name(isa));
    Tensor xx = x.detach().set_requires_grad();
    Tensor loss = cross_entropy(xx, targets_of(t), -100, 0.1);
    CHECK(loss.item() == doctest::Approx(total / count).epsilon(1e-5));
    loss.backward();
    // Each kept row's gradient sums to 0 (softmax sums to 1, the smoothed target too); ignored row is 0.
    const auto g = xx.grad().to_vector<double>();
    for (int64_t i = 0; i < N; ++i) {
      double s = 0;
      for (int64_t j = 0; j < C; ++j) s += g[i * C + j];
      CHECK(std::fabs(s) < 1e-6);
    }
    for (int64_t j = 0; j < C; ++j) CHECK(g[1 * C + j] == 0.0);
  }
  cpu::set_cpu_isa(original);
}

TEST_CASE("l2_normalize: a zero row stays zero (eps clamp), gradient finite") {
  Tensor x = from_vector(std::vector<float>{0, 0, 0, 3, 4, 0}, {2, 3}).set_requires_grad();
  Tensor y = l2_normalize(x);
  const auto v = y.to_vector<double>();
  CHECK(v[0] == 0.0);
  CHECK(v[3] == doctest::Approx(0.6));
  CHECK(v[4] == doctest::Approx(0.8));
  y.backward(ones({2, 3}));
  for (double g : x.grad().to_vector<double>()) CHECK(std::isfinite(g));
}

TEST_CASE("cosine_similarity_matrix: diagonal of a with itself is 1") {
  Tensor a = randn({5, 9});
  const auto s = cosine_similarity_matrix(a, a).to_vector<double>();
  for (int i = 0; i < 5; ++i) CHECK(s[i * 5 + i] == doctest::Approx(1.0).epsilon(1e-5));
}

}  // TEST_SUITE
