// End-to-end model step times: forward and forward+backward of a shipped config (default `small`) on a
// synthetic batch of image+text rows, in f32 and bf16 compute. The peer is the PyTorch twin
// (scripts/moon_twin.py bench) on the same config, batch shape, thread count and dtype;
// scripts/bench_model_report.py runs both back to back and prints the ratios.
// Counters: tokens = B*T decoder positions per call (shown per second).
#include <map>

#include "bench/bench_common.h"
#include "model/moon_model.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"
#include "runtime/rng.h"

namespace moon::bench {
namespace {

struct Setup {
  std::unique_ptr<model::MoonModel> model;
  model::ModelBatch batch;
};

// The model of `config` with a batch of B image+text rows of `text_len` random tokens (seeded).
Setup& setup_for(const std::string& config, int64_t B, int64_t text_len) {
  static std::map<std::string, Setup> cache;
  const std::string key = config + "/" + std::to_string(B) + "/" + std::to_string(text_len);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  Setup s;
  s.model = std::make_unique<model::MoonModel>(model::load_config(config));
  const auto& c = s.model->config();
  Generator gen(1);
  Tensor images = randn({B, 3, c.vision.image_size, c.vision.image_size}, gen);  // (B, 3, S, S)
  Tensor ids = randint({B, text_len}, gen, 16, c.decoder.vocab);                   // (B, L)
  std::vector<int64_t> flat = ids.to_vector<int64_t>();
  std::vector<model::InputRow> rows(B);
  for (int64_t b = 0; b < B; ++b) {
    rows[b].image = b;
    rows[b].text.assign(flat.begin() + b * text_len, flat.begin() + (b + 1) * text_len);
  }
  s.batch = model::assemble(rows, images, model::SpecialTokens{}, c);
  return cache.emplace(key, std::move(s)).first->second;
}

void model_step(benchmark::State& state, const std::string& config, DType dtype, bool backward) {
  Setup& s = setup_for(config, state.range(0), state.range(1));
  s.model->compute().dtype = dtype;
  auto once = [&] {
    if (!backward) {
      NoGradGuard no_grad;
      model::ModelOutput out = s.model->forward(s.batch);
      benchmark::DoNotOptimize(out.embedding.raw_data());
      return;
    }
    s.model->params().zero_grad();
    model::ModelOutput out = s.model->forward(s.batch);
    model::parity_loss(out, s.model->config()).backward();
  };
  once();  // warm-up: oneDNN primitives, allocator caches
  for (auto _ : state) {
    const auto t0 = Clock::now();
    once();
    state.SetIterationTime(seconds_since(t0));
  }
  const double tokens = static_cast<double>(s.batch.token_ids.numel());
  state.counters["tokens"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  s.model->compute().dtype = DType::F32;
}

void model_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "L"})->Args({8, 24})->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
}

BENCHMARK_CAPTURE(model_step, forward_small_f32, std::string("small"), DType::F32, false)->Apply(model_args);
BENCHMARK_CAPTURE(model_step, fwd_bwd_small_f32, std::string("small"), DType::F32, true)->Apply(model_args);
BENCHMARK_CAPTURE(model_step, forward_small_bf16, std::string("small"), DType::BF16, false)->Apply(model_args);
BENCHMARK_CAPTURE(model_step, fwd_bwd_small_bf16, std::string("small"), DType::BF16, true)->Apply(model_args);

}  // namespace
}  // namespace moon::bench
