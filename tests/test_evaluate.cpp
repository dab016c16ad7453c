// Suite "evaluate": the ranking metrics on hand-made similarity matrices, the task logic on constructed
// embeddings, evaluate() with the tiny config on a manifest of real PNGs, and `moon eval` through the binary.
#include <doctest/doctest.h>
#include <stb/stb_image_write.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "io/bpe_tokenizer.h"
#include "io/file_util.h"
#include "io/manifest.h"
#include "io/manifest_reader.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/embed.h"
#include "model/generate.h"
#include "model/moon_model.h"
#include "tests/test_util.h"
#include "training/evaluate.h"

using namespace moon;
using moon::test::contains;
using moon::test::error_of;
using moon::test::TempDir;

namespace {

// The similarity matrix (rows x cols) from row-major values.
Tensor matrix(const std::vector<float>& values, int64_t rows, int64_t cols) { return from_vector(values, {rows, cols}); }

// A random 24 x 20 RGB PNG whose colour depends on `tone` (so that products differ visibly).
void write_png(const std::string& path, uint32_t seed, int tone) {
  std::mt19937 gen(seed);
  std::vector<uint8_t> rgb(24 * 20 * 3);  // (H, W, C) row-major u8
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>((gen() % 96) + (i % 3 == size_t(tone) % 3 ? 150 : 0));
  REQUIRE(stbi_write_png(path.c_str(), 20, 24, 3, rgb.data(), 20 * 3) != 0);
}

// 14 products: 12 in split test (3 leaf categories; colour on all, size only on singletons; one text-only,
// one image-only), 2 in train.
std::string write_shop(const TempDir& dir) {
  io::make_dirs(dir / "images");
  const char* leaves[3] = {"shirt", "jeans", "scarf"};
  const char* colours[3] = {"red", "blue", "green"};
  std::vector<io::Product> products;
  for (int i = 0; i < 14; ++i) {
    io::Product p;
    p.id = std::string("p").append(std::to_string(i));
    p.split = i < 12 ? "test" : "train";
    p.category = {"fashion", i % 2 ? "bottoms" : "tops", leaves[i % 3]};
    if (i != 5) p.title = std::string(colours[(i / 3) % 3]) + " " + leaves[i % 3] + " number " + std::to_string(i);
    if (i != 7) {
      p.images = {"images/" + p.id + ".png"};
      write_png(dir / ("images/" + p.id + ".png"), 500 + i, i % 3);
    }
    p.attributes = {{"colour", colours[(i / 3) % 3]}, {"size", std::string("s").append(std::to_string(i))}};
    products.push_back(p);
  }
  io::write_manifest(dir / "shop.jsonl", products);
  return dir / "shop.jsonl";
}

// The byte-level tokenizer `moon eval` falls back to.
std::shared_ptr<const io::BpeTokenizer> byte_tokenizer() {
  return model::pick_tokenizer("", {}, 512).tokenizer;
}

const std::vector<std::string> kAllMetrics = {
    "t2i.R@1",   "t2i.R@5",    "t2i.R@10",   "t2i.MRR",     "t2i.class@1", "i2t.R@1",      "i2t.R@5",
    "i2t.R@10",  "i2t.MRR",    "t2mm.R@1",   "t2mm.R@5",    "t2mm.R@10",   "t2mm.MRR",     "mm2mm.R@1",
    "mm2mm.R@5", "mm2mm.R@10", "mm2mm.MRR",  "zeroshot.acc", "zeroshot.classes", "attr.acc", "attr.keys",
    "attr.colour.acc", "match.R@1", "match.MRR"};

std::vector<std::string> names_of(const training::EvalReport& r) {
  std::vector<std::string> out;
  for (const auto& kv : r.metrics) out.push_back(kv.first);
  return out;
}

// One-hot unit rows (n, D): row i = e_{slot[i]}.
Tensor one_hot(const std::vector<int64_t>& slot, int64_t D) {
  std::vector<float> v(slot.size() * static_cast<size_t>(D), 0.0f);
  for (size_t i = 0; i < slot.size(); ++i) v[i * static_cast<size_t>(D) + static_cast<size_t>(slot[i])] = 1.0f;
  return from_vector(v, {static_cast<int64_t>(slot.size()), D});
}

// Unit rows (groups, D): row g = normalised sum of e_i over the products i with group[i] == g.
Tensor group_rows(const std::vector<int64_t>& group, int64_t groups, int64_t D) {
  std::vector<float> v(static_cast<size_t>(groups * D), 0.0f);
  std::vector<double> count(static_cast<size_t>(groups), 0);
  for (size_t i = 0; i < group.size(); ++i)
    if (group[i] >= 0) count[static_cast<size_t>(group[i])] += 1;
  for (size_t i = 0; i < group.size(); ++i)
    if (group[i] >= 0)
      v[static_cast<size_t>(group[i] * D) + i] = static_cast<float>(1.0 / std::sqrt(count[static_cast<size_t>(group[i])]));
  return from_vector(v, {groups, D});
}

// The value column of the table line "task metric value" in `out` ("" when absent).
std::string table_value(const std::string& out, const std::string& task, const std::string& metric) {
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string t, m, v;
    if (words >> t >> m >> v && t == task && m == metric) return v;
  }
  return "";
}

}  // namespace

