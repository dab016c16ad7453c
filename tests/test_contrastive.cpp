// The contrastive losses (training/contrastive.h) against double-precision references written here:
// weighted InfoNCE with hard negatives (values and gradients by finite differences), the temperature clamp,
// filtering weights by hand, the dual-level alignment on hand-built views, Matryoshka, aux, and the errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "model/moon_model.h"
#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/loss.h"
#include "runtime/autograd.h"
#include "runtime/rng.h"
#include "test_util.h"
#include "training/contrastive.h"

using namespace moon;
using namespace moon::training;
using moon::test::contains;
using moon::test::error_of;

namespace {

// A dense (rows, cols) double matrix, row-major.
using Matrix = std::vector<double>;

// InfoNCE in double: sum_i w_i (lse_j(s q_i.k_j + b_ij) - logits_i,pos) / sum_i w_i, b_ij = ln(hw) on hard.
double ref_info_nce(const Matrix& q, const Matrix& k, int64_t nq, int64_t nc, int64_t d, const std::vector<int64_t>& pos,
                    double s, const std::vector<uint8_t>& hard, double hw, const std::vector<double>& w) {
  double total = 0, wsum = 0;
  for (int64_t i = 0; i < nq; ++i) {
    std::vector<double> logit(nc);
    double top = -1e300;
    for (int64_t j = 0; j < nc; ++j) {
      double dot = 0;
      for (int64_t c = 0; c < d; ++c) dot += q[i * d + c] * k[j * d + c];
      logit[j] = s * dot + (!hard.empty() && hard[i * nc + j] ? std::log(hw) : 0.0);
      top = std::max(top, logit[j]);
    }
    double z = 0;
    for (double l : logit) z += std::exp(l - top);
    const double wi = w.empty() ? 1.0 : w[i];
    total += wi * (top + std::log(z) - logit[pos[i]]);
    wsum += wi;
  }
  return total / wsum;
}

std::vector<double> to_double(const Tensor& t) {
  std::vector<float> f = t.contiguous().to_vector<float>();
  return {f.begin(), f.end()};
}

Tensor leaf(const std::vector<double>& v, const Shape& shape) {
  std::vector<float> f(v.begin(), v.end());
  return from_vector(f, shape).set_requires_grad(true);
}

// Largest |a - b| / max(1, |b|).
double worst_error(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]) / std::max(1.0, std::fabs(b[i])));
  return worst;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

}  // namespace

