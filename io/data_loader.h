// DataLoader: turns a manifest into training batches (images, token ids, masks, labels) on background
// threads, so that the next batch is ready when a step ends.
//
// Determinism: batch k of epoch e holds the products at positions [k*B, (k+1)*B) of epoch_order(seed, e),
// and a product's augmentation is keyed by (seed, sample_stream(e, product)). So the batches depend only on
// (manifest, tokenizer, options, seed), never on the number of workers or on timing, and a loader restored
// from state() continues exactly where the saved one stopped.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/augment.h"
#include "io/bpe_tokenizer.h"
#include "io/image_transform.h"
#include "io/manifest_reader.h"
#include "io/product_text.h"
#include "runtime/tensor.h"

namespace moon::io {

struct LoaderOptions {
  int64_t batch_size = 32;
  PreprocessOptions image;           // size, filter, crop and normalisation of every image
  bool augment = false;              // random resized crop, flip and colour jitter (training)
  AugmentOptions augmentation;
  int views = 1;                     // 2: also a second, independently augmented view of each image (images2)
  int64_t max_tokens = 64;           // text tokens kept per product (the rest is cut)
  bool pad_to_longest = true;        // T = longest text in the batch; false: T = max_tokens always
  ProductTextOptions text;
  int workers = 2;                   // background threads; 0 builds each batch on the calling thread
  int prefetch = 2;                  // batches each worker may run ahead
  uint64_t seed = 0;
  bool shuffle = true;
  bool drop_last = true;             // drop an epoch's trailing partial batch, so every batch has B rows
  BadRecords bad_images = BadRecords::Stop;  // Skip: an unreadable image makes the product text-only
};

struct Batch {
  Tensor images;          // (B, 3, S, S) f32, normalised; zeros where has_image is 0. With several
                          // images, the first (or, when augmenting, one drawn per epoch and product)
  Tensor images2;         // (B, 3, S, S) f32: a second augmentation of the same image (views == 2 only;
                          // equal to images without augmentation), for multimodal queries and view matching
  Tensor has_image;       // (B,) i64: 1 where the product's image was decoded
  Tensor token_ids;       // (B, T) i64, right-padded with the tokenizer's <pad> id
  Tensor attention_mask;  // (B, T) i64: 1 on real tokens, 0 on padding
  Tensor labels;          // (B,) i64: index of the product's category in DataLoader::categories()
  Tensor product_index;   // (B,) i64: row of the product in the manifest
  int64_t epoch = 0;
  int64_t batch_in_epoch = 0;
  std::vector<std::string> skipped_images;  // "path: reason" for each image dropped (BadRecords::Skip)
};

// Where the loader is: the next batch next() returns. Saved with checkpoints (to_json / from_json).
struct LoaderState {
  uint64_t seed = 0;
  int64_t epoch = 0;
  int64_t batch_in_epoch = 0;
  std::string to_json() const;
  static LoaderState from_json(const std::string& text);  // throws naming the field on bad input
};

struct LoaderStats {
  int64_t batches = 0;          // batches returned by next()
  int64_t products = 0;         // products in those batches
  double wait_seconds = 0;      // time next() spent blocked waiting for a worker (a stalled step)
  double work_seconds = 0;      // time the workers spent building batches (decode + preprocess + tokenize)
  int64_t bad_images = 0;       // images skipped (BadRecords::Skip)
  std::string first_bad_image;  // "path: reason" of the first one
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Manifest> manifest, std::shared_ptr<const BpeTokenizer> tokenizer,
             LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  Batch next();                            // blocks until the next batch is ready; epochs roll over
  LoaderState state() const;               // the position of the batch the next call to next() returns
  void restore(const LoaderState& state);  // continue from a saved position (drops prefetched batches)

  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  const std::vector<std::string>& categories() const { return categories_; }  // "a/b/c", sorted
  LoaderStats stats() const;

  // Builds one batch on the calling thread (what the workers run). Pure: same arguments, same batch.
  Batch build_batch(int64_t epoch, int64_t batch_in_epoch) const;

 private:
  std::shared_ptr<const std::vector<int64_t>> order_of(int64_t epoch) const;
  // Which of a product's images a batch uses: the first, or with augmentation one drawn per (epoch, product).
  size_t image_choice(const Product& product, int64_t epoch, int64_t index) const;
  void start_pipeline(const LoaderState& from);

  struct Pipeline;  // worker threads and the ready queue
  std::shared_ptr<const Manifest> manifest_;
  std::shared_ptr<const BpeTokenizer> tokenizer_;
  LoaderOptions options_;
  int64_t batches_per_epoch_ = 0;
  std::vector<std::string> categories_;
  std::vector<int64_t> product_label_;  // (N,) category index per product
  struct OrderCache;                    // the permutations of the epochs being built
  std::unique_ptr<OrderCache> orders_;
  std::unique_ptr<Pipeline> pipeline_;
};

}  // namespace moon::io
