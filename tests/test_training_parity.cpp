// Parity of moon's training losses (training/contrastive*.h, training/grpo.h) with their independent PyTorch
// twin (scripts/train_twin.py), both written from docs/training.md: L_con and its parts with every parameter's
// gradient (and the temperature's) on a tiny model with MoE, fusion and FIRE, directly and with gradient
// caching; and GRPO on fixed rollouts against a reference with other parameters: rewards, advantages, the
// scored-token mask, L_pg, its KL and every gradient. Tolerance: 1e-4 relative (f32), as docs/parity.md.
//
// ctest passes MOON_TRAIN_TWIN_PYTHON and MOON_TRAIN_TWIN_SCRIPT (cmake/tests/training_parity.cmake). By hand,
// from the repository root:  build/moon_tests -ts=training_parity
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <random>
#include <sstream>

#include "io/data_loader.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/inputs.h"
#include "model/moon_model.h"
#include "runtime/autograd.h"
#include "runtime/rng.h"
#include "test_util.h"
#include "training/contrastive.h"
#include "training/contrastive_step.h"
#include "training/grpo.h"

using moon::DType;
using moon::Tensor;
using namespace moon::model;
using namespace moon::training;
using moon::test::quoted;
using moon::test::TempDir;

namespace {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// The interpreter and twin script from the environment, else /usr/bin/python3 and scripts/train_twin.py.
std::optional<moon::test::PythonTool> find_train_twin() {
  return moon::test::find_python_tool("MOON_TRAIN_TWIN_PYTHON", "MOON_TRAIN_TWIN_SCRIPT", "scripts/train_twin.py",
                                      "training_parity", "torch and numpy");
}

// configs/tiny.json with MoE, fusion and FIRE on (init_seed picks the parameters).
ModelConfig parity_config(int64_t init_seed) {
  ModelConfig c = load_config("tiny");
  c.moe.enabled = c.fusion.enabled = c.fire.enabled = true;
  c.init_seed = init_seed;
  c.name = "tiny-moe-fusion-fire";
  return c;
}

// A model of parity_config with FIRE's gates set to nonzero random values (fresh gates are 0: FIRE would be off).
std::unique_ptr<MoonModel> parity_model(int64_t init_seed) {
  auto model = std::make_unique<MoonModel>(parity_config(init_seed));
  moon::NoGradGuard no_grad;
  moon::Generator gen(100 + init_seed);
  for (size_t j = 0; j < model->config().fire.vision_layers.size(); ++j) {
    Tensor gate = model->params().get("fire." + std::to_string(j) + ".gate");
    gate.copy_(moon::randn(gate.shape(), gen));
  }
  return model;
}

void save_weights(const std::string& path, const MoonModel& model) {
  moon::io::save_safetensors(path, model.params().all(), {{"moon.config", model.config().to_json()}});
}

std::vector<int64_t> random_ids(std::mt19937_64& rng, int64_t count, int64_t vocab) {
  std::uniform_int_distribution<int64_t> pick(9, vocab - 1);  // past the marker tokens
  std::vector<int64_t> ids(count);
  for (auto& id : ids) id = pick(rng);
  return ids;
}

// A loader batch of 7 products as the data loader makes it (views = 2): image + text, text only, image only,
// of different text lengths, in three categories (same-category hard negatives in every view).
moon::io::Batch parity_loader_batch(const ModelConfig& c) {
  std::mt19937_64 rng(5);
  const std::vector<int64_t> text_len = {5, 3, 6, 0, 2, 7, 4};
  const std::vector<int64_t> has_image = {1, 1, 0, 1, 1, 0, 1};
  const std::vector<int64_t> labels = {0, 1, 0, 1, 0, 2, 0};
  const int64_t B = 7, T = 7, S = c.vision.image_size;
  std::vector<int64_t> ids(B * T, SpecialTokens{}.pad), mask(B * T, 0);  // (B, T) right-padded
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<int64_t> text = random_ids(rng, text_len[b], c.decoder.vocab);
    for (int64_t t = 0; t < text_len[b]; ++t) ids[b * T + t] = text[t], mask[b * T + t] = 1;
  }
  moon::Generator gen(9);
  // (B, 3, S, S) f32 each; rows without an image are zeros, as the loader leaves them
  std::vector<float> images = moon::randn({B, 3, S, S}, gen).to_vector<float>();
  std::vector<float> images2 = moon::randn({B, 3, S, S}, gen).to_vector<float>();
  const int64_t per_image = 3 * S * S;
  for (int64_t b = 0; b < B; ++b)
    if (!has_image[b])
      for (int64_t i = 0; i < per_image; ++i) images[b * per_image + i] = images2[b * per_image + i] = 0.0f;
  moon::io::Batch batch;
  batch.images = moon::from_vector(images, {B, 3, S, S});
  batch.images2 = moon::from_vector(images2, {B, 3, S, S});
  batch.token_ids = moon::from_vector(ids, {B, T}, DType::I64);
  batch.attention_mask = moon::from_vector(mask, {B, T}, DType::I64);
  batch.has_image = moon::from_vector(has_image, {B}, DType::I64);
  batch.labels = moon::from_vector(labels, {B}, DType::I64);
  std::vector<int64_t> index(B);
  for (int64_t b = 0; b < B; ++b) index[b] = b;
  batch.product_index = moon::from_vector(index, {B}, DType::I64);
  return batch;
}

