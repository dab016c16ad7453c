// Tensor-by-tensor parity of moon's C++ model with its independent PyTorch twin (scripts/moon_twin.py), both
// written from docs/model.md: outputs, the parity loss and every parameter's gradient, in f32 and bf16, for
// every combination of the model's switches; and greedy generation (KV cache here, full recomputation there).
// How it works and the tolerances: docs/parity.md.
//
// ctest passes MOON_TWIN_PYTHON and MOON_TWIN_SCRIPT (cmake/tests/model_parity.cmake). By hand, from the
// repository root:  build/moon_tests -ts=model_parity   (uses /usr/bin/python3 and scripts/moon_twin.py).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/generate.h"
#include "model/hf_import.h"
#include "model/inputs.h"
#include "model/moon_model.h"
#include "runtime/autograd.h"
#include "runtime/rng.h"
#include "test_util.h"

namespace fs = std::filesystem;
using moon::DType;
using moon::Tensor;
using namespace moon::model;
using moon::test::TempDir;

namespace {

using TwinTool = moon::test::PythonTool;
using moon::test::quoted;

// The interpreter and twin script from the environment, else /usr/bin/python3 and scripts/moon_twin.py.
std::optional<TwinTool> find_twin() {
  return moon::test::find_python_tool("MOON_TWIN_PYTHON", "MOON_TWIN_SCRIPT", "scripts/moon_twin.py", "model_parity",
                                      "torch and numpy");
}

// Runs `moon_twin.py <args>`; fails the test (naming the command) unless it exits with 0.
void run_twin(const TwinTool& tool, const std::string& args) {
  const int code = tool.run(args);
  REQUIRE_MESSAGE(code == 0, "the twin failed (exit ", code, "): ", tool.command(args));
}

// One combination of the model's switches.
struct Variant {
  bool moe = false, fusion = false, fire = false;
  std::string pooling = "mean";
  bool fresh_gates = false;  // FIRE on with its zero initial gates (otherwise random nonzero gates)
  bool dual = false;         // embedding.architecture "dual" (docs/model.md section 11)
  std::string name() const {
    if (dual) return std::string("dual-moe") + (moe ? "1" : "0") + "-" + pooling;
    std::string n = std::string("moe") + (moe ? "1" : "0") + "-fusion" + (fusion ? "1" : "0") + "-fire" +
                    (fire ? "1" : "0") + "-" + pooling;
    return fresh_gates ? n + "-zero-gates" : n;
  }
};

// configs/tiny.json with the variant's switches.
ModelConfig variant_config(const Variant& v) {
  ModelConfig c = load_config("tiny");
  c.moe.enabled = v.moe;
  c.fusion.enabled = v.fusion;
  c.fire.enabled = v.fire;
  c.embedding.pooling = v.pooling;
  if (v.dual) c.embedding.architecture = "dual";
  c.name = "tiny-" + v.name();
  return c;
}

// The 16 combinations of moe x fusion x fire x pooling, FIRE with fresh zero gates, and two dual encoders.
std::vector<Variant> all_variants() {
  std::vector<Variant> out;
  for (int bits = 0; bits < 16; ++bits)
    out.push_back({(bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0, (bits & 8) ? "emb_token" : "mean", false});
  out.push_back({true, true, true, "mean", true});
  out.push_back({false, false, false, "mean", false, true});
  out.push_back({true, false, false, "emb_token", false, true});
  return out;
}

// n random pictures (n, 3, S, S) f32.
Tensor random_images(const ModelConfig& c, int64_t n, uint64_t seed) {
  moon::Generator gen(seed);
  return moon::randn({n, 3, c.vision.image_size, c.vision.image_size}, gen);
}

std::vector<int64_t> random_ids(std::mt19937_64& rng, int64_t count, int64_t vocab) {
  std::uniform_int_distribution<int64_t> pick(9, vocab - 1);  // past the marker tokens
  std::vector<int64_t> ids(count);
  for (auto& id : ids) id = pick(rng);
  return ids;
}

// 6 rows: image+text, text only, image only, image+text (short), text only (short), image+text+reasoning,
// all of different lengths; halves (0..2, 3..5) pair up in the parity loss.
ModelBatch parity_batch(const ModelConfig& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t V = c.decoder.vocab;
  std::vector<InputRow> rows(6);
  rows[0].text = random_ids(rng, 5, V), rows[0].image = 0;
  rows[1].text = random_ids(rng, 9, V);
  rows[2].image = 1;
  rows[3].text = random_ids(rng, 2, V), rows[3].image = 2;
  rows[4].text = random_ids(rng, 3, V);
  rows[5].text = random_ids(rng, 6, V), rows[5].image = 3;
  rows[5].has_reasoning = true, rows[5].reasoning = random_ids(rng, 4, V);
  return assemble(rows, random_images(c, 4, seed + 1), SpecialTokens{}, c);
}

// 3 generation prompts (ending in <think>): image+text, text only, image only.
ModelBatch prompt_batch(const ModelConfig& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<InputRow> rows(3);
  rows[0].text = random_ids(rng, 4, c.decoder.vocab), rows[0].image = 0;
  rows[1].text = random_ids(rng, 7, c.decoder.vocab);
  rows[2].image = 1;
  for (auto& r : rows) r.prompt = true;
  return assemble(rows, random_images(c, 2, seed + 1), SpecialTokens{}, c);
}

// FIRE gates set to nonzero random values, so FIRE really changes the model.
void randomize_fire_gates(MoonModel& model, uint64_t seed) {
  moon::NoGradGuard no_grad;
  moon::Generator gen(seed);
  for (size_t j = 0; j < model.config().fire.vision_layers.size(); ++j) {
    Tensor gate = model.params().get("fire." + std::to_string(j) + ".gate");
    gate.copy_(moon::randn(gate.shape(), gen));
  }
}

void save_weights(const std::string& path, const MoonModel& model) {
  moon::io::save_safetensors(path, model.params().all(), {{"moon.config", model.config().to_json()}});
}

// Where two tensors differ most, relative to the reference's largest magnitude.
struct Difference {
  double relative = 0;  // max|a-b| / max(max|b|, tiny)
  int64_t at = 0;       // flat index of the largest |a-b|
  float moon = 0, twin = 0;
};

Difference compare(const Tensor& moon_value, const Tensor& twin_value) {
  const std::vector<float> a = moon_value.to_vector<float>(), b = twin_value.to_vector<float>();
  Difference d;
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!(diff <= max_diff)) max_diff = diff, d.at = static_cast<int64_t>(i);  // NaN counts as worst
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(b[i])));
  }
  d.relative = max_diff / std::max(max_ref, 1e-20);
  if (!a.empty()) d.moon = a[d.at], d.twin = b[d.at];
  return d;
}

