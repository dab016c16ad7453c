// ModelConfig JSON reading, writing and validation.
#include "model/config.h"

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "io/file_util.h"
#include "runtime/error.h"

namespace moon::model {
namespace {

using nlohmann::json;

// Reads the fields of one JSON object section; every key must be consumed (typos are errors).
class Section {
 public:
  Section(const json& j, std::string path, const std::string& origin) : j_(j), path_(std::move(path)), origin_(origin) {
    if (!j_.is_object()) fail(origin_, ": ", path_, " must be a JSON object");
  }
  ~Section() = default;
  template <class T>
  void get(const char* key, T& out) {
    seen_.insert(key);
    if (!j_.contains(key)) return;  // defaults stay
    try {
      out = j_.at(key).get<T>();
    } catch (const json::exception&) {
      fail(origin_, ": ", field(key), " has the wrong type (", j_.at(key).dump(), ")");
    }
  }
  const json& sub(const char* key) {
    seen_.insert(key);
    static const json empty = json::object();
    return j_.contains(key) ? j_.at(key) : empty;
  }
  std::string field(const char* key) const { return path_.empty() ? key : path_ + "." + key; }
  void finish() const {
    for (auto it = j_.begin(); it != j_.end(); ++it)
      if (!seen_.count(it.key()))
        fail(origin_, ": unknown config field ", path_.empty() ? it.key() : path_ + "." + it.key(),
             " (see configs/README.md for the fields)");
  }

