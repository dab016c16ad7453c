// Reductions and normalisations beyond the registry walk: error messages, numerical stability, the
// parallel paths at sizes the registry does not reach, and dropout's reproducibility.
#include <doctest/doctest.h>

#include "tests/test_util.h"

#include <cmath>
#include <string>

#include "ops/elementwise.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"

using namespace moon;
using moon::test::contains;
using moon::test::error_of;

namespace {

bool has(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_SUITE("ops") {

TEST_CASE("norm: bad arguments throw errors naming the op and the shapes") {
  Generator gen(1);
  const Tensor x = randn({2, 3}, gen);

  std::string m = error_of([&] { softmax(x, 2); });
  INFO(m);
  CHECK(has(m.c_str(), "softmax: dim 2 is out of range for f32(2, 3)"));
  m = error_of([&] { log_softmax(x, -3); });
  CHECK(has(m, "log_softmax"));
  CHECK(has(m, "(2, 3)"));

  m = error_of([&] { layer_norm(x, randn({4}, gen), Tensor()); });
  INFO(m);
  CHECK(has(m, "layer_norm: weight has shape (4,)"));
  CHECK(has(m, "f32(2, 3)"));
  CHECK(has(m, "needs (3)"));
  m = error_of([&] { layer_norm(x, Tensor(), randn({3, 1}, gen)); });
  CHECK(has(m, "layer_norm: bias has shape (3, 1)"));
  m = error_of([&] { rms_norm(x, randn({2}, gen)); });
  CHECK(has(m, "rms_norm: weight has shape (2,)"));
  m = error_of([&] { rms_norm(zeros({2, 0}), Tensor()); });
  CHECK(has(m, "non-empty last dimension"));

  m = error_of([&] { max(x, 5); });
  CHECK(has(m, "max: dim 5 is out of range for f32(2, 3)"));
  m = error_of([&] { argmax(zeros({2, 0}), 1); });
  CHECK(has(m, "argmax"));
  CHECK(has(m, "is empty"));
  m = error_of([&] { sum(x, {1, -1}); });
  CHECK(has(m, "sum: a dimension is repeated"));
  m = error_of([&] { cumsum(x, 2); });
  CHECK(has(m, "cumsum"));
  m = error_of([&] { dropout(x, 1.5, true, gen); });
  CHECK(has(m, "dropout: probability p = 1.5"));
  m = error_of([&] { softmax(zeros({2}, DType::I64), 0); });
  CHECK(has(m, "expected an f32 or bf16 tensor"));
}

TEST_CASE("softmax: rows sum to 1 on large inputs with huge values") {
  Generator gen(7);
  const int64_t rows = 37, C = 1531;  // odd C: exercises vector tails
  Tensor x = randn({rows, C}, gen);
  float* p = x.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] = p[i] * 1e4f + (i % 5 == 0 ? 3e37f : 0.0f);
  p[5] = -INFINITY;  // a masked entry
  const Tensor y = softmax(x, -1), ly = log_softmax(x, 1);
  const float* py = y.data<float>();
  const float* pl = ly.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0, sl = 0;
    for (int64_t i = 0; i < C; ++i) {
      REQUIRE(std::isfinite(py[r * C + i]));
      REQUIRE(!std::isnan(pl[r * C + i]));
      s += py[r * C + i];
      sl += std::exp(static_cast<double>(pl[r * C + i]));
    }
    CHECK(s == doctest::Approx(1.0).epsilon(1e-5));
    CHECK(sl == doctest::Approx(1.0).epsilon(1e-5));
  }
  CHECK(py[5] == 0.0f);

  // Along the first dimension (transposed path) on the same data.
  const Tensor yt = softmax(x, 0);
  const std::vector<float> v = yt.to_vector<float>();
  for (int64_t c = 0; c < C; c += 97) {
    double s = 0;
    for (int64_t r = 0; r < rows; ++r) s += v[r * C + c];
    CHECK(s == doctest::Approx(1.0).epsilon(1e-5));
  }
}

TEST_CASE("layer_norm and rms_norm: large offsets and the parallel backward") {
  Generator gen(3);
  const int64_t rows = 512, C = 96;  // enough work for the OpenMP paths
  Tensor x = randn({rows, C}, gen);
  float* px = x.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) px[i] = 1e4f + px[i];  // |mean| >> std
  Tensor w = randn({C}, gen).set_requires_grad(true);
  Tensor b = randn({C}, gen).set_requires_grad(true);
  x.set_requires_grad(true);
  Tensor y = layer_norm(x, w, b, 1e-5);
  Tensor g = randn({rows, C}, gen);
  y.backward(g);

