// Hugging Face import (model/hf_import.h).
//   hf_import (fast): Hugging Face layouts this file writes itself (SigLIP / CLIP, F32 / BF16 / F16, single file
//     and sharded, prefixed names, extra towers): exact placement, upcycling, the report, exact errors, and
//     seeded corruption of config.json.
//   model_import (parity): the PyTorch twin's `export-hf` writes the Hugging Face layout of a moon checkpoint
//     (real names and shapes, bf16, sharded decoder, SigLIP head); importing it gives the bf16-rounded
//     originals exactly. Needs MOON_TWIN_PYTHON and MOON_TWIN_SCRIPT (cmake/tests/model_import.cmake).
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "io/bpe_tokenizer.h"
#include "io/file_util.h"
#include "io/safetensors.h"
#include "io/safetensors_sharded.h"
#include "model/checkpoint.h"
#include "model/hf_import.h"
#include "tests/test_util.h"

using namespace moon;
using moon::test::contains;
using moon::test::error_of;
using moon::test::TempDir;
namespace fs = std::filesystem;

namespace {

// tiny with MoE on (so upcycling is exercised) and the expert width equal to the dense one.
model::ModelConfig import_config(const std::string& style) {
  model::ModelConfig c = model::load_config("tiny");
  c.moe.enabled = c.fusion.enabled = c.fire.enabled = true;
  c.vision.style = style;
  if (style == "clip") c.vision.act = "quick_gelu", c.vision.layer_norm_eps = 1e-5;
  c.moe.mlp = c.decoder.mlp;
  c.init_seed = 11;
  return c;
}

nlohmann::json hf_vision_config(const model::ModelConfig& c) {
  const auto& v = c.vision;
  const std::string act = v.act == "gelu_tanh" ? "gelu_pytorch_tanh" : v.act;
  return {{"model_type", v.style == "siglip" ? "siglip_vision_model" : "clip_vision_model"},
          {"hidden_size", v.hidden}, {"intermediate_size", v.mlp}, {"num_hidden_layers", v.layers},
          {"num_attention_heads", v.heads}, {"num_channels", 3}, {"image_size", v.image_size},
          {"patch_size", v.patch_size}, {"hidden_act", act}, {"layer_norm_eps", v.layer_norm_eps}};
}

nlohmann::json hf_decoder_config(const model::ModelConfig& c) {
  const auto& d = c.decoder;
  return {{"architectures", {"Qwen2ForCausalLM"}}, {"model_type", "qwen2"}, {"vocab_size", d.vocab},
          {"hidden_size", d.hidden}, {"intermediate_size", d.mlp}, {"num_hidden_layers", d.layers},
          {"num_attention_heads", d.heads}, {"num_key_value_heads", d.kv_heads}, {"hidden_act", "silu"},
          {"rope_theta", d.rope_theta}, {"rms_norm_eps", d.rms_norm_eps}, {"rope_scaling", nullptr},
          {"tie_word_embeddings", d.tie_embeddings}, {"torch_dtype", "bfloat16"}};
}

// The Hugging Face name of a decoder parameter: expert 0 stands for the dense mlp.
std::string hf_decoder_name(const std::string& name) {
  const size_t at = name.find(".mlp.experts.0.");
  return at == std::string::npos ? name : name.substr(0, at) + ".mlp." + name.substr(at + 15);
}

struct HfLayoutOptions {
  DType dtype = DType::BF16;
  std::string vision_prefix = "vision_model.";
  bool shard_decoder = true;
};

// Writes root/vision/{config.json, model.safetensors} (+ a SigLIP head and a text-tower tensor) and
// root/decoder/{config.json, shards + index or model.safetensors} from a moon model, as Hugging Face would.
void write_hf_layout(const model::MoonModel& m, const std::string& root, const HfLayoutOptions& o) {
  const model::ModelConfig& c = m.config();
  io::make_dirs(root + "/vision");
  io::make_dirs(root + "/decoder");
  std::vector<std::pair<std::string, Tensor>> vision, decoder;
  for (const auto& [name, t] : m.params().all()) {
    const Tensor v = t.detach().to(o.dtype);
    if (name.rfind("vision_model.", 0) == 0) vision.emplace_back(o.vision_prefix + name.substr(13), v);
    const bool expert = name.find(".mlp.experts.") != std::string::npos;
    if ((name.rfind("model.", 0) == 0 || name == "lm_head.weight") && !name.ends_with(".mlp.gate.weight") &&
        !name.ends_with("modality_embedding.weight") && (!expert || name.find(".mlp.experts.0.") != std::string::npos))
      decoder.emplace_back(hf_decoder_name(name), v);
  }
  vision.emplace_back("vision_model.head.probe", zeros({1, 1, c.vision.hidden}, o.dtype));
  vision.emplace_back("text_model.embeddings.token_embedding.weight", zeros({10, c.vision.hidden}, o.dtype));
  io::save_safetensors(root + "/vision/model.safetensors", vision, {{"format", "pt"}});
  io::write_file_atomic(root + "/vision/config.json", hf_vision_config(c).dump(2));
  if (o.shard_decoder) {
    int64_t bytes = 0;
    for (const auto& p : decoder) bytes += p.second.numel() * 2;
    io::save_sharded(root + "/decoder", decoder, static_cast<size_t>(bytes / 2 + 1), {{"format", "pt"}});
  } else {
    io::save_safetensors(root + "/decoder/model.safetensors", decoder, {{"format", "pt"}});
  }
  io::write_file_atomic(root + "/decoder/config.json", hf_decoder_config(c).dump(2));
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.raw_data(), y.raw_data(), x.numel() * dtype_size(x.dtype())) == 0;
}