TEST_SUITE("contrastive") {
  TEST_CASE("info_nce equals a double reference in value and gradient (hard negatives, weights)") {
    Generator gen(11);
    const int64_t nq = 5, nc = 7, d = 6;
    Matrix q = to_double(randn({nq, d}, gen)), k = to_double(randn({nc, d}, gen));
    const std::vector<int64_t> pos = {3, 0, 6, 3, 1};
    std::vector<uint8_t> hard(nq * nc, 0);
    std::vector<float> draw = rand({nq * nc}, gen).to_vector<float>();
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t j = 0; j < nc; ++j) hard[i * nc + j] = j != pos[i] && draw[i * nc + j] < 0.4f;
    std::vector<float> wf = rand({nq}, gen, 0.2, 1.0).to_vector<float>();
    std::vector<double> w(wf.begin(), wf.end());
    const double s0 = 1.7, hw = 2.0;

    Tensor tq = leaf(q, {nq, d}), tk = leaf(k, {nc, d}), ts = leaf({s0}, {});
    Tensor tw = from_vector(wf, {nq}).set_requires_grad(true);  // the weights are used detached
    Tensor loss = info_nce(tq, tk, pos, ts, from_vector(hard, {nq, nc}, DType::U8), hw, tw);
    CHECK(loss.dim() == 0);
    const double want = ref_info_nce(q, k, nq, nc, d, pos, s0, hard, hw, w);
    CHECK(std::fabs(loss.item() - want) < 1e-5 * std::max(1.0, std::fabs(want)));
    loss.backward();

    // central differences of the double reference
    const double h = 1e-6;
    auto fd = [&](Matrix& x) {
      std::vector<double> g(x.size());
      for (size_t a = 0; a < x.size(); ++a) {
        const double keep = x[a];
        x[a] = keep + h;
        const double up = ref_info_nce(q, k, nq, nc, d, pos, s0, hard, hw, w);
        x[a] = keep - h;
        const double down = ref_info_nce(q, k, nq, nc, d, pos, s0, hard, hw, w);
        x[a] = keep;
        g[a] = (up - down) / (2 * h);
      }
      return g;
    };
    CHECK(worst_error(to_double(tq.grad()), fd(q)) < 1e-4);
    CHECK(worst_error(to_double(tk.grad()), fd(k)) < 1e-4);
    const double ds = (ref_info_nce(q, k, nq, nc, d, pos, s0 + h, hard, hw, w) -
                       ref_info_nce(q, k, nq, nc, d, pos, s0 - h, hard, hw, w)) / (2 * h);
    CHECK(std::fabs(ts.grad().item() - ds) < 1e-4 * std::max(1.0, std::fabs(ds)));
    CHECK_FALSE(tw.grad().defined());
  }

  TEST_CASE("info_nce: hard_negative_weight 1 is the plain loss; without weights it is the mean CE") {
    Generator gen(5);
    Tensor q = randn({4, 8}, gen), k = randn({6, 8}, gen), s = scalar_tensor(2.0);
    const std::vector<int64_t> pos = {0, 1, 2, 3};
    Tensor hard = hard_negative_mask({0, 1, 0, 1}, {0, 1, 0, 1, 0, 1}, pos);
    const double plain = info_nce(q, k, pos, s, Tensor(), 2.0, Tensor()).item();
    CHECK(info_nce(q, k, pos, s, hard, 1.0, Tensor()).item() == doctest::Approx(plain).epsilon(1e-7));
    CHECK(info_nce(q, k, pos, s, hard, 2.0, Tensor()).item() > plain + 1e-3);  // hard negatives count twice
    Matrix qd = to_double(q), kd = to_double(k);
    CHECK(plain == doctest::Approx(ref_info_nce(qd, kd, 4, 6, 8, pos, 2.0, {}, 1.0, {})).epsilon(1e-5));
    // all-ones weights change nothing
    CHECK(info_nce(q, k, pos, s, hard, 2.0, ones({4})).item() ==
          doctest::Approx(info_nce(q, k, pos, s, hard, 2.0, Tensor()).item()).epsilon(1e-7));
  }

  TEST_CASE("hard_negative_mask marks same-category candidates other than the positive") {
    Tensor h = hard_negative_mask({0, 1}, {0, 0, 1, 2, 0}, {1, 2});
    CHECK(h.shape() == Shape{2, 5});
    CHECK(h.dtype() == DType::U8);
    CHECK(h.to_vector<uint8_t>() == std::vector<uint8_t>{1, 0, 0, 0, 1, /**/ 0, 0, 0, 0, 0});
    CHECK(error_of([] { hard_negative_mask({0}, {0, 1}, {2}); }) ==
          "hard_negative_mask: positive[0] = 2 is outside the candidates' rows [0, 2)");
  }

  TEST_CASE("the temperature: initial value, clamp range, no gradient outside the range") {
    ContrastiveOptions o;
    Tensor ls = make_logit_scale(o);
    CHECK(ls.shape() == Shape{1});
    CHECK(ls.requires_grad());
    CHECK(ls.name() == "train.logit_scale");
    CHECK(ls.item() == doctest::Approx(std::log(1 / 0.07)).epsilon(1e-6));
    Tensor s = logit_scale_value(ls, o);
    CHECK(s.dim() == 0);
    CHECK(s.item() == doctest::Approx(1 / 0.07).epsilon(1e-5));
    s.backward();
    CHECK(ls.grad().item() == doctest::Approx(1 / 0.07).epsilon(1e-5));  // d exp(x)/dx inside the range

    for (double start : {5.0, -0.5}) {  // above ln(100) = 4.605, below 0
      Tensor x = from_vector(std::vector<float>{static_cast<float>(start)}, {1}).set_requires_grad(true);
      Tensor v = logit_scale_value(x, o);
      CHECK(v.item() == doctest::Approx(start > 0 ? 100.0 : 1.0).epsilon(1e-5));
      Generator gen(1);
      Tensor q = randn({3, 4}, gen);
      info_nce(q, q, {0, 1, 2}, v, Tensor(), 1.0, Tensor()).backward();
      CHECK(x.grad().item() == 0.0);
    }
    o.init_temperature = 0;
    CHECK(error_of([&] { make_logit_scale(o); }) == "contrastive: init_temperature must be a positive number, got 0");
  }

  TEST_CASE("filter_weights by hand: hardest same-category negative, all negatives, none, the cap at 1") {
    ContrastiveOptions o;  // kappa 10, threshold 0.6
    // candidates along the axes; a query's dot product with candidate j is its j-th coordinate
    Tensor k = from_vector(std::vector<float>{1, 0, 0, 0, /**/ 0, 1, 0, 0, /**/ 0, 0, 1, 0, /**/ 0, 0, 0, 1}, {4, 4});
    Tensor q = from_vector(std::vector<float>{0.9f, 0.85f, 0.7f, 0.1f,  /* pos 0, hard {3}: hardest 0.1 */
                                              0.2f, 0.3f, 0.6f, 0.8f,   /* pos 1, no hard: hardest 0.8 */
                                              0.4f, 0.1f, 0.4f, 0.6f},  /* pos 2, hard {0, 1}: hardest 0.4 */
                           {3, 4});
    std::vector<uint8_t> hard = {0, 0, 0, 1, /**/ 0, 0, 0, 0, /**/ 1, 1, 0, 0};
    const double m = 0.15;
    std::vector<float> w =
        filter_weights(q, k, {0, 1, 2}, from_vector(hard, {3, 4}, DType::U8), o, m).to_vector<float>();
    auto expect = [&](double pos, double hardest) {
      return std::min(1.0, sigmoid(10 * (pos - hardest - m)) / 0.6);
    };
    CHECK(expect(0.9, 0.1) == 1.0);  // an easy triplet is capped at 1
    CHECK(w[0] == doctest::Approx(1.0));
    CHECK(w[1] == doctest::Approx(expect(0.3, 0.8)).epsilon(1e-6));
    CHECK(w[2] == doctest::Approx(expect(0.4, 0.4)).epsilon(1e-6));
    CHECK(w[1] < 0.02);
    // without a mask every negative counts: the hardest of rows 0 and 2 become 0.85 and 0.6
    std::vector<float> w2 = filter_weights(q, k, {0, 1, 2}, Tensor(), o, m).to_vector<float>();
    CHECK(w2[0] == doctest::Approx(expect(0.9, 0.85)).epsilon(1e-6));
    CHECK(w2[0] < 0.5);
    CHECK(w2[1] == doctest::Approx(expect(0.3, 0.8)).epsilon(1e-6));
    CHECK(w2[2] == doctest::Approx(expect(0.4, 0.6)).epsilon(1e-6));
    // a single candidate: no negative at all, weight 1
    CHECK(filter_weights(q.slice(0, 0, 1), k.slice(0, 0, 1).slice(1, 0, 4), {0}, Tensor(), o, m).item() == 1.0);
    // the weights are detached
    Tensor ql = q.clone().set_requires_grad(true);
    CHECK_FALSE(filter_weights(ql, k, {0, 1, 2}, Tensor(), o, m).requires_grad());
  }

  TEST_CASE("filter_margin decays linearly from margin0 to 0") {
    ContrastiveOptions o;
    CHECK(filter_margin(o, 0, 100) == doctest::Approx(0.2));
    CHECK(filter_margin(o, 25, 100) == doctest::Approx(0.15));
    CHECK(filter_margin(o, 100, 100) == 0.0);
    CHECK(filter_margin(o, 150, 100) == 0.0);
    o.filter_margin = 0.4;
    CHECK(filter_margin(o, 50, 100) == doctest::Approx(0.2));
  }
}

