// The batch-embedding pipeline of model/embed.h: model and tokenizer choice, loader options, embedding rows
// and whole manifests (used by `moon embed`, `moon eval`, `moon generate` and the trainer).
#include "model/embed.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <utility>

#include "io/image.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "runtime/autograd.h"
#include "runtime/error.h"

namespace moon::model {

namespace fs = std::filesystem;

// RUN_DIR/model.safetensors (or a sharded index) as the folder itself, else the newest
// RUN_DIR/checkpoints/step-*.safetensors, else the path unchanged (a checkpoint file or index).
std::string resolve_model_path(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return path;
  const fs::path dir(path);
  if (fs::exists(dir / "model.safetensors", ec) || fs::exists(dir / "model.safetensors.index.json", ec)) return path;
  std::string newest;
  if (fs::is_directory(dir / "checkpoints", ec)) {
    for (const auto& entry : fs::directory_iterator(dir / "checkpoints", ec)) {
      const std::string name = entry.path().filename().string();
      // step-NNNNNNNN.safetensors: zero-padded, so the largest name is the newest step
      if (name.starts_with("step-") && name.ends_with(".safetensors") && name > newest) newest = name;
    }
  }
  MOON_CHECK(!newest.empty(), path, ": neither model.safetensors nor checkpoints/step-*.safetensors in this folder ",
             "(pass a moon checkpoint or a `moon train` run folder)");
  return (dir / "checkpoints" / newest).string();
}

LoadedModel load_model_or_run(const std::string& path) {
  LoadedModel out;
  out.path = resolve_model_path(path);
  out.model = load_checkpoint(out.path);
  out.metadata = checkpoint_metadata(out.path);
  return out;
}

LoadedModel load_model_or_config(const std::string& path, const std::string& config) {
  if (!path.empty()) return load_model_or_run(path);
  LoadedModel out;
  out.model = std::make_unique<MoonModel>(load_config(config));
  return out;
}

TokenizerChoice pick_tokenizer(const std::string& flag_path, const std::map<std::string, std::string>& metadata,
                               int64_t vocab) {
  TokenizerChoice out;
  if (!flag_path.empty()) {
    out.tokenizer = std::make_shared<const io::BpeTokenizer>(io::BpeTokenizer::load(flag_path));
    out.source = flag_path;
  } else if (auto it = metadata.find(kTokenizerKey); it != metadata.end()) {
    out.tokenizer = std::make_shared<const io::BpeTokenizer>(
        io::BpeTokenizer::from_tokenizer_json_string(it->second, std::string("checkpoint metadata ") + kTokenizerKey));
    out.source = "the checkpoint's moon.tokenizer";
  } else {
    std::vector<std::string> bytes;
    for (int b = 0; b < 256; ++b) bytes.emplace_back(1, static_cast<char>(b));
    const int64_t needed = 256 + static_cast<int64_t>(std::size(io::kSpecialTokens));
    MOON_CHECK(needed <= vocab, "the model's vocabulary (decoder.vocab = ", vocab, ") is smaller than the byte-level ",
               "tokenizer's ", needed, " tokens and the checkpoint stores no tokenizer; pass --tokenizer T (the ",
               "tokenizer the model was trained with)");
    out.tokenizer = std::make_shared<const io::BpeTokenizer>(
        io::BpeTokenizer::from_vocab(bytes, {}, {}, io::PreTokenizer::Qwen2, "byte-level tokenizer"));
    out.source = "byte-level (256 bytes + 9 specials)";
  }
  int32_t top = 0;
  for (const char* special : io::kSpecialTokens) top = std::max(top, out.tokenizer->special_id(special));
  MOON_CHECK(top < vocab, "tokenizer ", out.source, ": its special tokens (ids up to ", top,
             ") do not fit the model's vocabulary (decoder.vocab = ", vocab, "); pass --tokenizer T (the tokenizer ",
             "the model was trained with)");
  return out;
}

io::PreprocessOptions image_preprocess_options(const ModelConfig& config) {
  io::PreprocessOptions p;
  p.size = static_cast<int>(config.vision.image_size);
  p.filter = io::ResizeFilter::Bicubic;
  const bool clip = config.vision.style == "clip";
  p.center_crop = clip;  // CLIP: shortest side + centre crop; SigLIP: a square resize
  p.norm = clip ? io::Normalization::Clip : io::Normalization::Siglip;
  return p;
}

io::LoaderOptions eval_loader_options(const ModelConfig& config, int64_t batch, int64_t max_tokens, int workers) {
  io::LoaderOptions o;
  o.batch_size = batch;
  o.image = image_preprocess_options(config);
  o.augment = false;
  o.shuffle = false;
  o.drop_last = false;
  o.max_tokens = max_tokens;
  o.workers = workers;
  return o;
}

void check_vocab(const InputRow& row, int64_t vocab, const std::string& who) {
  for (int64_t id : row.text)
    MOON_CHECK(id < vocab, who, ": token id ", id, " is outside the model's vocabulary (decoder.vocab = ", vocab,
               "); pass --tokenizer T (the tokenizer the model was trained with)");
}

Tensor embed_rows(const MoonModel& model, const std::vector<InputRow>& rows, const Tensor& images,
                  const SpecialTokens& special) {
  NoGradGuard no_grad;
  const ModelBatch batch = assemble(rows, images, special, model.config());
  return model.forward(batch).embedding.contiguous();  // (n, D)
}

Progress::Progress(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), start_(clock::now()), last_(start_), tty_(isatty(2)) {}

void Progress::update(int64_t done, bool last) {
  if (!enabled_) return;
  const auto now = clock::now();
  if (!last && now - last_ < std::chrono::seconds(tty_ ? 1 : 10)) return;
  last_ = now;
  std::fprintf(stderr, "%s%s: %lld / %lld products, %.1f products/s%s", tty_ ? "\r" : "", label_.c_str(),
               static_cast<long long>(done), static_cast<long long>(total_), done / seconds(),
               tty_ && !last ? "" : "\n");
  std::fflush(stderr);
}

double Progress::seconds() const {
  return std::max(1e-9, std::chrono::duration<double>(clock::now() - start_).count());
}

EmbeddedManifest embed_manifest(const MoonModel& model, const std::shared_ptr<const io::Manifest>& manifest,
                                const std::shared_ptr<const io::BpeTokenizer>& tokenizer,
                                const ManifestEmbedOptions& options) {
  const ModelConfig& config = model.config();
  const int64_t D = config.embedding.dim;
  const int64_t dim = options.dim > 0 ? options.dim : D;
  io::LoaderOptions o = eval_loader_options(config, options.batch, options.max_tokens, options.workers);
  o.bad_images = options.bad_images;
  io::DataLoader loader(manifest, tokenizer, o);

  const SpecialTokens special = SpecialTokens::from(*tokenizer);
  const int64_t total = static_cast<int64_t>(manifest->products.size());
  EmbeddedManifest out;
  std::vector<float> values;  // (n, dim) row-major
  values.reserve(static_cast<size_t>(total * dim));
  Progress progress(options.label, total, options.progress);
  int64_t done = 0;
  for (int64_t k = 0; k < loader.batches_per_epoch(); ++k) {
    const io::Batch b = loader.next();
    const std::vector<InputRow> rows = rows_from_loader(b);
    const std::vector<int64_t> index = b.product_index.to_vector<int64_t>();
    const std::vector<int64_t> has_image = b.has_image.to_vector<int64_t>();
    std::vector<InputRow> kept;
    for (size_t r = 0; r < rows.size(); ++r) {
      const io::Product& p = manifest->products[static_cast<size_t>(index[r])];
      const std::string who = manifest->path + ":" + std::to_string(p.line) + ": product '" + p.id + "'";
      if (!p.images.empty() && !has_image[r]) {  // its image could not be read (BadRecords::Skip)
        ++out.bad_images;
        const std::string path = io::image_path(*manifest, p, 0);
        std::string reason = path;
        for (const std::string& s : b.skipped_images)
          if (s.rfind(path, 0) == 0) reason = s;
        if (rows[r].text.empty()) {
          std::fprintf(stderr, "%s: warning: %s: %s; it has no text either, so it is left out\n",
                       options.label.c_str(), who.c_str(), reason.c_str());
          continue;
        }
        std::fprintf(stderr, "%s: warning: %s: %s; embedded from its text only\n", options.label.c_str(), who.c_str(),
                     reason.c_str());
      }
      check_vocab(rows[r], config.decoder.vocab, who);
      kept.push_back(rows[r]);
      out.ids.push_back(p.id);
      out.product_index.push_back(index[r]);
    }
    if (!kept.empty()) {
      Tensor e = embed_rows(model, kept, b.images, special);  // (kept, D)
      if (dim != D) e = embedding_prefix(e, dim).contiguous();
      const float* src = e.data<float>();
      values.insert(values.end(), src, src + e.numel());
    }
    done += static_cast<int64_t>(rows.size());
    progress.update(done, k + 1 == loader.batches_per_epoch());
  }
  if (out.bad_images)
    std::fprintf(stderr, "%s: %lld products had an unreadable image\n", options.label.c_str(),
                 static_cast<long long>(out.bad_images));
  out.embeddings = from_vector(values, {static_cast<int64_t>(out.ids.size()), dim});
  return out;
}

}  // namespace moon::model