  // Reference statistics and dweight, dbias in double.
  std::vector<double> dw(C, 0), db(C, 0);
  const float* pg = g.data<float>();
  const float* py = y.data<float>();
  double worst = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < C; ++i) mean += px[r * C + i];
    mean /= C;
    for (int64_t i = 0; i < C; ++i) var += (px[r * C + i] - mean) * (px[r * C + i] - mean);
    const double rstd = 1.0 / std::sqrt(var / C + 1e-5);
    for (int64_t i = 0; i < C; ++i) {
      const double xh = (px[r * C + i] - mean) * rstd;
      worst = std::max(worst, std::fabs(py[r * C + i] - (xh * w.data<float>()[i] + b.data<float>()[i])));
      dw[i] += pg[r * C + i] * xh;
      db[i] += pg[r * C + i];
    }
  }
  CHECK(worst < 5e-3);  // x itself is only known to ~1e-3 at 1e4 in f32
  const std::vector<float> gw = w.grad().to_vector<float>(), gb = b.grad().to_vector<float>();
  for (int64_t i = 0; i < C; ++i) {
    CHECK(gw[i] == doctest::Approx(dw[i]).epsilon(1e-2).scale(10));
    CHECK(gb[i] == doctest::Approx(db[i]).epsilon(1e-4).scale(1));
  }
  // dx of a normalisation sums to zero over each row.
  const std::vector<float> gx = x.grad().to_vector<float>();
  for (int64_t r = 0; r < rows; r += 51) {
    double s = 0;
    for (int64_t i = 0; i < C; ++i) s += gx[r * C + i];
    CHECK(std::fabs(s) < 2e-2);  // mean is rounded at 1e4 in f32
  }

  // rms_norm: every row of x * rsqrt(mean(x^2) + eps) has mean square ~1.
  Tensor z = randn({rows, C}, gen);
  Tensor yz = rms_norm(z * 100.0, Tensor(), 1e-6);
  const std::vector<float> v = yz.to_vector<float>();
  for (int64_t r = 0; r < rows; r += 37) {
    double ms = 0;
    for (int64_t i = 0; i < C; ++i) ms += v[r * C + i] * v[r * C + i];
    CHECK(ms / C == doctest::Approx(1.0).epsilon(1e-4));
  }
}

TEST_CASE("reductions: large sums along each layout and cumsum") {
  const Tensor x = ones({300, 70, 5});
  CHECK(sum(x).item() == doctest::Approx(300 * 70 * 5));
  const Tensor s0 = sum(x, {0});     // outermost
  const Tensor s2 = sum(x, {2});     // innermost
  const Tensor s02 = sum(x, {0, 2});  // non-adjacent: the permuted path
  CHECK(s0.shape() == Shape{70, 5});
  CHECK(s2.shape() == Shape{300, 70});
  CHECK(s02.shape() == Shape{70});
  for (float v : s0.to_vector<float>()) CHECK(v == 300.0f);
  for (float v : s2.to_vector<float>()) CHECK(v == 5.0f);
  for (float v : s02.to_vector<float>()) CHECK(v == 1500.0f);
  CHECK(mean(x, {1}, true).shape() == Shape{300, 1, 5});

  // A long reduced axis with few columns (a bias gradient): the reduced axis is split across threads.
  Generator gen(5);
  const Tensor r = randn({4000, 20}, gen);
  const std::vector<float> rv = r.to_vector<float>(), col = sum(r, {0}).to_vector<float>();
  for (int64_t j = 0; j < 20; ++j) {
    double s = 0;
    for (int64_t i = 0; i < 4000; ++i) s += rv[i * 20 + j];
    CHECK(col[j] == doctest::Approx(s).epsilon(1e-4).scale(1));
  }

  const Tensor c = cumsum(x, 1);
  const std::vector<float> cv = c.to_vector<float>();
  CHECK(cv[(5 * 70 + 69) * 5 + 3] == 70.0f);
  const Tensor a = from_vector(std::vector<float>{1, 5, 2, 5, -1, 0}, {2, 3});
  const MaxResult m = max(a, 1);
  CHECK(m.values.to_vector<float>() == std::vector<float>{5, 5});
  CHECK(m.indices.to_vector<int64_t>() == std::vector<int64_t>{1, 0});  // the first maximum
  CHECK(argmax(a, 0).to_vector<int64_t>() == std::vector<int64_t>{1, 0, 0});
  CHECK(max(a).item() == 5.0);
}

TEST_CASE("dropout: reproducible for a seed, identity when p = 0 or not training") {
  Generator gx(11);
  const Tensor x = randn({1000, 33}, gx);
  const double p = 0.3;
  Generator g1(42), g2(42), g3(43);
  const Tensor a = dropout(x, p, true, g1), b = dropout(x, p, true, g2), c = dropout(x, p, true, g3);
  CHECK(g1.offset() == g2.offset());
  CHECK(g1.offset() > 0);
  const std::vector<float> va = a.to_vector<float>(), vb = b.to_vector<float>(), vc = c.to_vector<float>(),
                           vx = x.to_vector<float>();
  CHECK(va == vb);
  CHECK(va != vc);
  int64_t dropped = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    if (va[i] == 0.0f) {
      ++dropped;
    } else {
      CHECK(va[i] == doctest::Approx(vx[i] / (1 - p)).epsilon(1e-6));
    }
  }
  CHECK(static_cast<double>(dropped) / va.size() == doctest::Approx(p).epsilon(0.05));
  // A second draw from the same generator gives a different mask.
  CHECK(dropout(x, p, true, g1).to_vector<float>() != va);

  Generator g4(42);
  CHECK(dropout(x, 0.0, true, g4).to_vector<float>() == vx);
  CHECK(dropout(x, 0.5, false, g4).to_vector<float>() == vx);
  CHECK(g4.offset() == 0);  // identity draws nothing
  for (float v : dropout(x, 1.0, true, g4).to_vector<float>()) CHECK(v == 0.0f);

  // The backward applies the forward's mask.
  Tensor xr = x.clone().set_requires_grad(true);
  Generator g5(42);
  Tensor y = dropout(xr, p, true, g5);
  y.backward(ones(y.shape()));
  const std::vector<float> gr = xr.grad().to_vector<float>();
  for (size_t i = 0; i < gr.size(); ++i) CHECK(gr[i] == (va[i] == 0.0f ? 0.0f : static_cast<float>(1 / (1 - p))));
}

}  // TEST_SUITE
