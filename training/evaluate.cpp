// The mbe-local evaluation (docs/eval.md): embeds a manifest split's products in every view the tasks need
// (two loader passes: plain images, then two augmented views), then scores cross-modal retrieval, zero-shot
// classification, attribute prediction and same-product matching.
#include "training/evaluate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "io/data_loader.h"
#include "model/embed.h"
#include "model/generate.h"
#include "ops/matmul.h"
#include "runtime/autograd.h"
#include "runtime/error.h"

namespace moon::training {

// ---- ranking

RetrievalMetrics retrieval_metrics(const Tensor& sim, const std::vector<int64_t>& relevant) {
  MOON_CHECK(sim.dim() == 2, "retrieval_metrics: the similarity matrix must be 2-D (queries, candidates), got ",
             sim.dim(), " dimensions");
  const int64_t nq = sim.size(0), nc = sim.size(1);
  MOON_CHECK(static_cast<int64_t>(relevant.size()) == nq, "retrieval_metrics: ", relevant.size(),
             " relevant indices for ", nq, " queries");
  const std::vector<float> s = sim.to_vector<float>();  // (nq, nc) row-major
  RetrievalMetrics m;
  m.queries = nq;
  if (nq == 0) return m;
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t rel = relevant[static_cast<size_t>(i)];
    MOON_CHECK(rel >= 0 && rel < nc, "retrieval_metrics: query ", i, ": relevant candidate ", rel,
               " is outside [0, ", nc, ")");
    const float* row = s.data() + i * nc;
    const float target = row[rel];
    // rank = 1 + candidates scoring at least as high (ties and NaNs count against the query)
    int64_t rank = 1;
    for (int64_t j = 0; j < nc; ++j)
      if (j != rel && !(row[j] < target)) ++rank;
    m.r1 += rank <= 1;
    m.r5 += rank <= 5;
    m.r10 += rank <= 10;
    m.mrr += 1.0 / static_cast<double>(rank);
  }
  m.r1 /= nq;
  m.r5 /= nq;
  m.r10 /= nq;
  m.mrr /= nq;
  return m;
}

// ---- the report

double EvalReport::get(const std::string& name) const {
  for (const auto& [key, value] : metrics)
    if (key == name) return value;
  fail("evaluation report: no metric '", name, "' (", metrics.size(), " metrics; a task is left out when no ",
       "product qualifies for it, see docs/eval.md)");
}

namespace {

// Metrics that are counts, not fractions.
bool is_count(const std::string& name) { return name.ends_with(".classes") || name.ends_with(".keys"); }

}  // namespace

std::string EvalReport::table() const {
  size_t task_width = 4, metric_width = 6;
  for (const auto& [name, value] : metrics) {
    const size_t dot = name.rfind('.');
    task_width = std::max(task_width, dot == std::string::npos ? 0 : dot);
    metric_width = std::max(metric_width, name.size() - (dot == std::string::npos ? 0 : dot + 1));
  }
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-*s  %-*s  %8s\n", static_cast<int>(task_width), "task",
                static_cast<int>(metric_width), "metric", "value");
  out += line;
  for (const auto& [name, value] : metrics) {
    const size_t dot = name.rfind('.');
    const std::string task = dot == std::string::npos ? name : name.substr(0, dot);
    const std::string metric = dot == std::string::npos ? "" : name.substr(dot + 1);
    if (is_count(name))
      std::snprintf(line, sizeof line, "%-*s  %-*s  %8.0f\n", static_cast<int>(task_width), task.c_str(),
                    static_cast<int>(metric_width), metric.c_str(), value);
    else
      std::snprintf(line, sizeof line, "%-*s  %-*s  %7.2f%%\n", static_cast<int>(task_width), task.c_str(),
                    static_cast<int>(metric_width), metric.c_str(), 100.0 * value);
    out += line;
  }
  std::snprintf(line, sizeof line, "%lld products in %.2f s (%.1f products/s)\n", static_cast<long long>(products),
                seconds, seconds > 0 ? static_cast<double>(products) / seconds : 0.0);
  out += line;
  return out;
}

std::string EvalReport::to_json() const {
  nlohmann::ordered_json j;
  j["products"] = products;
  j["seconds"] = seconds;
  nlohmann::ordered_json m = nlohmann::ordered_json::object();
  for (const auto& [name, value] : metrics) m[name] = value;
  j["metrics"] = m;
  return j.dump(2) + "\n";
}

// ---- what is evaluated

