// `moon embed`: product embeddings from a checkpoint (or fresh weights of a config) for a manifest, one image
// or one text, written as E.npy (n, D) f32 and E.ids.jsonl (docs/embed.md).
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "io/bpe_tokenizer.h"
#include "io/file_util.h"
#include "io/image.h"
#include "io/image_transform.h"
#include "io/manifest_reader.h"
#include "io/npy.h"
#include "model/checkpoint.h"
#include "model/embed.h"
#include "model/inputs.h"
#include "runtime/error.h"

namespace moon::cli {
namespace {

const char* const kUsage =
    "usage: moon embed (--model CKPT | --config CFG) (--manifest M [--split S] | --image FILE | --text STR)\n"
    "                  --out E.npy [--batch N] [--tokenizer T] [--bad-images skip|stop] [--workers N]\n"
    "                  [--max-tokens N] [--bf16] [--dim d] [--device cpu|cuda]\n"
    "  Embeds products (docs/embed.md) and writes E.npy, (n, D) f32 L2-normalised rows, and E.ids.jsonl,\n"
    "  one {\"id\": ..., \"row\": i} per row in manifest order. Both files are written atomically.\n"
    "  --model       a moon checkpoint (file, folder or sharded index); --config CFG instead runs fresh\n"
    "                seeded weights of a config (tiny, small, base or a JSON path)\n"
    "  --manifest    a product manifest (docs/manifest.md); --split keeps one split\n"
    "  --image/--text  one product: an image, a text, or both together\n"
    "  --tokenizer   a tokenizer folder or tokenizer.json; default: the checkpoint's moon.tokenizer, else the\n"
    "                byte-level tokenizer (256 bytes + specials) when it fits the model's vocabulary\n"
    "  --bad-images  skip (default): a product whose image cannot be read is embedded from its text, with a\n"
    "                warning; stop: such an image is an error\n"
    "  --batch N     products per forward (default 32); --workers N data-loader threads (default 2)\n"
    "  --max-tokens  text tokens kept per product (default 64)\n"
    "  --bf16        matrix products in bf16 (f32 accumulation); --dim d writes the Matryoshka prefix e[:, :d]\n"
    "                re-normalised\n"
    "  --device      cpu (default); cuda is refused: this build has no CUDA backend for the model yet\n";

// The model (a checkpoint or fresh weights of a config) and its checkpoint metadata.
model::LoadedModel load_model(const Args& args) {
  const std::string ckpt = flag_value(args, "--model", ""), config = flag_value(args, "--config", "");
  MOON_CHECK(ckpt.empty() != config.empty(),
             "pass exactly one of --model CKPT (a moon checkpoint) and --config CFG (fresh weights)");
  if (!ckpt.empty()) {
    model::LoadedModel out;
    out.path = ckpt;
    out.model = model::load_checkpoint(ckpt);
    out.metadata = model::checkpoint_metadata(ckpt);
    return out;
  }
  model::LoadedModel out;
  out.model = std::make_unique<model::MoonModel>(model::load_config(config));
  return out;
}

struct Embedded {
  Tensor values;                 // (n, d) f32
  std::vector<std::string> ids;  // (n)
};

// Every product of --manifest (--split), through model::embed_manifest.
Embedded embed_manifest(const Args& args, const model::MoonModel& model,
                        const std::shared_ptr<const io::BpeTokenizer>& tok, int64_t dim, int64_t batch_size,
                        uint64_t max_tokens) {
  io::LoadOptions load;
  load.split = flag_value(args, "--split", "");
  auto manifest = std::make_shared<const io::Manifest>(
      io::load_manifest(flag_value(args, "--manifest", ""), io::BadRecords::Stop, load));
  MOON_CHECK(!manifest->products.empty(), manifest->path, ": no products",
             load.split.empty() ? std::string() : " in split '" + load.split + "'", " to embed");
  const std::string policy = flag_value(args, "--bad-images", "skip");
  MOON_CHECK(policy == "skip" || policy == "stop", "--bad-images must be skip or stop, got '", policy, "'");
  model::ManifestEmbedOptions o;
  o.batch = batch_size;
  o.max_tokens = static_cast<int64_t>(max_tokens);
  o.workers = static_cast<int>(unsigned_flag(args, "--workers", 2, 0, 64));
  o.dim = dim;
  o.bad_images = policy == "skip" ? io::BadRecords::Skip : io::BadRecords::Stop;
  o.label = "moon embed";
  model::EmbeddedManifest e = model::embed_manifest(model, manifest, tok, o);
  return {e.embeddings, std::move(e.ids)};
}

// One product from --image and/or --text.
Embedded embed_single(const Args& args, const model::MoonModel& model, const io::BpeTokenizer& tok, int64_t dim,
                      uint64_t max_tokens) {
  const model::ModelConfig& config = model.config();
  model::InputRow row;
  Tensor images;
  const std::string image = flag_value(args, "--image", ""), text = flag_value(args, "--text", "");
  if (has_flag(args, "--image")) {
    MOON_CHECK(!image.empty(), "--image needs a FILE");
    images = io::preprocess(io::load_image(image, 3), model::image_preprocess_options(config)).unsqueeze(0);  // (1, 3, S, S)
    row.image = 0;
  }
  if (has_flag(args, "--text")) {
    MOON_CHECK(!text.empty(), "--text needs a non-empty STR");
    for (int32_t id : tok.encode(text)) row.text.push_back(id);
    if (row.text.size() > max_tokens) row.text.resize(max_tokens);
  }
  model::check_vocab(row, config.decoder.vocab, "--text");
  Embedded out;
  out.values = model::embed_rows(model, {row}, images, model::SpecialTokens::from(tok));  // (1, D)
  if (dim != out.values.size(1)) out.values = model::embedding_prefix(out.values, dim).contiguous();
  out.ids.push_back(image.empty() ? text : image);
  return out;
}

// "E.npy" -> "E.ids.jsonl"
std::string ids_path(const std::string& out) {
  const std::string stem = out.ends_with(".npy") ? out.substr(0, out.size() - 4) : out;
  return stem + ".ids.jsonl";
}

}  // namespace

MOON_COMMAND(embed, 62, "product embeddings of a manifest, an image or a text -> E.npy + E.ids.jsonl")(const Args& args) {
  if (args.empty() || has_flag(args, "--help") || has_flag(args, "-h")) {
    std::printf("%s", kUsage);
    return args.empty() ? 1 : 0;
  }
  const std::vector<std::string> valued = {"--model",  "--config",     "--manifest", "--split",  "--image",
                                           "--text",   "--out",        "--batch",    "--tokenizer", "--bad-images",
                                           "--workers", "--max-tokens", "--dim",     "--device"};
  std::vector<std::string> known = valued;
  known.insert(known.end(), {"--bf16", "--help"});
  check_flags("embed", args, known);
  const std::vector<std::string> extra = positionals(args, valued);
  MOON_CHECK(extra.empty(), "unexpected argument '", extra.empty() ? "" : extra[0], "' (try `moon embed --help`)");
  const std::string device = flag_value(args, "--device", "cpu");
  MOON_CHECK(device == "cpu" || device == "cuda", "--device must be cpu or cuda, got '", device, "'");
  MOON_CHECK(device == "cpu", "--device cuda: this build of moon has no CUDA backend for the model yet (its ops run on ",
             "the CPU only); use --device cpu");
  const bool manifest = has_flag(args, "--manifest"), single = has_flag(args, "--image") || has_flag(args, "--text");
  MOON_CHECK(manifest != single, "pass either --manifest M or --image FILE / --text STR (try `moon embed --help`)");
  const std::string out_path = flag_value(args, "--out", "");
  MOON_CHECK(!out_path.empty(), "moon embed needs --out E.npy (the embeddings file to write)");

  model::LoadedModel loaded = load_model(args);
  model::MoonModel& model = *loaded.model;
  const bool bf16 = has_flag(args, "--bf16");
  model.compute().dtype = bf16 ? DType::BF16 : DType::F32;
  model.compute().fuse_epilogues = true;  // inference: GELUs in their GEMM's epilogue
  const int64_t D = model.config().embedding.dim;
  const int64_t dim = static_cast<int64_t>(unsigned_flag(args, "--dim", static_cast<uint64_t>(D), 1, static_cast<uint64_t>(D)));
  const int64_t batch = static_cast<int64_t>(unsigned_flag(args, "--batch", 32, 1, 1 << 16));
  const uint64_t max_tokens = unsigned_flag(args, "--max-tokens", 64, 1, 1 << 20);
  const model::TokenizerChoice choice =
      model::pick_tokenizer(flag_value(args, "--tokenizer", ""), loaded.metadata, model.config().decoder.vocab);
  const std::shared_ptr<const io::BpeTokenizer>& tok = choice.tokenizer;
  const std::string& tokenizer_source = choice.source;

  const auto start = std::chrono::steady_clock::now();
  const Embedded e = manifest ? embed_manifest(args, model, tok, dim, batch, max_tokens)
                              : embed_single(args, model, *tok, dim, max_tokens);
  const double seconds = std::max(1e-9, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  const int64_t n = static_cast<int64_t>(e.ids.size());
  MOON_CHECK(n > 0, "no product could be embedded (see the warnings above)");

  const std::filesystem::path parent = std::filesystem::path(out_path).parent_path();
  if (!parent.empty()) io::make_dirs(parent.string());
  io::save_npy(out_path, e.values);  // (n, d) f32
  std::string lines;
  for (int64_t i = 0; i < n; ++i) lines += nlohmann::json{{"id", e.ids[static_cast<size_t>(i)]}, {"row", i}}.dump() + "\n";
  io::write_file_atomic(ids_path(out_path), lines);
  std::printf("embedded %lld products in %.2f s: %.1f products/s (batch %lld, threads %d, %s)\n",
              static_cast<long long>(n), seconds, n / seconds, static_cast<long long>(batch), omp_get_max_threads(),
              bf16 ? "bf16" : "f32");
  std::printf("wrote %s (%lld, %lld) f32 and %s; tokenizer: %s\n", out_path.c_str(), static_cast<long long>(n),
              static_cast<long long>(dim), ids_path(out_path).c_str(), tokenizer_source.c_str());
  return 0;
}

}  // namespace moon::cli
