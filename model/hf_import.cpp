// Hugging Face SigLIP / CLIP vision towers and Qwen2 decoders into a MoonModel (see hf_import.h).
#include "model/hf_import.h"

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "io/bpe_tokenizer.h"
#include "io/file_util.h"
#include "io/safetensors_sharded.h"
#include "runtime/autograd.h"
#include "runtime/error.h"

namespace moon::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int64_t kMaxSize = int64_t{1} << 24;  // no real model has a size field this large

json parse_object(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(origin, ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail(origin, ": expected a JSON object, got ", j.type_name());
  return j;
}

// Reads the fields of one Hugging Face config object; `prefix` ("vision_config.") names nested fields.
struct Fields {
  const json& j;
  const std::string& origin;
  std::string prefix;

  bool has(const char* key) const { return j.contains(key) && !j.at(key).is_null(); }
  [[noreturn]] void missing(const char* key) const {
    fail(origin, ": missing field ", prefix, key, " (every Hugging Face config.json of this model type has it)");
  }
  int64_t positive_int(const char* key, std::optional<int64_t> fallback) const {
    if (!has(key)) {
      if (!fallback) missing(key);
      return *fallback;
    }
    const json& v = j.at(key);
    bool ok = v.is_number_integer();
    if (ok && v.is_number_unsigned()) ok = v.get<uint64_t>() >= 1 && v.get<uint64_t>() <= uint64_t(kMaxSize);
    else if (ok) ok = v.get<int64_t>() >= 1 && v.get<int64_t>() <= kMaxSize;
    if (!ok)
      fail(origin, ": ", prefix, key, " must be a positive integer below 2^24, got ", v.dump());
    return v.get<int64_t>();
  }
  double positive_number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const json& v = j.at(key);
    if (!v.is_number() || !(v.get<double>() > 0)) fail(origin, ": ", prefix, key, " must be a positive number, got ", v.dump());
    return v.get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!j.at(key).is_boolean()) fail(origin, ": ", prefix, key, " must be true or false, got ", j.at(key).dump());
    return j.at(key).get<bool>();
  }
  std::string text(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    if (!j.at(key).is_string()) fail(origin, ": ", prefix, key, " must be a string, got ", j.at(key).dump());
    return j.at(key).get<std::string>();
  }
};

// Where a --vision / --decoder argument's weights and config.json are.
struct Source {
  std::string weights, config;
};

Source locate(const std::string& path, const char* flag) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    fail(path, ": no such file or folder (", flag,
         " takes a Hugging Face model folder, or its model.safetensors / model.safetensors.index.json)");
  Source s{path, ""};
  const fs::path folder = fs::is_directory(path, ec) ? fs::path(path) : fs::path(path).parent_path();
  s.config = (folder.empty() ? fs::path("config.json") : folder / "config.json").string();
  if (!fs::exists(s.config, ec))
    fail(s.config, ": not found; the ", flag, " weights need the model's config.json beside them (it gives the sizes)");
  return s;
}

// The layer index K of "<prefix>K.rest", or -1.
int64_t layer_of(const std::string& name, const std::string& prefix) {
  if (name.rfind(prefix, 0) != 0) return -1;
  size_t i = prefix.size();
  int64_t k = 0;
  const size_t start = i;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9' && i - start < 9) k = k * 10 + (name[i++] - '0');
  if (i == start || i >= name.size() || name[i] != '.') return -1;
  return k;
}

// The vision parameter a Hugging Face tensor name stands for ("" when it is not part of a vision tower).
std::string vision_name(const std::string& name) {
  for (const char* prefix : {"model.vision_tower.vision_model.", "vision_tower.vision_model.", "model.vision_tower.",
                             "vision_tower.", "vision_model."})
    if (name.rfind(prefix, 0) == 0) return "vision_model." + name.substr(std::string(prefix).size());
  return "";
}

// The decoder name of a Hugging Face tensor ("" when it is not part of a causal LM).
std::string decoder_name(const std::string& name) {
  std::string n = name.rfind("language_model.", 0) == 0 ? name.substr(15) : name;
  if (n.rfind("model.", 0) == 0 || n == "lm_head.weight") return n;
  return "";
}