std::vector<io::Product> eval_products(const io::Manifest& manifest, const EvalOptions& options) {
  std::vector<const io::Product*> split;
  for (const io::Product& p : manifest.products)
    if (options.split.empty() || p.split == options.split) split.push_back(&p);
  const size_t n = split.size();
  const size_t take = options.limit > 0 && options.limit < n ? options.limit : n;
  std::vector<io::Product> out;
  out.reserve(take);
  for (size_t i = 0; i < take; ++i) out.push_back(*split[i * n / take]);  // floor(i * n / limit)
  return out;
}

EvalPrompts eval_prompts(const std::vector<io::Product>& products) {
  EvalPrompts out;
  std::set<std::string> classes;
  // key -> value -> products with it (a product counts once per key: its first value)
  std::map<std::string, std::map<std::string, int64_t>> counts;
  for (const io::Product& p : products) {
    if (!p.category.empty()) classes.insert(p.category.back());
    std::set<std::string> seen;
    for (const auto& [key, value] : p.attributes)
      if (seen.insert(key).second) ++counts[key][value];
  }
  if (classes.size() >= 2) out.classes.assign(classes.begin(), classes.end());
  for (const auto& [key, values] : counts) {
    std::vector<std::string> kept;
    for (const auto& [value, count] : values)
      if (count >= 2) kept.push_back(value);
    if (kept.size() >= 2) out.attributes.emplace_back(key, std::move(kept));
  }
  return out;
}

// ---- scoring

namespace {

// Rows `index` of the (n, D) matrix e as a contiguous (k, D) f32 tensor.
Tensor gather_rows(const Tensor& e, const std::vector<int64_t>& index) {
  const int64_t D = e.size(1);
  const Tensor src = e.contiguous();
  const float* from = src.data<float>();
  Tensor out = empty({static_cast<int64_t>(index.size()), D});
  float* to = out.data<float>();
  for (size_t k = 0; k < index.size(); ++k) std::copy_n(from + index[k] * D, D, to + static_cast<int64_t>(k) * D);
  return out;
}

// q (Nq, D) against g (Ng, D): (Nq, Ng) dot products.
Tensor similarity(const Tensor& q, const Tensor& g) {
  NoGradGuard no_grad;
  return matmul(q, g.transpose(0, 1)).contiguous();
}

// Products i where mask_a[i] (and mask_b[i] when given).
std::vector<int64_t> where(const std::vector<uint8_t>& mask_a, const std::vector<uint8_t>* mask_b = nullptr) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < mask_a.size(); ++i)
    if (mask_a[i] && (!mask_b || (*mask_b)[i])) out.push_back(static_cast<int64_t>(i));
  return out;
}

// Positions in `gallery` of each product of `queries` (every query product must be in the gallery).
std::vector<int64_t> positions_in(const std::vector<int64_t>& queries, const std::vector<int64_t>& gallery) {
  std::map<int64_t, int64_t> at;
  for (size_t k = 0; k < gallery.size(); ++k) at[gallery[k]] = static_cast<int64_t>(k);
  std::vector<int64_t> out;
  for (int64_t q : queries) out.push_back(at.at(q));
  return out;
}

// Appends task.R@1, R@5, R@10 and MRR of queries (rows of eq) against the gallery (rows of eg).
void add_retrieval(std::vector<std::pair<std::string, double>>& out, const std::string& task, const Tensor& eq,
                   const std::vector<int64_t>& queries, const Tensor& eg, const std::vector<int64_t>& gallery,
                   Tensor* sim_out = nullptr) {
  const Tensor sim = similarity(gather_rows(eq, queries), gather_rows(eg, gallery));
  const RetrievalMetrics m = retrieval_metrics(sim, positions_in(queries, gallery));
  out.emplace_back(task + ".R@1", m.r1);
  out.emplace_back(task + ".R@5", m.r5);
  out.emplace_back(task + ".R@10", m.r10);
  out.emplace_back(task + ".MRR", m.mrr);
  if (sim_out) *sim_out = sim;
}

// Accuracy of classifying the image rows `items` of V among `prompts` (C, D), the true class of item k
// being truth[k]: correct when the true class scores strictly highest (R@1 of the class ranking).
double classify(const Tensor& V, const std::vector<int64_t>& items, const Tensor& prompts,
                const std::vector<int64_t>& truth) {
  return retrieval_metrics(similarity(gather_rows(V, items), prompts.contiguous()), truth).r1;
}

}  // namespace

