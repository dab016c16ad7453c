// Model configs (validation names the field) and input assembly (the sequence layout of docs/model.md).
#include <doctest/doctest.h>

#include <fstream>

#include "model/config.h"
#include "model/inputs.h"
#include "ops/elementwise.h"
#include "test_util.h"

using namespace moon;
using namespace moon::model;
using moon::test::contains;
using moon::test::error_of;

TEST_SUITE("model_config") {
  TEST_CASE("the shipped configs load, validate and round-trip through JSON") {
    for (const char* name : {"tiny", "small", "base"}) {
      ModelConfig c = load_config(name);
      CHECK(c.name == name);
      ModelConfig again = ModelConfig::from_json(c.to_json(), "roundtrip");
      CHECK(again.to_json() == c.to_json());
    }
    ModelConfig base = load_config("base");
    CHECK(base.decoder.hidden == 896);
    CHECK(base.decoder.vocab == 151936);
    CHECK(base.vision.hidden == 768);
    CHECK(base.vision_tokens() == 49);
    CHECK(load_config("tiny").vision_tokens() == 4);
  }

  TEST_CASE("overrides set fields by dotted path and name bad ones") {
    const model::ModelConfig base = model::load_config("small");
    const model::ModelConfig c = model::with_overrides(base, {"moe.enabled=false", "decoder.layers=4", "name=ablation"});
    CHECK_FALSE(c.moe.enabled);
    CHECK(c.decoder.layers == 4);
    CHECK(c.name == "ablation");
    CHECK(c.vision.image_size == base.vision.image_size);
    CHECK(contains(error_of([&] { model::with_overrides(base, {"moe.enable=false"}); }), "no field 'moe.enable'"));
    CHECK(contains(error_of([&] { model::with_overrides(base, {"moe"}); }), "expected section.field=value"));
    CHECK(contains(error_of([&] { model::with_overrides(base, {"moe=1"}); }), "is a section"));
    CHECK(contains(error_of([&] { model::with_overrides(base, {"decoder.heads=3"}); }), "decoder.heads"));
  }

  TEST_CASE("bad sizes are errors that name the field") {
    auto with = [](const std::string& edit) {
      return error_of([&] { ModelConfig::from_json(edit, "cfg.json"); });
    };
    CHECK(with(R"({"decoder": {"hidden": 128, "heads": 6}})") ==
          "cfg.json: config: decoder.heads (6) must divide decoder.hidden (128)");
    CHECK(with(R"({"decoder": {"heads": 4, "kv_heads": 3}})") ==
          "cfg.json: config: decoder.kv_heads (3) must divide decoder.heads (4)");
    CHECK(with(R"({"vision": {"hidden": 100, "heads": 8}})") ==
          "cfg.json: config: vision.heads (8) must divide vision.hidden (100)");
    CHECK(with(R"({"vision": {"image_size": 30}})") ==
          "cfg.json: config: vision.patch_size (8) must divide vision.image_size (30)");
    CHECK(with(R"({"vision": {"hidden": 128, "hiden": 3}})") ==
          "cfg.json: unknown config field vision.hiden (see configs/README.md for the fields)");
    CHECK(with(R"({"decoder": {"layers": "four"}})") == "cfg.json: decoder.layers has the wrong type (\"four\")");
    CHECK(with(R"({"moe": {"enabled": true, "experts": 2, "top_k": 3}})") ==
          "cfg.json: config: moe.top_k (3) must not exceed moe.experts (2)");
    CHECK(with(R"({"fire": {"vision_layers": [1, 9], "decoder_layers": [1, 2]}})") ==
          "cfg.json: config: fire.vision_layers[1] = 9 must be in [1, vision.layers = 4]");
    CHECK(with(R"({"fire": {"vision_layers": [1], "decoder_layers": [1, 2]}})") ==
          "cfg.json: config: fire.vision_layers (1 entries) and fire.decoder_layers (2 entries) must pair up");
    CHECK(with(R"({"embedding": {"pooling": "max"}})") ==
          "cfg.json: config: embedding.pooling must be \"mean\" or \"emb_token\", got \"max\"");
    CHECK(contains(with("{nope"), "cfg.json: not valid JSON"));
    CHECK(error_of([] { load_config("huge"); }).starts_with("no config named \"huge\""));
    CHECK(error_of([] { load_config("/nonexistent/x.json"); }) == "config file /nonexistent/x.json does not exist");
  }
}

