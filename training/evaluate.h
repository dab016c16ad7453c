// The mbe-local evaluation (docs/eval.md): cross-modal retrieval, zero-shot classification, attribute
// prediction and same-product matching on a manifest split, as used by `moon eval` and by `moon train`'s
// periodic evaluation.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/bpe_tokenizer.h"
#include "io/manifest_reader.h"
#include "model/moon_model.h"
#include "runtime/tensor.h"

namespace moon::training {

// Ranking metrics of a similarity matrix sim (Nq, Nc) where query i's single relevant candidate is
// relevant[i]: Recall@1/5/10 (fraction of queries whose relevant candidate ranks in the top K; ties count
// against the query) and MRR (mean of 1 / rank).
struct RetrievalMetrics {
  double r1 = 0, r5 = 0, r10 = 0, mrr = 0;
  int64_t queries = 0;
};
RetrievalMetrics retrieval_metrics(const Tensor& sim, const std::vector<int64_t>& relevant);

struct EvalOptions {
  std::string split = "test";
  size_t limit = 0;            // at most this many products of the split (spread over the file; 0: all)
  int64_t batch = 32;
  int workers = 2;
  int64_t max_tokens = 64;
  int64_t reason_tokens = 0;   // > 0: greedy reasoning of up to this many tokens before embedding (GRPO models)
  uint64_t seed = 0;           // the augmentation of the two views of same-product matching
  bool progress = true;        // a progress line on stderr
};

// Every metric by a flat name ("t2i.R@1", "i2t.MRR", "mm2mm.R@10", "zeroshot.acc", "attr.acc",
// "attr.<key>.acc", "match.R@1", ...), in a fixed order.
struct EvalReport {
  std::vector<std::pair<std::string, double>> metrics;
  int64_t products = 0;
  double seconds = 0;
  double get(const std::string& name) const;  // throws naming the metric if absent
  std::string table() const;                   // the printed table
  std::string to_json() const;                 // {"products":..,"seconds":..,"metrics":{...}}
};

// ---- the parts behind evaluate(), usable on embeddings made any other way (tests, the trainer)

// What is embedded besides the products: the zero-shot classes (the distinct leaf category names, sorted)
// and the attribute keys that qualify (at least 2 values, each on at least 2 products; keys and values sorted).
struct EvalPrompts {
  std::vector<std::string> classes;
  std::vector<std::pair<std::string, std::vector<std::string>>> attributes;  // key -> its kept values
};
EvalPrompts eval_prompts(const std::vector<io::Product>& products);

// The embeddings of the evaluated products, row i = products[i]; a row of a view the product lacks is
// ignored. Each view has its own has_* mask (an image may fail to decode in one pass and not the other).
struct EvalEmbeddings {
  Tensor P, T, V;                           // (n, D) f32 unit rows: image + text, text only, image only
  Tensor M, A1, A2;                         // (n, D): augmented view 1 + text, view 1 only, view 2 only
  std::vector<uint8_t> has_text, has_image;  // (n): T exists / V exists (P exists when either does)
  std::vector<uint8_t> has_views;           // (n): A1 and A2 exist (M exists when has_text too)
  Tensor classes;                           // (C, D) the text rows of EvalPrompts::classes
  std::vector<Tensor> attributes;           // per EvalPrompts::attributes key: (values, D)
};

// Every task's metrics (docs/eval.md) in the fixed order; a task whose query set is empty is left out.
std::vector<std::pair<std::string, double>> task_metrics(const std::vector<io::Product>& products,
                                                         const EvalPrompts& prompts, const EvalEmbeddings& e);

// The products evaluate() scores: those of options.split (all when empty), at most options.limit of them at
// indices floor(i * n / limit).
std::vector<io::Product> eval_products(const io::Manifest& manifest, const EvalOptions& options);

// Every embedding of EvalEmbeddings for all products of `evaluated` (already the split and limit: see
// eval_products), in two loader passes (plain images; two augmented views keyed by options.seed), batched.
EvalEmbeddings eval_embeddings(const model::MoonModel& model, const io::BpeTokenizer& tokenizer,
                               const io::Manifest& evaluated, const EvalPrompts& prompts, const EvalOptions& options);

// eval_products, eval_prompts, eval_embeddings, task_metrics; timed.
EvalReport evaluate(const model::MoonModel& model, const io::BpeTokenizer& tokenizer, const io::Manifest& manifest,
                    const EvalOptions& options);

}  // namespace moon::training
