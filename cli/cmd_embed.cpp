// `moon embed`: product embeddings from a checkpoint (or fresh weights of a config) for a manifest, one image
// or one text, written as E.npy (n, D) f32 and E.ids.jsonl (docs/embed.md).
#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "io/bpe_tokenizer.h"
#include "io/data_loader.h"
#include "io/file_util.h"
#include "io/image.h"
#include "io/manifest_reader.h"
#include "io/npy.h"
#include "model/checkpoint.h"
#include "model/inputs.h"
#include "runtime/autograd.h"
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

// The model, and the checkpoint metadata it came with.
struct Loaded {
  std::unique_ptr<model::MoonModel> model;
  std::map<std::string, std::string> metadata;
};

Loaded load_model(const Args& args) {
  const std::string ckpt = flag_value(args, "--model", ""), config = flag_value(args, "--config", "");
  MOON_CHECK(ckpt.empty() != config.empty(),
             "pass exactly one of --model CKPT (a moon checkpoint) and --config CFG (fresh weights)");
  Loaded out;
  if (!ckpt.empty()) {
    out.model = model::load_checkpoint(ckpt);
    out.metadata = model::checkpoint_metadata(ckpt);
  } else {
    out.model = std::make_unique<model::MoonModel>(model::load_config(config));
  }
  return out;
}

// --tokenizer, else the checkpoint's moon.tokenizer, else the byte-level tokenizer when it fits the vocabulary.
std::shared_ptr<const io::BpeTokenizer> pick_tokenizer(const Args& args, const Loaded& loaded, std::string& source) {
  const int64_t vocab = loaded.model->config().decoder.vocab;
  std::shared_ptr<const io::BpeTokenizer> tok;
  const std::string path = flag_value(args, "--tokenizer", "");
  if (!path.empty()) {
    tok = std::make_shared<const io::BpeTokenizer>(io::BpeTokenizer::load(path));
    source = path;
  } else if (auto it = loaded.metadata.find(model::kTokenizerKey); it != loaded.metadata.end()) {
    tok = std::make_shared<const io::BpeTokenizer>(
        io::BpeTokenizer::from_tokenizer_json_string(it->second, std::string("checkpoint metadata ") + model::kTokenizerKey));
    source = "the checkpoint's moon.tokenizer";
  } else {
    std::vector<std::string> bytes;
    for (int b = 0; b < 256; ++b) bytes.emplace_back(1, static_cast<char>(b));
    const int64_t needed = 256 + static_cast<int64_t>(std::size(io::kSpecialTokens));
    MOON_CHECK(needed <= vocab, "the model's vocabulary (decoder.vocab = ", vocab, ") is smaller than the byte-level ",
               "tokenizer's ", needed, " tokens and the checkpoint stores no tokenizer; pass --tokenizer T (the ",
               "tokenizer the model was trained with)");
    tok = std::make_shared<const io::BpeTokenizer>(
        io::BpeTokenizer::from_vocab(bytes, {}, {}, io::PreTokenizer::Qwen2, "byte-level tokenizer"));
    source = "byte-level (256 bytes + 9 specials)";
  }
  int32_t top = 0;
  for (const char* special : io::kSpecialTokens) top = std::max(top, tok->special_id(special));
  MOON_CHECK(top < vocab, "tokenizer ", source, ": its special tokens (ids up to ", top,
             ") do not fit the model's vocabulary (decoder.vocab = ", vocab, "); pass --tokenizer T (the tokenizer ",
             "the model was trained with)");
  return tok;
}

// Fails naming the product when a token id is outside the model's vocabulary.
void check_vocab(const model::InputRow& row, int64_t vocab, const std::string& product) {
  for (int64_t id : row.text)
    MOON_CHECK(id < vocab, product, ": token id ", id, " is outside the model's vocabulary (decoder.vocab = ", vocab,
               "); pass --tokenizer T (the tokenizer the model was trained with)");
}

