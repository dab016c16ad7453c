// Import of Hugging Face weights into a MoonModel: a SigLIP or CLIP vision tower and a Qwen2ForCausalLM
// decoder (single file or sharded; F32, BF16 or F16), sized by their config.json files, with the moon-only
// parts (projector, fusion, FIRE, MoE router, embedding head) freshly initialised from a moon config.
//
//   HfImportOptions o{.vision = "siglip-base/", .decoder = "qwen2.5-0.5b/", .config = "base"};
//   HfImportResult r = import_hf(o);
//   std::printf("%s", r.report.format().c_str());
//   save_checkpoint("moon.safetensors", *r.model);
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/moon_model.h"

namespace moon::model {

struct HfImportOptions {
  std::string vision;            // folder (config.json + weights) or a .safetensors / index file beside config.json
  std::string decoder;           // the same for the Qwen2 decoder
  std::string config = "base";   // moon config (name or path): switches and the moon-only parts
  std::optional<uint64_t> seed;  // init seed of the fresh parts (default: the config's init_seed)
};

struct HfImportReport {
  std::string vision_source, decoder_source;  // the weights paths as given
  std::string vision_summary, decoder_summary;  // "siglip, 12 layers, width 768, 224 px, patch 16"
  int64_t placed = 0;           // Hugging Face tensors copied into the model
  int64_t placed_scalars = 0;   // their element count
  int64_t upcycled_layers = 0;  // decoder layers whose dense mlp was copied into every expert (MoE on)
  int64_t experts = 0;
  std::vector<std::string> fresh;     // "name (shape)" of every parameter left freshly initialised
  std::vector<std::string> unplaced;  // "name (shape) in FILE: why" of every Hugging Face tensor not used
  std::string tokenizer_note;         // what happened to the decoder's tokenizer.json
  uint64_t seed = 0;
  std::string format() const;         // the lines `moon import` prints
};

struct HfImportResult {
  std::unique_ptr<MoonModel> model;
  HfImportReport report;
  std::string tokenizer_json;  // the decoder folder's tokenizer.json text, "" when it has none
};

// Sets the vision sizes from a SigLIP / CLIP config.json (a vision config, or a full model config with a
// "vision_config" object): hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
// image_size, patch_size, hidden_act, layer_norm_eps, model_type -> style. Missing fields take the
// Hugging Face defaults of that model type. `origin` names the file in errors.
void apply_hf_vision_config(const std::string& json_text, const std::string& origin, VisionConfig& vision);

// Sets the decoder sizes from a Qwen2 config.json: vocab_size, hidden_size, intermediate_size,
// num_hidden_layers, num_attention_heads, num_key_value_heads, rope_theta, rms_norm_eps, tie_word_embeddings.
void apply_hf_decoder_config(const std::string& json_text, const std::string& origin, DecoderConfig& decoder);

// Reads both checkpoints and their config.json files and places every tensor by name (converted to f32).
// MoE on: the dense mlp of each decoder layer is copied into every expert (sparse upcycling); the router
// stays freshly initialised. A tensor whose shape disagrees with the config is an error naming the tensor,
// both shapes and the config.json field to check; a tensor the sizes need but the checkpoint lacks is an error.
HfImportResult import_hf(const HfImportOptions& options);

}  // namespace moon::model