// Where two tensors differ most, relative to the reference's largest magnitude.
struct Difference {
  double relative = 0;
  int64_t at = 0;
  float moon = 0, twin = 0;
};

Difference compare(const Tensor& moon_value, const Tensor& twin_value) {
  const std::vector<float> a = moon_value.to_vector<float>(), b = twin_value.to_vector<float>();
  Difference d;
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!(diff <= max_diff)) max_diff = diff, d.at = static_cast<int64_t>(i);  // NaN counts as worst
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(b[i])));
  }
  d.relative = max_diff / std::max(max_ref, 1e-20);
  if (!a.empty() && !b.empty()) d.moon = a[d.at], d.twin = b[d.at];
  return d;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (float x : t.to_vector<float>()) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

// Gradients that are zero in exact arithmetic (a key bias without RoPE shifts every score of a query equally):
// both sides hold rounding noise there, checked against an absolute bound (docs/parity.md).
bool structurally_zero(const std::string& param) {
  return (param.starts_with("vision_model.") && param.ends_with("self_attn.k_proj.bias")) ||
         param == "fusion.visual_k_proj.bias" || param == "fusion.text_k_proj.bias";
}

constexpr double kTolerance = 1e-4;

// The twin's output file of one case, and checks against it naming the case, the tensor and the worst element.
struct TwinOutput {
  std::string label;
  std::shared_ptr<moon::io::SafetensorsFile> file;
  double worst = 0;
  std::string worst_name;

  Tensor get(const std::string& name) {
    REQUIRE_MESSAGE(file->contains(name), label, ": the twin wrote no ", name);
    return file->tensor_as(name, DType::F32);
  }
  // moon's tensor against the twin's `name`, within kTolerance relative to the twin's largest magnitude.
  void check(const std::string& name, const Tensor& moon_value) {
    const Tensor twin_value = get(name);
    REQUIRE_MESSAGE(moon_value.numel() == twin_value.numel(), label, ": ", name, " is ", moon_value.shape_str(),
                    " in moon but ", twin_value.shape_str(), " in the twin");
    const Difference d = compare(moon_value, twin_value);
    CHECK_MESSAGE(d.relative <= kTolerance, label, ": ", name, " differs: relative error ", d.relative, " > ",
                  kTolerance, " at flat index ", d.at, " (moon ", d.moon, ", twin ", d.twin, ")");
    if (d.relative >= worst) worst = d.relative, worst_name = name;
  }
  void check_value(const std::string& name, double moon_value) { check(name, moon::scalar_tensor(moon_value)); }
  // Every parameter's gradient (prefix "con.grad." or "pg.grad."); structurally zero ones against a bound.
  void check_gradients(const std::string& prefix, const MoonModel& model) {
    double scale = 0;
    for (const auto& [name, param] : model.params().all()) scale = std::max(scale, max_abs(get(prefix + name)));
    for (const auto& [name, param] : model.params().all()) {
      const Tensor grad = param.grad().defined() ? param.grad() : moon::zeros(param.shape());
      if (structurally_zero(name)) {
        const double bound = 1e-6 * scale, a = max_abs(grad), b = max_abs(get(prefix + name));
        CHECK_MESSAGE(std::max(a, b) <= bound, label, ": ", prefix, name, " should be zero up to rounding, but moon has ",
                      a, " and the twin ", b, " (bound ", bound, ")");
        continue;
      }
      check(prefix + name, grad);
    }
  }
};