// Progress on stderr: once a second with carriage returns on a terminal, else a line every 10 s (and at the end).
class Progress {
 public:
  explicit Progress(int64_t total) : total_(total), start_(clock::now()), last_(start_), tty_(isatty(2)) {}
  void update(int64_t done, bool last = false) {
    const auto now = clock::now();
    if (!last && now - last_ < std::chrono::seconds(tty_ ? 1 : 10)) return;
    last_ = now;
    std::fprintf(stderr, "%smoon embed: %lld / %lld products, %.1f products/s%s", tty_ ? "\r" : "",
                 static_cast<long long>(done), static_cast<long long>(total_), done / seconds(), tty_ && !last ? "" : "\n");
    std::fflush(stderr);
  }
  double seconds() const { return std::max(1e-9, std::chrono::duration<double>(clock::now() - start_).count()); }

 private:
  using clock = std::chrono::steady_clock;
  int64_t total_;
  clock::time_point start_, last_;
  bool tty_;
};

// Embeddings of assembled rows, appended to `out` as (rows, d) f32 values.
void embed_rows(const model::MoonModel& model, const std::vector<model::InputRow>& rows, const Tensor& images,
                const model::SpecialTokens& special, int64_t dim, std::vector<float>& out) {
  NoGradGuard no_grad;
  const model::ModelBatch batch = model::assemble(rows, images, special, model.config());
  Tensor e = model.forward(batch).embedding;  // (B, D)
  if (dim != e.size(1)) e = model::embedding_prefix(e, dim);
  const std::vector<float> values = e.contiguous().to_vector<float>();
  out.insert(out.end(), values.begin(), values.end());
}

struct Embedded {
  std::vector<float> values;     // (n, d) row-major
  std::vector<std::string> ids;  // (n)
};