TEST_SUITE("model_inputs") {
  TEST_CASE("image+text, image-only and text-only rows follow the documented layout") {
    ModelConfig c = load_config("tiny");  // M = 4 vision tokens
    SpecialTokens sp;
    Tensor images = randn({3, 3, 32, 32});
    std::vector<InputRow> rows(4);
    rows[0].text = {100, 101}, rows[0].image = 2;  // image + text
    rows[1].image = 0;                              // image only
    rows[2].text = {102, 103, 104};                 // text only
    rows[3].text = {105}, rows[3].has_reasoning = true, rows[3].reasoning = {200, 201};
    ModelBatch b = assemble(rows, images, sp, c);
    const int64_t T = 10;  // im_start image v*4 /image 100 101 emb
    REQUIRE(b.token_ids.shape() == Shape{4, T});
    auto ids = b.token_ids.to_vector<int64_t>();
    std::vector<int64_t> row0(ids.begin(), ids.begin() + T);
    CHECK(row0 == std::vector<int64_t>{sp.im_start, sp.image, sp.pad, sp.pad, sp.pad, sp.pad, sp.image_end, 100, 101,
                                       sp.emb});
    std::vector<int64_t> row2(ids.begin() + 2 * T, ids.begin() + 3 * T);
    CHECK(row2 == std::vector<int64_t>{sp.im_start, 102, 103, 104, sp.emb, sp.pad, sp.pad, sp.pad, sp.pad, sp.pad});
    std::vector<int64_t> row3(ids.begin() + 3 * T, ids.begin() + 3 * T + 7);
    CHECK(row3 == std::vector<int64_t>{sp.im_start, 105, sp.think, 200, 201, sp.think_end, sp.emb});
    CHECK(b.emb_index.to_vector<int64_t>() == std::vector<int64_t>{9, 7, 4, 6});
    CHECK(b.modality.to_vector<int64_t>() == std::vector<int64_t>{2, 1, 0, 0});
    CHECK(b.image_row.to_vector<int64_t>() == std::vector<int64_t>{0, 1, -1, -1});
    auto slots = b.vision_slot.to_vector<int64_t>();
    CHECK(slots[2] == 0);
    CHECK(slots[5] == 3);
    CHECK(slots[T + 2] == 4);
    CHECK(slots[T + 5] == 7);
    CHECK(slots[7] == -1);
    // pixels hold the used images in row order: image 2, then image 0.
    REQUIRE(b.pixels.shape() == Shape{2, 3, 32, 32});
    CHECK(b.pixels.select(0, 0).to_vector<float>() == images.select(0, 2).to_vector<float>());
    CHECK(b.pixels.select(0, 1).to_vector<float>() == images.select(0, 0).to_vector<float>());
    auto pool = b.pool_mask.to_vector<uint8_t>(), text = b.text_mask.to_vector<uint8_t>(),
         keep = b.keep.to_vector<uint8_t>();
    // row 0: vision and text pooled, markers not; text mask on the two text tokens only
    CHECK(std::vector<uint8_t>(pool.begin(), pool.begin() + T) == std::vector<uint8_t>{0, 0, 1, 1, 1, 1, 0, 1, 1, 0});
    CHECK(std::vector<uint8_t>(text.begin(), text.begin() + T) == std::vector<uint8_t>{0, 0, 0, 0, 0, 0, 0, 1, 1, 0});
    // row 3: reasoning pooled, not text
    CHECK(pool[3 * T + 3] == 1);
    CHECK(text[3 * T + 3] == 0);
    CHECK(keep[2 * T + 4] == 1);
    CHECK(keep[2 * T + 5] == 0);
    auto pos = b.positions.to_vector<int64_t>();
    CHECK(pos[2 * T + 4] == 4);
    CHECK(pos[2 * T + 5] == 0);
    CHECK(b.has_image.to_vector<uint8_t>() == std::vector<uint8_t>{1, 1, 0, 0});
  }

  TEST_CASE("prompts end after <think>; other image sizes change the vision token count") {
    ModelConfig c = load_config("tiny");
    SpecialTokens sp;
    std::vector<InputRow> rows(1);
    rows[0].text = {50}, rows[0].image = 0, rows[0].prompt = true;
    ModelBatch b = assemble(rows, randn({1, 3, 48, 48}), sp, c);  // 6x6 patches -> 3x3 merged = 9 tokens
    auto ids = b.token_ids.to_vector<int64_t>();
    REQUIRE(ids.size() == 1 + 1 + 9 + 1 + 1 + 1);
    CHECK(ids.back() == sp.think);
    CHECK(error_of([&] { assemble(rows, randn({1, 3, 40, 40}), sp, c); }) ==
          "assemble: a 5x5 patch grid cannot be merged 2x2; use an image side that is a multiple of 16");
  }

  TEST_CASE("bad rows are errors naming the row") {
    ModelConfig c = load_config("tiny");
    SpecialTokens sp;
    std::vector<InputRow> rows(2);
    rows[0].text = {1};
    CHECK(error_of([&] { assemble(rows, Tensor(), sp, c); }) == "assemble: row 1 has neither text nor an image");
    rows[1].text = {600};
    CHECK(error_of([&] { assemble(rows, Tensor(), sp, c); }) ==
          "assemble: row 1 has token id 600 outside the vocabulary [0, 512) of config tiny");
    rows[1].text.clear(), rows[1].image = 3;
    CHECK(error_of([&] { assemble(rows, randn({2, 3, 32, 32}), sp, c); }) ==
          "assemble: row 1 points at image 3 but 2 images were given");
  }

  TEST_CASE("place_rows gathers table rows at slots and masks the -1 positions") {
    Tensor table = from_vector({10.f, 11.f, 20.f, 21.f, 30.f, 31.f}, {3, 2});  // (3, 2)
    PlacedRows p = place_rows(table, from_vector(std::vector<int64_t>{-1, 2, 0, -1}, {2, 2}, DType::I64));
    REQUIRE(p.rows.shape() == Shape{2, 2, 2});
    CHECK(p.rows.to_vector<float>() == std::vector<float>{10, 11, 30, 31, 10, 11, 10, 11});
    REQUIRE(p.mask.shape() == Shape{2, 2, 1});
    CHECK(p.mask.to_vector<uint8_t>() == std::vector<uint8_t>{0, 1, 1, 0});
  }

  TEST_CASE("a batch survives named() / from_named()") {
    ModelConfig c = load_config("tiny");
    std::vector<InputRow> rows(2);
    rows[0].text = {7, 8}, rows[1].image = 0;
    ModelBatch b = assemble(rows, randn({1, 3, 32, 32}), SpecialTokens{}, c);
    std::map<std::string, Tensor> m;
    for (auto& [k, v] : b.named()) m[k] = v;
    ModelBatch back = ModelBatch::from_named(m, "b.safetensors");
    CHECK(back.vision_slot.to_vector<int64_t>() == b.vision_slot.to_vector<int64_t>());
    m.erase("keep");
    CHECK(error_of([&] { ModelBatch::from_named(m, "b.safetensors"); }) == "b.safetensors: the batch has no tensor keep");
  }
}