// Every parameter of `imported` is the `dtype`-rounded original (vision, decoder; experts from the dense mlp =
// the original expert 0) or, for the moon-only parts, the original's fresh value (same seed, same name).
void check_imported(const model::MoonModel& original, const model::MoonModel& imported, DType dtype) {
  REQUIRE(imported.params().all().size() == original.params().all().size());
  int64_t from_hf = 0, fresh = 0;
  for (const auto& [name, t] : imported.params().all()) {
    INFO(name);
    const bool vision = name.rfind("vision_model.", 0) == 0;
    const bool router = name.ends_with(".mlp.gate.weight") || name.ends_with("modality_embedding.weight");
    const bool decoder = (name.rfind("model.", 0) == 0 || name == "lm_head.weight") && !router;
    if (vision || decoder) {
      std::string source = name;
      const size_t at = name.find(".mlp.experts.");
      if (at != std::string::npos) source = name.substr(0, at) + ".mlp.experts.0" + name.substr(name.find('.', at + 13));
      CHECK(bit_equal(t, original.params().get(source).detach().to(dtype).to(DType::F32)));
      ++from_hf;
    } else {
      CHECK(bit_equal(t, original.params().get(name)));
      ++fresh;
    }
  }
  CHECK(from_hf > 0);
  CHECK(fresh > 0);
}

std::string write_config(const TempDir& dir, const model::ModelConfig& c) {
  const std::string path = dir / "moon_config.json";
  io::write_file_atomic(path, c.to_json());
  return path;
}

}  // namespace