Embedded embed_manifest(const Args& args, const model::MoonModel& model,
                        const std::shared_ptr<const io::BpeTokenizer>& tok, int64_t dim, int64_t batch_size,
                        uint64_t max_tokens) {
  const model::ModelConfig& config = model.config();
  io::LoadOptions load;
  load.split = flag_value(args, "--split", "");
  auto manifest = std::make_shared<const io::Manifest>(
      io::load_manifest(flag_value(args, "--manifest", ""), io::BadRecords::Stop, load));
  MOON_CHECK(!manifest->products.empty(), manifest->path, ": no products",
             load.split.empty() ? std::string() : " in split '" + load.split + "'", " to embed");
  const std::string policy = flag_value(args, "--bad-images", "skip");
  MOON_CHECK(policy == "skip" || policy == "stop", "--bad-images must be skip or stop, got '", policy, "'");

  io::LoaderOptions o;
  o.batch_size = batch_size;
  o.image.size = static_cast<int>(config.vision.image_size);
  o.image.filter = io::ResizeFilter::Bicubic;
  const bool clip = config.vision.style == "clip";
  o.image.center_crop = clip;  // CLIP: shortest side + centre crop; SigLIP: a square resize
  o.image.norm = clip ? io::Normalization::Clip : io::Normalization::Siglip;
  o.augment = false;
  o.shuffle = false;
  o.drop_last = false;
  o.max_tokens = static_cast<int64_t>(max_tokens);
  o.workers = static_cast<int>(unsigned_flag(args, "--workers", 2, 0, 64));
  o.bad_images = policy == "skip" ? io::BadRecords::Skip : io::BadRecords::Stop;
  io::DataLoader loader(manifest, tok, o);

  const model::SpecialTokens special = model::SpecialTokens::from(*tok);
  const int64_t total = static_cast<int64_t>(manifest->products.size());
  Embedded out;
  out.values.reserve(static_cast<size_t>(total * dim));
  Progress progress(total);
  int64_t done = 0, bad = 0;
  for (int64_t k = 0; k < loader.batches_per_epoch(); ++k) {
    const io::Batch b = loader.next();
    std::vector<model::InputRow> rows = model::rows_from_loader(b);
    const std::vector<int64_t> index = b.product_index.to_vector<int64_t>();
    const std::vector<int64_t> has_image = b.has_image.to_vector<int64_t>();
    std::vector<model::InputRow> kept;
    for (size_t r = 0; r < rows.size(); ++r) {
      const io::Product& p = manifest->products[static_cast<size_t>(index[r])];
      const std::string who = manifest->path + ":" + std::to_string(p.line) + ": product '" + p.id + "'";
      if (!p.images.empty() && !has_image[r]) {  // its image could not be read (--bad-images skip)
        ++bad;
        const std::string path = io::image_path(*manifest, p, 0);
        std::string reason = path;
        for (const std::string& s : b.skipped_images)
          if (s.rfind(path, 0) == 0) reason = s;
        if (rows[r].text.empty()) {
          std::fprintf(stderr, "moon embed: warning: %s: %s; it has no text either, so it is left out\n", who.c_str(),
                       reason.c_str());
          continue;
        }
        std::fprintf(stderr, "moon embed: warning: %s: %s; embedded from its text only\n", who.c_str(), reason.c_str());
      }
      check_vocab(rows[r], config.decoder.vocab, who);
      kept.push_back(rows[r]);
      out.ids.push_back(p.id);
    }
    if (!kept.empty()) embed_rows(model, kept, b.images, special, dim, out.values);
    done += static_cast<int64_t>(rows.size());
    progress.update(done, k + 1 == loader.batches_per_epoch());
  }
  if (bad) std::fprintf(stderr, "moon embed: %lld products had an unreadable image\n", static_cast<long long>(bad));
  return out;
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
    io::PreprocessOptions p;
    p.size = static_cast<int>(config.vision.image_size);
    p.center_crop = config.vision.style == "clip";
    p.norm = p.center_crop ? io::Normalization::Clip : io::Normalization::Siglip;
    images = io::preprocess(io::load_image(image, 3), p).unsqueeze(0);  // (1, 3, S, S)
    row.image = 0;
  }
  if (has_flag(args, "--text")) {
    MOON_CHECK(!text.empty(), "--text needs a non-empty STR");
    for (int32_t id : tok.encode(text)) row.text.push_back(id);
    if (row.text.size() > max_tokens) row.text.resize(max_tokens);
  }
  check_vocab(row, config.decoder.vocab, "--text");
  Embedded out;
  embed_rows(model, {row}, images, model::SpecialTokens::from(tok), dim, out.values);
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

  Loaded loaded = load_model(args);
  model::MoonModel& model = *loaded.model;
  const bool bf16 = has_flag(args, "--bf16");
  model.compute().dtype = bf16 ? DType::BF16 : DType::F32;
  const int64_t D = model.config().embedding.dim;
  const int64_t dim = static_cast<int64_t>(unsigned_flag(args, "--dim", static_cast<uint64_t>(D), 1, static_cast<uint64_t>(D)));
  const int64_t batch = static_cast<int64_t>(unsigned_flag(args, "--batch", 32, 1, 1 << 16));
  const uint64_t max_tokens = unsigned_flag(args, "--max-tokens", 64, 1, 1 << 20);
  std::string tokenizer_source;
  const auto tok = pick_tokenizer(args, loaded, tokenizer_source);

  const auto start = std::chrono::steady_clock::now();
  const Embedded e = manifest ? embed_manifest(args, model, tok, dim, batch, max_tokens)
                              : embed_single(args, model, *tok, dim, max_tokens);
  const double seconds = std::max(1e-9, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  const int64_t n = static_cast<int64_t>(e.ids.size());
  MOON_CHECK(n > 0, "no product could be embedded (see the warnings above)");

  const std::filesystem::path parent = std::filesystem::path(out_path).parent_path();
  if (!parent.empty()) io::make_dirs(parent.string());
  io::save_npy(out_path, from_vector(e.values, {n, dim}));  // (n, d) f32
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
