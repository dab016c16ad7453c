// One contrastive training step of a shipped config (default `small`), in f32 and bf16 compute: the four views
// of B image+text products (docs/training.md section 1), L_con with every part on, backward, global gradient
// clipping at 1.0 and an AdamW update. The peer is the PyTorch twin (scripts/train_twin.py bench) on the same
// config, products, text length and threads; scripts/bench_train_report.py runs both and prints the ratios.
// Counters: products = B per step (shown per second), peak_rss_mb = the process's peak resident set
// (getrusage), so run one dtype per process (--benchmark_filter) for a clean figure.
#include <sys/resource.h>

#include <map>

#include "bench/bench_common.h"
#include "io/data_loader.h"
#include "model/moon_model.h"
#include "runtime/rng.h"
#include "training/contrastive_step.h"
#include "training/optimizer.h"

namespace moon::bench {
namespace {

constexpr int64_t kTextLen = 24;  // tokens of title + attributes per product (as bench_model)

struct TrainSetup {
  std::unique_ptr<model::MoonModel> model;
  training::ContrastiveViews views;
  training::ContrastiveOptions options;
  Tensor logit_scale;
  std::unique_ptr<training::AdamW> optimizer;
  training::NamedParams params;  // the model's parameters and train.logit_scale
};

// A loader batch of B image+text products (random pixels for both views, random tokens, 8 categories).
io::Batch synthetic_batch(const model::ModelConfig& c, int64_t B) {
  Generator gen(1);
  const int64_t S = c.vision.image_size;
  io::Batch batch;
  batch.images = randn({B, 3, S, S}, gen);   // (B, 3, S, S) f32
  batch.images2 = randn({B, 3, S, S}, gen);  // (B, 3, S, S) f32, the second augmentation
  batch.token_ids = randint({B, kTextLen}, gen, 16, c.decoder.vocab);  // (B, L) i64
  batch.attention_mask = ones({B, kTextLen}, DType::I64);
  batch.has_image = ones({B}, DType::I64);
  std::vector<int64_t> labels(B), index(B);
  for (int64_t b = 0; b < B; ++b) labels[b] = b % 8, index[b] = b;
  batch.labels = from_vector(labels, {B}, DType::I64);
  batch.product_index = from_vector(index, {B}, DType::I64);
  return batch;
}

// The model, views, temperature and optimizer of (config, B), built once and cached.
TrainSetup& setup_for(const std::string& config, int64_t B) {
  static std::map<std::string, TrainSetup> cache;
  const std::string key = config + "/" + std::to_string(B);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  TrainSetup s;
  s.model = std::make_unique<model::MoonModel>(model::load_config(config));
  const auto& c = s.model->config();
  s.views = training::make_views(synthetic_batch(c, B));
  s.options.matryoshka_dims = c.embedding.matryoshka;
  s.options.aux_weight = c.moe.enabled ? c.moe.aux_weight : 0.0;
  s.logit_scale = training::make_logit_scale(s.options);
  s.params = s.model->params().all();
  s.params.emplace_back("train.logit_scale", s.logit_scale);
  s.optimizer = std::make_unique<training::AdamW>(s.params, training::AdamWOptions{.weight_decay = 0.05});
  return cache.emplace(key, std::move(s)).first->second;
}

// The process's peak resident set so far, MB.
double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

// One timed training step per iteration: drop gradients, contrastive_step (chunk 0), clip at 1.0, AdamW.
void train_step(benchmark::State& state, const std::string& config, DType dtype) {
  TrainSetup& s = setup_for(config, state.range(0));
  s.model->compute().dtype = dtype;
  auto once = [&] {
    for (auto& [name, p] : s.params) p.zero_grad();
    training::contrastive_step(*s.model, s.views, model::SpecialTokens{}, s.logit_scale, s.options, 0.2, 0);
    training::clip_grad_norm(s.params, 1.0);
    s.optimizer->step(1e-4);
  };
  once();  // warm-up: oneDNN primitives, allocator caches, optimizer state
  for (auto _ : state) {
    const auto t0 = Clock::now();
    once();
    state.SetIterationTime(seconds_since(t0));
  }
  state.counters["products"] = benchmark::Counter(static_cast<double>(state.range(0)), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_rss_mb"] = benchmark::Counter(peak_rss_mb());
  s.model->compute().dtype = DType::F32;
}

void train_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B"})->Arg(32)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(3.0);
}

BENCHMARK_CAPTURE(train_step, small_f32, std::string("small"), DType::F32)->Apply(train_args);
BENCHMARK_CAPTURE(train_step, small_bf16, std::string("small"), DType::BF16)->Apply(train_args);

}  // namespace
}  // namespace moon::bench
