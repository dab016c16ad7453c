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
using moon::test::contains;
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

  TEST_CASE("training-state tensors (train.*) are saved beside the parameters and skipped by load") {
    TempDir dir("ckpt_train");
    model::MoonModel m(all_switches());
    const std::string path = dir / "m.safetensors";
    const Tensor moment = from_vector(std::vector<float>{1, 2, 3}, {3});
    model::save_params(path, m.config(), m.params(), {}, DType::F32, {{"train.adamw.m.x", moment}});
    io::Checkpoint ckpt(path);
    CHECK(ckpt.contains("train.adamw.m.x"));
    auto back = model::load_checkpoint(path);
    CHECK(back->params().all().size() == m.params().all().size());
    CHECK(contains(error_of([&] { model::save_params(path, m.config(), m.params(), {}, DType::F32, {{"adamw.m", moment}}); }),
                   "must be named train."));
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

// ---- model_embed: `moon embed` end to end (the binary beside moon_tests), on a manifest of real PNGs.
#include <stb/stb_image_write.h>

#include <fstream>
#include <random>

#include "io/bpe_tokenizer.h"
#include "io/manifest.h"
#include "io/npy.h"
#include "io/product_text.h"

namespace {

// Runs `moon embed ARGS` with stdout and stderr captured.
using Run = moon::test::CommandRun;
Run embed(const TempDir& dir, const std::string& args) { return moon::test::run_moon(dir, "embed " + args); }

// A random 24 x 20 RGB PNG.
void write_png(const std::string& path, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<uint8_t> rgb(24 * 20 * 3);  // (H, W, C) row-major u8
  for (auto& v : rgb) v = static_cast<uint8_t>(gen());
  REQUIRE(stbi_write_png(path.c_str(), 20, 24, 3, rgb.data(), 20 * 3) != 0);
}

// A manifest of 6 products: image+text, text only, a broken image with text, image only.
std::vector<io::Product> write_shop(const TempDir& dir) {
  io::make_dirs(dir / "images");
  std::vector<io::Product> p(6);
  const char* titles[6] = {"red cotton shirt", "blue denim jeans", "plain leather belt", "wool scarf", "", "silk tie"};
  for (int i = 0; i < 6; ++i) {
    p[i].id = std::string("p").append(std::to_string(i));
    p[i].title = titles[i];
    p[i].category = {"fashion", i % 2 ? "bottoms" : "tops"};
    if (i != 2) p[i].images = {"images/" + p[i].id + ".png"};
    if (i == 0) p[i].attributes = {{"colour", "red"}};
    if (i != 2 && i != 3) write_png(dir / ("images/" + p[i].id + ".png"), 100 + i);
  }
  io::write_file_atomic(dir / "images/p3.png", "not a png at all");
  io::write_manifest(dir / "shop.jsonl", p);
  return p;
}

Tensor load(const std::string& path) { return io::load_npy(path); }

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const auto x = a.to_vector<float>(), y = b.to_vector<float>();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(double(x[i]) - double(y[i])));
  return m;
}

}  // namespace

