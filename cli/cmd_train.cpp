// `moon train`: contrastive + GRPO training of a config on a manifest into a run folder (docs/training.md),
// with exact resume (--resume) and a SIGINT handler that checkpoints before exiting with status 130.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "io/file_util.h"
#include "model/config.h"
#include "runtime/error.h"
#include "training/run_state.h"
#include "training/trainer.h"

namespace moon::cli {
namespace {

const char* const kUsage =
    "usage: moon train --config CFG --manifest M --out RUN_DIR [--steps N] [--resume] [options]\n"
    "  Trains a model on the manifest's train split (contrastive, then + GRPO with --grpo-start), evaluating on\n"
    "  its val split, into RUN_DIR: run.json, tokenizer.json, metrics.jsonl, checkpoints/, model.safetensors\n"
    "  (docs/training.md). Ctrl-C finishes the step, writes a checkpoint and exits with status 130.\n"
    "  --config CFG        tiny, small, base or a config JSON (default small)\n"
    "  --set S.F=V         override a config field, e.g. --set moe.enabled=false (repeatable)\n"
    "  --manifest M        products (docs/manifest.md); bad lines are skipped and counted\n"
    "  --out RUN_DIR       the run folder: must be empty or new, unless --resume\n"
    "  --resume            continue from RUN_DIR's newest checkpoint, exactly (options default to run.json's)\n"
    "  --steps N           optimizer steps of the run (default 1000)\n"
    "  --stop-after N      stop with a checkpoint after N steps, keeping the schedule of --steps (default: off)\n"
    "  --batch N           products per batch (default 32); --accum K batches per step (default 1)\n"
    "  --chunk N           gradient caching: forwards of at most N rows (default 0: off)\n"
    "  --lr X              peak learning rate (default 3e-4), cosine to lr/10; --warmup N steps (default 50)\n"
    "  --weight-decay X    AdamW decay on matrices (default 0.05); --clip X gradient-norm clip (default 1)\n"
    "  --bf16              matrix products in bf16 (f32 accumulation and master weights)\n"
    "  --workers N         data-loader threads (default 2); --max-tokens N text tokens per product (default 32)\n"
    "  --seed S            every random draw is keyed by (seed, step, row) (default 0)\n"
    "  --eval-every N      evaluate on the val split every N steps (default 0: before and after only)\n"
    "  --eval-limit N      products evaluated (default 500; 0: no evaluation)\n"
    "  --save-every N      checkpoint every N steps (default 100; also at the end); --keep K newest (default 3)\n"
    "  --max-bad-steps N   stop after N steps with a NaN/Inf loss or gradient (default 5)\n"
    "  --tokenizer T       a tokenizer folder or tokenizer.json (default: RUN_DIR's on resume, else one trained\n"
    "                      on the training text, vocabulary min(decoder.vocab, 2048))\n"
    "  --init CKPT         start from a model checkpoint of the same config instead of fresh weights\n"
    "  --grpo-start N      first GRPO step (default -1: off); --grpo-weight X lambda (default 0.1)\n"
    "  --group G           rollouts per anchor (default 4); --anchors A per batch (default 4)\n"
    "  --reason-tokens N   new tokens per rollout (default 16)\n"
    "  --no-filtering      no dynamic sample filtering; --no-intra: no intra-product (image <-> text) loss\n"
    "  --matryoshka D,..   Matryoshka prefix sizes (default: the config's embedding.matryoshka; 'none': off)\n"
    "  --quiet             no progress line and no evaluation table\n";

std::atomic<bool> g_interrupted{false};

// First Ctrl-C: finish the step and checkpoint; a second one exits at once.
extern "C" void on_sigint(int) {
  if (g_interrupted.exchange(true)) _exit(130);
  const char msg[] = "\nmoon train: interrupted: finishing the step and writing a checkpoint (Ctrl-C again to quit now)\n";
  [[maybe_unused]] ssize_t n = write(2, msg, sizeof msg - 1);
}

// Every value of a repeatable flag.
std::vector<std::string> all_values(const Args& args, const std::string& flag) {
  std::vector<std::string> out;
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == flag) out.push_back(args[i + 1]);
  return out;
}

int64_t int_flag(const Args& args, const std::string& flag, int64_t fallback, int64_t lo, int64_t hi) {
  if (!has_flag(args, flag)) return fallback;
  const std::string text = flag_value(args, flag, "");
  int64_t value = 0;
  const auto [stop, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  MOON_CHECK(!text.empty() && error == std::errc() && stop == text.data() + text.size() && value >= lo && value <= hi,
             "flag ", flag, " expects an integer in ", lo, "..", hi, ", got '", text, "'");
  return value;
}

// "64,128" -> {64, 128}; "none" -> {}.
std::vector<int64_t> dims_list(const std::string& text) {
  std::vector<int64_t> out;
  if (text == "none") return out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string part = text.substr(start, comma - start);
    int64_t d = 0;
    const auto [stop, error] = std::from_chars(part.data(), part.data() + part.size(), d);
    MOON_CHECK(!part.empty() && error == std::errc() && stop == part.data() + part.size() && d > 0,
               "--matryoshka expects sizes like 64,128 (or none), got '", text, "'");
    out.push_back(d);
    start = comma + 1;
  }
  return out;
}

// The options: run.json's on --resume (when present), then every flag given.
training::TrainOptions parse_options(const Args& args) {
  const std::string out = flag_value(args, "--out", "");
  MOON_CHECK(!out.empty(), "moon train needs --out RUN_DIR (the run folder; try `moon train --help`)");
  training::TrainOptions o;
  const bool resume = has_flag(args, "--resume");
  const std::string run_json = (std::filesystem::path(out) / "run.json").string();
  const bool from_run = resume && std::filesystem::exists(run_json);
  if (from_run) o = training::options_from_json(io::read_file_text(run_json), run_json);
  o.out = out;
  o.resume = resume;
  o.config = flag_value(args, "--config", o.config);
  if (has_flag(args, "--set")) o.overrides = all_values(args, "--set");
  o.manifest = flag_value(args, "--manifest", o.manifest);
  o.tokenizer = flag_value(args, "--tokenizer", o.tokenizer);
  o.init = flag_value(args, "--init", o.init);
  o.steps = int_flag(args, "--steps", o.steps, 1, int64_t{1} << 40);
  o.stop_after = int_flag(args, "--stop-after", 0, 1, int64_t{1} << 40);
  o.batch = int_flag(args, "--batch", o.batch, 2, 1 << 20);
  o.accum = int_flag(args, "--accum", o.accum, 1, 1 << 20);
  o.chunk = int_flag(args, "--chunk", o.chunk, 0, 1 << 20);
  o.lr = number_flag(args, "--lr", o.lr);
  o.warmup = int_flag(args, "--warmup", o.warmup, 0, int64_t{1} << 40);
  o.weight_decay = number_flag(args, "--weight-decay", o.weight_decay);
  o.clip = number_flag(args, "--clip", o.clip);
  if (has_flag(args, "--bf16")) o.bf16 = true;
  o.workers = static_cast<int>(int_flag(args, "--workers", o.workers, 0, 64));
  o.max_tokens = int_flag(args, "--max-tokens", o.max_tokens, 1, 1 << 16);
  o.seed = unsigned_flag(args, "--seed", o.seed, 0, UINT64_MAX);
  o.eval_every = int_flag(args, "--eval-every", o.eval_every, 0, int64_t{1} << 40);
  o.eval_limit = static_cast<size_t>(int_flag(args, "--eval-limit", static_cast<int64_t>(o.eval_limit), 0, int64_t{1} << 40));
  o.save_every = int_flag(args, "--save-every", o.save_every, 1, int64_t{1} << 40);
  o.keep = int_flag(args, "--keep", o.keep, 1, 1 << 20);
  o.max_bad_steps = int_flag(args, "--max-bad-steps", o.max_bad_steps, 1, 1 << 20);
  o.grpo.start_step = int_flag(args, "--grpo-start", o.grpo.start_step, -1, int64_t{1} << 40);
  o.grpo.weight = number_flag(args, "--grpo-weight", o.grpo.weight);
  o.grpo.group = int_flag(args, "--group", o.grpo.group, 2, 1 << 12);
  o.grpo.anchors = int_flag(args, "--anchors", o.grpo.anchors, 1, 1 << 12);
  o.grpo.max_tokens = int_flag(args, "--reason-tokens", o.grpo.max_tokens, 1, 1 << 12);
  if (has_flag(args, "--no-filtering")) o.contrastive.filtering = false;
  if (has_flag(args, "--no-intra")) o.contrastive.intra = false;
  if (has_flag(args, "--matryoshka")) {
    o.contrastive.matryoshka_dims = dims_list(flag_value(args, "--matryoshka", ""));
  } else if (!from_run) {  // the config's prefix sizes
    o.contrastive.matryoshka_dims = model::with_overrides(model::load_config(o.config), o.overrides).embedding.matryoshka;
  }
  o.progress = !has_flag(args, "--quiet");
  o.interrupt = &g_interrupted;
  return o;
}

}  // namespace