TwinOutput open_output(const std::string& label, const std::string& path) {
  TwinOutput out;
  out.label = label;
  out.file = moon::io::SafetensorsFile::open(path);
  return out;
}

// One contrastive case: the model, the views, the options; its inputs file for the twin.
struct ContrastiveCase {
  std::string label;
  ContrastiveOptions options;
  double margin = 0, logit_scale_value = 0, loss_scale = 1;
  int64_t chunk = 0;
};

std::string options_json(const ContrastiveCase& c) {
  std::ostringstream dims;
  for (size_t i = 0; i < c.options.matryoshka_dims.size(); ++i) dims << (i ? "," : "") << c.options.matryoshka_dims[i];
  std::ostringstream j;
  j.precision(17);
  j << "{\"max_logit_scale\":" << c.options.max_logit_scale << ",\"hard_negative_weight\":" << c.options.hard_negative_weight
    << ",\"inter\":" << (c.options.inter ? "true" : "false") << ",\"intra\":" << (c.options.intra ? "true" : "false")
    << ",\"filtering\":" << (c.options.filtering ? "true" : "false") << ",\"filter_kappa\":" << c.options.filter_kappa
    << ",\"filter_threshold\":" << c.options.filter_threshold << ",\"margin\":" << c.margin << ",\"matryoshka_dims\":["
    << dims.str() << "],\"matryoshka_weight\":" << c.options.matryoshka_weight << ",\"aux_weight\":" << c.options.aux_weight
    << ",\"loss_scale\":" << c.loss_scale << ",\"chunk\":" << c.chunk << "}";
  return j.str();
}

// The four views assembled (prefix P, T, V, M), their product lists, the categories and the temperature.
void save_contrastive_inputs(const std::string& path, const ContrastiveViews& views, const ModelConfig& config,
                             const Tensor& logit_scale, const ContrastiveCase& c) {
  NamedTensors named;
  const std::pair<const char*, const View*> all[4] = {
      {"P", &views.products}, {"T", &views.text}, {"V", &views.image}, {"M", &views.multimodal}};
  for (const auto& [prefix, view] : all) {
    if (view->rows.empty()) continue;
    const ModelBatch batch = assemble(view->rows, view->images, SpecialTokens{}, config);
    for (const auto& [name, t] : batch.named()) named.emplace_back(std::string(prefix) + "." + name, t);
    named.emplace_back(std::string(prefix) + ".product",
                       moon::from_vector(view->product, {static_cast<int64_t>(view->product.size())}, DType::I64));
  }
  named.emplace_back("category", moon::from_vector(views.category, {static_cast<int64_t>(views.category.size())}, DType::I64));
  named.emplace_back("logit_scale", logit_scale.detach());
  moon::io::save_safetensors(path, named, {{"moon.train_options", options_json(c)}});
}

