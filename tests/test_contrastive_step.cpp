// The contrastive step (training/contrastive_step.h): the four views of a hand-built loader batch, gradient
// caching against the full-batch gradient on the tiny model, and that AdamW on the step's loss learns.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <vector>

#include <omp.h>

#include "io/data_loader.h"
#include "model/moon_model.h"
#include "ops/elementwise.h"
#include "runtime/rng.h"
#include "test_util.h"
#include "training/contrastive_step.h"
#include "training/optimizer.h"

using namespace moon;
using namespace moon::training;
using moon::test::error_of;

namespace {

// A loader-like batch of B products without files: random pixels (S x S), images2 = images + noise (a
// second "augmentation"), texts of 3..10 random token ids in [9, 512), labels in [0, 3). Products listed in
// `no_image` have no image, those in `no_text` no text.
io::Batch random_batch(uint64_t seed, int64_t B, int64_t S, const std::vector<int64_t>& no_image = {},
                       const std::vector<int64_t>& no_text = {}) {
  Generator gen(seed);
  io::Batch b;
  b.images = randn({B, 3, S, S}, gen);
  b.images2 = add(b.images, scale(randn({B, 3, S, S}, gen), 0.1));
  std::vector<int64_t> has(B, 1), labels(B), index(B);
  const int64_t T = 10;
  std::vector<int64_t> ids(B * T, 8), mask(B * T, 0);
  std::vector<int64_t> draws = randint({B * (T + 2)}, gen, 0, 1 << 20).to_vector<int64_t>();
  for (int64_t p = 0; p < B; ++p) {
    const int64_t length = std::count(no_text.begin(), no_text.end(), p) ? 0 : 3 + draws[p] % 8;
    for (int64_t t = 0; t < length; ++t) ids[p * T + t] = 9 + draws[B + p * T + t] % 503, mask[p * T + t] = 1;
    if (std::count(no_image.begin(), no_image.end(), p)) has[p] = 0;
    labels[p] = draws[B * (T + 1) + p] % 3;
    index[p] = 100 + p;
  }
  for (int64_t p : no_image) b.images.select(0, p).zero_(), b.images2.select(0, p).zero_();
  b.has_image = from_vector(has, {B}, DType::I64);
  b.token_ids = from_vector(ids, {B, T}, DType::I64);
  b.attention_mask = from_vector(mask, {B, T}, DType::I64);
  b.labels = from_vector(labels, {B}, DType::I64);
  b.product_index = from_vector(index, {B}, DType::I64);
  return b;
}

// The tiny model (MoE off, as shipped).
model::ModelConfig tiny() {
  model::ModelConfig c = model::load_config("tiny");
  REQUIRE_FALSE(c.moe.enabled);
  return c;
}

// Every parameter's gradient (and logit_scale's last), copied.
std::vector<std::vector<float>> gradients(const model::MoonModel& m, const Tensor& logit_scale) {
  std::vector<std::vector<float>> out;
  for (const auto& [name, p] : m.params().all())
    out.push_back(p.grad().defined() ? p.grad().to_vector<float>() : std::vector<float>(p.numel(), 0.0f));
  out.push_back(logit_scale.grad().to_vector<float>());
  return out;
}

// The products of a view as a list, for CHECKs.
std::vector<int64_t> text_of(const model::InputRow& r) { return r.text; }

// One OpenMP thread for its scope: the tiny model's ops are small, and on a loaded 2-core machine (and under
// ASan) they run much faster and steadier single-threaded.
struct SingleThread {
  int previous = omp_get_max_threads();
  SingleThread() { omp_set_num_threads(1); }
  ~SingleThread() { omp_set_num_threads(previous); }
};

// The seed of the training tests' batches ($MOON_CONTRASTIVE_SEED, for checking that they are not flaky).
uint64_t batch_seed(uint64_t fallback) {
  const char* s = std::getenv("MOON_CONTRASTIVE_SEED");
  return s ? std::strtoull(s, nullptr, 10) : fallback;
}

}  // namespace

