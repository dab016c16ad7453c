// matmul / linear / bmm: shape errors, no copies for transposed operands, the GEMM primitive cache,
// broadcast-batch gradients and bf16 gradients.
#include <doctest/doctest.h>

#include "tests/test_util.h"

#include <cmath>
#include <string>

#include "ops/cpu/gemm_onednn.h"
#include "ops/matmul.h"
#include "runtime/allocator.h"
#include "runtime/autograd.h"

using namespace moon;
using moon::test::contains;
using moon::test::error_of;

namespace {

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const auto x = a.to_vector<double>(), y = b.to_vector<double>();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
  return m;
}

}  // namespace

TEST_SUITE("ops") {

TEST_CASE("matmul: shape errors name both shapes") {
  const std::string e = error_of([] { matmul(zeros({2, 3}), zeros({4, 5})); });
  CHECK(e.find("matmul: (2, 3) @ (4, 5): inner dimensions 3 and 4 differ") != std::string::npos);
  CHECK(error_of([] { matmul(zeros({2, 2, 3}), zeros({3, 3, 4})); }).find("do not broadcast") != std::string::npos);
  CHECK(error_of([] { matmul(scalar_tensor(1.0), zeros({3})); }).find("at least one dimension") != std::string::npos);
  CHECK(error_of([] { matmul(zeros({2, 3}), zeros({3, 2}, DType::BF16)); }).find("two f32 or two bf16") !=
        std::string::npos);
  CHECK(error_of([] { bmm(zeros({2, 2, 3}), zeros({3, 3, 4})); }).find("batch sizes 2 and 3 differ") !=
        std::string::npos);
  CHECK(error_of([] { linear(zeros({4, 3}), zeros({5, 2})); }).find("in_features = 2") != std::string::npos);
  CHECK(error_of([] { linear(zeros({4, 3}), zeros({5, 3}), zeros({4})); }).find("out_features = 5") !=
        std::string::npos);
}

TEST_CASE("matmul: transposed operands cost no copy (one allocation: the output)") {
  Tensor a = randn({64, 32}), b = randn({48, 64}), w = randn({40, 32}), x = randn({3, 5, 32});
  Allocator& alloc = allocator_for(kCPU);
  {
    const uint64_t before = alloc.stats().allocs;
    Tensor c = matmul(a.mT(), b.mT());  // (32, 64) @ (64, 48), both transposed views
    CHECK(alloc.stats().allocs - before == 1);
    CHECK(max_abs_diff(c, matmul(a.mT().contiguous(), b.mT().contiguous())) < 1e-4);
  }
  {
    const uint64_t before = alloc.stats().allocs;
    Tensor y = linear(x, w);  // W^T by strides, (3, 5) folded into one GEMM
    CHECK(alloc.stats().allocs - before == 1);
    CHECK(y.shape() == Shape{3, 5, 40});
  }
  {
    Tensor p = randn({4, 16, 32}), q = randn({4, 16, 8});
    const uint64_t before = alloc.stats().allocs;
    Tensor y = matmul(p.transpose(1, 2), q);  // batched, left operand transposed
    CHECK(alloc.stats().allocs - before == 1);
  }
}

TEST_CASE("matmul: the gemm primitive cache hits on a repeated shape") {
  Tensor a = randn({7, 13}), b = randn({13, 5});
  matmul(a, b);  // warm
  const auto s0 = cpu::gemm_cache_stats();
  matmul(a, b);
  matmul(randn({7, 13}), randn({13, 5}));
  const auto s1 = cpu::gemm_cache_stats();
  CHECK(s1.hits - s0.hits == 2);
  CHECK(s1.misses == s0.misses);
}

TEST_CASE("matmul: broadcast batch gradients are summed (folded and looped paths)") {
  // a (2, 1, 4, 3) @ b (5, 3, 6): a's grad sums over the 5, b's over the 2.
  Tensor a = randn({2, 1, 4, 3}).set_requires_grad(), b = randn({5, 3, 6}).set_requires_grad();
  matmul(a, b).backward(ones({2, 5, 4, 6}));
  Tensor ga = a.grad(), gb = b.grad();
  Tensor a2 = a.detach(), b2 = b.detach();
  // Reference via explicit per-batch 2-D products.
  Tensor ra = zeros({2, 1, 4, 3}), rb = zeros({5, 3, 6});
  {
    NoGradGuard ng;
    const Tensor g = ones({4, 6});
    std::vector<double> va(ra.numel(), 0.0), vb(rb.numel(), 0.0);
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 5; ++j) {
        const auto da = matmul(g, b2.select(0, j).mT()).to_vector<double>();  // (4, 3)
        const auto db = matmul(a2.select(0, i).select(0, 0).mT(), g).to_vector<double>();  // (3, 6)
        for (size_t k = 0; k < da.size(); ++k) va[i * 12 + k] += da[k];
        for (size_t k = 0; k < db.size(); ++k) vb[j * 18 + k] += db[k];
      }
    CHECK(max_abs_diff(ga, from_vector(std::vector<float>(va.begin(), va.end()), {2, 1, 4, 3})) < 1e-4);
    CHECK(max_abs_diff(gb, from_vector(std::vector<float>(vb.begin(), vb.end()), {5, 3, 6})) < 1e-4);
  }
}

