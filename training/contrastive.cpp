// The contrastive losses of docs/training.md section 2, built from differentiable ops: the clamped learnable
// temperature, weighted InfoNCE with same-category hard negatives, dynamic sample filtering (detached
// weights), MOON2.0's dual-level alignment (L_inter, L_intra), Matryoshka prefixes and the aux term.
#include "training/contrastive.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "model/moon_model.h"
#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"
#include "runtime/error.h"

namespace moon::training {

namespace {

// A () f32 zero: the value of a loss part that is off or empty.
Tensor zero_scalar() { return scalar_tensor(0.0); }

// True when the view embedding has at least one row.
bool present(const Tensor& e) { return e.defined() && e.dim() >= 1 && e.size(0) > 0; }

// Checks that `positive` has one entry per query, each naming a candidate row.
void check_positives(const char* where, const std::vector<int64_t>& positive, int64_t queries, int64_t candidates) {
  MOON_CHECK(static_cast<int64_t>(positive.size()) == queries, where, ": positive has ", positive.size(),
             " entries but queries has ", queries, " rows");
  for (size_t i = 0; i < positive.size(); ++i)
    MOON_CHECK(positive[i] >= 0 && positive[i] < candidates, where, ": positive[", i, "] = ", positive[i],
               " is outside the candidates' rows [0, ", candidates, ")");
}

// Checks queries (Nq, D) and candidates (Nc, D): f32, 2-D, the same width, at least one row each.
void check_pair(const char* where, const Tensor& queries, const Tensor& candidates) {
  MOON_CHECK(queries.defined(), where, ": queries is undefined");
  MOON_CHECK(candidates.defined(), where, ": candidates is undefined");
  MOON_CHECK(queries.dim() == 2 && queries.dtype() == DType::F32, where, ": queries must be (Nq, D) f32, got ",
             queries.desc());
  MOON_CHECK(candidates.dim() == 2 && candidates.dtype() == DType::F32, where,
             ": candidates must be (Nc, D) f32, got ", candidates.desc());
  MOON_CHECK(queries.size(1) == candidates.size(1), where, ": queries ", queries.desc(), " and candidates ",
             candidates.desc(), " have different widths");
  MOON_CHECK(queries.size(0) > 0, where, ": queries has no rows");
  MOON_CHECK(candidates.size(0) > 0, where, ": candidates has no rows");
}

// Checks an optional hard-negative mask: (Nq, Nc) u8.
void check_hard(const char* where, const Tensor& hard, int64_t queries, int64_t candidates) {
  if (!hard.defined()) return;
  MOON_CHECK(hard.dtype() == DType::U8 && hard.dim() == 2 && hard.size(0) == queries && hard.size(1) == candidates,
             where, ": hard must be (", queries, ", ", candidates, ") u8, got ", hard.desc());
}

// Sum of a non-empty list of () tensors divided by their count.
Tensor mean_of(const std::vector<Tensor>& terms) {
  Tensor total = terms[0];
  for (size_t i = 1; i < terms.size(); ++i) total = add(total, terms[i]);
  return terms.size() == 1 ? total : scale(total, 1.0 / static_cast<double>(terms.size()));
}

// The rows of one view as InfoNCE queries against the products.
struct QueryView {
  Tensor embedding;                     // (n, D)
  const std::vector<int64_t>* product;  // (n) row -> product row (the positive)
};

// L_inter: the mean over the present query views X of InfoNCE(e_X -> e_P) with same-category hard negatives
// and (with options.filtering) filtering weights, which are appended to `weights` when it is not null.
Tensor inter_loss(const std::vector<QueryView>& views, const Tensor& products, const std::vector<int64_t>& category,
                  const Tensor& scale_value, const ContrastiveOptions& options, double margin,
                  std::vector<float>* weights) {
  std::vector<Tensor> terms;
  for (const QueryView& v : views) {
    if (!present(v.embedding)) continue;
    std::vector<int64_t> query_category(v.product->size());
    for (size_t i = 0; i < query_category.size(); ++i) query_category[i] = category[(*v.product)[i]];
    Tensor hard = hard_negative_mask(query_category, category, *v.product);
    Tensor w;
    if (options.filtering) w = filter_weights(v.embedding, products, *v.product, hard, options, margin);
    if (weights) {
      if (w.defined()) {
        std::vector<float> values = w.to_vector<float>();
        weights->insert(weights->end(), values.begin(), values.end());
      } else {
        weights->insert(weights->end(), v.product->size(), 1.0f);
      }
    }
    terms.push_back(info_nce(v.embedding, products, *v.product, scale_value, hard, options.hard_negative_weight, w));
  }
  return terms.empty() ? zero_scalar() : mean_of(terms);
}

// L_intra: (InfoNCE(V' -> T') + InfoNCE(T' -> V')) / 2 over the products that have both a text and an image
// row (in product order); 0 when fewer than 2 such products.
Tensor intra_loss(const ViewEmbeddings& e, const Tensor& scale_value, const ContrastiveOptions& options) {
  if (!present(e.text) || !present(e.image)) return zero_scalar();
  const int64_t n_products = e.products.size(0);
  std::vector<int64_t> text_row(n_products, -1), image_row(n_products, -1);
  for (size_t r = 0; r < e.product_of_text.size(); ++r) text_row[e.product_of_text[r]] = static_cast<int64_t>(r);
  for (size_t r = 0; r < e.product_of_image.size(); ++r) image_row[e.product_of_image[r]] = static_cast<int64_t>(r);
  std::vector<int64_t> texts, images, category;
  for (int64_t p = 0; p < n_products; ++p) {
    if (text_row[p] < 0 || image_row[p] < 0) continue;
    texts.push_back(text_row[p]), images.push_back(image_row[p]), category.push_back(e.category[p]);
  }
  const int64_t n = static_cast<int64_t>(texts.size());
  if (n < 2) return zero_scalar();
  Tensor t = index_select(e.text, 0, from_vector(texts, {n}, DType::I64));    // (n, D)
  Tensor v = index_select(e.image, 0, from_vector(images, {n}, DType::I64));  // (n, D)
  std::vector<int64_t> positive(n);
  for (int64_t i = 0; i < n; ++i) positive[i] = i;
  Tensor hard = hard_negative_mask(category, category, positive);  // symmetric: serves both directions
  Tensor v_to_t = info_nce(v, t, positive, scale_value, hard, options.hard_negative_weight, Tensor());
  Tensor t_to_v = info_nce(t, v, positive, scale_value, hard, options.hard_negative_weight, Tensor());
  return scale(add(v_to_t, t_to_v), 0.5);
}

// Checks that the rows of a view and its product list agree and point at product rows.
void check_view(const char* name, const Tensor& embedding, const std::vector<int64_t>& product_of,
                int64_t n_products, int64_t width) {
  if (!embedding.defined()) {
    MOON_CHECK(product_of.empty(), "contrastive_loss: ", name, " is undefined but product_of_", name, " has ",
               product_of.size(), " entries");
    return;
  }
  MOON_CHECK(embedding.dim() == 2 && embedding.dtype() == DType::F32 && embedding.size(1) == width,
             "contrastive_loss: ", name, " must be (n, ", width, ") f32 like products, got ", embedding.desc());
  MOON_CHECK(static_cast<int64_t>(product_of.size()) == embedding.size(0), "contrastive_loss: product_of_", name,
             " has ", product_of.size(), " entries but ", name, " has ", embedding.size(0), " rows");
  for (size_t i = 0; i < product_of.size(); ++i)
    MOON_CHECK(product_of[i] >= 0 && product_of[i] < n_products, "contrastive_loss: product_of_", name, "[", i,
               "] = ", product_of[i], " is outside the product rows [0, ", n_products, ")");
}

}  // namespace

double filter_margin(const ContrastiveOptions& options, int64_t step, int64_t total) {
  if (total <= 0) return options.filter_margin;  // no known length: no decay
  const double left = 1.0 - static_cast<double>(step) / static_cast<double>(total);
  return options.filter_margin * std::max(0.0, left);
}

Tensor make_logit_scale(const ContrastiveOptions& options) {
  MOON_CHECK(options.init_temperature > 0 && std::isfinite(options.init_temperature),
             "contrastive: init_temperature must be a positive number, got ", options.init_temperature);
  Tensor t = from_vector(std::vector<float>{static_cast<float>(std::log(1.0 / options.init_temperature))}, {1});
  t.set_requires_grad(true);
  t.set_name("train.logit_scale");
  return t;
}

Tensor logit_scale_value(const Tensor& logit_scale, const ContrastiveOptions& options) {
  MOON_CHECK(logit_scale.defined() && logit_scale.numel() == 1 && logit_scale.dtype() == DType::F32,
             "contrastive: train.logit_scale must be a (1) f32 tensor, got ",
             logit_scale.defined() ? logit_scale.desc() : std::string("an undefined tensor"));
  MOON_CHECK(options.max_logit_scale >= 1, "contrastive: max_logit_scale must be >= 1, got ", options.max_logit_scale);
  return exp(clamp(logit_scale.reshape({}), 0.0, std::log(options.max_logit_scale)));
}

Tensor hard_negative_mask(const std::vector<int64_t>& query_category, const std::vector<int64_t>& candidate_category,
                          const std::vector<int64_t>& positive) {
  const int64_t nq = static_cast<int64_t>(query_category.size()), nc = static_cast<int64_t>(candidate_category.size());
  MOON_CHECK(static_cast<int64_t>(positive.size()) == nq, "hard_negative_mask: positive has ", positive.size(),
             " entries but there are ", nq, " query categories");
  std::vector<uint8_t> mask(static_cast<size_t>(nq * nc), 0);  // (Nq, Nc) row-major
  for (int64_t i = 0; i < nq; ++i) {
    MOON_CHECK(positive[i] >= 0 && positive[i] < nc, "hard_negative_mask: positive[", i, "] = ", positive[i],
               " is outside the candidates' rows [0, ", nc, ")");
    for (int64_t j = 0; j < nc; ++j)
      mask[i * nc + j] = j != positive[i] && candidate_category[j] == query_category[i];
  }
  return from_vector(mask, {nq, nc}, DType::U8);
}

Tensor filter_weights(const Tensor& queries, const Tensor& candidates, const std::vector<int64_t>& positive,
                      const Tensor& hard, const ContrastiveOptions& options, double margin) {
  check_pair("filter_weights", queries, candidates);
  const int64_t nq = queries.size(0), nc = candidates.size(0);
  check_positives("filter_weights", positive, nq, nc);
  check_hard("filter_weights", hard, nq, nc);
  MOON_CHECK(options.filter_threshold > 0, "filter_weights: filter_threshold must be > 0, got ",
             options.filter_threshold);
  std::vector<float> sim;  // (Nq, Nc) q_i . k_j
  {
    NoGradGuard no_grad;
    sim = matmul(queries.detach(), candidates.detach().mT()).contiguous().to_vector<float>();
  }
  std::vector<uint8_t> h = hard.defined() ? hard.contiguous().to_vector<uint8_t>() : std::vector<uint8_t>();
  std::vector<float> w(static_cast<size_t>(nq), 1.0f);
  for (int64_t i = 0; i < nq; ++i) {
    const float* row = sim.data() + i * nc;
    const int64_t pos = positive[i];
    double hardest_hard = -std::numeric_limits<double>::infinity(), hardest_any = hardest_hard;
    bool any_hard = false, any_negative = false;
    for (int64_t j = 0; j < nc; ++j) {
      if (j == pos) continue;
      any_negative = true;
      hardest_any = std::max(hardest_any, static_cast<double>(row[j]));
      if (!h.empty() && h[i * nc + j]) any_hard = true, hardest_hard = std::max(hardest_hard, static_cast<double>(row[j]));
    }
    if (!any_negative) continue;  // no negative at all: weight 1
    const double hardest = any_hard ? hardest_hard : hardest_any;
    const double phi = 1.0 / (1.0 + std::exp(-options.filter_kappa * (row[pos] - hardest - margin)));
    w[i] = static_cast<float>(std::min(1.0, phi / options.filter_threshold));
  }
  return from_vector(w, {nq});
}

Tensor info_nce(const Tensor& queries, const Tensor& candidates, const std::vector<int64_t>& positive,
                const Tensor& scale_value, const Tensor& hard, double hard_weight, const Tensor& weights) {
  check_pair("info_nce", queries, candidates);
  const int64_t nq = queries.size(0), nc = candidates.size(0);
  check_positives("info_nce", positive, nq, nc);
  check_hard("info_nce", hard, nq, nc);
  MOON_CHECK(scale_value.defined() && scale_value.numel() == 1 && scale_value.dtype() == DType::F32,
             "info_nce: scale must be a () f32 tensor, got ",
             scale_value.defined() ? scale_value.desc() : std::string("an undefined tensor"));
  MOON_CHECK(hard_weight > 0 && std::isfinite(hard_weight), "info_nce: hard_negative_weight must be > 0, got ",
             hard_weight);
  double weight_sum = static_cast<double>(nq);
  if (weights.defined()) {
    MOON_CHECK(weights.dim() == 1 && weights.size(0) == nq && weights.dtype() == DType::F32,
               "info_nce: weights must be (", nq, ") f32, got ", weights.desc());
    weight_sum = 0;
    std::vector<float> w = weights.to_vector<float>();
    for (size_t i = 0; i < w.size(); ++i) {
      MOON_CHECK(std::isfinite(w[i]) && w[i] >= 0, "info_nce: weights[", i, "] = ", w[i],
                 " must be finite and >= 0");
      weight_sum += w[i];
    }
    MOON_CHECK(weight_sum > 0, "info_nce: the weights sum to 0");
  }
  Tensor logits = mul(matmul(queries, candidates.mT()), scale_value.reshape({}));  // (Nq, Nc)
  if (hard.defined() && hard_weight != 1.0)
    logits = add(logits, where(hard, full({}, std::log(hard_weight)), zeros({})));
  std::vector<int64_t> pos(positive);
  Tensor log_p = gather(log_softmax(logits, 1), 1, from_vector(pos, {nq, 1}, DType::I64));  // (Nq, 1)
  Tensor ce = neg(log_p.reshape({nq}));                                                    // (Nq) CE_i
  if (weights.defined()) ce = mul(ce, weights.detach());
  return scale(sum(ce), 1.0 / weight_sum);
}

ContrastiveLoss contrastive_loss(const ViewEmbeddings& e, const Tensor& logit_scale, const ContrastiveOptions& options,
                                 double margin) {
  ContrastiveLoss out;
  Tensor s = logit_scale_value(logit_scale, options);
  {
    NoGradGuard no_grad;
    out.temperature = 1.0 / s.item();
  }
  out.inter = out.intra = out.matryoshka = zero_scalar();
  out.aux = e.aux.defined() ? e.aux.reshape({}) : zero_scalar();
  if (present(e.products)) {
    MOON_CHECK(e.products.dim() == 2 && e.products.dtype() == DType::F32,
               "contrastive_loss: products must be (B, D) f32, got ", e.products.desc());
    const int64_t n = e.products.size(0), width = e.products.size(1);
    MOON_CHECK(static_cast<int64_t>(e.category.size()) == n, "contrastive_loss: category has ", e.category.size(),
               " entries but products has ", n, " rows");
    check_view("text", e.text, e.product_of_text, n, width);
    check_view("image", e.image, e.product_of_image, n, width);
    check_view("multimodal", e.multimodal, e.product_of_multimodal, n, width);
    std::vector<QueryView> views = {
        {e.text, &e.product_of_text}, {e.image, &e.product_of_image}, {e.multimodal, &e.product_of_multimodal}};
    if (options.inter) {
      std::vector<float> weights;
      out.inter = inter_loss(views, e.products, e.category, s, options, margin, &weights);
      if (!weights.empty()) {
        double total = 0;
        for (float w : weights) total += w;
        out.kept_fraction = total / static_cast<double>(weights.size());
      }
    }
    if (options.intra) out.intra = intra_loss(e, s, options);
    if (options.inter && !options.matryoshka_dims.empty()) {  // L_inter on prefixes: off with L_inter
      std::vector<Tensor> terms;
      for (int64_t d : options.matryoshka_dims) {
        auto prefix = [d](const Tensor& x) { return present(x) ? model::embedding_prefix(x, d) : x; };
        std::vector<QueryView> cut = {{prefix(e.text), &e.product_of_text},
                                      {prefix(e.image), &e.product_of_image},
                                      {prefix(e.multimodal), &e.product_of_multimodal}};
        terms.push_back(inter_loss(cut, prefix(e.products), e.category, s, options, margin, nullptr));
      }
      out.matryoshka = mean_of(terms);
    }
  } else {
    MOON_CHECK(!present(e.text) && !present(e.image) && !present(e.multimodal),
               "contrastive_loss: products has no rows but a query view has some");
  }
  out.total = add(add(out.inter, out.intra), scale(out.aux, options.aux_weight));
  out.total = add(out.total, scale(out.matryoshka, options.matryoshka_weight));
  return out;
}

}  // namespace moon::training