// The config.json fields that decide the shape of a parameter.
std::string fields_for(const std::string& name) {
  auto has = [&](const char* part) { return name.find(part) != std::string::npos; };
  if (name.rfind("vision_model.", 0) == 0) {
    if (has("patch_embedding")) return "hidden_size and patch_size";
    if (has("position_embedding")) return "image_size, patch_size and hidden_size";
    if (has("fc1") || has("fc2")) return "intermediate_size and hidden_size";
    return "hidden_size";
  }
  if (has("embed_tokens") || has("lm_head")) return "vocab_size and hidden_size";
  if (has("k_proj") || has("v_proj")) return "num_key_value_heads, num_attention_heads and hidden_size";
  if (has("gate_proj") || has("up_proj") || has("down_proj")) return "intermediate_size and hidden_size";
  return "hidden_size";
}

bool is_router(const std::string& name) {
  return name.ends_with(".mlp.gate.weight") || name.ends_with(".mlp.modality_embedding.weight");
}

// "model.layers.3.mlp.experts.1.up_proj.weight" -> "model.layers.3.mlp.up_proj.weight" (else unchanged).
std::string dense_name_of_expert(const std::string& name) {
  const size_t at = name.find(".mlp.experts.");
  if (at == std::string::npos) return name;
  const size_t dot = name.find('.', at + 13);
  return dot == std::string::npos ? name : name.substr(0, at) + ".mlp" + name.substr(dot);
}

// Copies Hugging Face tensors into the model's parameters, checking shapes and remembering what it filled.
class Placer {
 public:
  Placer(ParamStore& params, HfImportReport& report) : params_(params), report_(report) {}

  void place(const std::string& target, const io::SafetensorsFile& shard, const std::string& hf_name,
             const std::string& config_path) {
    const io::TensorInfo& info = shard.info(hf_name);
    const Tensor& param = params_.get(target);
    if (info.shape != param.shape())
      fail(shard.path(), ": tensor ", hf_name, " has shape ", shape_str(info.shape), " but ", config_path, " gives ",
           param.shape_str(), "; check ", fields_for(target), " in ", config_path);
    if (info.dtype != "F32" && info.dtype != "BF16" && info.dtype != "F16")
      fail(shard.path(), ": tensor ", hf_name, " has dtype ", info.dtype, "; weights must be F32, BF16 or F16");
    if (filled_.count(target))
      fail(shard.path(), ": tensor ", hf_name, " fills ", target, ", which another tensor of the checkpoint already filled");
    params_.assign(target, shard.tensor(hf_name), shard.path());
    filled_.insert(target);
  }
  void counted(const io::TensorInfo& info) {
    ++report_.placed;
    report_.placed_scalars += shape_numel(info.shape);
  }
  void skip(const io::SafetensorsFile& shard, const std::string& hf_name, const std::string& why) {
    report_.unplaced.push_back(hf_name + " " + shape_str(shard.info(hf_name).shape) + " in " + shard.path() + ": " + why);
  }
  bool filled(const std::string& name) const { return filled_.count(name) != 0; }

 private:
  ParamStore& params_;
  HfImportReport& report_;
  std::set<std::string> filled_;
};

void import_vision(const Source& src, const ModelConfig& config, ParamStore& params, Placer& placer) {
  io::Checkpoint ckpt(src.weights);
  for (const auto& shard : ckpt.shards()) {
    for (const std::string& name : shard->names()) {
      const std::string target = vision_name(name);
      if (target.empty()) {
        placer.skip(*shard, name, "not part of the vision tower");
        continue;
      }
      const int64_t layer = layer_of(target, "vision_model.encoder.layers.");
      if (layer >= config.vision.layers)
        fail(shard->path(), ": tensor ", name, " belongs to layer ", layer, " but ", src.config,
             " says num_hidden_layers = ", config.vision.layers);
      if (!params.contains(target)) {
        placer.skip(*shard, name, "moon's vision encoder has no such parameter");
        continue;
      }
      placer.place(target, *shard, name, src.config);
      placer.counted(shard->info(name));
    }
  }
}