// Compares one tensor; the failure message names the config, the tensor and both values at the worst element.
// Returns the relative difference.
double check_tensor(const std::string& config, const std::string& name, const Tensor& moon_value,
                    const Tensor& twin_value, double tolerance) {
  const bool same_shape = moon_value.shape() == twin_value.shape();
  CHECK_MESSAGE(same_shape, config, ": ", name, " is ", moon_value.shape_str(), " in moon but ",
                twin_value.shape_str(), " in the twin");
  if (!same_shape) return INFINITY;
  const Difference d = compare(moon_value, twin_value);
  CHECK_MESSAGE(d.relative <= tolerance, config, ": ", name, " differs: relative error ", d.relative, " > ",
                tolerance, " at flat index ", d.at, " (moon ", d.moon, ", twin ", d.twin, ")");
  return d.relative;
}

// Per-tensor tolerances (docs/parity.md): f32 everywhere 1e-4; bf16 by kind of tensor.
struct Tolerances {
  double outputs, hidden, loss, grads;
};
constexpr Tolerances kF32{1e-4, 1e-4, 1e-4, 1e-4};
constexpr Tolerances kBf16{1e-2, 1e-2, 1e-2, 5e-2};

// Gradients that are exactly zero in exact arithmetic: the bias of a key projection without RoPE adds the same
// q.b to every score of a query, and softmax ignores such a shift. Both sides only hold rounding noise there,
// so they are checked against an absolute bound instead (docs/parity.md).
bool structurally_zero(const std::string& grad_name) {
  const bool vision_key_bias = grad_name.starts_with("grad.vision_model.") && grad_name.ends_with("self_attn.k_proj.bias");
  return vision_key_bias || grad_name == "grad.fusion.visual_k_proj.bias" || grad_name == "grad.fusion.text_k_proj.bias";
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (float x : t.to_vector<float>()) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

// One model and batch compared with the twin: built, saved for the twin, then (after the twin ran) compared.
struct ParityCase {
  Variant variant;
  DType dtype;
  Tolerances tol;
  std::string label, weights, batch_file, twin_out;
  std::unique_ptr<MoonModel> model;
  ModelBatch batch;

  ParityCase(const Variant& v, DType d, const Tolerances& t, const TempDir& dir, size_t index)
      : variant(v), dtype(d), tol(t) {
    const ModelConfig config = variant_config(v);
    label = config.name + (dtype == DType::BF16 ? " (bf16)" : " (f32)");
    model = std::make_unique<MoonModel>(config);
    if (v.fire && !v.fresh_gates) randomize_fire_gates(*model, 7);
    model->compute().dtype = dtype;
    batch = parity_batch(config, 11);
    const std::string stem = dir / ("case" + std::to_string(index));
    weights = stem + "-w.safetensors", batch_file = stem + "-batch.safetensors", twin_out = stem + "-twin.safetensors";
    save_weights(weights, *model);
    moon::io::save_safetensors(batch_file, batch.named());
  }

  // Runs moon's forward + parity loss + backward and compares every tensor with the twin's; the worst error.
  double compare_with_twin() {
    CAPTURE(label);
    auto twin = moon::io::SafetensorsFile::open(twin_out);
    auto twin_tensor = [&](const std::string& name) {
      REQUIRE_MESSAGE(twin->contains(name), label, ": the twin wrote no ", name);
      return twin->tensor_as(name, DType::F32);
    };
    model->params().zero_grad();
    ModelOutput out = model->forward(batch);
    Tensor loss = parity_loss(out, model->config());
    loss.backward();

    // the worst relative error and its tensor, per kind: 0 outputs, 1 hidden, 2 losses, 3 gradients
    double worst[4] = {0, 0, 0, 0};
    std::string worst_name[4];
    auto check = [&](int kind, const std::string& name, const Tensor& value, double t) {
      const double rel = check_tensor(label, name, value, twin_tensor(name), t);
      if (rel >= worst[kind]) worst[kind] = rel, worst_name[kind] = name;
    };
    check(0, "embedding", out.embedding, tol.outputs);
    check(0, "pooled", out.pooled, tol.outputs);
    check(1, "hidden", out.hidden, tol.hidden);
    check(2, "aux_loss", out.aux_loss.defined() ? out.aux_loss : moon::zeros({}), tol.loss);
    check(2, "loss", loss, tol.loss);
    double grad_scale = 0;  // the largest gradient of the model (twin side)
    for (const auto& [name, param] : model->params().all()) grad_scale = std::max(grad_scale, max_abs(twin_tensor("grad." + name)));
    for (const auto& [name, param] : model->params().all()) {
      const Tensor grad = param.grad().defined() ? param.grad() : moon::zeros(param.shape());
      const std::string key = "grad." + name;
      if (structurally_zero(key)) {
        const double bound = 1e-6 * grad_scale, a = max_abs(grad), b = max_abs(twin_tensor(key));
        CHECK_MESSAGE(std::max(a, b) <= bound, label, ": ", key, " should be zero up to rounding, but moon has ", a,
                      " and the twin ", b, " (bound ", bound, ")");
        continue;
      }
      check(3, key, grad, tol.grads);
    }
    MESSAGE(label, ": worst relative error: outputs ", worst[0], " (", worst_name[0], "), hidden ", worst[1],
            ", losses ", worst[2], " (", worst_name[2], "), gradients ", worst[3], " (", worst_name[3], "); ",
            model->params().all().size(), " gradients compared");
    return *std::max_element(worst, worst + 4);
  }
};

// Builds every case, runs the twin once over all of them (one torch start), and compares.
void run_cases(const TwinTool& tool, const std::vector<Variant>& variants, DType dtype, const Tolerances& tol) {
  TempDir dir("parity");
  std::vector<std::unique_ptr<ParityCase>> cases;
  std::string args = std::string("forward --dtype ") + (dtype == DType::BF16 ? "bf16" : "f32");
  for (const Variant& v : variants) {
    cases.push_back(std::make_unique<ParityCase>(v, dtype, tol, dir, cases.size()));
    const ParityCase& c = *cases.back();
    args += " --weights " + quoted(c.weights) + " --batch " + quoted(c.batch_file) + " --out " + quoted(c.twin_out);
  }
  run_twin(tool, args);
  for (auto& c : cases) c->compare_with_twin();
}

}  // namespace

