// The batch-embedding pipeline shared by `moon embed`, `moon eval`, `moon generate` and the trainer's
// evaluation: which tokenizer a model uses, the loader options of its image preprocessing, embedding rows
// without gradients, and embedding a whole manifest in batches with a progress line and a bad-image policy.
//
//   TokenizerChoice tok = pick_tokenizer("", checkpoint_metadata(path), model.config().decoder.vocab);
//   EmbeddedManifest e = embed_manifest(model, manifest, tok.tokenizer, options);  // e.embeddings (n, D)
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/bpe_tokenizer.h"
#include "io/data_loader.h"
#include "io/manifest_reader.h"
#include "model/inputs.h"
#include "model/moon_model.h"
#include "runtime/tensor.h"

namespace moon::model {

// A model and the checkpoint metadata it came with (empty for fresh weights of a config).
struct LoadedModel {
  std::unique_ptr<MoonModel> model;
  std::map<std::string, std::string> metadata;
  std::string path;  // the checkpoint file or folder read ("" for a config)
};

// A checkpoint (file, folder or sharded index) or a `moon train` run folder: RUN_DIR/model.safetensors, else
// the newest RUN_DIR/checkpoints/step-*.safetensors. Errors name the path and say what was looked for.
LoadedModel load_model_or_run(const std::string& path);
// load_model_or_run(path) when path is not empty, else fresh seeded weights of `config` (tiny, small, base or a
// JSON path) with no metadata.
LoadedModel load_model_or_config(const std::string& path, const std::string& config);
// The checkpoint file load_model_or_run reads for `path` (path itself when it is not a run folder).
std::string resolve_model_path(const std::string& path);

struct TokenizerChoice {
  std::shared_ptr<const io::BpeTokenizer> tokenizer;
  std::string source;  // for the report: the path, "the checkpoint's moon.tokenizer" or "byte-level (...)"
};

// flag_path (a tokenizer folder or tokenizer.json) when not empty, else the checkpoint metadata's
// moon.tokenizer, else the byte-level tokenizer (256 bytes + 9 specials) when it fits `vocab`. Fails, asking
// for --tokenizer, when the chosen tokenizer's special tokens do not fit the vocabulary.
TokenizerChoice pick_tokenizer(const std::string& flag_path, const std::map<std::string, std::string>& metadata,
                               int64_t vocab);

// The model's image preprocessing (docs/model.md): the config's image size, bicubic; CLIP: shortest side +
// centre crop with CLIP normalisation; SigLIP: a square resize with SigLIP normalisation.
io::PreprocessOptions image_preprocess_options(const ModelConfig& config);

// Loader options for embedding with `config`'s image preprocessing (SigLIP: square resize, CLIP: shortest
// side + centre crop; bicubic), in manifest order: no shuffle, no augmentation, no dropped batch.
io::LoaderOptions eval_loader_options(const ModelConfig& config, int64_t batch, int64_t max_tokens, int workers);

// Fails naming `who` when a token id of `row` is outside the model's vocabulary.
void check_vocab(const InputRow& row, int64_t vocab, const std::string& who);

// Embeddings of assembled rows under NoGradGuard: (n, D) L2-normalised f32, n = rows.size().
// images (Bi, 3, S, S) holds the pictures the rows point at (undefined when none does).
Tensor embed_rows(const MoonModel& model, const std::vector<InputRow>& rows, const Tensor& images,
                  const SpecialTokens& special);

// A progress line on stderr ("<label>: done / total products, x products/s"): once a second with carriage
// returns on a terminal, else a line every 10 s, and always on the last update.
class Progress {
 public:
  Progress(std::string label, int64_t total, bool enabled = true);
  void update(int64_t done, bool last = false);
  double seconds() const;  // since construction

 private:
  using clock = std::chrono::steady_clock;
  std::string label_;
  int64_t total_;
  bool enabled_;
  clock::time_point start_, last_;
  bool tty_;
};

struct ManifestEmbedOptions {
  int64_t batch = 32;
  int64_t max_tokens = 64;
  int workers = 2;
  int64_t dim = 0;                             // 0: the full D; else the Matryoshka prefix e[:, :dim]
  io::BadRecords bad_images = io::BadRecords::Skip;  // Skip: a product with a broken image is embedded from its text
  std::string label = "moon embed";            // the prefix of warnings and of the progress line
  bool progress = true;
};

struct EmbeddedManifest {
  Tensor embeddings;                   // (n, d) f32, unit rows, in manifest order
  std::vector<std::string> ids;        // (n) product ids
  std::vector<int64_t> product_index;  // (n) rows of the manifest
  int64_t bad_images = 0;              // products whose image could not be read
};

// Every product of `manifest` (image + text, or what it has), in batches of options.batch. A product whose
// image cannot be read is embedded from its text with a warning naming FILE:LINE, the product and the image
// (Skip), or is an error (Stop); one with neither is left out. A token id outside the vocabulary is an error.
EmbeddedManifest embed_manifest(const MoonModel& model, const std::shared_ptr<const io::Manifest>& manifest,
                                const std::shared_ptr<const io::BpeTokenizer>& tokenizer,
                                const ManifestEmbedOptions& options);

}  // namespace moon::model