MOON_COMMAND(train, 64, "train a model (contrastive + GRPO) on a manifest into a run folder, with exact resume")(const Args& args) {
  if (args.empty() || has_flag(args, "--help") || has_flag(args, "-h")) {
    std::printf("%s", kUsage);
    return args.empty() ? 1 : 0;
  }
  const std::vector<std::string> valued = {
      "--config",     "--set",        "--manifest",   "--out",        "--tokenizer",     "--init",
      "--steps",      "--stop-after", "--batch",      "--accum",      "--chunk",         "--lr",
      "--warmup",     "--weight-decay", "--clip",     "--workers",    "--max-tokens",    "--seed",
      "--eval-every", "--eval-limit", "--save-every", "--keep",       "--max-bad-steps", "--grpo-start",
      "--grpo-weight", "--group",     "--anchors",    "--reason-tokens", "--matryoshka"};
  std::vector<std::string> known = valued;
  known.insert(known.end(), {"--resume", "--bf16", "--no-filtering", "--no-intra", "--quiet", "--help"});
  check_flags("train", args, known);
  const std::vector<std::string> extra = positionals(args, valued);
  MOON_CHECK(extra.empty(), "unexpected argument '", extra.empty() ? "" : extra[0], "' (try `moon train --help`)");
  const training::TrainOptions options = parse_options(args);

  g_interrupted = false;
  struct sigaction action {}, previous {};
  action.sa_handler = on_sigint;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &previous);
  training::TrainSummary summary;
  try {
    summary = training::train(options);
  } catch (...) {
    sigaction(SIGINT, &previous, nullptr);
    throw;
  }
  sigaction(SIGINT, &previous, nullptr);
  if (summary.interrupted) {
    std::fprintf(stderr, "moon train: stopped at step %lld; checkpoint %s\nresume with: moon train --out %s --resume\n",
                 static_cast<long long>(summary.last_step), summary.last_checkpoint.c_str(), options.out.c_str());
    return g_interrupted ? 130 : 0;
  }
  std::printf("wrote %s (step %lld, %lld bad steps); curves: moon plot %s\n", summary.final_model.c_str(),
              static_cast<long long>(summary.last_step), static_cast<long long>(summary.bad_steps), options.out.c_str());
  return 0;
}

}  // namespace moon::cli
