// model_checkpoint: moon checkpoints round-trip bit-exactly (f32, bf16, sharded), and every broken checkpoint
// (truncated, missing / extra / mis-shaped tensor, no config, a bad config field) is an exact error.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/file_util.h"
#include "io/safetensors.h"
#include "io/safetensors_sharded.h"
#include "model/checkpoint.h"
#include "runtime/autograd.h"
#include "tests/test_util.h"

using namespace moon;
using moon::test::error_of;
using moon::test::TempDir;

namespace {

// tiny with every switch on, so every kind of parameter is in the checkpoint.
model::ModelConfig all_switches() {
  model::ModelConfig c = model::load_config("tiny");
  c.moe.enabled = c.fusion.enabled = c.fire.enabled = true;
  c.init_seed = 7;
  return c;
}

std::vector<std::pair<std::string, Tensor>> named(const model::MoonModel& m) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, t] : m.params().all()) out.emplace_back(name, t.detach());
  return out;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.raw_data(), y.raw_data(), x.numel() * dtype_size(x.dtype())) == 0;
}

std::map<std::string, std::string> config_meta(const model::ModelConfig& c) {
  return {{"moon.config", c.to_json()}, {"moon.format_version", "1"}};
}

}  // namespace

TEST_SUITE("model_checkpoint") {
  TEST_CASE("round trip is bit-exact, with the config and extra metadata") {
    TempDir dir("ckpt");
    model::MoonModel m(all_switches());
    {  // non-trivial FIRE gates, so a value that starts at zero is checked too
      NoGradGuard no_grad;
      Tensor gate = m.params().get("fire.0.gate");
      gate.fill_(0.25);
    }
    const std::string path = dir / "m.safetensors";
    model::save_checkpoint(path, m, {{"moon.tokenizer", "{}"}, {"user.note", "hello"}});
    auto back = model::load_checkpoint(path);
    CHECK(back->config().to_json() == m.config().to_json());
    REQUIRE(back->params().all().size() == m.params().all().size());
    for (const auto& [name, t] : m.params().all()) {
      INFO(name);
      CHECK(bit_equal(back->params().get(name), t));
    }
    const auto meta = model::checkpoint_metadata(path);
    CHECK(meta.at("moon.tokenizer") == "{}");
    CHECK(meta.at("user.note") == "hello");
    CHECK(meta.at("moon.format_version") == "1");
    CHECK(back->params().get("fire.0.gate").to_vector<float>()[0] == 0.25f);
  }

  TEST_CASE("bf16 save stores BF16 and loads the rounded values") {
    TempDir dir("ckpt");
    model::MoonModel m(all_switches());
    const std::string path = dir / "m.safetensors";
    model::save_checkpoint(path, m, {}, DType::BF16);
    auto file = io::SafetensorsFile::open(path);
    CHECK(file->info("model.embed_tokens.weight").dtype == "BF16");
    auto back = model::load_checkpoint(path);
    for (const auto& [name, t] : m.params().all()) {
      INFO(name);
      CHECK(back->params().get(name).dtype() == DType::F32);
      CHECK(bit_equal(back->params().get(name), t.detach().to(DType::BF16).to(DType::F32)));
    }
    CHECK(error_of([&] { model::save_checkpoint(dir / "x.safetensors", m, {}, DType::I64); }) ==
          "save_checkpoint " + (dir / "x.safetensors") + ": parameters are saved as F32 or BF16, not i64");
  }

  TEST_CASE("a sharded checkpoint folder loads like a single file") {
    TempDir dir("ckpt");
    model::MoonModel m(all_switches());
    io::save_sharded(dir.path, named(m), 200000, config_meta(m.config()));
    REQUIRE(std::filesystem::exists(dir / "model.safetensors.index.json"));
    auto back = model::load_checkpoint(dir.path);
    for (const auto& [name, t] : m.params().all()) CHECK(bit_equal(back->params().get(name), t));
    CHECK(model::checkpoint_metadata(dir.path).at("moon.config") == m.config().to_json());
  }

  TEST_CASE("a truncated file names the file") {
    TempDir dir("ckpt");
    model::MoonModel m(model::load_config("tiny"));
    const std::string path = dir / "m.safetensors";
    model::save_checkpoint(path, m);
    const size_t data_start = io::SafetensorsFile::open(path)->data_start();
    std::vector<uint8_t> bytes = io::read_file_bytes(path);
    bytes.resize(bytes.size() / 2);
    io::write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    const std::string e = error_of([&] { model::load_checkpoint(path); });
    // the reader names the file, the first tensor that no longer fits and the bytes that are left
    CHECK(e.rfind(path + ": tensor '", 0) == 0);
    CHECK(e.ends_with("run past the end of the data buffer (" + std::to_string(bytes.size() - data_start) + " bytes)"));
    bytes.resize(5);
    io::write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    CHECK(error_of([&] { model::load_checkpoint(path); }).rfind(path + ": ", 0) == 0);
  }

  TEST_CASE("missing, extra and mis-shaped tensors are exact errors") {
    TempDir dir("ckpt");
    model::MoonModel m(model::load_config("tiny"));
    const auto meta = config_meta(m.config());
    const std::string path = dir / "m.safetensors";

    auto tensors = named(m);
    std::erase_if(tensors, [](const auto& p) { return p.first == "model.layers.2.self_attn.k_proj.bias"; });
    io::save_safetensors(path, tensors, meta);
    CHECK(error_of([&] { model::load_checkpoint(path); }) ==
          path + ": tensor model.layers.2.self_attn.k_proj.bias (64,) is missing; the config in the checkpoint needs "
                 "them (a truncated save, or weights of another model?)");

    tensors = named(m);
    std::erase_if(tensors, [](const auto& p) { return p.first.find("layers.3.") != std::string::npos; });
    io::save_safetensors(path, tensors, meta);
    const std::string many = error_of([&] { model::load_checkpoint(path); });
    CHECK(many.rfind(path + ": 28 tensors vision_model.encoder.layers.3.", 0) == 0);
    CHECK(many.ends_with(" and 23 more are missing; the config in the checkpoint needs them (a truncated save, or "
                         "weights of another model?)"));

    tensors = named(m);
    tensors.emplace_back("fusion.q_proj.weight", zeros({4, 4}));
    io::save_safetensors(path, tensors, meta);
    CHECK(error_of([&] { model::load_checkpoint(path); }) ==
          path + ": tensor fusion.q_proj.weight is not a parameter of the model its config describes (is "
                 "moon.config the config these weights were saved with?)");

    tensors = named(m);
    for (auto& [name, t] : tensors)
      if (name == "projector.linear_1.weight") t = zeros({256, 256});
    io::save_safetensors(path, tensors, meta);
    CHECK(error_of([&] { model::load_checkpoint(path); }) ==
          path + ": tensor projector.linear_1.weight has shape (256, 256) but the model (config) expects (256, 512); "
                 "check that the config matches the checkpoint");

    tensors = named(m);
    for (auto& [name, t] : tensors)
      if (name == "head.proj.bias") t = zeros({64}, DType::I64);
    io::save_safetensors(path, tensors, meta);
    CHECK(error_of([&] { model::load_checkpoint(path); }) ==
          path + ": tensor head.proj.bias has dtype I64; a parameter must be F32, BF16 or F16");
  }

  TEST_CASE("a missing or broken config is an exact error") {
    TempDir dir("ckpt");
    model::MoonModel m(model::load_config("tiny"));
    const std::string path = dir / "m.safetensors";
    io::save_safetensors(path, named(m), {{"format", "pt"}});
    CHECK(error_of([&] { model::load_checkpoint(path); }) ==
          path + ": no moon.config in the metadata, so this is not a moon checkpoint (for Hugging Face weights, make "
                 "one with `moon import --vision DIR --decoder DIR --out CKPT`)");

    nlohmann::json j = nlohmann::json::parse(m.config().to_json());
    j["decoder"]["heads"] = "four";
    io::save_safetensors(path, named(m), {{"moon.config", j.dump()}});
    CHECK(error_of([&] { model::load_checkpoint(path); }) ==
          path + " (moon.config): decoder.heads has the wrong type (\"four\")");

    j = nlohmann::json::parse(m.config().to_json());
    j["vision"]["hiden"] = 128;
    io::save_safetensors(path, named(m), {{"moon.config", j.dump()}});
    CHECK(error_of([&] { model::load_checkpoint(path); }) ==
          path + " (moon.config): unknown config field vision.hiden (see configs/README.md for the fields)");

    j = nlohmann::json::parse(m.config().to_json());
    j["decoder"]["kv_heads"] = 3;
    io::save_safetensors(path, named(m), {{"moon.config", j.dump()}});
    CHECK(error_of([&] { model::load_checkpoint(path); }) ==
          path + " (moon.config): config: decoder.kv_heads (3) must divide decoder.heads (4)");

    io::save_safetensors(path, named(m), {{"moon.config", m.config().to_json()}, {"moon.format_version", "2"}});
    CHECK(error_of([&] { model::load_checkpoint(path); }) ==
          path + ": moon.format_version is \"2\", but this build of moon reads version 1 (use a newer moon)");
  }

  TEST_CASE("a failed save leaves the old file as it was") {
    TempDir dir("ckpt");
    model::MoonModel m(model::load_config("tiny"));
    const std::string path = dir / "m.safetensors";
    model::save_checkpoint(path, m);
    const std::vector<uint8_t> before = io::read_file_bytes(path);

    CHECK(error_of([&] { model::save_checkpoint(path, m, {{"moon.config", "{}"}}); }) ==
          "save_checkpoint " + path +
              ": metadata key moon.config is written by save_checkpoint itself; do not pass it in `extra`");
    const std::string bad_utf8 = error_of([&] { model::save_checkpoint(path, m, {{"note", "\xff\xfe"}}); });
    CHECK(!bad_utf8.empty());
    CHECK(io::read_file_bytes(path) == before);
    size_t files = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path)) ++files;
    CHECK(files == 1);  // no temporary file left behind
    auto back = model::load_checkpoint(path);
    CHECK(bit_equal(back->params().get("head.proj.weight"), m.params().get("head.proj.weight")));
  }
}