std::vector<std::pair<std::string, double>> task_metrics(const std::vector<io::Product>& products,
                                                         const EvalPrompts& prompts, const EvalEmbeddings& e) {
  const size_t n = products.size();
  MOON_CHECK(e.has_text.size() == n && e.has_image.size() == n && e.has_views.size() == n,
             "task_metrics: the masks do not cover the ", n, " products");
  std::vector<std::pair<std::string, double>> out;
  std::vector<uint8_t> has_any(n);
  for (size_t i = 0; i < n; ++i) has_any[i] = e.has_text[i] || e.has_image[i];
  const std::vector<int64_t> texts = where(e.has_text), images = where(e.has_image), any = where(has_any);
  const std::vector<int64_t> both = where(e.has_text, &e.has_image);

  if (!both.empty()) {
    Tensor sim;  // (both, images)
    add_retrieval(out, "t2i", e.T, both, e.V, images, &sim);
    // t2i.class@1: the top-1 image (first of equal scores) has the query's full category path
    const std::vector<float> s = sim.to_vector<float>();
    const int64_t nc = static_cast<int64_t>(images.size());
    int64_t same = 0;
    for (size_t k = 0; k < both.size(); ++k) {
      const float* row = s.data() + static_cast<int64_t>(k) * nc;
      const int64_t top = std::max_element(row, row + nc) - row;
      same += products[static_cast<size_t>(both[k])].category == products[static_cast<size_t>(images[top])].category;
    }
    out.emplace_back("t2i.class@1", static_cast<double>(same) / static_cast<double>(both.size()));
    add_retrieval(out, "i2t", e.V, both, e.T, texts);
  }
  if (!texts.empty()) add_retrieval(out, "t2mm", e.T, texts, e.P, any);
  const std::vector<int64_t> mm_queries = where(e.has_views, &e.has_text);
  if (!mm_queries.empty()) add_retrieval(out, "mm2mm", e.M, mm_queries, e.P, any);

  // zero-shot classification of the image rows among the leaf category names
  if (!prompts.classes.empty()) {
    std::map<std::string, int64_t> class_of;
    for (size_t c = 0; c < prompts.classes.size(); ++c) class_of[prompts.classes[c]] = static_cast<int64_t>(c);
    std::vector<int64_t> items, truth;
    for (int64_t i : images)
      if (!products[static_cast<size_t>(i)].category.empty()) {
        items.push_back(i);
        truth.push_back(class_of.at(products[static_cast<size_t>(i)].category.back()));
      }
    if (!items.empty()) {
      out.emplace_back("zeroshot.acc", classify(e.V, items, e.classes, truth));
      out.emplace_back("zeroshot.classes", static_cast<double>(prompts.classes.size()));
    }
  }

  // attribute prediction: per key, the image rows among "key: value" prompts
  std::vector<std::pair<std::string, double>> per_key;
  for (size_t a = 0; a < prompts.attributes.size(); ++a) {
    const auto& [key, values] = prompts.attributes[a];
    std::vector<int64_t> items, truth;
    for (int64_t i : images)
      for (const auto& [k, v] : products[static_cast<size_t>(i)].attributes)
        if (k == key) {  // the product's first value of the key
          const auto it = std::find(values.begin(), values.end(), v);
          if (it != values.end()) {
            items.push_back(i);
            truth.push_back(it - values.begin());
          }
          break;
        }
    if (!items.empty()) per_key.emplace_back("attr." + key + ".acc", classify(e.V, items, e.attributes[a], truth));
  }
  if (!per_key.empty()) {
    double mean = 0;
    for (const auto& kv : per_key) mean += kv.second;
    out.emplace_back("attr.acc", mean / static_cast<double>(per_key.size()));
    out.emplace_back("attr.keys", static_cast<double>(per_key.size()));
    out.insert(out.end(), per_key.begin(), per_key.end());
  }

  // same-product matching across the two augmented views
  const std::vector<int64_t> viewed = where(e.has_views);
  if (!viewed.empty()) {
    const RetrievalMetrics m =
        retrieval_metrics(similarity(gather_rows(e.A1, viewed), gather_rows(e.A2, viewed)), positions_in(viewed, viewed));
    out.emplace_back("match.R@1", m.r1);
    out.emplace_back("match.MRR", m.mrr);
  }
  return out;
}

// ---- embedding