TEST_SUITE("model_embed") {
  TEST_CASE("a manifest: n unit rows in order, the broken image reported, batch-independent, single inputs") {
    TempDir dir("embed");
    const auto products = write_shop(dir);
    const std::string manifest = dir / "shop.jsonl";
    Run r = embed(dir, "--config tiny --manifest " + manifest + " --out " + (dir / "E.npy") + " --batch 4 --workers 1");
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(r.out.rfind("embedded 6 products in ", 0) == 0);
    CHECK(test::contains(r.out, " products/s (batch 4, threads 2, f32)\n"));
    CHECK(test::contains(r.err, "moon embed: warning: " + manifest + ":4: product 'p3': " + (dir / "images/p3.png")));
    CHECK(test::contains(r.err, "; embedded from its text only\n"));
    CHECK(test::contains(r.err, "moon embed: 6 / 6 products, "));
    const Tensor e = load(dir / "E.npy");
    REQUIRE(e.shape() == Shape{6, 64});
    for (int64_t i = 0; i < 6; ++i) {
      double norm = 0;
      for (float v : e.select(0, i).to_vector<float>()) norm += double(v) * v;
      CHECK(std::abs(std::sqrt(norm) - 1.0) < 1e-5);
    }
    CHECK(io::read_file_text(dir / "E.ids.jsonl") ==
          "{\"id\":\"p0\",\"row\":0}\n{\"id\":\"p1\",\"row\":1}\n{\"id\":\"p2\",\"row\":2}\n{\"id\":\"p3\",\"row\":3}\n"
          "{\"id\":\"p4\",\"row\":4}\n{\"id\":\"p5\",\"row\":5}\n");

    // every product alone (batch 1) gives the same rows
    r = embed(dir, "--config tiny --manifest " + manifest + " --out " + (dir / "E1.npy") + " --batch 1 --workers 0");
    REQUIRE(r.status == 0);
    CHECK(max_abs_diff(load(dir / "E1.npy"), e) <= 1e-5);

    // single inputs: the text-only product from --text, the image-only product from --image
    r = embed(dir, "--config tiny --text '" + io::product_text(products[2]) + "' --out " + (dir / "t.npy"));
    REQUIRE(r.status == 0);
    CHECK(max_abs_diff(load(dir / "t.npy"), e.slice(0, 2, 3)) <= 1e-5);
    CHECK(io::read_file_text(dir / "t.ids.jsonl") == "{\"id\":\"plain leather belt\",\"row\":0}\n");
    r = embed(dir, "--config tiny --image " + (dir / "images/p4.png") + " --out " + (dir / "i.npy"));
    REQUIRE(r.status == 0);
    CHECK(max_abs_diff(load(dir / "i.npy"), e.slice(0, 4, 5)) <= 1e-5);
    r = embed(dir, "--config tiny --image " + (dir / "images/p0.png") + " --text '" + io::product_text(products[0]) +
                       "' --out " + (dir / "it.npy"));
    REQUIRE(r.status == 0);
    CHECK(max_abs_diff(load(dir / "it.npy"), e.slice(0, 0, 1)) <= 1e-5);

    // a Matryoshka prefix
    r = embed(dir, "--config tiny --manifest " + manifest + " --out " + (dir / "d.npy") + " --dim 16");
    REQUIRE(r.status == 0);
    const Tensor d = load(dir / "d.npy");
    REQUIRE(d.shape() == Shape{6, 16});
    CHECK(max_abs_diff(d, model::embedding_prefix(e, 16)) <= 1e-5);
  }

  TEST_CASE("a checkpoint with its tokenizer; errors: bad image with stop, cuda, vocabulary") {
    TempDir dir("embed");
    write_shop(dir);
    const std::string manifest = dir / "shop.jsonl";
    model::MoonModel m(model::load_config("tiny"));
    // a tokenizer with the specials first and merges past a 270-token vocabulary
    std::vector<std::string> tokens(std::begin(io::kSpecialTokens), std::end(io::kSpecialTokens));
    for (int b = 0; b < 256; ++b) tokens.emplace_back(1, static_cast<char>(b));
    std::vector<std::pair<int32_t, int32_t>> merges;
    for (const char* pair : {"re", "ot", "on", "sh", "ir", "ea", "th"}) {
      merges.emplace_back(9 + static_cast<unsigned char>(pair[0]), 9 + static_cast<unsigned char>(pair[1]));
      tokens.emplace_back(pair);
    }
    std::vector<int32_t> added;
    for (int32_t i = 0; i < 9; ++i) added.push_back(i);
    const io::BpeTokenizer tok = io::BpeTokenizer::from_vocab(tokens, merges, added, io::PreTokenizer::Qwen2);
    tok.save(dir / "tok");
    model::save_checkpoint(dir / "m.safetensors", m, {{"moon.tokenizer", io::read_file_text(dir / "tok/tokenizer.json")}});

    Run r = embed(dir, "--model " + (dir / "m.safetensors") + " --manifest " + manifest + " --out " + (dir / "E.npy"));
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(test::contains(r.out, "tokenizer: the checkpoint's moon.tokenizer"));
    Run same = embed(dir, "--config tiny --tokenizer " + (dir / "tok") + " --manifest " + manifest + " --out " + (dir / "F.npy"));
    REQUIRE(same.status == 0);
    CHECK(max_abs_diff(load(dir / "E.npy"), load(dir / "F.npy")) == 0);

    r = embed(dir, "--config tiny --manifest " + manifest + " --out " + (dir / "E.npy") + " --bad-images stop");
    CHECK(r.status != 0);
    CHECK(test::contains(r.err, "moon embed: error: " + manifest + ":4: product 'p3': " + (dir / "images/p3.png")));

    r = embed(dir, "--config tiny --text shirt --out " + (dir / "E.npy") + " --device cuda");
    CHECK(r.status != 0);
    CHECK(r.err == "moon embed: error: --device cuda: this build of moon has no CUDA backend for the model yet (its ops "
                   "run on the CPU only); use --device cpu\n");

    model::ModelConfig small_vocab = model::load_config("tiny");
    small_vocab.decoder.vocab = 270;
    io::write_file_atomic(dir / "v270.json", small_vocab.to_json());
    r = embed(dir, "--config " + (dir / "v270.json") + " --tokenizer " + (dir / "tok") + " --manifest " + manifest +
                       " --out " + (dir / "E.npy"));
    CHECK(r.status != 0);
    CHECK(test::contains(r.err, "moon embed: error: " + manifest + ":2: product 'p1': token id 270 is outside"));
    CHECK(test::contains(r.err, " is outside the model's vocabulary (decoder.vocab = 270); pass --tokenizer T (the "
                                "tokenizer the model was trained with)\n"));
    small_vocab.decoder.vocab = 200;
    io::write_file_atomic(dir / "v200.json", small_vocab.to_json());
    r = embed(dir, "--config " + (dir / "v200.json") + " --text shirt --out " + (dir / "E.npy"));
    CHECK(r.err == "moon embed: error: the model's vocabulary (decoder.vocab = 200) is smaller than the byte-level "
                   "tokenizer's 265 tokens and the checkpoint stores no tokenizer; pass --tokenizer T (the tokenizer "
                   "the model was trained with)\n");
  }
}