TEST_SUITE("model_parity") {
  TEST_CASE("f32: outputs, loss and every gradient match the twin for every switch combination") {
    auto tool = find_twin();
    if (!tool) return;
    run_cases(*tool, all_variants(), DType::F32, kF32);
  }

  TEST_CASE("bf16 compute: outputs, loss and gradients match the twin's bf16 mode") {
    auto tool = find_twin();
    if (!tool) return;
    run_cases(*tool,
              {Variant{false, false, false, "mean", false}, Variant{true, true, true, "mean", false},
               Variant{true, true, true, "emb_token", false}},
              DType::BF16, kBf16);
  }

  TEST_CASE("greedy generation with the KV cache equals the twin's full recomputation") {
    auto tool = find_twin();
    if (!tool) return;
    constexpr int64_t kSteps = 32;
    TempDir dir("parity-gen");
    const std::vector<Variant> variants = {Variant{}, Variant{true, true, true, "mean", false},
                                           Variant{false, false, false, "emb_token", false}};
    std::vector<std::vector<std::vector<int64_t>>> moon_tokens;
    std::string args = "generate --steps " + std::to_string(kSteps);
    for (size_t i = 0; i < variants.size(); ++i) {
      const ModelConfig config = variant_config(variants[i]);
      MoonModel model(config);
      if (variants[i].fire) randomize_fire_gates(model, 7);
      const ModelBatch prompt = prompt_batch(config, 23 + i);
      GenerateOptions options;
      options.max_new_tokens = kSteps;
      moon_tokens.push_back(generate(model, prompt, options));
      const std::string stem = dir / ("gen" + std::to_string(i));
      save_weights(stem + "-w.safetensors", model);
      moon::io::save_safetensors(stem + "-prompt.safetensors", prompt.named());
      args += " --weights " + quoted(stem + "-w.safetensors") + " --batch " + quoted(stem + "-prompt.safetensors") +
              " --out " + quoted(stem + "-tokens.safetensors");
    }
    run_twin(*tool, args);
    for (size_t i = 0; i < variants.size(); ++i) {
      const std::string name = variant_config(variants[i]).name;
      CAPTURE(name);
      Tensor twin_tokens = moon::io::SafetensorsFile::open(dir / ("gen" + std::to_string(i) + "-tokens.safetensors"))->tensor("tokens");
      REQUIRE(twin_tokens.shape() == moon::Shape{3, kSteps});
      const std::vector<int64_t> expected = twin_tokens.to_vector<int64_t>();
      const auto& tokens = moon_tokens[i];
      REQUIRE(tokens.size() == 3);
      for (int64_t r = 0; r < 3; ++r) {
        const std::vector<int64_t> want(expected.begin() + r * kSteps, expected.begin() + (r + 1) * kSteps);
        std::ostringstream got_s, want_s;
        for (int64_t t : tokens[r]) got_s << t << ' ';
        for (int64_t t : want) want_s << t << ' ';
        CHECK_MESSAGE(tokens[r] == want, name, " row ", r, ": moon generated [", got_s.str(), "] but the twin [",
                      want_s.str(), "]");
      }
    }
  }

  TEST_CASE("export-hf writes what moon's Hugging Face import reads back, bit for bit in bf16") {
    auto tool = find_twin();
    if (!tool) return;
    ModelConfig siglip_moe = variant_config({true, false, false, "mean", false});
    ModelConfig clip_untied = variant_config({false, false, false, "mean", false});
    clip_untied.vision.style = "clip", clip_untied.vision.act = "quick_gelu", clip_untied.vision.layer_norm_eps = 1e-5;
    clip_untied.decoder.tie_embeddings = false, clip_untied.name = "tiny-clip-untied";
    for (const ModelConfig& config : {siglip_moe, clip_untied}) {
      CAPTURE(config.name);
      TempDir dir("parity-hf");
      MoonModel model(config);
      save_weights(dir / "w.safetensors", model);
      run_twin(*tool, "export-hf --weights " + quoted(dir / "w.safetensors") + " --out " + quoted(dir / "hf"));
      {
        std::ofstream f(dir / "config.json");
        f << config.to_json();
      }
      HfImportOptions options;
      options.vision = dir / "hf/vision", options.decoder = dir / "hf/decoder", options.config = dir / "config.json";
      const HfImportResult imported = import_hf(options);
      int64_t compared = 0;
      for (const auto& [name, original] : model.params().all()) {
        std::string source = name;  // the exported tensor this parameter was read from
        const auto experts = name.find(".mlp.experts.");
        if (experts != std::string::npos) source = name.substr(0, experts) + ".mlp.experts.0" + name.substr(name.find('.', experts + 13));
        const bool exported = name.starts_with("vision_model.") || name.starts_with("lm_head.") ||
                              (name.starts_with("model.") && !name.ends_with("mlp.gate.weight") &&
                               !name.ends_with("modality_embedding.weight"));
        if (!exported) continue;
        const Tensor want = model.params().get(source).to(DType::BF16).to(DType::F32);
        const Difference d = compare(imported.model->params().get(name), want);
        CHECK_MESSAGE(d.relative == 0, config.name, ": ", name, " after export-hf + import differs at ", d.at, ": ",
                      d.moon, " vs ", d.twin, " (bf16 of ", source, ")");
        ++compared;
      }
      // every exported tensor was placed (an expert copy counts once: it is one Hugging Face tensor)
      const int64_t copies = imported.report.upcycled_layers * 3 * (config.moe.enabled ? config.moe.experts - 1 : 0);
      CHECK(compared == imported.report.placed + copies);
      // only SigLIP's attention-pool head (11 tensors, unused by moon) is left over
      const size_t head_tensors = config.vision.style == "siglip" ? 11 : 0;
      CHECK(imported.report.unplaced.size() == head_tensors);
      for (const std::string& u : imported.report.unplaced) CHECK_MESSAGE(u.starts_with("vision_model.head."), u);
      MESSAGE(config.name, ": ", compared, " parameters equal after export-hf + import (", imported.report.placed,
              " Hugging Face tensors placed, ", imported.report.unplaced.size(), " not placed)");
    }
  }

  TEST_CASE("FIRE with fresh (zero) gates is exactly the model without FIRE") {
    const ModelConfig with = variant_config({true, true, true, "mean", true});
    const ModelConfig without = variant_config({true, true, false, "mean", false});
    const ModelBatch batch = parity_batch(with, 11);
    const ModelOutput a = MoonModel(with).forward(batch), b = MoonModel(without).forward(batch);
    const Difference d = compare(a.hidden, b.hidden), e = compare(a.embedding, b.embedding);
    CHECK_MESSAGE(d.relative == 0, "hidden differs at ", d.at, ": ", d.moon, " vs ", d.twin);
    CHECK_MESSAGE(e.relative == 0, "embedding differs at ", e.at, ": ", e.moon, " vs ", e.twin);
  }
}