TEST_CASE("matmul: bf16 inputs give the f32 product rounded once to bf16, and f32 master gradients") {
  Tensor a32 = randn({6, 10}), b32 = randn({10, 4});
  Tensor a = a32.to(DType::BF16).set_requires_grad(), b = b32.to(DType::BF16);
  Tensor c = matmul(a, b);  // (6, 4) bf16
  CHECK(c.dtype() == DType::BF16);
  const Tensor c32 = matmul(a.detach().to(DType::F32), b.to(DType::F32));  // (6, 4) f32, same inputs
  CHECK(max_abs_diff(c.to(DType::F32), c32) < 5e-2);  // half a bf16 step of |c| <= ~16
  c.backward(ones({6, 4}, DType::BF16));
  REQUIRE(a.grad().defined());
  CHECK(a.grad().dtype() == DType::BF16);
  // Through a cast from an f32 master weight: the f32 gradient flows straight back.
  Tensor w = randn({10, 4}).set_requires_grad();
  Tensor y = matmul(a32.to(DType::BF16), w.to(DType::BF16));
  y.backward(ones({6, 4}));
  REQUIRE(w.grad().defined());
  CHECK(w.grad().dtype() == DType::F32);
  Tensor ref = matmul(a32.to(DType::BF16).to(DType::F32).mT(), ones({6, 4}));
  CHECK(max_abs_diff(w.grad(), ref) < 2e-2);
}

TEST_CASE("linear: bf16 operands with an f32 result keep the f32 accumulation; other result dtypes are refused") {
  Tensor x = randn({3, 8}).to(DType::BF16), w = randn({5, 8}).to(DType::BF16), b = randn({5});
  const Tensor y32 = linear(x, w, b, DType::F32);  // (3, 5) f32, not rounded
  const Tensor y16 = linear(x, w, b);              // (3, 5) bf16
  CHECK(y32.dtype() == DType::F32);
  CHECK(y16.dtype() == DType::BF16);
  CHECK(y32.to(DType::BF16).to_vector<float>() == y16.to_vector<float>());  // y16 is y32 rounded once
  CHECK(error_of([&] { (void)linear(x, w, b, DType::I64); }).find("result dtype must be f32 or") != std::string::npos);
}

TEST_CASE("linear: bias and weight gradients over flattened leading dims") {
  Tensor x = randn({2, 3, 5}).set_requires_grad(), w = randn({4, 5}).set_requires_grad(),
         b = randn({4}).set_requires_grad();
  Tensor g = randn({2, 3, 4});
  const auto s0 = cpu::gemm_cache_stats();
  linear(x, w, b).backward(g);
  const auto s1 = cpu::gemm_cache_stats();
  // Three GEMMs in all: forward, dx, and dW with the (2, 3) leading dims folded into its inner dimension.
  CHECK(s1.hits + s1.misses - s0.hits - s0.misses == 3);
  NoGradGuard ng;
  Tensor g2 = g.reshape({6, 4}), x2 = x.detach().reshape({6, 5});
  CHECK(max_abs_diff(w.grad(), matmul(g2.mT(), x2)) < 1e-4);
  CHECK(max_abs_diff(x.grad().reshape({6, 5}), matmul(g2, w.detach())) < 1e-4);
  CHECK(max_abs_diff(b.grad(), matmul(ones({6}), g2)) < 1e-4);
}

}  // TEST_SUITE
