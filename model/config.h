// ModelConfig: the sizes and switches of the MOON3.0 model (docs/model.md, configs/README.md), read from
// JSON and validated so that a bad size is an error naming the field, never a shape crash later.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moon::model {

struct VisionConfig {
  std::string style = "siglip";  // "siglip" (patch bias, no class token) or "clip" (class token, pre-LN)
  int64_t image_size = 32;       // S: the side the position embeddings were made for
  int64_t patch_size = 8;        // P
  int64_t hidden = 128;          // Cv
  int64_t layers = 4;
  int64_t heads = 4;
  int64_t mlp = 512;             // fc1 width
  std::string act = "gelu_tanh"; // gelu_tanh | quick_gelu | gelu
  double layer_norm_eps = 1e-6;
  int64_t grid() const { return image_size / patch_size; }  // g
  int64_t patches() const { return grid() * grid(); }       // N
  bool class_token() const { return style == "clip"; }
};

struct ProjectorConfig {
  int64_t merge = 2;    // m: 1 (no merge) or 2 (2x2 patches -> one token)
  int64_t hidden = 256; // Hp
};

struct DecoderConfig {
  int64_t vocab = 512;   // V
  int64_t hidden = 128;  // C
  int64_t layers = 4;
  int64_t heads = 4;
  int64_t kv_heads = 2;
  int64_t mlp = 384;     // I
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  bool tie_embeddings = true;
  int64_t head_dim() const { return hidden / heads; }
};

struct MoeConfig {
  bool enabled = false;
  int64_t experts = 4;  // E
  int64_t top_k = 2;    // k
  int64_t mlp = 384;    // width of each expert
  double aux_weight = 0.01;
};

struct FusionConfig {
  bool enabled = false;
  int64_t heads = 4;    // Hf
  int64_t width = 128;  // F
};

struct FireConfig {
  bool enabled = false;
  std::vector<int64_t> vision_layers{1, 2, 3};   // 1-based ViT layer outputs
  std::vector<int64_t> decoder_layers{1, 2, 3};  // 0-based decoder layers whose input gets the feature
};

struct EmbeddingConfig {
  std::string pooling = "mean";   // "mean" or "emb_token"
  int64_t dim = 256;              // D
  std::vector<int64_t> matryoshka;  // optional prefix sizes (< D)
  std::string architecture = "mllm";  // "mllm" (images go through the decoder) or "dual" (a CLIP-style dual
                                      // encoder baseline: separate image and text towers, docs/model.md 11)
};

struct ModelConfig {
  std::string name = "custom";
  VisionConfig vision;
  ProjectorConfig projector;
  DecoderConfig decoder;
  MoeConfig moe;
  FusionConfig fusion;
  FireConfig fire;
  EmbeddingConfig embedding;
  uint64_t init_seed = 0;

  int64_t vision_tokens() const { return vision.patches() / (projector.merge * projector.merge); }  // M

  // Throws moon::Error naming the first bad field ("decoder.heads (6) must divide decoder.hidden (128)").
  void validate() const;
  std::string to_json() const;  // the canonical JSON (stored in checkpoints as moon.config)
  // Parses JSON text; unknown fields are errors (a typo must not be silently ignored). `origin` names
  // the file in messages. The result is validated.
  static ModelConfig from_json(const std::string& text, const std::string& origin);
};

// A config by name ("tiny", "small", "base": the shipped configs/*.json) or by path to a JSON file.
ModelConfig load_config(const std::string& name_or_path);
// The config with `assignments` applied: each "section.field=value" (e.g. "moe.enabled=false",
// "decoder.layers=2", "name=small-nomoe"), the value parsed as JSON (a bare word is taken as a string). An
// unknown field or a bad value is an error naming the assignment. Used by `moon train --set`.
ModelConfig with_overrides(const ModelConfig& config, const std::vector<std::string>& assignments);
// The folder holding the shipped configs (MOON_CONFIG_DIR, else <exe>/../configs, else ./configs).
std::string config_dir();

}  // namespace moon::model