 private:
  const json& j_;
  std::string path_;
  const std::string& origin_;
  std::set<std::string> seen_;
};

void positive(int64_t v, const char* field) {
  if (v <= 0) fail("config: ", field, " must be positive, got ", v);
}
void divides(int64_t small, const char* small_field, int64_t big, const char* big_field) {
  if (small > 0 && big % small != 0)
    fail("config: ", small_field, " (", small, ") must divide ", big_field, " (", big, ")");
}

}  // namespace

void ModelConfig::validate() const {
  const auto& v = vision;
  if (v.style != "siglip" && v.style != "clip") fail("config: vision.style must be \"siglip\" or \"clip\", got \"", v.style, "\"");
  if (v.act != "gelu_tanh" && v.act != "quick_gelu" && v.act != "gelu")
    fail("config: vision.act must be gelu_tanh, quick_gelu or gelu, got \"", v.act, "\"");
  positive(v.image_size, "vision.image_size");
  positive(v.patch_size, "vision.patch_size");
  positive(v.hidden, "vision.hidden");
  positive(v.layers, "vision.layers");
  positive(v.heads, "vision.heads");
  positive(v.mlp, "vision.mlp");
  divides(v.patch_size, "vision.patch_size", v.image_size, "vision.image_size");
  divides(v.heads, "vision.heads", v.hidden, "vision.hidden");
  if (!(v.layer_norm_eps > 0)) fail("config: vision.layer_norm_eps must be positive");
  if (projector.merge != 1 && projector.merge != 2) fail("config: projector.merge must be 1 or 2, got ", projector.merge);
  positive(projector.hidden, "projector.hidden");
  if (projector.merge == 2 && v.grid() % 2 != 0)
    fail("config: projector.merge 2 needs an even patch grid, but vision.image_size / vision.patch_size = ", v.grid());
  const auto& d = decoder;
  positive(d.vocab, "decoder.vocab");
  positive(d.hidden, "decoder.hidden");
  positive(d.layers, "decoder.layers");
  positive(d.heads, "decoder.heads");
  positive(d.kv_heads, "decoder.kv_heads");
  positive(d.mlp, "decoder.mlp");
  divides(d.heads, "decoder.heads", d.hidden, "decoder.hidden");
  divides(d.kv_heads, "decoder.kv_heads", d.heads, "decoder.heads");
  if (d.hidden % d.heads == 0 && d.head_dim() % 2 != 0)
    fail("config: decoder.hidden / decoder.heads (", d.head_dim(), ") must be even for the rotary embedding");
  if (!(d.rope_theta > 0)) fail("config: decoder.rope_theta must be positive");
  if (!(d.rms_norm_eps > 0)) fail("config: decoder.rms_norm_eps must be positive");
  if (moe.enabled) {
    positive(moe.experts, "moe.experts");
    positive(moe.top_k, "moe.top_k");
    positive(moe.mlp, "moe.mlp");
    if (moe.top_k > moe.experts) fail("config: moe.top_k (", moe.top_k, ") must not exceed moe.experts (", moe.experts, ")");
  }
  if (moe.aux_weight < 0) fail("config: moe.aux_weight must be >= 0");
  if (fusion.enabled) {
    positive(fusion.heads, "fusion.heads");
    positive(fusion.width, "fusion.width");
    divides(fusion.heads, "fusion.heads", fusion.width, "fusion.width");
  }
  if (fire.vision_layers.size() != fire.decoder_layers.size())
    fail("config: fire.vision_layers (", fire.vision_layers.size(), " entries) and fire.decoder_layers (",
         fire.decoder_layers.size(), " entries) must pair up");
  for (size_t j = 0; j < fire.vision_layers.size(); ++j) {
    if (fire.vision_layers[j] < 1 || fire.vision_layers[j] > v.layers)
      fail("config: fire.vision_layers[", j, "] = ", fire.vision_layers[j], " must be in [1, vision.layers = ", v.layers, "]");
    if (fire.decoder_layers[j] < 0 || fire.decoder_layers[j] >= d.layers)
      fail("config: fire.decoder_layers[", j, "] = ", fire.decoder_layers[j], " must be in [0, decoder.layers = ", d.layers, ")");
  }
  if (embedding.pooling != "mean" && embedding.pooling != "emb_token")
    fail("config: embedding.pooling must be \"mean\" or \"emb_token\", got \"", embedding.pooling, "\"");
  positive(embedding.dim, "embedding.dim");
  if (embedding.architecture != "mllm" && embedding.architecture != "dual")
    fail("config: embedding.architecture must be \"mllm\" or \"dual\", got \"", embedding.architecture, "\"");
  if (embedding.architecture == "dual" && (fusion.enabled || fire.enabled))
    fail("config: embedding.architecture \"dual\" keeps images out of the decoder, so fusion.enabled and ",
         "fire.enabled must be false");
  for (size_t j = 0; j < embedding.matryoshka.size(); ++j)
    if (embedding.matryoshka[j] <= 0 || embedding.matryoshka[j] > embedding.dim)
      fail("config: embedding.matryoshka[", j, "] = ", embedding.matryoshka[j], " must be in [1, embedding.dim = ",
           embedding.dim, "]");
}

std::string ModelConfig::to_json() const {
  json j;
  j["name"] = name;
  j["vision"] = {{"style", vision.style}, {"image_size", vision.image_size}, {"patch_size", vision.patch_size},
                 {"hidden", vision.hidden},  {"layers", vision.layers},         {"heads", vision.heads},
                 {"mlp", vision.mlp},        {"act", vision.act},               {"layer_norm_eps", vision.layer_norm_eps}};
  j["projector"] = {{"merge", projector.merge}, {"hidden", projector.hidden}};
  j["decoder"] = {{"vocab", decoder.vocab},       {"hidden", decoder.hidden},           {"layers", decoder.layers},
                  {"heads", decoder.heads},       {"kv_heads", decoder.kv_heads},       {"mlp", decoder.mlp},
                  {"rope_theta", decoder.rope_theta}, {"rms_norm_eps", decoder.rms_norm_eps},
                  {"tie_embeddings", decoder.tie_embeddings}};
  j["moe"] = {{"enabled", moe.enabled}, {"experts", moe.experts}, {"top_k", moe.top_k}, {"mlp", moe.mlp},
              {"aux_weight", moe.aux_weight}};
  j["fusion"] = {{"enabled", fusion.enabled}, {"heads", fusion.heads}, {"width", fusion.width}};
  j["fire"] = {{"enabled", fire.enabled}, {"vision_layers", fire.vision_layers}, {"decoder_layers", fire.decoder_layers}};
  j["embedding"] = {{"pooling", embedding.pooling}, {"dim", embedding.dim}, {"matryoshka", embedding.matryoshka},
                    {"architecture", embedding.architecture}};
  j["init_seed"] = init_seed;
  return j.dump(2);
}

ModelConfig ModelConfig::from_json(const std::string& text, const std::string& origin) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    fail(origin, ": not valid JSON (", e.what(), ")");
  }
  ModelConfig c;
  Section top(root, "", origin);
  top.get("name", c.name);
  top.get("init_seed", c.init_seed);
  {
    Section s(top.sub("vision"), "vision", origin);
    auto& v = c.vision;
    s.get("style", v.style), s.get("image_size", v.image_size), s.get("patch_size", v.patch_size);
    s.get("hidden", v.hidden), s.get("layers", v.layers), s.get("heads", v.heads), s.get("mlp", v.mlp);
    s.get("act", v.act), s.get("layer_norm_eps", v.layer_norm_eps);
    s.finish();
  }
  {
    Section s(top.sub("projector"), "projector", origin);
    s.get("merge", c.projector.merge), s.get("hidden", c.projector.hidden);
    s.finish();
  }
  {
    Section s(top.sub("decoder"), "decoder", origin);
    auto& d = c.decoder;
    s.get("vocab", d.vocab), s.get("hidden", d.hidden), s.get("layers", d.layers), s.get("heads", d.heads);
    s.get("kv_heads", d.kv_heads), s.get("mlp", d.mlp), s.get("rope_theta", d.rope_theta);
    s.get("rms_norm_eps", d.rms_norm_eps), s.get("tie_embeddings", d.tie_embeddings);
    s.finish();
  }
  {
    Section s(top.sub("moe"), "moe", origin);
    c.moe.mlp = c.decoder.mlp;  // an expert defaults to the dense MLP's width
    s.get("enabled", c.moe.enabled), s.get("experts", c.moe.experts), s.get("top_k", c.moe.top_k);
    s.get("mlp", c.moe.mlp), s.get("aux_weight", c.moe.aux_weight);
    s.finish();
  }
  {
    Section s(top.sub("fusion"), "fusion", origin);
    s.get("enabled", c.fusion.enabled), s.get("heads", c.fusion.heads), s.get("width", c.fusion.width);
    s.finish();
  }
  {
    Section s(top.sub("fire"), "fire", origin);
    s.get("enabled", c.fire.enabled), s.get("vision_layers", c.fire.vision_layers);
    s.get("decoder_layers", c.fire.decoder_layers);
    s.finish();
  }
  {
    Section s(top.sub("embedding"), "embedding", origin);
    s.get("pooling", c.embedding.pooling), s.get("dim", c.embedding.dim), s.get("matryoshka", c.embedding.matryoshka);
    s.get("architecture", c.embedding.architecture);
    s.finish();
  }
  top.finish();
  try {
    c.validate();
  } catch (const Error& e) {
    fail(origin, ": ", e.what());
  }
  return c;
}