TEST_SUITE("evaluate") {
  TEST_CASE("retrieval_metrics: ranks, ties against the query, ranks beyond 10, MRR") {
    // query 0: relevant best (rank 1); query 1: relevant tied with one other (rank 2);
    // query 2: relevant third (rank 3)
    const Tensor sim = matrix({0.9f, 0.1f, 0.2f, 0.5f, 0.5f, 0.1f, 0.8f, 0.7f, 0.6f}, 3, 3);
    training::RetrievalMetrics m = training::retrieval_metrics(sim, {0, 1, 2});
    CHECK(m.queries == 3);
    CHECK(m.r1 == doctest::Approx(1.0 / 3));
    CHECK(m.r5 == 1.0);
    CHECK(m.r10 == 1.0);
    CHECK(m.mrr == doctest::Approx((1.0 + 0.5 + 1.0 / 3) / 3));

    // 12 candidates: relevant ranked 5th, 10th, 11th and 12th (last)
    std::vector<float> v;
    for (int q = 0; q < 4; ++q)
      for (int j = 0; j < 12; ++j) v.push_back(static_cast<float>(12 - j));  // candidate j has rank j + 1
    m = training::retrieval_metrics(matrix(v, 4, 12), {4, 9, 10, 11});
    CHECK(m.r1 == 0.0);
    CHECK(m.r5 == doctest::Approx(1.0 / 4));
    CHECK(m.r10 == doctest::Approx(2.0 / 4));
    CHECK(m.mrr == doctest::Approx((1.0 / 5 + 1.0 / 10 + 1.0 / 11 + 1.0 / 12) / 4));

    // all equal: every other candidate ties, so the rank is the number of candidates
    m = training::retrieval_metrics(matrix(std::vector<float>(4, 0.25f), 1, 4), {2});
    CHECK(m.r1 == 0.0);
    CHECK(m.r5 == 1.0);
    CHECK(m.mrr == doctest::Approx(0.25));
    // a NaN similarity counts against the query
    m = training::retrieval_metrics(matrix({0.5f, std::nanf(""), 0.1f}, 1, 3), {0});
    CHECK(m.mrr == doctest::Approx(0.5));

    m = training::retrieval_metrics(empty({0, 5}), {});
    CHECK(m.queries == 0);
    CHECK(m.mrr == 0.0);
    CHECK(error_of([&] { training::retrieval_metrics(sim, {0, 3, 1}); }) ==
          "retrieval_metrics: query 1: relevant candidate 3 is outside [0, 3)");
    CHECK(error_of([&] { training::retrieval_metrics(sim, {0}); }) == "retrieval_metrics: 1 relevant indices for 3 queries");
  }

  TEST_CASE("eval_products: the split, then at most limit products spread over it") {
    io::Manifest m;
    for (int i = 0; i < 13; ++i) {
      io::Product p;
      p.id = std::string("q").append(std::to_string(i));
      p.split = i == 3 || i == 8 || i == 11 ? "train" : "test";
      m.products.push_back(p);
    }
    training::EvalOptions o;
    std::vector<std::string> ids;
    for (const auto& p : training::eval_products(m, o)) ids.push_back(p.id);
    CHECK(ids == std::vector<std::string>{"q0", "q1", "q2", "q4", "q5", "q6", "q7", "q9", "q10", "q12"});
    o.limit = 4;  // n = 10: floor(i * 10 / 4) = 0, 2, 5, 7
    ids.clear();
    for (const auto& p : training::eval_products(m, o)) ids.push_back(p.id);
    CHECK(ids == std::vector<std::string>{"q0", "q2", "q6", "q9"});
    o.limit = 50;
    CHECK(training::eval_products(m, o).size() == 10);
    o.split = "";
    CHECK(training::eval_products(m, o).size() == 13);
    o.split = "val";
    CHECK(training::eval_products(m, o).empty());
  }

  TEST_CASE("eval_prompts: leaf classes, attribute keys with 2+ values on 2+ products each") {
    std::vector<io::Product> p(6);
    const char* leaves[6] = {"shirt", "jeans", "shirt", "scarf", "jeans", "belt"};
    for (int i = 0; i < 6; ++i) {
      p[i].category = {"fashion", leaves[i]};
      p[i].attributes = {{"colour", i < 3 ? "red" : "blue"}, {"size", i == 0 ? "s" : "m"}};
    }
    p[5].attributes = {{"material", "silk"}, {"colour", "blue"}, {"colour", "red"}};  // first value counts
    p[4].attributes.emplace_back("material", "wool");
    const training::EvalPrompts prompts = training::eval_prompts(p);
    CHECK(prompts.classes == std::vector<std::string>{"belt", "jeans", "scarf", "shirt"});
    // colour: red x3, blue x3; size: s x1 (dropped), m x4 -> one value, key dropped; material: one each
    REQUIRE(prompts.attributes.size() == 1);
    CHECK(prompts.attributes[0].first == "colour");
    CHECK(prompts.attributes[0].second == std::vector<std::string>{"blue", "red"});
    // a single class is no classification task
    std::vector<io::Product> one(2);
    one[0].category = one[1].category = {"a", "b"};
    CHECK(training::eval_prompts(one).classes.empty());
  }

  TEST_CASE("task_metrics: embeddings that answer every task right score 1, one swapped pair scores less") {
    // 8 products: 0..5 with text and image, 6 text only, 7 image only; leaves a/b; colour red/blue
    const int64_t n = 8, D = 16;
    std::vector<io::Product> p(n);
    std::vector<int64_t> leaf(n), colour(n), self(n);
    for (int64_t i = 0; i < n; ++i) {
      leaf[i] = i % 2;
      colour[i] = i < 4 ? 0 : 1;
      self[i] = i;
      p[i].category = {"root", leaf[i] ? "b" : "a"};
      p[i].attributes = {{"colour", colour[i] ? "red" : "blue"}};  // sorted values: blue, red
    }
    training::EvalEmbeddings e;
    e.P = e.T = e.V = e.M = e.A1 = e.A2 = one_hot(self, D);
    e.has_text = {1, 1, 1, 1, 1, 1, 1, 0};
    e.has_image = {1, 1, 1, 1, 1, 1, 0, 1};
    e.has_views = e.has_image;
    const training::EvalPrompts prompts = training::eval_prompts(p);
    REQUIRE(prompts.classes == std::vector<std::string>{"a", "b"});
    std::vector<int64_t> leaf_of_image(n), colour_of_image(n);
    for (int64_t i = 0; i < n; ++i) {
      leaf_of_image[i] = e.has_image[i] ? leaf[i] : -1;
      colour_of_image[i] = e.has_image[i] ? colour[i] : -1;
    }
    e.classes = group_rows(leaf_of_image, 2, D);
    e.attributes = {group_rows(colour_of_image, 2, D)};
    auto metrics = training::task_metrics(p, prompts, e);
    std::vector<std::string> names;
    for (const auto& [name, value] : metrics) {
      names.push_back(name);
      if (name == "zeroshot.classes") CHECK(value == 2);
      else if (name == "attr.keys") CHECK(value == 1);
      else CHECK_MESSAGE(value == doctest::Approx(1.0), name);
    }
    CHECK(names == kAllMetrics);

    // mix the text rows of products 0 and 1 (0.6 own + 0.8 other): their t2i / i2t / t2mm answers rank 2nd
    {
      std::vector<float> t = one_hot(self, D).to_vector<float>();
      t[0] = 0.6f, t[1] = 0.8f;           // T_0
      t[D] = 0.8f, t[D + 1] = 0.6f;       // T_1
      e.T = from_vector(t, {n, D});
    }
    metrics = training::task_metrics(p, prompts, e);
    training::EvalReport r;
    r.metrics = metrics;
    CHECK(r.get("t2i.R@1") == doctest::Approx(4.0 / 6));
    CHECK(r.get("t2i.MRR") == doctest::Approx((4.0 + 0.5 + 0.5) / 6));
    CHECK(r.get("t2i.R@5") == 1.0);
    CHECK(r.get("t2i.class@1") == doctest::Approx(4.0 / 6));  // 0 and 1 have different leaves
    CHECK(r.get("i2t.R@1") == doctest::Approx(4.0 / 6));
    CHECK(r.get("t2mm.R@1") == doctest::Approx(5.0 / 7));
    CHECK(r.get("mm2mm.R@1") == 1.0);
    CHECK(r.get("zeroshot.acc") == 1.0);
    // an image-only product in the t2i gallery tying with product 2's image: query 2 ranks 2nd;
    // product 3's augmented multimodal row mixed with product 4's: mm2mm query 3 ranks 2nd
    e.T = one_hot(self, D);
    e.V = one_hot({0, 1, 2, 3, 4, 5, 6, 2}, D);
    {
      std::vector<float> mm = one_hot(self, D).to_vector<float>();
      mm[3 * D + 3] = 0.6f, mm[3 * D + 4] = 0.8f;
      e.M = from_vector(mm, {n, D});
    }
    r.metrics = training::task_metrics(p, prompts, e);
    CHECK(r.get("t2i.R@1") == doctest::Approx(5.0 / 6));
    CHECK(r.get("t2i.MRR") == doctest::Approx(5.5 / 6));
    CHECK(r.get("i2t.R@1") == 1.0);
    CHECK(r.get("mm2mm.R@1") == doctest::Approx(5.0 / 6));
    CHECK(r.get("mm2mm.MRR") == doctest::Approx(5.5 / 6));
    CHECK(r.get("match.R@1") == 1.0);
    e.V = e.M = one_hot(self, D);

    // views that never match: A2 shifted by one product
    e.A2 = one_hot({1, 2, 3, 4, 5, 6, 7, 0}, D);
    r.metrics = training::task_metrics(p, prompts, e);
    CHECK(r.get("match.R@1") == 0.0);
    // a class prompt pointing at the wrong leaf: every image of leaf a is misclassified
    e.classes = group_rows({1, 1, 1, 1, 1, 1, -1, 1}, 2, D);
    r.metrics = training::task_metrics(p, prompts, e);
    CHECK(r.get("zeroshot.acc") == doctest::Approx(4.0 / 7));  // every image called b: 1, 3, 5, 7 right
    CHECK(error_of([&] { r.get("nope.R@1"); }) ==
          "evaluation report: no metric 'nope.R@1' (24 metrics; a task is left out when no product qualifies for it, "
          "see docs/eval.md)");
  }

  TEST_CASE("evaluate: the tiny model on real PNGs, every metric in [0, 1], reproducible, --limit") {
    TempDir dir("eval");
    const std::string path = write_shop(dir);
    const io::Manifest manifest = io::load_manifest(path, io::BadRecords::Stop);
    model::MoonModel m(model::load_config("tiny"));
    const auto tok = byte_tokenizer();
    training::EvalOptions o;
    o.batch = 5;
    o.workers = 0;
    o.progress = false;
    const training::EvalReport a = training::evaluate(m, *tok, manifest, o);
    CHECK(a.products == 12);
    CHECK(a.seconds > 0);
    CHECK(names_of(a) == kAllMetrics);
    for (const auto& [name, value] : a.metrics) {
      if (name == "zeroshot.classes") CHECK(value == 3);
      else if (name == "attr.keys") CHECK(value == 1);
      else {
        CHECK_MESSAGE(value >= 0.0, name);
        CHECK_MESSAGE(value <= 1.0, name);
      }
    }
    o.batch = 3;
    o.workers = 2;
    const training::EvalReport b = training::evaluate(m, *tok, manifest, o);
    REQUIRE(names_of(b) == names_of(a));
    for (size_t k = 0; k < a.metrics.size(); ++k) CHECK_MESSAGE(b.metrics[k].second == doctest::Approx(a.metrics[k].second).epsilon(1e-9), a.metrics[k].first);

    o.limit = 4;
    const training::EvalReport c = training::evaluate(m, *tok, manifest, o);
    CHECK(c.products == 4);
    const auto table = a.table();
    CHECK(table.rfind("task         metric      value\n", 0) == 0);
    CHECK(contains(table, "\nzeroshot     classes         3\n"));
    CHECK(contains(table, "12 products in "));
    const auto json = nlohmann::json::parse(a.to_json());
    CHECK(json["products"] == 12);
    CHECK(json["metrics"].size() == kAllMetrics.size());
    CHECK(json["metrics"]["t2i.MRR"].get<double>() == a.get("t2i.MRR"));

    o.split = "val";
    CHECK(error_of([&] { training::evaluate(m, *tok, manifest, o); }) ==
          path + ": no products in split 'val' to evaluate (check --split; `moon data validate " + path +
              "` lists the splits)");
  }

  TEST_CASE("eval_embeddings with reasoning: P and M rows reason greedily first, the other views do not") {
    TempDir dir("eval");
    const io::Manifest manifest = io::load_manifest(write_shop(dir), io::BadRecords::Stop);
    model::MoonModel m(model::load_config("tiny"));
    const auto tok = byte_tokenizer();
    training::EvalOptions o;
    o.workers = 0;
    o.progress = false;
    o.limit = 6;
    io::Manifest subset = manifest;
    subset.products = training::eval_products(manifest, o);
    const training::EvalPrompts prompts = training::eval_prompts(subset.products);
    const training::EvalEmbeddings plain = training::eval_embeddings(m, *tok, subset, prompts, o);
    o.reason_tokens = 3;
    const training::EvalEmbeddings reasoned = training::eval_embeddings(m, *tok, subset, prompts, o);
    for (const auto& [name, x, y] : {std::tuple{"T", plain.T, reasoned.T}, std::tuple{"V", plain.V, reasoned.V},
                                     std::tuple{"A1", plain.A1, reasoned.A1}, std::tuple{"A2", plain.A2, reasoned.A2}})
      CHECK_MESSAGE(x.to_vector<float>() == y.to_vector<float>(), name);
    CHECK(plain.P.to_vector<float>() != reasoned.P.to_vector<float>());
    // the matching views: two different augmentations, neither the plain image; another seed, other views
    CHECK(plain.A1.to_vector<float>() != plain.A2.to_vector<float>());
    CHECK(plain.A1.to_vector<float>() != plain.V.to_vector<float>());
    CHECK(plain.has_views == plain.has_image);
    training::EvalOptions seeded = o;
    seeded.reason_tokens = 0;
    seeded.seed = 5;
    const training::EvalEmbeddings other = training::eval_embeddings(m, *tok, subset, prompts, seeded);
    CHECK(other.A1.to_vector<float>() != plain.A1.to_vector<float>());
    CHECK(other.V.to_vector<float>() == plain.V.to_vector<float>());
    CHECK(plain.M.to_vector<float>() != reasoned.M.to_vector<float>());

    // product 0's P row by hand: its loader row as a prompt, 3 greedy tokens, then embedded with them
    io::LoaderOptions lo = model::eval_loader_options(m.config(), 1, 64, 0);
    io::DataLoader loader(std::make_shared<const io::Manifest>(subset), tok, lo);
    const io::Batch batch = loader.build_batch(0, 0);
    std::vector<model::InputRow> rows = model::rows_from_loader(batch);
    REQUIRE(rows.size() == 1);
    const model::SpecialTokens special = model::SpecialTokens::from(*tok);
    model::InputRow prompt = rows[0];
    prompt.prompt = true;
    model::GenerateOptions g;
    g.max_new_tokens = 3;
    g.stop_token = special.think_end;
    std::vector<int64_t> thought = model::generate(m, model::assemble({prompt}, batch.images, special, m.config()), g)[0];
    if (!thought.empty() && thought.back() == special.think_end) thought.pop_back();
    rows[0].reasoning = thought;
    rows[0].has_reasoning = true;
    const std::vector<float> want = model::embed_rows(m, rows, batch.images, special).to_vector<float>();
    const std::vector<float> got = reasoned.P.select(0, 0).to_vector<float>();
    REQUIRE(got.size() == want.size());
    double diff = 0;
    for (size_t k = 0; k < got.size(); ++k) diff = std::max(diff, std::abs(double(got[k]) - double(want[k])));
    CHECK(diff <= 1e-5);
  }

  TEST_CASE("moon eval: table, JSON file, a run folder's newest checkpoint and tokenizer, errors") {
    TempDir dir("eval");
    const std::string path = write_shop(dir);
    test::CommandRun r = test::run_moon(dir, "eval --config tiny --manifest " + path + " --batch 4 --workers 1 --json " +
                                                 (dir / "out/report.json"));
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(r.out.rfind("model: fresh tiny; tokenizer: byte-level (256 bytes + 9 specials); split test\n", 0) == 0);
    CHECK(contains(r.out, "\nzeroshot     classes         3\n"));
    CHECK(contains(r.out, "\nattr.colour  acc      "));
    CHECK(contains(r.out, "\n12 products in "));
    CHECK(contains(r.out, "wrote " + (dir / "out/report.json") + "\n"));
    CHECK(contains(r.err, "moon eval: 24 / 24 products, "));
    const auto json = nlohmann::ordered_json::parse(io::read_file_text(dir / "out/report.json"));
    CHECK(json["products"] == 12);
    CHECK(json["split"] == "test");
    CHECK(json["model"] == "config tiny");
    // the same numbers as evaluate() in this process
    const io::Manifest manifest = io::load_manifest(path, io::BadRecords::Stop);
    model::MoonModel fresh(model::load_config("tiny"));
    training::EvalOptions o;
    o.workers = 0;
    o.progress = false;
    const training::EvalReport here = training::evaluate(fresh, *byte_tokenizer(), manifest, o);
    std::vector<std::string> keys;
    for (const auto& [name, value] : json["metrics"].items()) keys.push_back(name);
    CHECK(keys == kAllMetrics);
    for (const auto& [name, value] : here.metrics)
      CHECK_MESSAGE(json["metrics"][name].get<double>() == doctest::Approx(value).epsilon(1e-9), name);

    // a run folder: the newest checkpoint and RUN_DIR/tokenizer.json
    model::ModelConfig other = model::load_config("tiny");
    other.init_seed = 7;
    model::MoonModel trained(other);
    io::make_dirs(dir / "run/checkpoints");
    model::save_checkpoint(dir / "run/checkpoints/step-00000002.safetensors", fresh);
    model::save_checkpoint(dir / "run/checkpoints/step-00000010.safetensors", trained);
    byte_tokenizer()->save(dir / "tok");
    io::write_file_atomic(dir / "run/tokenizer.json", io::read_file_text(dir / "tok/tokenizer.json"));
    r = test::run_moon(dir, "eval --model " + (dir / "run") + " --manifest " + path + " --limit 5 --workers 0");
    REQUIRE(r.status == 0);
    CHECK(r.out.rfind("model: " + (dir / "run/checkpoints/step-00000010.safetensors") + "; tokenizer: " +
                          (dir / "run/tokenizer.json") + "; split test\n", 0) == 0);
    CHECK(contains(r.out, "\n5 products in "));
    o.limit = 5;
    const training::EvalReport newest = training::evaluate(trained, *byte_tokenizer(), manifest, o);
    char value[64];
    std::snprintf(value, sizeof value, "%.2f%%", 100.0 * newest.get("t2i.MRR"));
    CHECK_MESSAGE(table_value(r.out, "t2i", "MRR") == value, r.out);
    std::snprintf(value, sizeof value, "%.2f%%", 100.0 * newest.get("zeroshot.acc"));
    CHECK_MESSAGE(table_value(r.out, "zeroshot", "acc") == value, r.out);

    // errors
    r = test::run_moon(dir, "eval --model " + (dir / "none") + " --manifest " + path);
    CHECK(r.status == 2);
    CHECK(contains(r.err, "moon eval: error: " + (dir / "none") + ": no such checkpoint"));
    io::make_dirs(dir / "empty");
    r = test::run_moon(dir, "eval --model " + (dir / "empty") + " --manifest " + path);
    CHECK(r.err == "moon eval: error: " + (dir / "empty") + ": neither model.safetensors nor checkpoints/step-*." +
                       "safetensors in this folder (pass a moon checkpoint or a `moon train` run folder)\n");
    r = test::run_moon(dir, "eval --config tiny --manifest " + path + " --split val");
    CHECK(r.status == 2);
    CHECK(r.err == "moon eval: error: " + path + ": no products in split 'val' to evaluate (check --split; `moon data " +
                       "validate " + path + "` lists the splits)\n");
    r = test::run_moon(dir, "eval --config tiny --manifest " + path + " --limt 3");
    CHECK(r.status == 2);
    CHECK(r.err == "moon eval: error: unknown option '--limt' (try `moon eval --help`)\n");
    r = test::run_moon(dir, "eval --manifest " + path);
    CHECK(r.err == "moon eval: error: pass exactly one of --model RUN_DIR_OR_CKPT (a checkpoint or a `moon train` run "
                   "folder) and --config CFG (fresh weights)\n");
    r = test::run_moon(dir, "eval --help");
    CHECK(r.status == 0);
    CHECK(r.out.rfind("usage: moon eval ", 0) == 0);
  }
}