void import_decoder(const Source& src, const ModelConfig& config, ParamStore& params, Placer& placer,
                    HfImportReport& report) {
  io::Checkpoint ckpt(src.weights);
  const bool moe = config.moe.enabled;
  std::set<int64_t> upcycled;
  for (const auto& shard : ckpt.shards()) {
    for (const std::string& name : shard->names()) {
      const std::string target = decoder_name(name);
      if (target.empty()) {
        placer.skip(*shard, name, "not part of the decoder");
        continue;
      }
      const int64_t layer = layer_of(target, "model.layers.");
      if (layer >= config.decoder.layers)
        fail(shard->path(), ": tensor ", name, " belongs to layer ", layer, " but ", src.config,
             " says num_hidden_layers = ", config.decoder.layers);
      if (target == "lm_head.weight" && config.decoder.tie_embeddings) {
        placer.skip(*shard, name, "tie_word_embeddings is true, so model.embed_tokens.weight is the output layer");
        continue;
      }
      const size_t mlp = target.find(".mlp.");
      if (moe && layer >= 0 && mlp != std::string::npos && target.ends_with("_proj.weight")) {
        // sparse upcycling: the dense FFN becomes every expert
        const std::string tail = target.substr(mlp + 5);  // "gate_proj.weight"
        for (int64_t e = 0; e < config.moe.experts; ++e)
          placer.place(target.substr(0, mlp) + ".mlp.experts." + std::to_string(e) + "." + tail, *shard, name, src.config);
        placer.counted(shard->info(name));
        upcycled.insert(layer);
        continue;
      }
      if (!params.contains(target)) {
        placer.skip(*shard, name, "moon's decoder has no such parameter");
        continue;
      }
      placer.place(target, *shard, name, src.config);
      placer.counted(shard->info(name));
    }
  }
  report.upcycled_layers = static_cast<int64_t>(upcycled.size());
  report.experts = moe ? config.moe.experts : 0;
}

std::string vision_summary(const VisionConfig& v) {
  std::ostringstream os;
  os << v.style << ", " << v.layers << " layers, width " << v.hidden << ", " << v.heads << " heads, mlp " << v.mlp
     << ", " << v.image_size << " px, patch " << v.patch_size << ", " << v.act;
  return os.str();
}

std::string decoder_summary(const DecoderConfig& d) {
  std::ostringstream os;
  os << "qwen2, " << d.layers << " layers, width " << d.hidden << ", " << d.heads << " heads / " << d.kv_heads
     << " kv, mlp " << d.mlp << ", vocab " << d.vocab << (d.tie_embeddings ? ", tied embeddings" : "");
  return os.str();
}

// "model.layers.12.mlp.gate.weight" -> "model.layers.*.mlp.gate.weight" (layer indices folded).
std::string fold_layers(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    out += s[i];
    if (s.compare(i, 7, "layers.") == 0) {
      out += "ayers.";
      i += 7;
      size_t j = i;
      while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j;
      if (j > i) out += "*";
      i = j;
    } else {
      ++i;
    }
  }
  return out;
}

std::string millions(int64_t n) {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(2);
  os << static_cast<double>(n) / 1e6 << "M";
  return os.str();
}

}  // namespace