namespace {

// Four products (categories 0, 1, 0, 1): text rows for products 0, 1, 2; image rows for 1, 2, 3; one
// multimodal row for product 2. Random unit embeddings of width 8.
ViewEmbeddings sample_views(uint64_t seed) {
  Generator gen(seed);
  auto unit = [&](int64_t n) { return l2_normalize(randn({n, 8}, gen), -1); };
  ViewEmbeddings e;
  e.products = unit(4);
  e.text = unit(3);
  e.image = unit(3);
  e.multimodal = unit(1);
  e.product_of_text = {0, 1, 2};
  e.product_of_image = {1, 2, 3};
  e.product_of_multimodal = {2};
  e.category = {0, 1, 0, 1};
  return e;
}

}  // namespace

TEST_SUITE("contrastive") {
  TEST_CASE("contrastive_loss: L_inter over T, V, M with filtering, L_intra over products with both, aux") {
    ViewEmbeddings e = sample_views(21);
    e.aux = scalar_tensor(0.5);
    ContrastiveOptions o;
    o.aux_weight = 0.01;
    const double margin = 0.1;
    Tensor ls = make_logit_scale(o);
    ContrastiveLoss got = contrastive_loss(e, ls, o, margin);

    Tensor s = logit_scale_value(ls, o);
    double inter = 0, kept = 0;
    int64_t queries = 0;
    auto term = [&](const Tensor& x, const std::vector<int64_t>& pos) {
      std::vector<int64_t> qc;
      for (int64_t p : pos) qc.push_back(e.category[p]);
      Tensor h = hard_negative_mask(qc, e.category, pos);
      Tensor w = filter_weights(x, e.products, pos, h, o, margin);
      for (float v : w.to_vector<float>()) kept += v, ++queries;
      inter += info_nce(x, e.products, pos, s, h, 2.0, w).item() / 3;
    };
    term(e.text, e.product_of_text);
    term(e.image, e.product_of_image);
    term(e.multimodal, e.product_of_multimodal);
    CHECK(got.inter.item() == doctest::Approx(inter).epsilon(1e-6));
    CHECK(got.kept_fraction == doctest::Approx(kept / queries).epsilon(1e-6));
    CHECK(got.kept_fraction < 1.0);  // random embeddings: some triplets are down-weighted

    // products 1 and 2 have both: image rows 0, 1 and text rows 1, 2
    Tensor v2 = e.image.slice(0, 0, 2), t2 = e.text.slice(0, 1, 3);
    Tensor h2 = hard_negative_mask({1, 0}, {1, 0}, {0, 1});
    const double intra = (info_nce(v2, t2, {0, 1}, s, h2, 2.0, Tensor()).item() +
                          info_nce(t2, v2, {0, 1}, s, h2, 2.0, Tensor()).item()) / 2;
    CHECK(got.intra.item() == doctest::Approx(intra).epsilon(1e-6));
    CHECK(got.aux.item() == doctest::Approx(0.5));
    CHECK(got.matryoshka.item() == 0.0);
    CHECK(got.total.item() == doctest::Approx(inter + intra + 0.005).epsilon(1e-6));
    CHECK(got.temperature == doctest::Approx(0.07).epsilon(1e-5));

    // the loss reaches the temperature and every view
    Tensor leaves[4] = {e.products, e.text, e.image, e.multimodal};
    for (Tensor& t : leaves) t.set_requires_grad(true);
    contrastive_loss(e, ls, o, margin).total.backward();
    CHECK(ls.grad().defined());
    for (Tensor& t : leaves) CHECK(t.grad().defined());

    // switches: inter off, intra off, filtering off
    ContrastiveOptions off = o;
    off.inter = false;
    CHECK(contrastive_loss(e, ls, off, margin).total.item() == doctest::Approx(intra + 0.005).epsilon(1e-6));
    off = o;
    off.intra = false;
    CHECK(contrastive_loss(e, ls, off, margin).total.item() == doctest::Approx(inter + 0.005).epsilon(1e-6));
    off = o;
    off.filtering = false;
    ContrastiveLoss plain = contrastive_loss(e, ls, off, margin);
    CHECK(plain.kept_fraction == 1.0);
    CHECK(plain.inter.item() != doctest::Approx(inter).epsilon(1e-4));
  }

  TEST_CASE("contrastive_loss: absent views leave their terms out; L_intra needs 2 products with both") {
    ContrastiveOptions o;
    o.filtering = false;
    Tensor ls = make_logit_scale(o);
    Tensor s = logit_scale_value(ls, o);
    ViewEmbeddings e = sample_views(4);
    auto plain = [&](const Tensor& x, const std::vector<int64_t>& pos) {
      std::vector<int64_t> qc;
      for (int64_t p : pos) qc.push_back(e.category[p]);
      return info_nce(x, e.products, pos, s, hard_negative_mask(qc, e.category, pos), 2.0, Tensor()).item();
    };
    const double image = plain(e.image, e.product_of_image), multi = plain(e.multimodal, e.product_of_multimodal);
    e.text = Tensor();
    e.product_of_text.clear();
    ContrastiveLoss got = contrastive_loss(e, ls, o, 0.0);
    CHECK(got.inter.item() == doctest::Approx((image + multi) / 2).epsilon(1e-6));
    CHECK(got.intra.item() == 0.0);  // no text rows
    CHECK(got.aux.item() == 0.0);    // no aux given

    ViewEmbeddings one = sample_views(4);  // only product 2 has both once image rows are products 2 and 3
    one.image = one.image.slice(0, 1, 3);
    one.product_of_image = {2, 3};
    CHECK(contrastive_loss(one, ls, o, 0.0).intra.item() == 0.0);

    ContrastiveLoss empty = contrastive_loss(ViewEmbeddings{}, ls, o, 0.0);
    for (const Tensor* t : {&empty.total, &empty.inter, &empty.intra, &empty.aux, &empty.matryoshka}) {
      CHECK(t->dim() == 0);
      CHECK(t->item() == 0.0);
    }
    CHECK(empty.kept_fraction == 1.0);
  }

  TEST_CASE("contrastive_loss: Matryoshka is L_inter on the re-normalised prefixes, weighted") {
    ContrastiveOptions o;
    o.matryoshka_dims = {2, 4};
    o.matryoshka_weight = 0.5;
    o.intra = false;
    const double margin = 0.05;
    Tensor ls = make_logit_scale(o);
    ViewEmbeddings e = sample_views(9);
    ContrastiveLoss got = contrastive_loss(e, ls, o, margin);
    ContrastiveOptions no_mat = o;
    no_mat.matryoshka_dims.clear();
    double mat = 0;
    for (int64_t d : o.matryoshka_dims) {
      ViewEmbeddings cut = e;
      for (Tensor* t : {&cut.products, &cut.text, &cut.image, &cut.multimodal}) *t = model::embedding_prefix(*t, d);
      mat += contrastive_loss(cut, ls, no_mat, margin).inter.item() / 2;
    }
    CHECK(got.matryoshka.item() == doctest::Approx(mat).epsilon(1e-6));
    CHECK(got.inter.item() == doctest::Approx(contrastive_loss(e, ls, no_mat, margin).inter.item()).epsilon(1e-7));
    CHECK(got.total.item() == doctest::Approx(got.inter.item() + 0.5 * mat).epsilon(1e-6));
    ContrastiveOptions no_inter = o;  // Matryoshka is L_inter on prefixes: off with L_inter
    no_inter.inter = false;
    CHECK(contrastive_loss(e, ls, no_inter, margin).matryoshka.item() == 0.0);
    o.matryoshka_dims = {9};
    CHECK(error_of([&] { contrastive_loss(e, ls, o, margin); }) == "embedding_prefix: size 9 must be in [1, 8]");
  }

  TEST_CASE("bad shapes and out-of-range positives are errors naming the tensor") {
    Tensor q = zeros({3, 4}), k = zeros({5, 4}), s = scalar_tensor(1.0);
    CHECK(error_of([&] { info_nce(q, zeros({5, 6}), {0, 1, 2}, s, Tensor(), 1, Tensor()); }) ==
          "info_nce: queries f32(3, 4)@cpu and candidates f32(5, 6)@cpu have different widths");
    CHECK(error_of([&] { info_nce(zeros({3}), k, {0, 1, 2}, s, Tensor(), 1, Tensor()); }) ==
          "info_nce: queries must be (Nq, D) f32, got f32(3,)@cpu");
    CHECK(error_of([&] { info_nce(q, k, {0, 9, 2}, s, Tensor(), 1, Tensor()); }) ==
          "info_nce: positive[1] = 9 is outside the candidates' rows [0, 5)");
    CHECK(error_of([&] { info_nce(q, k, {0, -1, 2}, s, Tensor(), 1, Tensor()); }) ==
          "info_nce: positive[1] = -1 is outside the candidates' rows [0, 5)");
    CHECK(error_of([&] { info_nce(q, k, {0, 1}, s, Tensor(), 1, Tensor()); }) ==
          "info_nce: positive has 2 entries but queries has 3 rows");
    CHECK(error_of([&] { info_nce(q, k, {0, 1, 2}, s, zeros({3, 5}), 2, Tensor()); }) ==
          "info_nce: hard must be (3, 5) u8, got f32(3, 5)@cpu");
    CHECK(error_of([&] { info_nce(q, k, {0, 1, 2}, s, Tensor(), 2, ones({2})); }) ==
          "info_nce: weights must be (3) f32, got f32(2,)@cpu");
    CHECK(error_of([&] { info_nce(q, k, {0, 1, 2}, s, Tensor(), 2, zeros({3})); }) ==
          "info_nce: the weights sum to 0");
    CHECK(error_of([&] { info_nce(q, k, {0, 1, 2}, zeros({2}), Tensor(), 2, Tensor()); }) ==
          "info_nce: scale must be a () f32 tensor, got f32(2,)@cpu");
    CHECK(error_of([&] { info_nce(q, k, {0, 1, 2}, s, Tensor(), 0, Tensor()); }) ==
          "info_nce: hard_negative_weight must be > 0, got 0");
    CHECK(error_of([&] { filter_weights(q, k, {0, 1, 7}, Tensor(), ContrastiveOptions{}, 0); }) ==
          "filter_weights: positive[2] = 7 is outside the candidates' rows [0, 5)");
    CHECK(error_of([&] { logit_scale_value(zeros({2}), ContrastiveOptions{}); }) ==
          "contrastive: train.logit_scale must be a (1) f32 tensor, got f32(2,)@cpu");

    ContrastiveOptions o;
    Tensor ls = make_logit_scale(o);
    ViewEmbeddings e = sample_views(2);
    e.product_of_text = {0, 1};
    CHECK(error_of([&] { contrastive_loss(e, ls, o, 0); }) ==
          "contrastive_loss: product_of_text has 2 entries but text has 3 rows");
    e = sample_views(2);
    e.product_of_image = {1, 7, 3};
    CHECK(error_of([&] { contrastive_loss(e, ls, o, 0); }) ==
          "contrastive_loss: product_of_image[1] = 7 is outside the product rows [0, 4)");
    e = sample_views(2);
    e.category = {0, 1};
    CHECK(error_of([&] { contrastive_loss(e, ls, o, 0); }) ==
          "contrastive_loss: category has 2 entries but products has 4 rows");
    e = sample_views(2);
    e.multimodal = zeros({1, 5});
    CHECK(error_of([&] { contrastive_loss(e, ls, o, 0); }) ==
          "contrastive_loss: multimodal must be (n, 8) f32 like products, got f32(1, 5)@cpu");
  }
}
