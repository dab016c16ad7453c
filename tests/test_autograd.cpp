// The autograd engine: accumulation, non-scalar backward, retain_graph, no-grad, detach, retain_grad,
// version counters, graph freeing, and the allocator staying quiet across repeated steps.
#include <doctest/doctest.h>

#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "runtime/allocator.h"
#include "runtime/autograd.h"

using namespace moon;

TEST_SUITE("autograd") {

TEST_CASE("gradients accumulate into leaves across backward calls") {
  Tensor x = from_vector({1, 2, 3}, {3}).set_requires_grad();
  Tensor y = sum(mul(x, x));  // dy/dx = 2x
  y.backward();
  CHECK(x.grad().to_vector<float>() == std::vector<float>{2, 4, 6});
  sum(scale(x, 3.0)).backward();
  CHECK(x.grad().to_vector<float>() == std::vector<float>{5, 7, 9});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("a tensor used twice sums both paths; broadcasting reduces") {
  Tensor x = from_vector({1, 2}, {2, 1}).set_requires_grad();
  Tensor b = from_vector({10, 20, 30}, {3}).set_requires_grad();
  Tensor y = add(mul(x, b), x);  // (2, 3)
  y.backward(ones({2, 3}));
  CHECK(x.grad().shape() == Shape{2, 1});
  CHECK(x.grad().to_vector<float>() == std::vector<float>{63, 63});
  CHECK(b.grad().to_vector<float>() == std::vector<float>{3, 3, 3});
}

TEST_CASE("non-scalar backward needs a gradient") {
  Tensor x = ones({2}).set_requires_grad();
  Tensor y = scale(x, 2.0);
  CHECK_THROWS_AS(y.backward(), Error);
  y.backward(from_vector({1, 10}, {2}));
  CHECK(x.grad().to_vector<float>() == std::vector<float>{2, 20});
}

TEST_CASE("the graph is freed after backward unless retained") {
  Tensor x = ones({3}).set_requires_grad();
  Tensor y = sum(mul(x, x));
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();
  CHECK(x.grad().to_vector<float>() == std::vector<float>{4, 4, 4});
  try {
    y.backward();
    FAIL("second backward through a freed graph must fail");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("retain_graph") != std::string::npos);
  }
}

TEST_CASE("NoGradGuard and detach stop recording") {
  Tensor x = ones({2}).set_requires_grad();
  {
    NoGradGuard ng;
    Tensor y = mul(x, x);
    CHECK_FALSE(y.requires_grad());
  }
  Tensor d = mul(x, x).detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.is_leaf());
  CHECK(grad_enabled());
}

TEST_CASE("retain_grad keeps gradients of non-leaves") {
  Tensor x = from_vector({1, 2}, {2}).set_requires_grad();
  Tensor h = mul(x, x);
  h.retain_grad();
  sum(scale(h, 3.0)).backward();
  CHECK(h.grad().to_vector<float>() == std::vector<float>{3, 3});
  CHECK(x.grad().to_vector<float>() == std::vector<float>{6, 12});
}

TEST_CASE("in-place writes to saved tensors are caught, naming the op") {
  Tensor w = ones({3}).set_requires_grad();
  Tensor x = from_vector({1, 2, 3}, {3});
  Tensor y = sum(mul(x, w));  // mul saves x for w's gradient
  x.fill_(5.0);
  try {
    y.backward();
    FAIL("expected a version-counter error");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(m.find("'mul'") != std::string::npos);
    CHECK(m.find("in-place") != std::string::npos);
  }
  // In-place writes into leaves that require grad are refused outright while grad mode is on.
  CHECK_THROWS_AS(w.fill_(0.0), Error);
  {
    NoGradGuard ng;
    w.fill_(0.0);  // an optimizer update is fine
  }
  // A view shares the version counter of its base.
  Tensor base = ones({4});
  Tensor v = base.slice(0, 1, 3);
  const uint64_t ver = v.version();
  base.fill_(2.0);
  CHECK(v.version() == ver + 1);
}

TEST_CASE("views are differentiable") {
  Tensor x = arange(0, 6).reshape({2, 3}).detach().set_requires_grad();
  Tensor y = x.transpose(0, 1).slice(0, 1, 3).reshape({-1});  // x[:, 1:3] transposed, flattened
  y.backward(from_vector({1, 2, 3, 4}, {4}));
  CHECK(x.grad().to_vector<float>() == std::vector<float>{0, 1, 3, 0, 2, 4});
  Tensor z = ones({3, 1}).set_requires_grad();
  sum(z.expand({2, 3, 4})).backward();
  CHECK(z.grad().to_vector<float>() == std::vector<float>{8, 8, 8});
}

TEST_CASE("a repeated forward+backward makes no system allocation after warm-up") {
  Allocator& a = allocator_for(kCPU);
  Tensor w = randn({64, 64}).set_requires_grad();
  Tensor x = randn({8, 64});
  auto step = [&] {
    Tensor h = mul(x.unsqueeze(1), w.unsqueeze(0));  // (8, 64, 64)
    Tensor loss = mean(mul(h, h));
    loss.backward();
    w.zero_grad();
  };
  step();
  step();
  const uint64_t sys = a.stats().system_allocs;
  for (int i = 0; i < 5; ++i) step();
  CHECK(a.stats().system_allocs == sys);
}

}  // TEST_SUITE