void apply_hf_vision_config(const std::string& json_text, const std::string& origin, VisionConfig& vision) {
  const json root = parse_object(json_text, origin);
  const json* section = &root;
  std::string prefix;
  if (root.contains("vision_config")) {
    if (!root.at("vision_config").is_object()) fail(origin, ": vision_config must be a JSON object");
    section = &root.at("vision_config");
    prefix = "vision_config.";
  }
  const Fields f{*section, origin, prefix};
  std::string type = f.text("model_type", "");
  if (type.empty()) type = Fields{root, origin, ""}.text("model_type", "");
  if (type.empty()) f.missing("model_type");
  VisionConfig v;
  if (type.rfind("siglip", 0) == 0) {
    v.style = "siglip";
    v.patch_size = 16, v.layer_norm_eps = 1e-6, v.act = "gelu_tanh";
  } else if (type.rfind("clip", 0) == 0) {
    v.style = "clip";
    v.patch_size = 32, v.layer_norm_eps = 1e-5, v.act = "quick_gelu";
  } else {
    fail(origin, ": model_type \"", type, "\" is not a SigLIP or CLIP vision model (expected siglip* or clip*)");
  }
  v.image_size = f.positive_int("image_size", 224);
  v.patch_size = f.positive_int("patch_size", v.patch_size);
  v.hidden = f.positive_int("hidden_size", 768);
  v.mlp = f.positive_int("intermediate_size", 3072);
  v.layers = f.positive_int("num_hidden_layers", 12);
  v.heads = f.positive_int("num_attention_heads", 12);
  v.layer_norm_eps = f.positive_number("layer_norm_eps", v.layer_norm_eps);
  if (f.positive_int("num_channels", 3) != 3) fail(origin, ": ", prefix, "num_channels must be 3 (RGB)");
  const std::string act = f.text("hidden_act", v.act == "gelu_tanh" ? "gelu_pytorch_tanh" : "quick_gelu");
  if (act == "gelu_pytorch_tanh" || act == "gelu_new" || act == "gelu_tanh") v.act = "gelu_tanh";
  else if (act == "quick_gelu") v.act = "quick_gelu";
  else if (act == "gelu") v.act = "gelu";
  else fail(origin, ": ", prefix, "hidden_act \"", act, "\" is not supported (gelu_pytorch_tanh, gelu_new, quick_gelu or gelu)");
  vision = v;
}

void apply_hf_decoder_config(const std::string& json_text, const std::string& origin, DecoderConfig& decoder) {
  const json root = parse_object(json_text, origin);
  const json* section = &root;
  std::string prefix;
  if (root.contains("text_config") && root.at("text_config").is_object()) {  // a vision-language model's config
    section = &root.at("text_config");
    prefix = "text_config.";
  }
  const Fields f{*section, origin, prefix};
  const std::string type = f.text("model_type", "qwen2");
  if (type != "qwen2")
    fail(origin, ": ", prefix, "model_type \"", type, "\" is not qwen2 (moon's decoder is Qwen2ForCausalLM)");
  const std::string act = f.text("hidden_act", "silu");
  if (act != "silu") fail(origin, ": ", prefix, "hidden_act \"", act, "\" is not silu (Qwen2's SwiGLU)");
  if (f.has("rope_scaling")) fail(origin, ": ", prefix, "rope_scaling is set; moon's decoder supports plain RoPE only");
  DecoderConfig d;
  d.vocab = f.positive_int("vocab_size", std::nullopt);
  d.hidden = f.positive_int("hidden_size", std::nullopt);
  d.mlp = f.positive_int("intermediate_size", std::nullopt);
  d.layers = f.positive_int("num_hidden_layers", std::nullopt);
  d.heads = f.positive_int("num_attention_heads", std::nullopt);
  d.kv_heads = f.positive_int("num_key_value_heads", d.heads);
  d.rope_theta = f.positive_number("rope_theta", 10000.0);
  d.rms_norm_eps = f.positive_number("rms_norm_eps", 1e-6);
  d.tie_embeddings = f.boolean("tie_word_embeddings", false);
  if (f.has("head_dim") && d.hidden % d.heads == 0 && f.positive_int("head_dim", 1) != d.hidden / d.heads)
    fail(origin, ": ", prefix, "head_dim ", f.positive_int("head_dim", 1), " differs from hidden_size / num_attention_heads = ",
         d.hidden / d.heads, "; moon's decoder needs them equal");
  decoder = d;
}

