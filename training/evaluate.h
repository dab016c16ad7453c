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

EvalReport evaluate(const model::MoonModel& model, const io::BpeTokenizer& tokenizer, const io::Manifest& manifest,
                    const EvalOptions& options);

}  // namespace moon::training
