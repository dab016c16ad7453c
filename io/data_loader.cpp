#include "io/data_loader.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "io/epoch_order.h"
#include "io/image.h"
#include "runtime/error.h"
#include "runtime/rng.h"

namespace moon::io {

namespace {

using Clock = std::chrono::steady_clock;

std::string category_key(const Product& p) {
  std::string key;
  for (const auto& part : p.category) key += (key.empty() ? "" : "/") + part;
  return key;
}

}  // namespace

// ---- the epoch permutations: computed once per epoch, shared by the workers building its batches
struct DataLoader::OrderCache {
  std::mutex mu;
  std::map<int64_t, std::shared_ptr<const std::vector<int64_t>>> by_epoch;  // the last few epochs
};

std::shared_ptr<const std::vector<int64_t>> DataLoader::order_of(int64_t epoch) const {
  {
    std::lock_guard<std::mutex> lock(orders_->mu);
    auto it = orders_->by_epoch.find(epoch);
    if (it != orders_->by_epoch.end()) return it->second;
  }
  auto order = std::make_shared<const std::vector<int64_t>>(
      epoch_order(options_.seed, epoch, static_cast<int64_t>(manifest_->products.size()), options_.shuffle));
  std::lock_guard<std::mutex> lock(orders_->mu);
  orders_->by_epoch[epoch] = order;
  while (orders_->by_epoch.size() > 3) orders_->by_epoch.erase(orders_->by_epoch.begin());
  return order;
}

// ---- the background pipeline: job j is the j-th batch after the start position
struct DataLoader::Pipeline {
  struct Result {
    Batch batch;
    std::exception_ptr error;
    double seconds = 0;
  };
  const DataLoader& loader;
  LoaderState start;
  int64_t window;  // jobs allowed ahead of the consumer

  std::mutex mu;
  std::condition_variable work_cv, ready_cv;
  int64_t next_job = 0, consumed = 0;
  bool stopping = false;
  std::map<int64_t, Result> ready;
  std::vector<std::thread> threads;
  LoaderStats stats;

  Pipeline(const DataLoader& owner, LoaderState from, int workers, int prefetch)
      : loader(owner), start(from), window(static_cast<int64_t>(workers) * std::max(1, prefetch)) {
    for (int w = 0; w < workers; ++w) threads.emplace_back([this] { work(); });
  }

  ~Pipeline() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stopping = true;
    }
    work_cv.notify_all();
    for (auto& t : threads) t.join();
  }

  // The (epoch, batch) of job j.
  std::pair<int64_t, int64_t> position(int64_t job) const {
    const int64_t per_epoch = loader.batches_per_epoch_;
    const int64_t linear = start.batch_in_epoch + job;
    return {start.epoch + linear / per_epoch, linear % per_epoch};
  }

  void work() {
    omp_set_num_threads(1);  // the workers are the parallelism; no nested OpenMP teams
    for (;;) {
      int64_t job;
      {
        std::unique_lock<std::mutex> lock(mu);
        work_cv.wait(lock, [&] { return stopping || next_job < consumed + window; });
        if (stopping) return;
        job = next_job++;
      }
      Result result;
      const auto t0 = Clock::now();
      try {
        const auto [epoch, batch] = position(job);
        result.batch = loader.build_batch(epoch, batch);
      } catch (...) {
        result.error = std::current_exception();
      }
      result.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      {
        std::lock_guard<std::mutex> lock(mu);
        ready.emplace(job, std::move(result));
      }
      ready_cv.notify_all();
    }
  }

  Batch take() {
    const auto t0 = Clock::now();
    std::unique_lock<std::mutex> lock(mu);
    ready_cv.wait(lock, [&] { return ready.count(consumed) > 0; });
    Result result = std::move(ready.at(consumed));
    ready.erase(consumed);
    ++consumed;
    stats.wait_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    stats.work_seconds += result.seconds;
    lock.unlock();
    work_cv.notify_all();
    if (result.error) std::rethrow_exception(result.error);
    return std::move(result.batch);
  }

  LoaderState state() {
    std::lock_guard<std::mutex> lock(mu);
    const auto [epoch, batch] = position(consumed);
    return LoaderState{start.seed, epoch, batch};
  }
};