namespace {

// Row-by-product storage of one view: (n, D) values and which rows were written.
struct ViewRows {
  std::vector<float> values;  // (n, D) row-major
  std::vector<uint8_t> present;
  int64_t D = 0;
  ViewRows(size_t n, int64_t dim) : values(n * static_cast<size_t>(dim)), present(n), D(dim) {}
  // Stores the rows of e (k, D) at products `at` (k).
  void put(const Tensor& e, const std::vector<int64_t>& at) {
    const float* src = e.data<float>();
    for (size_t k = 0; k < at.size(); ++k) {
      std::copy_n(src + static_cast<int64_t>(k) * D, D, values.data() + at[k] * D);
      present[static_cast<size_t>(at[k])] = 1;
    }
  }
  Tensor tensor() const { return from_vector(values, {static_cast<int64_t>(present.size()), D}); }
};

// Everything evaluate() needs to embed rows.
struct Embedder {
  const model::MoonModel& model;
  model::SpecialTokens special;
  int64_t reason_tokens;

  // (rows, D) embeddings; with reason_tokens > 0 and `reason`, each row first gets greedy reasoning.
  Tensor embed(std::vector<model::InputRow> rows, const Tensor& images, bool reason) const {
    if (rows.empty()) return Tensor();
    if (reason && reason_tokens > 0) add_reasoning(rows, images);
    return model::embed_rows(model, rows, images, special);
  }

  // Greedy reasoning (stop at </think>) as GRPO's rollouts do, without sampling: rows get has_reasoning.
  void add_reasoning(std::vector<model::InputRow>& rows, const Tensor& images) const {
    std::vector<model::InputRow> prompts = rows;
    for (model::InputRow& r : prompts) r.prompt = true;
    model::GenerateOptions g;
    g.max_new_tokens = reason_tokens;
    g.temperature = 0.0;
    g.stop_token = special.think_end;
    const auto tokens = model::generate(model, model::assemble(prompts, images, special, model.config()), g);
    for (size_t r = 0; r < rows.size(); ++r) {
      std::vector<int64_t> o = tokens[r];
      if (!o.empty() && o.back() == special.think_end) o.pop_back();
      rows[r].reasoning = std::move(o);
      rows[r].has_reasoning = true;
    }
  }

  // Text-only rows of `texts`, embedded in batches: (texts, D).
  Tensor embed_texts(const io::BpeTokenizer& tokenizer, const std::vector<std::string>& texts, int64_t batch,
                     int64_t max_tokens, const std::string& what) const {
    std::vector<Tensor> parts;
    for (size_t start = 0; start < texts.size(); start += static_cast<size_t>(batch)) {
      std::vector<model::InputRow> rows;
      for (size_t k = start; k < std::min(texts.size(), start + static_cast<size_t>(batch)); ++k) {
        model::InputRow row;
        for (int32_t id : tokenizer.encode(texts[k])) row.text.push_back(id);
        if (static_cast<int64_t>(row.text.size()) > max_tokens) row.text.resize(static_cast<size_t>(max_tokens));
        MOON_CHECK(!row.text.empty(), what, " '", texts[k], "' has no tokens");
        model::check_vocab(row, model.config().decoder.vocab, what + " '" + texts[k] + "'");
        rows.push_back(std::move(row));
      }
      parts.push_back(model::embed_rows(model, rows, Tensor(), special));
    }
    if (parts.empty()) return empty({0, model.config().embedding.dim});
    if (parts.size() == 1) return parts[0];
    std::vector<float> all;
    for (const Tensor& p : parts) {
      const std::vector<float> v = p.to_vector<float>();
      all.insert(all.end(), v.begin(), v.end());
    }
    return from_vector(all, {static_cast<int64_t>(texts.size()), model.config().embedding.dim});
  }
};

}  // namespace