TEST_SUITE("contrastive_step") {
  TEST_CASE("make_views: P every product, T with text, V with an image, M with both (images2)") {
    io::Batch b = random_batch(1, 5, 32, /*no_image=*/{1}, /*no_text=*/{2});
    const std::vector<int64_t> mask = b.attention_mask.to_vector<int64_t>(), ids = b.token_ids.to_vector<int64_t>();
    auto text = [&](int64_t p) {
      std::vector<int64_t> t;
      for (int64_t j = 0; j < 10; ++j)
        if (mask[p * 10 + j]) t.push_back(ids[p * 10 + j]);
      return t;
    };
    ContrastiveViews v = make_views(b);
    CHECK(v.category == b.labels.to_vector<int64_t>());

    CHECK(v.products.product == std::vector<int64_t>{0, 1, 2, 3, 4});
    CHECK(v.products.images.same(b.images));
    for (int64_t p = 0; p < 5; ++p) {
      CHECK(v.products.rows[p].image == (p == 1 ? -1 : p));
      CHECK(text_of(v.products.rows[p]) == text(p));
      CHECK_FALSE(v.products.rows[p].has_reasoning);
    }
    CHECK(v.text.product == std::vector<int64_t>{0, 1, 3, 4});
    CHECK_FALSE(v.text.images.defined());
    for (size_t r = 0; r < v.text.rows.size(); ++r) {
      CHECK(v.text.rows[r].image == -1);
      CHECK(v.text.rows[r].text == text(v.text.product[r]));
    }
    CHECK(v.image.product == std::vector<int64_t>{0, 2, 3, 4});
    CHECK(v.image.images.same(b.images));
    for (size_t r = 0; r < v.image.rows.size(); ++r) {
      CHECK(v.image.rows[r].image == v.image.product[r]);
      CHECK(v.image.rows[r].text.empty());
    }
    CHECK(v.multimodal.product == std::vector<int64_t>{0, 3, 4});
    CHECK(v.multimodal.images.same(b.images2));
    for (size_t r = 0; r < v.multimodal.rows.size(); ++r) {
      CHECK(v.multimodal.rows[r].image == v.multimodal.product[r]);
      CHECK(v.multimodal.rows[r].text == text(v.multimodal.product[r]));
    }

    io::Batch one_view = b;
    one_view.images2 = Tensor();
    CHECK(make_views(one_view).multimodal.images.same(b.images));

    io::Batch none = random_batch(1, 3, 32, {1}, {1});
    CHECK(error_of([&] { make_views(none); }) == "make_views: product 1 of the batch has neither text nor an image");
  }

  TEST_CASE("gradient caching (chunk 3) gives the full-batch gradient (chunk 0), loss and temperature included") {
    SingleThread one;
    model::MoonModel m(tiny());
    const model::SpecialTokens special;
    ContrastiveViews views = make_views(random_batch(7, 8, 32, {5}, {6}));
    ContrastiveOptions o;
    o.matryoshka_dims = {16, 32};
    Tensor ls = make_logit_scale(o);
    const double margin = 0.1;

    ContrastiveStepResult full = contrastive_step(m, views, special, ls, o, margin, 0, 0.5);
    const auto want = gradients(m, ls);
    m.params().zero_grad(), ls.zero_grad();
    ContrastiveStepResult cached = contrastive_step(m, views, special, ls, o, margin, 3, 0.5);
    const auto got = gradients(m, ls);

    CHECK(full.forwards == 4);
    CHECK(cached.forwards == 3 + 3 + 3 + 2);  // P 8, T 7, V 7, M 6 rows in chunks of 3
    for (const Tensor* part : {&full.loss.total, &full.loss.inter, &full.loss.intra, &full.loss.matryoshka})
      CHECK_FALSE(part->requires_grad());
    CHECK(full.loss.intra.item() > 0);
    CHECK(full.loss.matryoshka.item() > 0);
    CHECK(cached.loss.total.item() == doctest::Approx(full.loss.total.item()).epsilon(1e-6));
    CHECK(cached.loss.inter.item() == doctest::Approx(full.loss.inter.item()).epsilon(1e-6));
    CHECK(cached.loss.intra.item() == doctest::Approx(full.loss.intra.item()).epsilon(1e-6));
    CHECK(cached.loss.kept_fraction == doctest::Approx(full.loss.kept_fraction).epsilon(1e-6));
    CHECK(cached.product_of_multimodal == std::vector<int64_t>{0, 1, 2, 3, 4, 7});
    CHECK(cached.multimodal.shape() == Shape{6, 64});

    const auto& params = m.params().all();
    REQUIRE(got.size() == want.size());
    // Relative to the tensor's largest gradient, with a floor of 1e-6 of the largest gradient of all: the
    // true gradient of the ViT's k_proj biases is exactly 0 (softmax ignores a per-row constant), so theirs is
    // rounding noise (~1e-11).
    double overall = 0;
    for (const auto& g : want)
      for (float x : g) overall = std::max(overall, std::fabs(static_cast<double>(x)));
    double worst = 0;
    std::string worst_name;
    int64_t nonzero = 0;
    for (size_t t = 0; t < want.size(); ++t) {
      double peak = 0, diff = 0;
      for (size_t j = 0; j < want[t].size(); ++j) {
        peak = std::max(peak, std::fabs(static_cast<double>(want[t][j])));
        diff = std::max(diff, std::fabs(static_cast<double>(got[t][j]) - want[t][j]));
      }
      if (peak > 0) ++nonzero;
      const double rel = diff / std::max(peak, 1e-6 * overall);
      if (rel > worst) worst = rel, worst_name = t < params.size() ? params[t].first : "train.logit_scale";
    }
    INFO("worst relative gradient difference ", worst, " in ", worst_name);
    CHECK(worst < 1e-5);
    CHECK(nonzero == static_cast<int64_t>(want.size()));  // every parameter and the temperature got a gradient
  }

  TEST_CASE("30 AdamW steps over four random batches lower the loss") {
    SingleThread one;
    model::MoonModel m(tiny());
    const model::SpecialTokens special;
    ContrastiveOptions o;
    Tensor ls = make_logit_scale(o);
    NamedParams params = m.params().all();
    params.emplace_back("train.logit_scale", ls);
    AdamW opt(params, {.weight_decay = 0.05});
    std::vector<ContrastiveViews> batches;
    for (uint64_t s = 0; s < 4; ++s) batches.push_back(make_views(random_batch(batch_seed(100) + s, 8, 32, {3}, {4})));
    std::vector<double> losses;
    for (int step = 0; step < 30; ++step) {
      for (auto& [name, p] : params) p.zero_grad();
      ContrastiveStepResult r = contrastive_step(m, batches[step % 4], special, ls, o, filter_margin(o, step, 30), 0);
      losses.push_back(r.loss.total.item());
      clip_grad_norm(params, 1.0);
      opt.step(1e-3);
    }
    const double first = std::accumulate(losses.begin(), losses.begin() + 4, 0.0) / 4;
    const double last = std::accumulate(losses.end() - 5, losses.end(), 0.0) / 5;
    INFO("first 4 steps ", first, ", last 5 steps ", last);
    CHECK(last < 0.8 * first);
  }

  TEST_CASE("overfitting one batch: the loss falls below 10% of its start in 40 steps") {
    SingleThread one;
    model::MoonModel m(tiny());
    const model::SpecialTokens special;
    ContrastiveOptions o;
    Tensor ls = make_logit_scale(o);
    NamedParams params = m.params().all();
    params.emplace_back("train.logit_scale", ls);
    AdamW opt(params, {.weight_decay = 0.0});
    ContrastiveViews views = make_views(random_batch(batch_seed(42), 8, 32, {2}, {5}));
    double start = 0, end = 0;
    for (int step = 0; step < 40; ++step) {
      for (auto& [name, p] : params) p.zero_grad();
      ContrastiveStepResult r = contrastive_step(m, views, special, ls, o, 0.0, 0);
      if (step == 0) start = r.loss.total.item();
      end = r.loss.total.item();
      clip_grad_norm(params, 1.0);
      opt.step(3e-3);
    }
    INFO("start ", start, ", end ", end);
    CHECK(end < 0.1 * start);
  }
}
