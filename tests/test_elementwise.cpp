// Elementwise ops beyond the registry walk: error messages, in-place rules, GELU forms, integer
// comparisons, and agreement of every instruction-set path on a large odd-sized tensor.
#include <doctest/doctest.h>

#include "tests/test_util.h"

#include <cmath>
#include <functional>
#include <string>

#include "ops/cpu/isa.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"
#include "runtime/rng.h"

using namespace moon;
using moon::test::contains;
using moon::test::error_of;

namespace {

// A tensor header that claims to live on cuda:0 with no memory behind it: enough for operand checks.
Tensor fake_cuda_tensor(const Shape& shape) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>();
  impl->storage->device = cuda_device(0);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  return Tensor(impl);
}

// Restores the instruction set in use when it goes out of scope.
struct IsaRestore {
  cpu::Isa saved = cpu::cpu_isa();
  ~IsaRestore() { cpu::set_cpu_isa(saved); }
};

}  // namespace

TEST_SUITE("ops") {

TEST_CASE("elementwise: errors name the op, the operands and a fix") {
  Tensor a = zeros({2, 3});
  Tensor i = zeros({2, 3}, DType::I64);
  std::string msg = error_of([&] { add(a, i); });
  CHECK(contains(msg, "add"));
  CHECK(contains(msg, "f32"));
  CHECK(contains(msg, "i64(2, 3)"));

  msg = error_of([&] { mul(a, zeros({4})); });
  CHECK(contains(msg, "mul"));
  CHECK(contains(msg, "(2, 3)"));
  CHECK(contains(msg, "(4,)"));

  msg = error_of([&] { sub(a, fake_cuda_tensor({2, 3})); });
  CHECK(contains(msg, "sub"));
  CHECK(contains(msg, "different devices"));
  CHECK(contains(msg, "cuda:0"));

  msg = error_of([&] { relu(i); });
  CHECK(contains(msg, "relu"));
  CHECK(contains(msg, "f32"));

  msg = error_of([&] { where(a, a, a); });  // f32 condition
  CHECK(contains(msg, "where"));
  CHECK(contains(msg, "u8"));

  msg = error_of([&] { masked_fill(a, zeros({3, 3}, DType::U8), 0.0); });
  CHECK(contains(msg, "masked_fill"));
  CHECK(contains(msg, "(3, 3)"));

  msg = error_of([&] { eq(a, i); });
  CHECK(contains(msg, "eq"));
  CHECK(contains(msg, "different dtypes"));

  msg = error_of([&] { clamp(a, 1.0, -1.0); });
  CHECK(contains(msg, "clamp"));

  Tensor small = zeros({3});
  msg = error_of([&] { add_(small, a); });  // (2, 3) does not fit into (3)
  CHECK(contains(msg, "add_"));
  CHECK(contains(msg, "(2, 3)"));
}

TEST_CASE("elementwise: in-place ops refuse leaves that require grad, and bump the version") {
  Tensor w = ones({4}).set_requires_grad();
  Tensor b = ones({4});
  CHECK(contains(error_of([&] { add_(w, b); }), "add_"));
  CHECK(contains(error_of([&] { mul_(w, 2.0); }), "mul_"));
  {
    NoGradGuard ng;  // as an optimizer step does
    const uint64_t v = w.version();
    add_(w, b, 0.5);
    mul_(w, 2.0);
    CHECK(w.version() == v + 2);
  }
  CHECK(w.to_vector<float>() == std::vector<float>{3, 3, 3, 3});

  // A non-leaf in a graph is refused too.
  Tensor y = mul(w, w);
  CHECK(contains(error_of([&] { mul_(y, 2.0); }), "mul_"));

  // Writing into a tensor saved for backward is caught when the backward runs.
  Tensor x = from_vector({1, 2, 3}, {3});
  Tensor p = ones({3}).set_requires_grad();
  Tensor z = sum(mul(p, x));
  add_(x, ones({3}));
  CHECK(!error_of([&] { z.backward(); }).empty());
}

TEST_CASE("elementwise: add_ broadcasts and scales; in-place ops write through strided views") {
  Tensor a = zeros({2, 3});
  add_(a, from_vector({1, 2, 3}, {3}), 2.0);
  CHECK(a.to_vector<float>() == std::vector<float>{2, 4, 6, 2, 4, 6});
  Tensor col = a.select(1, 1);  // (2), stride 3
  mul_(col, 10.0);
  add_(col, scalar_tensor(1.0));
  CHECK(a.to_vector<float>() == std::vector<float>{2, 41, 6, 2, 41, 6});
}

TEST_CASE("elementwise: empty and 0-d tensors") {
  Tensor e = zeros({0, 3}).set_requires_grad();
  Tensor r = ones({3});
  Tensor out = add(gelu(e), r);
  CHECK(out.shape() == Shape{0, 3});
  sum(mul(out, r)).backward();
  CHECK(e.grad().shape() == Shape{0, 3});
  CHECK(where(zeros({0}, DType::U8), zeros({0}), zeros({})).numel() == 0);
  Tensor s = scalar_tensor(2.0);
  CHECK(mul(s, s).item() == 4.0);
  CHECK(exp(scalar_tensor(0.0)).item() == 1.0);
  CHECK(add(s, from_vector({1, 2}, {2})).to_vector<float>() == std::vector<float>{3, 4});
}

TEST_CASE("elementwise: gelu erf and tanh forms") {
  const std::vector<float> xs = {-4.0f, -2.0f, -1.0f, -0.5f, 0.0f, 0.3f, 1.0f, 2.5f, 5.0f};
  Tensor x = from_vector(xs, {static_cast<int64_t>(xs.size())});
  const std::vector<float> ye = gelu(x).to_vector<float>();
  const std::vector<float> yt = gelu(x, GeluApprox::Tanh).to_vector<float>();
  for (size_t i = 0; i < xs.size(); ++i) {
    const double v = xs[i];
    const double erf_form = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
    const double tanh_form = 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    INFO("x = ", v);
    CHECK(ye[i] == doctest::Approx(erf_form).epsilon(1e-6));
    CHECK(yt[i] == doctest::Approx(tanh_form).epsilon(1e-6));
    CHECK(std::fabs(ye[i] - yt[i]) < 1e-3);  // the tanh form approximates the erf form closely
  }
  CHECK(ye[4] == 0.0f);
  CHECK(ye[1] != yt[1]);  // but they are different functions
}

TEST_CASE("elementwise: comparisons on integers and floats, broadcasting") {
  Tensor a = from_vector<int64_t>({1, 2, 3, 4}, {2, 2}, DType::I64);
  Tensor b = from_vector<int64_t>({2, 3}, {2}, DType::I64);
  CHECK(eq(a, b).to_vector<uint8_t>() == std::vector<uint8_t>{0, 0, 0, 0});
  CHECK(lt(a, b).to_vector<uint8_t>() == std::vector<uint8_t>{1, 1, 0, 0});
  CHECK(gt(a, scalar_tensor(2.0, DType::I64)).to_vector<uint8_t>() == std::vector<uint8_t>{0, 0, 1, 1});
  Tensor f = from_vector({0.5f, NAN, 2.0f}, {3});
  CHECK(eq(f, f).to_vector<uint8_t>() == std::vector<uint8_t>{1, 0, 1});
  CHECK(eq(f, f).dtype() == DType::U8);
  CHECK_FALSE(eq(f, f).requires_grad());
}

TEST_CASE("elementwise: pow matches std::pow, including negative bases") {
  Tensor x = from_vector({-2.0f, -0.5f, 0.0f, 0.5f, 3.0f}, {5});
  for (double p : {2.0, 3.0, 4.0, 5.0, -1.0, 0.5, 1.7, -2.0, 0.0}) {
    const std::vector<float> y = pow(x, p).to_vector<float>();
    const std::vector<float> xv = x.to_vector<float>();
    for (size_t i = 0; i < y.size(); ++i) {
      const double want = std::pow(static_cast<double>(xv[i]), p);
      INFO("x = ", xv[i], " p = ", p);
      if (std::isnan(want))
        CHECK(std::isnan(y[i]));
      else if (std::isinf(want))
        CHECK(y[i] == want);
      else
        CHECK(y[i] == doctest::Approx(want).epsilon(1e-6));
    }
  }
}

TEST_CASE("elementwise: every instruction-set path agrees on a large odd-sized tensor") {
  IsaRestore restore;
  Generator gen(7);
  const Shape shape = {37, 1031};  // 38147 elements: above the OpenMP threshold, ragged vector tails
  Tensor x = randn(shape, gen);
  Tensor y = randn(shape, gen);
  Tensor pos = rand(shape, gen, 0.5, 2.0);
  Tensor row = randn({1031}, gen);
  Tensor mask = gt(randn(shape, gen), zeros({}));
  Tensor g = randn(shape, gen);

  // Each entry: forward outputs and the gradients of <out, g> with respect to the inputs.
  auto run_all = [&]() {
    std::vector<Tensor> outs;
    auto with_grad = [&](const std::function<Tensor(const Tensor&, const Tensor&)>& f, const Tensor& a,
                         const Tensor& b) {
      Tensor ca = a.detach().set_requires_grad(), cb = b.detach().set_requires_grad();
      Tensor o = f(ca, cb);
      o.backward(g);
      outs.push_back(o.detach());
      outs.push_back(ca.grad());
      outs.push_back(cb.grad());
    };
    using U = Tensor (*)(const Tensor&);
    for (U f : {U(neg), U(exp), U(tanh), U(sigmoid), U(relu), U(silu), U(square), U(abs)})
      with_grad([f](const Tensor& a, const Tensor& b) { return add(f(a), b); }, x, y);
    for (U f : {U(log), U(sqrt), U(rsqrt)})
      with_grad([f](const Tensor& a, const Tensor& b) { return add(f(a), b); }, pos, y);
    with_grad([](const Tensor& a, const Tensor& b) { return add(gelu(a), gelu(b, GeluApprox::Tanh)); }, x, y);
    with_grad([](const Tensor& a, const Tensor& b) { return mul(pow(a, 1.7), clamp(b, -0.3, 0.4)); }, pos, y);
    with_grad([](const Tensor& a, const Tensor& b) { return div(scale(a, 3.0), add_scalar(b, 0.1)); }, x, pos);
    with_grad([](const Tensor& a, const Tensor& b) { return sub(maximum(a, b), minimum(b, a)); }, x, row);
    with_grad([](const Tensor& a, const Tensor& b) { return mul(a, b); }, x, row);
    with_grad([](const Tensor& a, const Tensor& b) { return mul(a.transpose(0, 1), b.transpose(0, 1)).transpose(0, 1); }, x, y);
    with_grad([&](const Tensor& a, const Tensor& b) { return where(mask, a, b); }, x, row);
    with_grad([&](const Tensor& a, const Tensor& b) { return add(masked_fill(a, mask, -1.0), b); }, x, y);
    outs.push_back(lt(x, row).to(DType::F32));
    Tensor acc = x.clone();
    add_(acc, row, 0.25);
    mul_(acc, 1.5);
    outs.push_back(acc);
    return outs;
  };

  cpu::set_cpu_isa(cpu::Isa::Generic);
  const std::vector<Tensor> ref = run_all();
  for (cpu::Isa isa : {cpu::Isa::AVX2, cpu::Isa::AVX512}) {
    if (!error_of([&] { cpu::set_cpu_isa(isa); }).empty()) continue;  // this CPU lacks it
    const std::vector<Tensor> got = run_all();
    REQUIRE(got.size() == ref.size());
    for (size_t k = 0; k < got.size(); ++k) {
      const std::vector<float> a = got[k].to_vector<float>(), b = ref[k].to_vector<float>();
      REQUIRE(a.size() == b.size());
      double worst = 0;
      for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]) / (1.0 + std::fabs(b[i])));
      INFO(cpu::isa_name(isa), " vs generic, result ", k);
      CHECK(worst <= 1e-6);
    }
  }
}

}  // TEST_SUITE