EvalEmbeddings eval_embeddings(const model::MoonModel& model, const io::BpeTokenizer& tokenizer,
                               const io::Manifest& evaluated, const EvalPrompts& prompts, const EvalOptions& options) {
  MOON_CHECK(options.batch > 0, "evaluate: batch must be positive, got ", options.batch);
  const auto subset = std::make_shared<const io::Manifest>(evaluated);
  const std::vector<io::Product>& products = subset->products;
  const size_t n = products.size();
  const int64_t D = model.config().embedding.dim;
  // a tokenizer handle the loader can share (the caller keeps `tokenizer` alive for the whole call)
  const std::shared_ptr<const io::BpeTokenizer> tok(std::shared_ptr<const io::BpeTokenizer>(), &tokenizer);
  const Embedder embedder{model, model::SpecialTokens::from(tokenizer), options.reason_tokens};

  ViewRows P(n, D), T(n, D), V(n, D), M(n, D), A1(n, D), A2(n, D);
  model::Progress progress("moon eval", static_cast<int64_t>(2 * n), options.progress);
  int64_t done = 0;
  for (int pass = 0; pass < 2; ++pass) {
    // pass 0: plain images -> P, T, V; pass 1: two augmented views -> M, A1, A2
    io::LoaderOptions o = model::eval_loader_options(model.config(), options.batch, options.max_tokens, options.workers);
    o.bad_images = io::BadRecords::Skip;
    o.seed = options.seed;
    if (pass == 1) {
      o.augment = true;
      o.views = 2;
    }
    io::DataLoader loader(subset, tok, o);
    for (int64_t k = 0; k < loader.batches_per_epoch(); ++k) {
      const io::Batch b = loader.next();
      const std::vector<model::InputRow> rows = model::rows_from_loader(b);
      const std::vector<int64_t> index = b.product_index.to_vector<int64_t>();
      std::vector<model::InputRow> any, text_only, image_only, mm;
      std::vector<int64_t> at_both, at_text, at_image, at_any;
      for (size_t r = 0; r < rows.size(); ++r) {
        const io::Product& p = products[static_cast<size_t>(index[r])];
        model::check_vocab(rows[r], model.config().decoder.vocab,
                           subset->path + ":" + std::to_string(p.line) + ": product '" + p.id + "'");
        const bool has_text = !rows[r].text.empty(), has_image = rows[r].image >= 0;
        if (has_text || has_image) {
          any.push_back(rows[r]);
          at_any.push_back(index[r]);
        }
        if (has_text) {
          model::InputRow row;
          row.text = rows[r].text;
          text_only.push_back(std::move(row));
          at_text.push_back(index[r]);
        }
        if (has_image) {
          model::InputRow row;
          row.image = rows[r].image;
          image_only.push_back(row);
          at_image.push_back(index[r]);
        }
        if (has_text && has_image) {
          mm.push_back(rows[r]);
          at_both.push_back(index[r]);
        }
      }
      if (pass == 0) {
        if (!any.empty()) P.put(embedder.embed(any, b.images, true), at_any);
        if (!text_only.empty()) T.put(embedder.embed(text_only, Tensor(), false), at_text);
        if (!image_only.empty()) V.put(embedder.embed(image_only, b.images, false), at_image);
      } else {
        if (!mm.empty()) M.put(embedder.embed(mm, b.images, true), at_both);
        if (!image_only.empty()) {
          A1.put(embedder.embed(image_only, b.images, false), at_image);
          A2.put(embedder.embed(image_only, b.images2, false), at_image);
        }
      }
      done += static_cast<int64_t>(rows.size());
      progress.update(done, pass == 1 && k + 1 == loader.batches_per_epoch());
    }
  }

  EvalEmbeddings e;
  e.P = P.tensor();
  e.T = T.tensor();
  e.V = V.tensor();
  e.M = M.tensor();
  e.A1 = A1.tensor();
  e.A2 = A2.tensor();
  e.has_text = T.present;
  e.has_image = V.present;
  e.has_views = A1.present;
  e.classes = embedder.embed_texts(tokenizer, prompts.classes, options.batch, options.max_tokens, "zero-shot class");
  for (const auto& [key, values] : prompts.attributes) {
    std::vector<std::string> texts;
    for (const std::string& v : values) texts.push_back(key + ": " + v);
    e.attributes.push_back(embedder.embed_texts(tokenizer, texts, options.batch, options.max_tokens, "attribute prompt"));
  }
  return e;
}

EvalReport evaluate(const model::MoonModel& model, const io::BpeTokenizer& tokenizer, const io::Manifest& manifest,
                    const EvalOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  io::Manifest subset;
  subset.path = manifest.path;
  subset.folder = manifest.folder;
  subset.products = eval_products(manifest, options);
  MOON_CHECK(!subset.products.empty(), manifest.path, ": no products",
             options.split.empty() ? std::string() : " in split '" + options.split + "'",
             " to evaluate (check --split; `moon data validate ", manifest.path, "` lists the splits)");
  const EvalPrompts prompts = eval_prompts(subset.products);
  const EvalEmbeddings e = eval_embeddings(model, tokenizer, subset, prompts, options);
  EvalReport report;
  report.metrics = task_metrics(subset.products, prompts, e);
  report.products = static_cast<int64_t>(subset.products.size());
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace moon::training