DataLoader::DataLoader(std::shared_ptr<const Manifest> manifest, std::shared_ptr<const BpeTokenizer> tokenizer,
                       LoaderOptions options)
    : manifest_(std::move(manifest)), tokenizer_(std::move(tokenizer)), options_(options),
      orders_(std::make_unique<OrderCache>()) {
  MOON_CHECK(manifest_ && tokenizer_, "DataLoader: a manifest and a tokenizer are required");
  const int64_t n = static_cast<int64_t>(manifest_->products.size());
  const int64_t b = options_.batch_size;
  MOON_CHECK(b > 0, "DataLoader: batch size must be positive, got ", b);
  MOON_CHECK(options_.max_tokens > 0, "DataLoader: max_tokens must be positive, got ", options_.max_tokens);
  options_.augmentation.size = options_.image.size;  // the augmented crop is already the model's input size
  options_.augmentation.filter = options_.image.filter;
  MOON_CHECK(options_.image.size > 0, "DataLoader: image size must be positive, got ", options_.image.size);
  MOON_CHECK(options_.views == 1 || options_.views == 2, "DataLoader: views must be 1 or 2, got ", options_.views);
  MOON_CHECK(options_.workers >= 0, "DataLoader: workers must be >= 0, got ", options_.workers);
  batches_per_epoch_ = options_.drop_last ? n / b : (n + b - 1) / b;
  MOON_CHECK(batches_per_epoch_ > 0, manifest_->path, ": ", n, " usable products, fewer than one batch of ", b,
             "; lower the batch size or add products");

  std::set<std::string> keys;
  for (const Product& p : manifest_->products) keys.insert(category_key(p));
  categories_.assign(keys.begin(), keys.end());
  product_label_.reserve(static_cast<size_t>(n));
  for (const Product& p : manifest_->products) {
    const auto it = std::lower_bound(categories_.begin(), categories_.end(), category_key(p));
    product_label_.push_back(it - categories_.begin());
  }
  start_pipeline(LoaderState{options_.seed, 0, 0});
}

DataLoader::~DataLoader() = default;

void DataLoader::start_pipeline(const LoaderState& from) {
  pipeline_.reset();  // joins the old workers first
  pipeline_ = std::make_unique<Pipeline>(*this, from, options_.workers, options_.prefetch);
}

Batch DataLoader::next() {
  Batch batch;
  if (options_.workers == 0) {
    const auto t0 = Clock::now();
    const LoaderState at = pipeline_->state();
    batch = build_batch(at.epoch, at.batch_in_epoch);
    std::lock_guard<std::mutex> lock(pipeline_->mu);
    ++pipeline_->consumed;
    pipeline_->stats.work_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  } else {
    batch = pipeline_->take();
  }
  std::lock_guard<std::mutex> lock(pipeline_->mu);
  LoaderStats& s = pipeline_->stats;
  ++s.batches;
  s.products += batch.product_index.numel();
  s.bad_images += static_cast<int64_t>(batch.skipped_images.size());
  if (s.first_bad_image.empty() && !batch.skipped_images.empty()) s.first_bad_image = batch.skipped_images.front();
  return batch;
}

LoaderState DataLoader::state() const { return pipeline_->state(); }

void DataLoader::restore(const LoaderState& state) {
  MOON_CHECK(state.seed == options_.seed, "DataLoader::restore: the saved state has seed ", state.seed,
             " but this loader was built with seed ", options_.seed, "; use the same seed to resume");
  MOON_CHECK(state.epoch >= 0 && state.batch_in_epoch >= 0 && state.batch_in_epoch < batches_per_epoch_,
             "DataLoader::restore: position (epoch ", state.epoch, ", batch ", state.batch_in_epoch,
             ") is outside this data set's ", batches_per_epoch_, " batches per epoch; was the manifest changed?");
  const LoaderStats kept = stats();
  start_pipeline(state);
  pipeline_->stats = kept;
}

LoaderStats DataLoader::stats() const {
  std::lock_guard<std::mutex> lock(pipeline_->mu);
  return pipeline_->stats;
}

size_t DataLoader::image_choice(const Product& product, int64_t epoch, int64_t index) const {
  if (!options_.augment || product.images.size() < 2) return 0;  // evaluation: always the first image
  const auto r = philox4x32(sample_stream(epoch, index), options_.seed ^ 0xbb67ae8584caa73bull);
  return static_cast<size_t>(r[0] % product.images.size());
}

// XORed into the seed for the second view's augmentation, so that both views are independent draws.
constexpr uint64_t kSecondViewKey = 0x3c6ef372fe94f82bull;

