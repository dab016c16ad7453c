// `moon eval`: the mbe-local evaluation (docs/eval.md) of a checkpoint, a `moon train` run folder or fresh
// weights of a config on a manifest split; prints the table and optionally writes the report as JSON.
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "io/file_util.h"
#include "io/manifest_reader.h"
#include "model/config.h"
#include "model/embed.h"
#include "runtime/error.h"
#include "training/evaluate.h"

namespace moon::cli {
namespace {

const char* const kUsage =
    "usage: moon eval (--model RUN_DIR_OR_CKPT | --config CFG) --manifest M [--split test] [--json OUT]\n"
    "                 [--limit N] [--batch N] [--workers N] [--bf16] [--reason N] [--tokenizer T] [--seed S]\n"
    "                 [--max-tokens N]\n"
    "  The mbe-local evaluation (docs/eval.md): text->image, image->text, text->multimodal and multimodal->\n"
    "  multimodal retrieval (R@1/5/10, MRR), zero-shot classification, attribute prediction and same-product\n"
    "  matching across two augmented views. Prints a table; --json OUT also writes it as JSON (atomically).\n"
    "  --model       a moon checkpoint (file, folder or index) or a `moon train` run folder (its\n"
    "                model.safetensors, else its newest checkpoints/step-*.safetensors)\n"
    "  --config CFG  fresh seeded weights of a config (tiny, small, base or a JSON path) instead\n"
    "  --manifest    a product manifest (docs/manifest.md); --split the split to evaluate (default test)\n"
    "  --limit N     at most N products of the split, spread evenly over the file (default: all)\n"
    "  --tokenizer   default: RUN_DIR/tokenizer.json, else the checkpoint's moon.tokenizer, else byte-level\n"
    "  --batch N     products per forward (default 32); --workers N loader threads (default 2)\n"
    "  --reason N    greedy reasoning of up to N tokens before the multimodal embeddings (GRPO models)\n"
    "  --seed S      the augmentation of the two matching views (default 0)\n"
    "  --max-tokens  text tokens kept per product (default 64); --bf16 matrix products in bf16\n";

// The tokenizer path to use: --tokenizer, else RUN_DIR/tokenizer.json when --model is a folder that has one.
std::string tokenizer_flag(const Args& args) {
  const std::string flag = flag_value(args, "--tokenizer", "");
  if (!flag.empty()) return flag;
  const std::string model = flag_value(args, "--model", "");
  std::error_code ec;
  if (!model.empty() && std::filesystem::is_directory(model, ec)) {
    const std::string run_tokenizer = (std::filesystem::path(model) / "tokenizer.json").string();
    if (std::filesystem::exists(run_tokenizer, ec)) return run_tokenizer;
  }
  return "";
}

}  // namespace

MOON_COMMAND(eval, 66, "the mbe-local evaluation: retrieval, zero-shot, attributes, view matching")(const Args& args) {
  if (args.empty() || has_flag(args, "--help") || has_flag(args, "-h")) {
    std::printf("%s", kUsage);
    return args.empty() ? 1 : 0;
  }
  const std::vector<std::string> valued = {"--model",  "--config",    "--manifest", "--split", "--json",
                                           "--limit",  "--batch",     "--workers",  "--reason", "--tokenizer",
                                           "--seed",   "--max-tokens"};
  std::vector<std::string> known = valued;
  known.insert(known.end(), {"--bf16", "--help"});
  check_flags("eval", args, known);
  const std::vector<std::string> extra = positionals(args, valued);
  MOON_CHECK(extra.empty(), "unexpected argument '", extra.empty() ? "" : extra[0], "' (try `moon eval --help`)");
  const std::string ckpt = flag_value(args, "--model", ""), config = flag_value(args, "--config", "");
  MOON_CHECK(ckpt.empty() != config.empty(),
             "pass exactly one of --model RUN_DIR_OR_CKPT (a checkpoint or a `moon train` run folder) and --config ",
             "CFG (fresh weights)");
  const std::string manifest_path = flag_value(args, "--manifest", "");
  MOON_CHECK(!manifest_path.empty(), "moon eval needs --manifest M (the products to evaluate on)");

  training::EvalOptions options;
  options.split = flag_value(args, "--split", "test");
  options.limit = static_cast<size_t>(unsigned_flag(args, "--limit", 0, 0, uint64_t{1} << 40));
  options.batch = static_cast<int64_t>(unsigned_flag(args, "--batch", 32, 1, 1 << 16));
  options.workers = static_cast<int>(unsigned_flag(args, "--workers", 2, 0, 64));
  options.max_tokens = static_cast<int64_t>(unsigned_flag(args, "--max-tokens", 64, 1, 1 << 20));
  options.reason_tokens = static_cast<int64_t>(unsigned_flag(args, "--reason", 0, 0, 1 << 16));
  options.seed = unsigned_flag(args, "--seed", 0, 0, ~uint64_t{0});
  const std::string json_path = flag_value(args, "--json", "");
  MOON_CHECK(!has_flag(args, "--json") || !json_path.empty(), "--json needs OUT (the report file to write)");

  model::LoadedModel loaded = model::load_model_or_config(ckpt, config);
  model::MoonModel& model = *loaded.model;
  model.compute().dtype = has_flag(args, "--bf16") ? DType::BF16 : DType::F32;
  model.compute().fuse_epilogues = true;  // inference: GELUs in their GEMM's epilogue
  const model::TokenizerChoice tok = model::pick_tokenizer(tokenizer_flag(args), loaded.metadata, model.config().decoder.vocab);

  io::LoadOptions load;
  load.split = options.split;
  const io::Manifest manifest = io::load_manifest(manifest_path, io::BadRecords::Stop, load);
  const training::EvalReport report = training::evaluate(model, *tok.tokenizer, manifest, options);

  std::printf("model: %s; tokenizer: %s; split %s\n", loaded.path.empty() ? ("fresh " + config).c_str() : loaded.path.c_str(),
              tok.source.c_str(), options.split.empty() ? "(all)" : options.split.c_str());
  std::printf("%s", report.table().c_str());
  if (!json_path.empty()) {
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(report.to_json());
    j["model"] = loaded.path.empty() ? "config " + config : loaded.path;
    j["split"] = options.split;
    const std::filesystem::path parent = std::filesystem::path(json_path).parent_path();
    if (!parent.empty()) io::make_dirs(parent.string());
    io::write_file_atomic(json_path, j.dump(2) + "\n");
    std::printf("wrote %s\n", json_path.c_str());
  }
  return 0;
}

}  // namespace moon::cli