std::string config_dir() {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv("MOON_CONFIG_DIR"); env && *env) return env;
#ifdef MOON_SOURCE_CONFIG_DIR
  if (fs::is_directory(MOON_SOURCE_CONFIG_DIR)) return MOON_SOURCE_CONFIG_DIR;
#endif
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec && fs::is_directory(exe.parent_path().parent_path() / "configs"))
    return (exe.parent_path().parent_path() / "configs").string();
  return "configs";
}

ModelConfig load_config(const std::string& name_or_path) {
  namespace fs = std::filesystem;
  std::string path = name_or_path;
  const bool looks_like_path = name_or_path.find('/') != std::string::npos || name_or_path.ends_with(".json");
  if (!looks_like_path) path = config_dir() + "/" + name_or_path + ".json";
  if (!fs::exists(path)) {
    if (looks_like_path) fail("config file ", path, " does not exist");
    fail("no config named \"", name_or_path, "\" (looked for ", path,
         "); use tiny, small, base or the path of a JSON file");
  }
  return ModelConfig::from_json(io::read_file_text(path), path);
}

ModelConfig with_overrides(const ModelConfig& config, const std::vector<std::string>& assignments) {
  json root = json::parse(config.to_json());
  for (const std::string& a : assignments) {
    const size_t eq = a.find('=');
    MOON_CHECK(eq != std::string::npos && eq > 0, "config override '", a, "': expected section.field=value");
    const std::string path = a.substr(0, eq), text = a.substr(eq + 1);
    json value;
    try {
      value = json::parse(text);
    } catch (const json::parse_error&) {
      value = text;  // a bare word: a string
    }
    json* node = &root;
    size_t start = 0;
    while (true) {
      const size_t dot = path.find('.', start);
      const std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      MOON_CHECK(node->is_object() && node->contains(key), "config override '", a, "': the config has no field '",
                 path.substr(0, dot == std::string::npos ? path.size() : dot), "'");
      node = &(*node)[key];
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    MOON_CHECK(!node->is_object(), "config override '", a, "': '", path, "' is a section; set one of its fields");
    *node = value;
  }
  return ModelConfig::from_json(root.dump(), "config overrides");
}

}  // namespace moon::model