HfImportResult import_hf(const HfImportOptions& options) {
  MOON_CHECK(!options.vision.empty(), "moon import needs --vision DIR|FILE (a Hugging Face SigLIP or CLIP vision model)");
  MOON_CHECK(!options.decoder.empty(), "moon import needs --decoder DIR|FILE (a Hugging Face Qwen2 model)");
  const Source vision = locate(options.vision, "--vision");
  const Source decoder = locate(options.decoder, "--decoder");

  ModelConfig config = load_config(options.config);
  apply_hf_vision_config(io::read_file_text(vision.config), vision.config, config.vision);
  apply_hf_decoder_config(io::read_file_text(decoder.config), decoder.config, config.decoder);
  if (config.moe.enabled) config.moe.mlp = config.decoder.mlp;  // upcycled experts have the dense shape
  if (options.seed) config.init_seed = *options.seed;
  config.name = config.name + "+hf";
  try {
    config.validate();
  } catch (const Error& e) {
    fail("the imported sizes (", vision.config, ", ", decoder.config, ") do not fit --config ", options.config, ": ",
         e.what());
  }

  HfImportResult result;
  HfImportReport& report = result.report;
  report.vision_source = options.vision;
  report.decoder_source = options.decoder;
  report.vision_summary = vision_summary(config.vision);
  report.decoder_summary = decoder_summary(config.decoder);
  report.seed = config.init_seed;
  result.model = std::make_unique<MoonModel>(config);
  ParamStore& params = result.model->params();

  Placer placer(params, report);
  {
    NoGradGuard no_grad;
    import_vision(vision, config, params, placer);
    import_decoder(decoder, config, params, placer, report);
  }

  for (const auto& [name, value] : params.all()) {
    if (placer.filled(name)) continue;
    const bool from_vision = name.rfind("vision_model.", 0) == 0;
    const bool from_decoder = (name.rfind("model.", 0) == 0 || name == "lm_head.weight") && !is_router(name);
    if (from_vision)
      fail(vision.weights, ": the checkpoint has no tensor ", name, " ", value.shape_str(), ", which ", vision.config,
           " implies (", report.vision_summary, ")");
    if (from_decoder)
      fail(decoder.weights, ": the checkpoint has no tensor ", dense_name_of_expert(name), " ", value.shape_str(),
           ", which ", decoder.config, " implies (", report.decoder_summary, ")");
    report.fresh.push_back(name + " " + value.shape_str());
  }

  // The decoder's tokenizer travels with the checkpoint when the folder has one.
  const fs::path folder = fs::is_directory(decoder.weights) ? fs::path(decoder.weights) : fs::path(decoder.weights).parent_path();
  const std::string tokenizer_path = (folder / "tokenizer.json").string();
  if (fs::exists(tokenizer_path)) {
    try {
      std::string text = io::read_file_text(tokenizer_path);
      const io::BpeTokenizer tok = io::BpeTokenizer::from_tokenizer_json_string(text, tokenizer_path);
      result.tokenizer_json = std::move(text);
      report.tokenizer_note = tokenizer_path + " (" + std::to_string(tok.vocab_size()) + " tokens) stored as moon.tokenizer";
    } catch (const Error& e) {
      report.tokenizer_note = std::string("not stored: ") + e.what();
    }
  } else {
    report.tokenizer_note = "none (no tokenizer.json beside the decoder weights; pass --tokenizer to moon embed)";
  }
  return result;
}

std::string HfImportReport::format() const {
  std::ostringstream os;
  os << "vision:  " << vision_source << " (" << vision_summary << ")\n";
  os << "decoder: " << decoder_source << " (" << decoder_summary << ")\n";
  os << "placed " << placed << " Hugging Face tensors (" << millions(placed_scalars) << " values)\n";
  if (experts > 0)
    os << "MoE: the dense mlp of " << upcycled_layers << " decoder layers copied into each of " << experts
       << " experts (sparse upcycling); the routers start fresh\n";
  // fresh parameters, with the layer index folded: "model.layers.*.mlp.gate.weight (4, 128) x4"
  std::vector<std::pair<std::string, int>> groups;
  std::map<std::string, size_t> at;
  for (const std::string& f : fresh) {
    const std::string key = fold_layers(f);
    auto it = at.find(key);
    if (it == at.end()) {
      at[key] = groups.size();
      groups.emplace_back(key, 1);
    } else {
      ++groups[it->second].second;
    }
  }
  os << "freshly initialised (seed " << seed << "): " << fresh.size() << " tensors\n";
  for (const auto& [key, n] : groups) os << "  " << key << (n > 1 ? " x" + std::to_string(n) : "") << "\n";
  os << "not placed: " << unplaced.size() << " Hugging Face tensors\n";
  for (const std::string& u : unplaced) os << "  " << u << "\n";
  os << "tokenizer: " << tokenizer_note << "\n";
  return os.str();
}

}  // namespace moon::model
