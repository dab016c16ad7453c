// Data-loader throughput: products per second for decode + preprocess (+ augmentation) + tokenize, pulling
// batches of 32 from io::DataLoader as fast as they come (the consumer does nothing, so this is the rate
// the loader can sustain, the ceiling it puts on a training step).
//
// Data: real products, imported once into ${MOON_CACHE}/bench-data/<source> (`moon data import` with a
// --limit): openclipart (colour PNGs of various sizes, alpha) and fashion-mnist (28x28 grey PNGs). A 4k BPE
// vocabulary is trained on the titles. The peer is scripts/bench_loader_peer.py: Pillow + numpy doing the
// same per-product image work (open, RGB on white, bicubic shortest-side resize, centre crop, CLIP
// normalisation) in one Python process, measured in the same run on the same images. Counters:
//   products    ours (shown per second)
//   peer_products/s  Pillow, one process (0 when /usr/bin/python3 or PIL is missing)
//   ratio       ours / peer (with w1 both use one core; w2 is the loader on both cores)
//   stall       fraction of the wall time next() waited for a worker (1.0 = always waiting: the consumer
//               is infinitely fast here, so this is expected; in training it must be ~0)
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "bench/bench_common.h"
#include "io/bpe_trainer.h"
#include "io/data_loader.h"
#include "io/importer.h"
#include "io/product_text.h"

namespace moon::bench {
namespace {

namespace fs = std::filesystem;
const fs::path kSourceDir = fs::path(__FILE__).parent_path().parent_path();

struct DataSet {
  std::shared_ptr<const io::Manifest> manifest;
  std::shared_ptr<const io::BpeTokenizer> tokenizer;
};

// The imported data set `source` (imported on first use), with a tokenizer trained on its text.
const DataSet& data_set(const std::string& source, size_t limit) {
  static std::map<std::string, DataSet> cache;
  auto it = cache.find(source);
  if (it != cache.end()) return it->second;
  io::ImportOptions options;
  options.out_dir = io::moon_cache_dir() + "/bench-data/" + source + "-" + std::to_string(limit);
  options.limit = limit;
  options.progress = false;
  if (!fs::exists(options.out_dir + "/manifest.jsonl")) {
    std::fprintf(stderr, "bench_loader: importing %s (--limit %zu) into %s\n", source.c_str(), limit,
                 options.out_dir.c_str());
    io::import_source(source, options);
  }
  DataSet d;
  d.manifest = std::make_shared<const io::Manifest>(
      io::load_manifest(options.out_dir + "/manifest.jsonl", io::BadRecords::Stop));
  std::vector<std::string> texts;
  for (const auto& p : d.manifest->products) texts.push_back(io::product_text(p));
  d.tokenizer = std::make_shared<const io::BpeTokenizer>(io::train_bpe(texts, 4096, io::PreTokenizer::Gpt2));
  return cache.emplace(source, std::move(d)).first->second;
}

// Pillow's products/s on the same manifest and size (0 if the script cannot run).
double peer_products_per_s(const io::Manifest& manifest, int size, int count) {
  static std::map<std::string, double> cache;
  const std::string key = manifest.path + "@" + std::to_string(size);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const std::string cmd = "/usr/bin/python3 '" + (kSourceDir / "scripts/bench_loader_peer.py").string() +
                          "' --manifest '" + manifest.path + "' --size " + std::to_string(size) + " --count " +
                          std::to_string(count) + " 2>/dev/null";
  double rate = 0;
  if (FILE* pipe = popen(cmd.c_str(), "r")) {
    std::string out;
    char buf[512];
    while (fgets(buf, sizeof buf, pipe)) out += buf;
    if (pclose(pipe) == 0) {
      try {
        rate = nlohmann::json::parse(out).at("products_per_s").get<double>();
      } catch (const std::exception&) {
        rate = 0;
      }
    }
  }
  return cache[key] = rate;
}

// Args: size, workers, augment (0/1). Name: loader/<source>/<size>/<workers>/<augment>.
void loader_bench(benchmark::State& state, const std::string& source, size_t limit) {
  const DataSet& data = data_set(source, limit);
  io::LoaderOptions o;
  o.batch_size = 32;
  o.image.size = static_cast<int>(state.range(0));
  o.workers = static_cast<int>(state.range(1));
  o.augment = state.range(2) != 0;
  o.augmentation.brightness = o.augmentation.contrast = o.augmentation.saturation = 0.2f;
  io::DataLoader loader(data.manifest, data.tokenizer, o);
  loader.next();  // warm-up: threads started, first images in the page cache
  const io::LoaderStats before = loader.stats();
  double total = 0;
  for (auto _ : state) {
    const Clock::time_point t0 = Clock::now();
    benchmark::DoNotOptimize(loader.next());
    const double t = seconds_since(t0);
    total += t;
    state.SetIterationTime(t);
  }
  const io::LoaderStats after = loader.stats();
  const double products = static_cast<double>(after.products - before.products);
  const double peer = peer_products_per_s(*data.manifest, o.image.size, 256);
  const double ours = total > 0 ? products / total : 0;
  state.counters["products"] = benchmark::Counter(products, benchmark::Counter::kIsRate);
  state.counters["peer_products/s"] = peer;
  state.counters["ratio"] = peer > 0 ? ours / peer : 0;
  state.counters["stall"] = total > 0 ? (after.wait_seconds - before.wait_seconds) / total : 0;
}

void loader_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"size", "workers", "augment"});
  for (int size : {64, 224})
    for (int workers : {1, 2}) b->Args({size, workers, 0});
  b->Args({224, 2, 1});
  b->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
}

BENCHMARK_CAPTURE(loader_bench, openclipart, std::string("openclipart"), size_t{512})->Apply(loader_args);
BENCHMARK_CAPTURE(loader_bench, fashion_mnist, std::string("fashion-mnist"), size_t{2048})->Apply(loader_args);

}  // namespace
}  // namespace moon::bench