TEST_SUITE("hf_import") {
  TEST_CASE("SigLIP + sharded Qwen2 in bf16: exact placement, upcycling and the report") {
    TempDir dir("hf");
    const model::ModelConfig c = import_config("siglip");
    model::MoonModel original(c);
    write_hf_layout(original, dir / "hf", {});
    REQUIRE(fs::exists(dir / "hf/decoder/model.safetensors.index.json"));
    model::HfImportResult r = model::import_hf({dir / "hf/vision", dir / "hf/decoder", write_config(dir, c), {}});
    check_imported(original, *r.model, DType::BF16);
    const model::HfImportReport& rep = r.report;
    CHECK(rep.upcycled_layers == 4);
    CHECK(rep.experts == 4);
    REQUIRE(rep.unplaced.size() == 2);
    CHECK(rep.unplaced[0].rfind("text_model.embeddings.token_embedding.weight (10, 128) in ", 0) == 0);
    CHECK(rep.unplaced[0].ends_with(": not part of the vision tower"));
    CHECK(rep.unplaced[1].rfind("vision_model.head.probe (1, 1, 128) in " + (dir / "hf/vision/model.safetensors"), 0) == 0);
    CHECK(rep.unplaced[1].ends_with(": moon's vision encoder has no such parameter"));
    const std::string text = rep.format();
    CHECK(contains(text, "freshly initialised (seed 11): "));
    CHECK(contains(text, "  projector.linear_1.weight (256, 512)\n"));
    CHECK(contains(text, "  model.layers.*.mlp.gate.weight (4, 128) x4\n"));
    CHECK(contains(text, "  fire.0.gate (128,)\n"));
    CHECK(contains(text, "MoE: the dense mlp of 4 decoder layers copied into each of 4 experts"));
    CHECK(contains(text, "tokenizer: none"));

    // --seed changes the fresh parts only
    model::HfImportResult s = model::import_hf({dir / "hf/vision", dir / "hf/decoder", write_config(dir, c), 99});
    CHECK(s.model->config().init_seed == 99);
    CHECK(!bit_equal(s.model->params().get("projector.linear_1.weight"), r.model->params().get("projector.linear_1.weight")));
    CHECK(bit_equal(s.model->params().get("model.norm.weight"), r.model->params().get("model.norm.weight")));
  }

  TEST_CASE("CLIP in f16 with a vision_tower prefix, Qwen2 f32 single file with its own lm_head") {
    TempDir dir("hf");
    model::ModelConfig c = import_config("clip");
    c.decoder.tie_embeddings = false;
    c.moe.enabled = false;
    model::MoonModel original(c);
    write_hf_layout(original, dir / "hf", {DType::F16, "vision_tower.vision_model.", false});
    model::HfImportResult r =
        model::import_hf({dir / "hf/vision/model.safetensors", dir / "hf/decoder", write_config(dir, c), {}});
    check_imported(original, *r.model, DType::F16);
    CHECK(r.model->config().vision.style == "clip");
    CHECK(r.model->config().vision.act == "quick_gelu");
    CHECK(r.model->params().contains("vision_model.embeddings.class_embedding"));

    write_hf_layout(original, dir / "f32", {DType::F32, "vision_model.", false});
    model::HfImportResult f = model::import_hf({dir / "f32/vision", dir / "f32/decoder", write_config(dir, c), {}});
    check_imported(original, *f.model, DType::F32);
  }

  TEST_CASE("the decoder's tokenizer.json is kept for moon embed") {
    TempDir dir("hf");
    const model::ModelConfig c = import_config("siglip");
    model::MoonModel original(c);
    write_hf_layout(original, dir / "hf", {});
    std::vector<std::string> bytes;
    for (int b = 0; b < 256; ++b) bytes.emplace_back(1, static_cast<char>(b));
    io::BpeTokenizer::from_vocab(bytes, {}, {}, io::PreTokenizer::Qwen2).save(dir / "hf/decoder");
    model::HfImportResult r = model::import_hf({dir / "hf/vision", dir / "hf/decoder", write_config(dir, c), {}});
    CHECK(r.tokenizer_json == io::read_file_text(dir / "hf/decoder/tokenizer.json"));
    CHECK(contains(r.report.tokenizer_note, "(265 tokens) stored as moon.tokenizer"));
  }

  TEST_CASE("shape mismatches, missing tensors and shards, bad config.json are exact errors") {
    TempDir dir("hf");
    const model::ModelConfig c = import_config("siglip");
    const std::string cfg = write_config(dir, c);
    model::MoonModel original(c);
    write_hf_layout(original, dir / "hf", {});
    const std::string vcfg = dir / "hf/vision/config.json", dcfg = dir / "hf/decoder/config.json";
    auto run = [&] { model::import_hf({dir / "hf/vision", dir / "hf/decoder", cfg, {}}); };

    nlohmann::json v = hf_vision_config(c);
    v["intermediate_size"] = 256;
    io::write_file_atomic(vcfg, v.dump());
    CHECK(error_of(run) == dir / "hf/vision/model.safetensors" +
                               ": tensor vision_model.encoder.layers.0.mlp.fc1.bias has shape (512,) but " + vcfg +
                               " gives (256,); check intermediate_size and hidden_size in " + vcfg);
    v = hf_vision_config(c);
    v["num_hidden_layers"] = 3;
    io::write_file_atomic(vcfg, v.dump());
    CHECK(contains(error_of(run), "belongs to layer 3 but " + vcfg + " says num_hidden_layers = 3"));
    v["num_hidden_layers"] = 2;  // FIRE reads layer 3: the moon config no longer fits
    io::write_file_atomic(vcfg, v.dump());
    CHECK(error_of(run) == "the imported sizes (" + vcfg + ", " + dcfg + ") do not fit --config " + cfg +
                               ": config: fire.vision_layers[2] = 3 must be in [1, vision.layers = 2]");
    v = hf_vision_config(c);
    v["hidden_act"] = "relu";
    io::write_file_atomic(vcfg, v.dump());
    CHECK(error_of(run) ==
          vcfg + ": hidden_act \"relu\" is not supported (gelu_pytorch_tanh, gelu_new, quick_gelu or gelu)");
    v = hf_vision_config(c);
    v["model_type"] = "vit";
    io::write_file_atomic(vcfg, v.dump());
    CHECK(error_of(run) == vcfg + ": model_type \"vit\" is not a SigLIP or CLIP vision model (expected siglip* or clip*)");
    io::write_file_atomic(vcfg, hf_vision_config(c).dump());

    nlohmann::json d = hf_decoder_config(c);
    d["num_key_value_heads"] = 4;
    io::write_file_atomic(dcfg, d.dump());
    const std::string e = error_of(run);
    CHECK(e.ends_with(": tensor model.layers.0.self_attn.k_proj.bias has shape (64,) but " + dcfg +
                      " gives (128,); check num_key_value_heads, num_attention_heads and hidden_size in " + dcfg));
    d = hf_decoder_config(c);
    d.erase("vocab_size");
    io::write_file_atomic(dcfg, d.dump());
    CHECK(error_of(run) == dcfg + ": missing field vocab_size (every Hugging Face config.json of this model type has it)");
    d = hf_decoder_config(c);
    d["model_type"] = "llama";
    io::write_file_atomic(dcfg, d.dump());
    CHECK(error_of(run) == dcfg + ": model_type \"llama\" is not qwen2 (moon's decoder is Qwen2ForCausalLM)");
    d = hf_decoder_config(c);
    d["hidden_size"] = -5;
    io::write_file_atomic(dcfg, d.dump());
    CHECK(error_of(run) == dcfg + ": hidden_size must be a positive integer below 2^24, got -5");
    io::write_file_atomic(dcfg, hf_decoder_config(c).dump());

    // a shard removed
    std::string second;
    for (const auto& entry : fs::directory_iterator(dir / "hf/decoder"))
      if (entry.path().filename().string().rfind("model-00002-of-", 0) == 0) second = entry.path().filename().string();
    REQUIRE(!second.empty());
    fs::remove(dir / "hf/decoder/" + second);
    const std::string missing_shard = error_of(run);
    CHECK(missing_shard.rfind(dir / "hf/decoder/model.safetensors.index.json" + ": shard '" + second + "' (holding '", 0) == 0);
    CHECK(missing_shard.ends_with("does not exist at " + (dir / "hf/decoder/" + second) + "; the checkpoint is incomplete"));
    write_hf_layout(original, dir / "hf", {});

    // a tensor missing from the decoder
    std::vector<std::pair<std::string, Tensor>> kept;
    for (const std::string& name : io::Checkpoint(dir / "hf/decoder").names())
      if (name != "model.layers.1.mlp.up_proj.weight") kept.emplace_back(name, io::Checkpoint(dir / "hf/decoder").tensor(name));
    for (const auto& entry : fs::directory_iterator(dir / "hf/decoder"))
      if (entry.path().extension() != ".json" || entry.path().filename() == "model.safetensors.index.json") fs::remove(entry.path());
    io::save_safetensors(dir / "hf/decoder/model.safetensors", kept);
    CHECK(error_of(run) == dir / "hf/decoder" + ": the checkpoint has no tensor model.layers.1.mlp.up_proj.weight (384, 128), which " +
                               dcfg + " implies (qwen2, 4 layers, width 128, 4 heads / 2 kv, mlp 384, vocab 512, tied embeddings)");

    CHECK(error_of([&] { model::import_hf({dir / "nothing", dir / "hf/decoder", cfg, {}}); }) ==
          dir / "nothing" + ": no such file or folder (--vision takes a Hugging Face model folder, or its "
                            "model.safetensors / model.safetensors.index.json)");
    fs::remove(vcfg);
    CHECK(error_of(run) == vcfg + ": not found; the --vision weights need the model's config.json beside them (it gives the sizes)");
  }

  TEST_CASE("seeded corruption of config.json: every mutant parses or throws moon::Error") {
    const model::ModelConfig c = import_config("siglip");
    const std::string texts[2] = {hf_vision_config(c).dump(2), hf_decoder_config(c).dump(2)};
    std::mt19937 gen(20240605);
    int parsed = 0, rejected = 0;
    for (int i = 0; i < 4000; ++i) {
      std::string s = texts[i % 2];
      const int edits = 1 + static_cast<int>(gen() % 4);
      for (int k = 0; k < edits && !s.empty(); ++k) {
        const size_t at = gen() % s.size();
        switch (gen() % 5) {
          case 0: s[at] = static_cast<char>(s[at] ^ (1 << (gen() % 8))); break;  // bit flip
          case 1: s.resize(at); break;                                                    // truncation
          case 2: s.insert(at, 1, "{}[]\",:0-9e"[gen() % 11]); break;             // insertion
          case 3: s.insert(at, "99999999999999999999"); break;                            // a huge number
          default: s.erase(at, 1); break;
        }
      }
      try {
        model::VisionConfig v;
        model::DecoderConfig d;
        if (i % 2 == 0) model::apply_hf_vision_config(s, "config.json", v);
        else model::apply_hf_decoder_config(s, "config.json", d);
        ++parsed;
      } catch (const Error& e) {
        CHECK(std::string(e.what()).rfind("config.json: ", 0) == 0);
        ++rejected;
      }
    }
    CHECK(parsed > 100);
    CHECK(rejected > 1000);
  }
}

