// AdamW against a double-precision reference of PyTorch's update, the schedule and gradient clipping.
#include <doctest/doctest.h>

#include <cmath>

#include "runtime/rng.h"
#include "test_util.h"
#include "training/optimizer.h"

using namespace moon;
using namespace moon::training;
using moon::test::error_of;

TEST_SUITE("optimizer") {
  TEST_CASE("AdamW follows torch.optim.AdamW's update in double precision, without decay on 1-D tensors") {
    Generator gen(3);
    Tensor w = randn({4, 5}, gen).set_requires_grad(true);  // decays
    Tensor b = randn({5}, gen).set_requires_grad(true);     // no decay
    Tensor idle = randn({3}, gen).set_requires_grad(true);  // never gets a gradient
    const std::vector<float> idle0 = idle.to_vector<float>();
    AdamWOptions o;
    o.weight_decay = 0.1;
    AdamW opt({{"w", w}, {"b", b}, {"idle", idle}}, o);
    // reference state
    const std::vector<float> w0 = w.to_vector<float>(), b0 = b.to_vector<float>();
    std::vector<double> rw(w0.begin(), w0.end()), rb(b0.begin(), b0.end());
    std::vector<double> mw(20, 0), vw(20, 0), mb(5, 0), vb(5, 0);
    auto ref_step = [&](std::vector<double>& p, std::vector<double>& m, std::vector<double>& v,
                        const std::vector<float>& g, bool decay, double lr, int t) {
      for (size_t j = 0; j < p.size(); ++j) {
        if (decay) p[j] *= 1.0 - lr * o.weight_decay;
        m[j] = o.beta1 * m[j] + (1 - o.beta1) * g[j];
        v[j] = o.beta2 * v[j] + (1 - o.beta2) * g[j] * g[j];
        const double c1 = 1 - std::pow(o.beta1, t), c2 = 1 - std::pow(o.beta2, t);
        p[j] -= lr / c1 * m[j] / (std::sqrt(v[j]) / std::sqrt(c2) + o.eps);
      }
    };
    for (int t = 1; t <= 4; ++t) {
      const double lr = 1e-2 * t;
      Tensor gw = randn({4, 5}, gen), gb = randn({5}, gen);
      w.set_grad(gw), b.set_grad(gb);
      opt.step(lr);
      ref_step(rw, mw, vw, gw.to_vector<float>(), true, lr, t);
      ref_step(rb, mb, vb, gb.to_vector<float>(), false, lr, t);
    }
    CHECK(opt.steps() == 4);
    auto ww = w.to_vector<float>(), bb = b.to_vector<float>();
    double worst = 0;
    for (size_t j = 0; j < ww.size(); ++j) worst = std::max(worst, std::fabs(ww[j] - rw[j]));
    for (size_t j = 0; j < bb.size(); ++j) worst = std::max(worst, std::fabs(bb[j] - rb[j]));
    CHECK(worst < 2e-6);
    CHECK(idle.to_vector<float>() == idle0);
    CHECK(decays(w));
    CHECK_FALSE(decays(b));
  }

  TEST_CASE("optimizer state round-trips, and a missing or mis-shaped tensor is named") {
    Tensor w = ones({2, 2}).set_requires_grad(true);
    AdamW a({{"w", w}});
    w.set_grad(full({2, 2}, 0.5));
    a.step(0.1);
    NamedParams s = a.state();
    REQUIRE(s.size() == 2);
    CHECK(s[0].first == "adamw.m.w");
    Tensor w2 = ones({2, 2}).set_requires_grad(true);
    AdamW b({{"w", w2}});
    b.load_state(s, a.steps(), "ckpt");
    CHECK(b.state()[1].second.to_vector<float>() == s[1].second.to_vector<float>());
    CHECK(b.steps() == 1);
    CHECK(error_of([&] { b.load_state({s[0]}, 1, "ckpt"); }) == "ckpt: optimizer state adamw.v.w is missing");
    NamedParams wrong = {{"adamw.m.w", zeros({3})}, s[1]};
    CHECK(error_of([&] { b.load_state(wrong, 1, "ckpt"); }) ==
          "ckpt: optimizer state adamw.m.w has shape (3,), the parameter has (2, 2)");
  }

  TEST_CASE("warm-up then cosine") {
    CHECK(warmup_cosine(0, 10, 110, 1.0, 0.1) == doctest::Approx(0.1));
    CHECK(warmup_cosine(9, 10, 110, 1.0, 0.1) == doctest::Approx(1.0));
    CHECK(warmup_cosine(10, 10, 110, 1.0, 0.1) == doctest::Approx(1.0));
    CHECK(warmup_cosine(60, 10, 110, 1.0, 0.1) == doctest::Approx(0.55));
    CHECK(warmup_cosine(110, 10, 110, 1.0, 0.1) == doctest::Approx(0.1));
    CHECK(warmup_cosine(500, 10, 110, 1.0, 0.1) == doctest::Approx(0.1));
  }

  TEST_CASE("gradient clipping scales to max_norm and reports NaN without touching anything") {
    Tensor a = zeros({2}).set_requires_grad(true), b = zeros({1}).set_requires_grad(true);
    a.set_grad(from_vector({3.0f, 0.0f}, {2}));
    b.set_grad(from_vector({4.0f}, {1}));
    NamedParams ps = {{"a", a}, {"b", b}};
    CHECK(clip_grad_norm(ps, 10.0) == doctest::Approx(5.0));
    CHECK(a.grad().to_vector<float>()[0] == 3.0f);
    CHECK(clip_grad_norm(ps, 1.0) == doctest::Approx(5.0));
    CHECK(a.grad().to_vector<float>()[0] == doctest::Approx(0.6).epsilon(1e-5));
    CHECK(b.grad().to_vector<float>()[0] == doctest::Approx(0.8).epsilon(1e-5));
    b.set_grad(from_vector({NAN}, {1}));
    CHECK(std::isnan(clip_grad_norm(ps, 1.0)));
    CHECK(a.grad().to_vector<float>()[0] == doctest::Approx(0.6).epsilon(1e-5));
  }
}
