// `moon import`: Hugging Face SigLIP/CLIP vision weights + Qwen2 decoder weights -> one moon checkpoint
// (model/hf_import.h), with a report of what was placed, what starts fresh and what was left out.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/commands.h"
#include "model/checkpoint.h"
#include "model/hf_import.h"
#include "runtime/error.h"

namespace moon::cli {
namespace {

const char* const kUsage =
    "usage: moon import --vision DIR|FILE --decoder DIR|FILE --out CKPT [--config CFG] [--seed S] [--bf16]\n"
    "  Builds a moon checkpoint from Hugging Face weights (docs/embed.md):\n"
    "  --vision   a SigLIP or CLIP vision model: a folder with config.json and model.safetensors (or shards\n"
    "             with model.safetensors.index.json), or one of those files beside its config.json. Full\n"
    "             SigLIP/CLIP checkpoints work too: the text tower is reported as not placed.\n"
    "  --decoder  a Qwen2ForCausalLM model in the same layouts; its tokenizer.json, if any, is stored in the\n"
    "             checkpoint for `moon embed`.\n"
    "  --config   the moon config (tiny, small, base or a JSON path; default base) giving the switches (MoE,\n"
    "             fusion, FIRE) and the sizes of the moon-only parts; vision and decoder sizes come from the\n"
    "             config.json files. With MoE on, each dense mlp is copied into every expert.\n"
    "  --seed     init seed of the freshly initialised parts (default: the config's init_seed)\n"
    "  --bf16     store the parameters in bf16 (half the size; f32 by default)\n"
    "  --out      the checkpoint file to write (atomically)\n";

}  // namespace

MOON_COMMAND(import, 60, "Hugging Face SigLIP/CLIP + Qwen2 weights -> a moon checkpoint")(const Args& args) {
  if (args.empty() || has_flag(args, "--help") || has_flag(args, "-h")) {
    std::printf("%s", kUsage);
    return args.empty() ? 1 : 0;
  }
  check_flags("import", args, {"--vision", "--decoder", "--config", "--out", "--seed", "--bf16", "--help"});
  const std::vector<std::string> extra = positionals(args, {"--vision", "--decoder", "--config", "--out", "--seed"});
  MOON_CHECK(extra.empty(), "unexpected argument '", extra.empty() ? "" : extra[0], "' (try `moon import --help`)");
  model::HfImportOptions options;
  options.vision = flag_value(args, "--vision", "");
  options.decoder = flag_value(args, "--decoder", "");
  options.config = flag_value(args, "--config", "base");
  const std::string out = flag_value(args, "--out", "");
  MOON_CHECK(!out.empty(), "moon import needs --out CKPT (the checkpoint file to write)");
  if (has_flag(args, "--seed")) options.seed = unsigned_flag(args, "--seed", 0, 0, UINT64_MAX);

  model::HfImportResult result = model::import_hf(options);
  std::map<std::string, std::string> metadata;
  metadata["moon.import"] = nlohmann::json{{"vision", options.vision}, {"decoder", options.decoder}}.dump();
  if (!result.tokenizer_json.empty()) metadata[model::kTokenizerKey] = result.tokenizer_json;
  const DType dtype = has_flag(args, "--bf16") ? DType::BF16 : DType::F32;
  model::save_checkpoint(out, *result.model, metadata, dtype);
  std::printf("%s", result.report.format().c_str());
  std::printf("wrote %s: %lld parameters (%s), config %s\n", out.c_str(),
              static_cast<long long>(result.model->params().count()), dtype == DType::BF16 ? "bf16" : "f32",
              result.model->config().name.c_str());
  return 0;
}

}  // namespace moon::cli