// Runs moon's contrastive_step for a case and compares everything with the twin's output.
void compare_contrastive(const ContrastiveCase& c, MoonModel& model, const ContrastiveViews& views,
                         const std::string& twin_out) {
  CAPTURE(c.label);
  Tensor logit_scale = make_logit_scale(c.options);
  {
    moon::NoGradGuard no_grad;
    logit_scale.copy_(moon::full({1}, c.logit_scale_value));
  }
  model.params().zero_grad();
  const ContrastiveStepResult r =
      contrastive_step(model, views, SpecialTokens{}, logit_scale, c.options, c.margin, c.chunk, c.loss_scale);
  TwinOutput twin = open_output(c.label, twin_out);
  twin.check("con.total", r.loss.total);
  twin.check("con.inter", r.loss.inter);
  twin.check("con.intra", r.loss.intra);
  twin.check("con.aux", r.loss.aux.defined() ? r.loss.aux : moon::zeros({}));
  twin.check("con.matryoshka", r.loss.matryoshka);
  twin.check_value("con.temperature", r.loss.temperature);
  twin.check_value("con.kept_fraction", r.loss.kept_fraction);
  twin.check("con.emb.M", r.multimodal);
  twin.check_gradients("con.grad.", model);
  twin.check("con.grad.logit_scale", logit_scale.grad().defined() ? logit_scale.grad() : moon::zeros({1}));
  // the parts must be real: a loss that is 0 everywhere would compare equal and prove nothing
  CHECK(r.loss.inter.item() > 0.1);
  if (c.options.intra) CHECK(r.loss.intra.item() > 0.1);
  MESSAGE(c.label, ": L_con ", r.loss.total.item(), " (inter ", r.loss.inter.item(), ", intra ", r.loss.intra.item(),
          ", aux ", r.loss.aux.defined() ? r.loss.aux.item() : 0.0, ", matryoshka ", r.loss.matryoshka.item(),
          ", kept ", r.loss.kept_fraction, "); worst relative error ", twin.worst, " (", twin.worst_name, ")");
}

// r_fmt and the advantages of fixed rewards, for the GRPO case: 2 anchors x 3 rollouts.
constexpr int64_t kGroup = 3;
const std::vector<double> kFixedRewards = {0.5, -0.2, 0.1, 0.3, 0.35, 0.9};

// Hand-chosen rollouts (tokens as generate() returns them; </think> = 6, <think> = 5): finished, unfinished,
// a bare </think>, one with a marker inside, unfinished, finished.
Rollouts fixed_rollouts(const moon::io::Batch& loader) {
  const std::vector<InputRow> both = rows_from_loader(loader, Use::Both);
  const std::vector<int64_t> anchors = {0, 4};  // products with image and text
  Rollouts r;
  r.group = kGroup;
  r.images = loader.images;
  r.tokens = {{20, 21, 22, 6}, {30, 31}, {6}, {40, 5, 41, 6}, {50, 51, 52}, {60, 6}};
  for (size_t a = 0; a < anchors.size(); ++a)
    for (int64_t g = 0; g < kGroup; ++g) {
      InputRow prompt = both[anchors[a]];
      prompt.prompt = true;
      r.prompts.push_back(prompt);
      r.anchor.push_back(static_cast<int64_t>(a));
    }
  return r;
}

std::string grpo_json(const GrpoOptions& o) {
  std::ostringstream j;
  j.precision(17);
  j << "{\"group\":" << o.group << ",\"clip_eps\":" << o.clip_eps << ",\"kl_beta\":" << o.kl_beta
    << ",\"format_reward\":" << o.format_reward << ",\"negatives\":\"" << o.negatives << "\"}";
  return j.str();
}

std::string special_json(const SpecialTokens& s) {
  std::ostringstream j;
  j << "{\"im_start\":" << s.im_start << ",\"image\":" << s.image << ",\"image_end\":" << s.image_end
    << ",\"think\":" << s.think << ",\"think_end\":" << s.think_end << ",\"emb\":" << s.emb << ",\"pad\":" << s.pad
    << ",\"eos\":" << s.eos << "}";
  return j.str();
}

}  // namespace