TEST_SUITE("model_import") {
  TEST_CASE("the twin's export-hf layout imports back to the bf16-rounded originals") {
    const char* python = std::getenv("MOON_TWIN_PYTHON");
    const char* script = std::getenv("MOON_TWIN_SCRIPT");
    REQUIRE_MESSAGE((python && script), "set MOON_TWIN_PYTHON and MOON_TWIN_SCRIPT (ctest -L parity does)");
    for (const char* style : {"siglip", "clip"}) {
      INFO(style);
      TempDir dir("twin-import");
      model::ModelConfig c = import_config(style);
      model::MoonModel original(c);
      model::save_checkpoint(dir / "moon.safetensors", original);
      const moon::test::PythonTool twin{python, script};
      REQUIRE(twin.run("export-hf --weights " + moon::test::quoted(dir / "moon.safetensors") + " --out " +
                       moon::test::quoted(dir / "hf")) == 0);
      REQUIRE(fs::exists(dir / "hf/decoder/model-00002-of-00002.safetensors"));
      model::HfImportResult r = model::import_hf({dir / "hf/vision", dir / "hf/decoder", write_config(dir, c), {}});
      check_imported(original, *r.model, DType::BF16);
      CHECK(r.report.placed == static_cast<int64_t>(io::Checkpoint(dir / "hf/decoder").names().size() +
                                                    io::Checkpoint(dir / "hf/vision").names().size() -
                                                    r.report.unplaced.size()));
      if (std::string(style) == "siglip") {
        REQUIRE(r.report.unplaced.size() == 11);
        for (const std::string& u : r.report.unplaced) CHECK(u.rfind("vision_model.head.", 0) == 0);
        CHECK(contains(r.report.format(), "  vision_model.head.attention.in_proj_weight (384, 128) in "));
      } else {
        CHECK(r.report.unplaced.empty());
      }

      // the import written as a checkpoint loads back identically
      model::save_checkpoint(dir / "imported.safetensors", *r.model);
      auto back = model::load_checkpoint(dir / "imported.safetensors");
      for (const auto& [name, t] : r.model->params().all()) CHECK(bit_equal(back->params().get(name), t));

      // tampered copies: a wrong shape, a missing shard
      const std::string dcfg = dir / "hf/decoder/config.json";
      nlohmann::json d = nlohmann::json::parse(io::read_file_text(dcfg));
      d["intermediate_size"] = 320;
      io::write_file_atomic(dcfg, d.dump());
      const std::string e = error_of([&] { model::import_hf({dir / "hf/vision", dir / "hf/decoder", write_config(dir, c), {}}); });
      CHECK(contains(e, ": tensor model.layers.0.mlp.gate_proj.weight has shape (384, 128) but " + dcfg +
                            " gives (320, 128); check intermediate_size and hidden_size in " + dcfg));
      d["intermediate_size"] = 384;
      io::write_file_atomic(dcfg, d.dump());
      fs::remove(dir / "hf/decoder/model-00001-of-00002.safetensors");
      CHECK(contains(error_of([&] { model::import_hf({dir / "hf/vision", dir / "hf/decoder", write_config(dir, c), {}}); }),
                     "model-00001-of-00002.safetensors"));
    }
  }
}