Batch DataLoader::build_batch(int64_t epoch, int64_t batch_in_epoch) const {
  const auto order = order_of(epoch);
  const int64_t n = static_cast<int64_t>(order->size());
  const int64_t first = batch_in_epoch * options_.batch_size;
  const int64_t rows = std::min(options_.batch_size, n - first);
  MOON_CHECK(rows > 0, "DataLoader: batch ", batch_in_epoch, " of epoch ", epoch, " is past the end");
  const int64_t size = options_.image.size;

  Batch batch;
  batch.epoch = epoch;
  batch.batch_in_epoch = batch_in_epoch;
  batch.images = zeros({rows, 3, size, size});  // (B, 3, S, S)
  std::vector<int64_t> has_image(static_cast<size_t>(rows), 0), labels, index;
  std::vector<std::vector<int32_t>> texts;
  float* pixels = batch.images.data<float>();
  float* pixels2 = nullptr;
  if (options_.views == 2) {
    batch.images2 = zeros({rows, 3, size, size});  // (B, 3, S, S)
    pixels2 = batch.images2.data<float>();
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = (*order)[static_cast<size_t>(first + r)];
    const Product& product = manifest_->products[static_cast<size_t>(i)];
    index.push_back(i);
    labels.push_back(product_label_[static_cast<size_t>(i)]);
    if (!product.images.empty()) {
      const std::string path = image_path(*manifest_, product, image_choice(product, epoch, i));
      try {
        const Image decoded = load_image(path, 3);
        const uint64_t stream = sample_stream(epoch, i);
        const Image image = options_.augment ? augment(decoded, options_.augmentation, options_.seed, stream) : decoded;
        preprocess_into(image, options_.image, pixels + r * 3 * size * size);  // row r: (3, S, S)
        if (pixels2) {  // the second view: the same picture under another augmentation stream
          const Image second = options_.augment
              ? augment(decoded, options_.augmentation, options_.seed ^ kSecondViewKey, stream) : decoded;
          preprocess_into(second, options_.image, pixels2 + r * 3 * size * size);
        }
        has_image[static_cast<size_t>(r)] = 1;
      } catch (const Error& e) {
        if (options_.bad_images == BadRecords::Stop)
          fail(manifest_->path, ":", product.line, ": product '", product.id, "': ", e.what(),
               " (fix or remove the image, or skip bad images)");
        batch.skipped_images.push_back(e.what());
      }
    }
    std::vector<int32_t> ids = tokenizer_->encode(product_text(product, options_.text));
    if (static_cast<int64_t>(ids.size()) > options_.max_tokens) ids.resize(static_cast<size_t>(options_.max_tokens));
    texts.push_back(std::move(ids));
  }

  int64_t t = options_.max_tokens;
  if (options_.pad_to_longest) {
    t = 1;
    for (const auto& ids : texts) t = std::max<int64_t>(t, static_cast<int64_t>(ids.size()));
  }
  const int32_t pad = tokenizer_->special_id("<pad>");
  std::vector<int64_t> token_ids(static_cast<size_t>(rows * t), pad), mask(static_cast<size_t>(rows * t), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (size_t k = 0; k < texts[static_cast<size_t>(r)].size(); ++k) {
      token_ids[static_cast<size_t>(r * t) + k] = texts[static_cast<size_t>(r)][k];
      mask[static_cast<size_t>(r * t) + k] = 1;
    }
  batch.has_image = from_vector(has_image, {rows}, DType::I64);
  batch.token_ids = from_vector(token_ids, {rows, t}, DType::I64);
  batch.attention_mask = from_vector(mask, {rows, t}, DType::I64);
  batch.labels = from_vector(labels, {rows}, DType::I64);
  batch.product_index = from_vector(index, {rows}, DType::I64);
  return batch;
}

std::string LoaderState::to_json() const {
  return nlohmann::json{{"seed", seed}, {"epoch", epoch}, {"batch_in_epoch", batch_in_epoch}}.dump();
}

LoaderState LoaderState::from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    fail("data loader state: not valid JSON (", e.what(), "); the checkpoint's loader state is damaged");
  }
  MOON_CHECK(j.is_object(), "data loader state: expected a JSON object, got ", j.type_name());
  LoaderState s;
  auto field = [&](const char* name) -> const nlohmann::json& {
    MOON_CHECK(j.contains(name) && j[name].is_number_integer(), "data loader state: field '", name,
               "' is missing or not an integer");
    return j[name];
  };
  s.seed = field("seed").get<uint64_t>();
  s.epoch = field("epoch").get<int64_t>();
  s.batch_in_epoch = field("batch_in_epoch").get<int64_t>();
  MOON_CHECK(s.epoch >= 0 && s.batch_in_epoch >= 0, "data loader state: negative position (epoch ", s.epoch,
             ", batch ", s.batch_in_epoch, ")");
  return s;
}

}  // namespace moon::io