TEST_SUITE("training_parity") {
  TEST_CASE("L_con, its parts and every gradient match the twin (MoE + fusion + FIRE; direct and chunked)") {
    auto tool = find_train_twin();
    if (!tool) return;
    TempDir dir("train-parity");
    auto model = parity_model(0);
    const moon::io::Batch loader = parity_loader_batch(model->config());
    const ContrastiveViews views = make_views(loader);
    // the views of docs/training.md section 1: 7 products, 6 with text, 5 with an image, 4 with both
    REQUIRE(views.products.rows.size() == 7);
    CHECK(views.text.product == std::vector<int64_t>{0, 1, 2, 4, 5, 6});
    CHECK(views.image.product == std::vector<int64_t>{0, 1, 3, 4, 6});
    CHECK(views.multimodal.product == std::vector<int64_t>{0, 1, 4, 6});

    std::vector<ContrastiveCase> cases;
    ContrastiveCase all;
    all.label = "every loss on, one forward per view";
    all.options.matryoshka_dims = {16, 32};
    all.options.aux_weight = model->config().moe.aux_weight;
    all.margin = filter_margin(all.options, 3, 10);
    all.logit_scale_value = std::log(1 / 0.07);
    cases.push_back(all);
    ContrastiveCase chunked = all;
    chunked.label = "gradient caching, chunks of 3 rows, loss scale 0.5, margin 0";
    chunked.chunk = 3, chunked.loss_scale = 0.5, chunked.margin = filter_margin(all.options, 10, 10);
    cases.push_back(chunked);
    ContrastiveCase plain = all;
    plain.label = "temperature clamped at 100, no hard-negative weight, no filtering, no Matryoshka";
    plain.options.hard_negative_weight = 1.0, plain.options.filtering = false, plain.options.matryoshka_dims.clear();
    plain.logit_scale_value = 5.0;
    cases.push_back(plain);

    const std::string weights = dir / "weights.safetensors";
    save_weights(weights, *model);
    std::string args = "loss";
    for (size_t i = 0; i < cases.size(); ++i) {
      const std::string in = dir / ("con" + std::to_string(i) + "-in.safetensors");
      save_contrastive_inputs(in, views, model->config(), moon::full({1}, cases[i].logit_scale_value), cases[i]);
      args += " --ckpt " + quoted(weights) + " --inputs " + quoted(in) + " --out " +
              quoted(dir / ("con" + std::to_string(i) + "-out.safetensors"));
    }
    const int code = tool->run(args);
    REQUIRE_MESSAGE(code == 0, "the twin failed (exit ", code, "): ", tool->command(args));
    for (size_t i = 0; i < cases.size(); ++i)
      compare_contrastive(cases[i], *model, views, dir / ("con" + std::to_string(i) + "-out.safetensors"));
  }

  TEST_CASE("GRPO on fixed rollouts: rewards, advantages, scored tokens, L_pg, KL and every gradient match the twin") {
    auto tool = find_train_twin();
    if (!tool) return;
    TempDir dir("train-parity-grpo");
    auto policy = parity_model(0);
    auto reference = parity_model(1);  // other parameters: a nonzero KL
    const ModelConfig& config = policy->config();
    const SpecialTokens special;
    const moon::io::Batch loader = parity_loader_batch(config);
    Rollouts rollouts = fixed_rollouts(loader);
    GrpoOptions options;
    options.group = kGroup;
    const int64_t R = static_cast<int64_t>(rollouts.tokens.size()), D = config.embedding.dim;

    // candidates: 4 unit rows; anchor 0's positive is row 1, anchor 1's row 3
    moon::Generator gen(17);
    std::vector<float> cand = moon::randn({4, D}, gen).to_vector<float>();
    for (int64_t i = 0; i < 4; ++i) {
      double n = 0;
      for (int64_t d = 0; d < D; ++d) n += cand[i * D + d] * cand[i * D + d];
      for (int64_t d = 0; d < D; ++d) cand[i * D + d] = static_cast<float>(cand[i * D + d] / std::sqrt(n));
    }
    const Tensor candidates = moon::from_vector(cand, {4, D});
    const std::vector<int64_t> candidate_of_anchor = {1, 3};
    retrieval_rewards(*policy, rollouts, special, candidates, candidate_of_anchor, options);
    const std::vector<double> retrieval = rollouts.retrieval, format = rollouts.format, reward = rollouts.reward;
    rollouts.reward = kFixedRewards;
    rollouts.advantage = group_advantages(kFixedRewards, kGroup);

    std::vector<InputRow> rows;
    for (int64_t i = 0; i < R; ++i) rows.push_back(rollout_row(rollouts, static_cast<size_t>(i), special));
    const ModelBatch batch = assemble(rows, rollouts.images, special, config);
    const Tensor mask = scored_token_mask(batch, rollouts, special);

    NamedTensors named;
    for (const auto& [name, t] : batch.named()) named.emplace_back("G." + name, t);
    std::vector<int64_t> flat, lengths;
    for (const auto& t : rollouts.tokens) flat.insert(flat.end(), t.begin(), t.end()), lengths.push_back(static_cast<int64_t>(t.size()));
    std::vector<float> fixed(kFixedRewards.begin(), kFixedRewards.end());
    named.emplace_back("grpo.tokens", moon::from_vector(flat, {static_cast<int64_t>(flat.size())}, DType::I64));
    named.emplace_back("grpo.lengths", moon::from_vector(lengths, {R}, DType::I64));
    named.emplace_back("grpo.rewards", moon::from_vector(fixed, {R}));
    named.emplace_back("grpo.candidates", candidates);
    named.emplace_back("grpo.candidate_of_anchor", moon::from_vector(candidate_of_anchor, {2}, DType::I64));
    named.emplace_back("grpo.anchor", moon::from_vector(rollouts.anchor, {R}, DType::I64));
    const std::string in = dir / "grpo-in.safetensors", out = dir / "grpo-out.safetensors";
    moon::io::save_safetensors(in, named, {{"moon.grpo_options", grpo_json(options)}, {"moon.special", special_json(special)}});
    save_weights(dir / "policy.safetensors", *policy);
    save_weights(dir / "reference.safetensors", *reference);
    const std::string args = "loss --ckpt " + quoted(dir / "policy.safetensors") + " --ref " +
                             quoted(dir / "reference.safetensors") + " --inputs " + quoted(in) + " --out " + quoted(out);
    const int code = tool->run(args);
    REQUIRE_MESSAGE(code == 0, "the twin failed (exit ", code, "): ", tool->command(args));

    policy->params().zero_grad();
    const PolicyLoss loss = policy_loss(*policy, *reference, rollouts, special, options);
    loss.loss.backward();
    TwinOutput twin = open_output("GRPO", out);
    const Tensor twin_mask = twin.get("pg.scored_mask");
    CHECK_MESSAGE(mask.to(DType::F32).to_vector<float>() == twin_mask.to_vector<float>(),
                  "scored_token_mask differs from the twin's");
    CHECK(format == std::vector<double>{1, 0, 0, 0, 0, 1});
    twin.check("pg.format", moon::from_vector(std::vector<float>(format.begin(), format.end()), {R}));
    twin.check("pg.retrieval", moon::from_vector(std::vector<float>(retrieval.begin(), retrieval.end()), {R}));
    twin.check("pg.reward", moon::from_vector(std::vector<float>(reward.begin(), reward.end()), {R}));
    twin.check("pg.advantage", moon::from_vector(std::vector<float>(rollouts.advantage.begin(), rollouts.advantage.end()), {R}));
    twin.check("pg.loss", loss.loss);
    twin.check_value("pg.kl", loss.kl);
    twin.check_value("pg.clip_fraction", loss.clip_fraction);
    twin.check_value("pg.mean_length", loss.mean_length);
    twin.check_gradients("pg.grad.", *policy);
    CHECK(loss.kl > 1e-4);  // the reference really differs
    MESSAGE("GRPO: L_pg ", loss.loss.item(), ", kl ", loss.kl, ", mean length ", loss.mean_length,
            "; worst relative error ", twin.worst, " (", twin.worst_name, ")");
  }
}
