// The run folder: checkpoint paths and pruning, run.json, the training state in a checkpoint and reading it
// back with every mismatch named.
#include "training/run_state.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/file_util.h"
#include "io/safetensors_sharded.h"
#include "model/checkpoint.h"
#include "runtime/autograd.h"
#include "runtime/error.h"

namespace moon::training {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The integer field `name` of `j`, or an error naming origin and field.
int64_t int_field(const json& j, const char* name, const std::string& origin) {
  MOON_CHECK(j.contains(name) && j[name].is_number_integer(), origin, ": ", kTrainingStateKey, " field '", name,
             "' is missing or not an integer (a damaged checkpoint?)");
  return j[name].get<int64_t>();
}

// Every leaf of a JSON object as "a.b.c" -> value, in key order (for naming the first differing field).
void flatten(const json& j, const std::string& prefix, std::vector<std::pair<std::string, json>>& out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) flatten(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
  } else {
    out.emplace_back(prefix, j);
  }
}

// The first field where `a` and `b` differ: (name, value in a, value in b); name "" when they are equal.
std::tuple<std::string, std::string, std::string> first_difference(const json& a, const json& b) {
  std::vector<std::pair<std::string, json>> fa, fb;
  flatten(a, "", fa);
  flatten(b, "", fb);
  std::map<std::string, json> mb(fb.begin(), fb.end());
  for (const auto& [name, value] : fa) {
    auto it = mb.find(name);
    if (it == mb.end()) return {name, value.dump(), "(absent)"};
    if (it->second != value) return {name, value.dump(), it->second.dump()};
  }
  std::map<std::string, json> ma(fa.begin(), fa.end());
  for (const auto& [name, value] : fb)
    if (!ma.count(name)) return {name, "(absent)", value.dump()};
  return {"", "", ""};
}

json grpo_json(const GrpoOptions& g) {
  return {{"group", g.group},         {"anchors", g.anchors},   {"max_tokens", g.max_tokens},
          {"temperature", g.temperature}, {"top_p", g.top_p}, {"clip_eps", g.clip_eps},
          {"kl_beta", g.kl_beta},     {"format_reward", g.format_reward}, {"negatives", g.negatives},
          {"weight", g.weight},       {"start_step", g.start_step}};
}

json contrastive_json(const ContrastiveOptions& c) {
  return {{"init_temperature", c.init_temperature},
          {"max_logit_scale", c.max_logit_scale},
          {"hard_negative_weight", c.hard_negative_weight},
          {"inter", c.inter},
          {"intra", c.intra},
          {"filtering", c.filtering},
          {"filter_kappa", c.filter_kappa},
          {"filter_threshold", c.filter_threshold},
          {"filter_margin", c.filter_margin},
          {"matryoshka_dims", c.matryoshka_dims},
          {"matryoshka_weight", c.matryoshka_weight},
          {"aux_weight", c.aux_weight}};
}

// Reads `key` of `j` into `out` when present (run.json written by an older moon may lack newer fields).
template <typename T>
void read_opt(const json& j, const char* key, T& out, const std::string& origin) {
  if (!j.contains(key)) return;
  try {
    out = j[key].get<T>();
  } catch (const std::exception& e) {
    fail(origin, ": field '", key, "' has the wrong type (", e.what(), ")");
  }
}

}  // namespace

// ---- TrainingState

std::string TrainingState::to_json() const {
  json j = {{"step", step},
            {"loader", json::parse(loader.to_json())},
            {"adamw_steps", adamw_steps},
            {"bad_steps", bad_steps},
            {"has_reference", has_reference},
            {"fixed", fixed.empty() ? json::object() : json::parse(fixed)}};
  return j.dump();
}

TrainingState TrainingState::from_json(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const std::exception& e) {
    fail(origin, ": ", kTrainingStateKey, " is not valid JSON (", e.what(), ")");
  }
  MOON_CHECK(j.is_object(), origin, ": ", kTrainingStateKey, " must be a JSON object");
  TrainingState s;
  s.step = int_field(j, "step", origin);
  s.adamw_steps = int_field(j, "adamw_steps", origin);
  s.bad_steps = int_field(j, "bad_steps", origin);
  MOON_CHECK(s.step >= 0 && s.adamw_steps >= 0 && s.bad_steps >= 0, origin, ": ", kTrainingStateKey,
             " holds a negative count");
  MOON_CHECK(j.contains("has_reference") && j["has_reference"].is_boolean(), origin, ": ", kTrainingStateKey,
             " field 'has_reference' is missing or not a boolean");
  s.has_reference = j["has_reference"].get<bool>();
  MOON_CHECK(j.contains("loader") && j["loader"].is_object(), origin, ": ", kTrainingStateKey,
             " field 'loader' is missing or not an object");
  try {
    s.loader = io::LoaderState::from_json(j["loader"].dump());
  } catch (const Error& e) {
    fail(origin, ": ", e.what());
  }
  MOON_CHECK(j.contains("fixed") && j["fixed"].is_object(), origin, ": ", kTrainingStateKey,
             " field 'fixed' is missing or not an object");
  s.fixed = j["fixed"].dump();
  return s;
}

// ---- options

std::string fixed_options(const TrainOptions& o) {
  json j = {{"batch", o.batch},       {"accum", o.accum},       {"seed", o.seed},
            {"max_tokens", o.max_tokens}, {"contrastive", contrastive_json(o.contrastive)},
            {"grpo", grpo_json(o.grpo)}};
  return j.dump();
}

void check_fixed_options(const std::string& saved, const std::string& now, const std::string& origin) {
  const auto [name, a, b] = first_difference(json::parse(saved), json::parse(now));
  if (name.empty()) return;
  fail(origin, ": the run was trained with ", name, " = ", a, ", but this command asks for ", b,
       "; resume with the same value (moon train --out RUN_DIR --resume reuses run.json), or start a new run in "
       "another --out folder");
}

std::string options_to_json(const TrainOptions& o, const model::ModelConfig& config) {
  json j = {{"config", o.config},
            {"overrides", o.overrides},
            {"manifest", o.manifest},
            {"out", o.out},
            {"tokenizer", o.tokenizer},
            {"init", o.init},
            {"steps", o.steps},
            {"batch", o.batch},
            {"accum", o.accum},
            {"chunk", o.chunk},
            {"lr", o.lr},
            {"warmup", o.warmup},
            {"weight_decay", o.weight_decay},
            {"clip", o.clip},
            {"bf16", o.bf16},
            {"workers", o.workers},
            {"max_tokens", o.max_tokens},
            {"seed", o.seed},
            {"eval_every", o.eval_every},
            {"eval_limit", o.eval_limit},
            {"save_every", o.save_every},
            {"keep", o.keep},
            {"max_bad_steps", o.max_bad_steps},
            {"contrastive", contrastive_json(o.contrastive)},
            {"grpo", grpo_json(o.grpo)},
            {"model_config", json::parse(config.to_json())}};
  return j.dump(2) + "\n";
}

TrainOptions options_from_json(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const std::exception& e) {
    fail(origin, ": not valid JSON (", e.what(), ")");
  }
  MOON_CHECK(j.is_object(), origin, ": expected a JSON object of training options");
  TrainOptions o;
  read_opt(j, "config", o.config, origin);
  read_opt(j, "overrides", o.overrides, origin);
  read_opt(j, "manifest", o.manifest, origin);
  read_opt(j, "out", o.out, origin);
  read_opt(j, "tokenizer", o.tokenizer, origin);
  read_opt(j, "init", o.init, origin);
  read_opt(j, "steps", o.steps, origin);
  read_opt(j, "batch", o.batch, origin);
  read_opt(j, "accum", o.accum, origin);
  read_opt(j, "chunk", o.chunk, origin);
  read_opt(j, "lr", o.lr, origin);
  read_opt(j, "warmup", o.warmup, origin);
  read_opt(j, "weight_decay", o.weight_decay, origin);
  read_opt(j, "clip", o.clip, origin);
  read_opt(j, "bf16", o.bf16, origin);
  read_opt(j, "workers", o.workers, origin);
  read_opt(j, "max_tokens", o.max_tokens, origin);
  read_opt(j, "seed", o.seed, origin);
  read_opt(j, "eval_every", o.eval_every, origin);
  read_opt(j, "eval_limit", o.eval_limit, origin);
  read_opt(j, "save_every", o.save_every, origin);
  read_opt(j, "keep", o.keep, origin);
  read_opt(j, "max_bad_steps", o.max_bad_steps, origin);
  if (j.contains("contrastive") && j["contrastive"].is_object()) {
    const json& c = j["contrastive"];
    const std::string where = origin + " (contrastive)";
    read_opt(c, "init_temperature", o.contrastive.init_temperature, where);
    read_opt(c, "max_logit_scale", o.contrastive.max_logit_scale, where);
    read_opt(c, "hard_negative_weight", o.contrastive.hard_negative_weight, where);
    read_opt(c, "inter", o.contrastive.inter, where);
    read_opt(c, "intra", o.contrastive.intra, where);
    read_opt(c, "filtering", o.contrastive.filtering, where);
    read_opt(c, "filter_kappa", o.contrastive.filter_kappa, where);
    read_opt(c, "filter_threshold", o.contrastive.filter_threshold, where);
    read_opt(c, "filter_margin", o.contrastive.filter_margin, where);
    read_opt(c, "matryoshka_dims", o.contrastive.matryoshka_dims, where);
    read_opt(c, "matryoshka_weight", o.contrastive.matryoshka_weight, where);
    read_opt(c, "aux_weight", o.contrastive.aux_weight, where);
  }
  if (j.contains("grpo") && j["grpo"].is_object()) {
    const json& g = j["grpo"];
    const std::string where = origin + " (grpo)";
    read_opt(g, "group", o.grpo.group, where);
    read_opt(g, "anchors", o.grpo.anchors, where);
    read_opt(g, "max_tokens", o.grpo.max_tokens, where);
    read_opt(g, "temperature", o.grpo.temperature, where);
    read_opt(g, "top_p", o.grpo.top_p, where);
    read_opt(g, "clip_eps", o.grpo.clip_eps, where);
    read_opt(g, "kl_beta", o.grpo.kl_beta, where);
    read_opt(g, "format_reward", o.grpo.format_reward, where);
    read_opt(g, "negatives", o.grpo.negatives, where);
    read_opt(g, "weight", o.grpo.weight, where);
    read_opt(g, "start_step", o.grpo.start_step, where);
  }
  return o;
}

// ---- folder

std::string checkpoint_dir(const std::string& run_dir) { return (fs::path(run_dir) / "checkpoints").string(); }

std::string checkpoint_path(const std::string& run_dir, int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "step-%08lld.safetensors", static_cast<long long>(step));
  return (fs::path(checkpoint_dir(run_dir)) / name).string();
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& run_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(checkpoint_dir(run_dir), ec)) return out;
  for (const auto& entry : fs::directory_iterator(checkpoint_dir(run_dir), ec)) {
    const std::string name = entry.path().filename().string();
    // step-DDDDDDDD.safetensors exactly (temporary files of an interrupted save do not count)
    if (name.size() != 5 + 8 + 12 || name.rfind("step-", 0) != 0 || !name.ends_with(".safetensors")) continue;
    const std::string digits = name.substr(5, 8);
    if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    out.emplace_back(std::stoll(digits), entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string newest_checkpoint(const std::string& run_dir) {
  const auto all = list_checkpoints(run_dir);
  return all.empty() ? std::string() : all.back().second;
}

void prune_checkpoints(const std::string& run_dir, int64_t keep) {
  MOON_CHECK(keep >= 1, "--keep must be at least 1, got ", keep);
  const auto all = list_checkpoints(run_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) {
    std::error_code ec;
    fs::remove(all[i].second, ec);
    MOON_CHECK(!ec, all[i].second, ": cannot delete an old checkpoint (", ec.message(), ")");
  }
}

void check_fresh_run_dir(const std::string& run_dir) {
  std::error_code ec;
  if (!fs::exists(run_dir, ec)) return;
  MOON_CHECK(fs::is_directory(run_dir, ec), "--out ", run_dir, " exists and is not a folder; choose a folder for the run");
  for (const auto& entry : fs::directory_iterator(run_dir, ec)) {
    fail("--out ", run_dir, " is not empty (it holds ", entry.path().filename().string(),
         "); pass --resume to continue the run in it, or choose an empty or new --out folder");
  }
}

// ---- checkpoints

void check_checkpoint_matches(const io::Checkpoint& checkpoint, const model::MoonModel& model, bool same_config) {
  const model::ModelConfig saved = model::checkpoint_config(checkpoint);
  const model::ModelConfig& config = model.config();
  for (const auto& [name, value] : model.params().all()) {
    if (!checkpoint.contains(name))
      fail(checkpoint.path(), ": tensor ", name, " ", value.shape_str(), " of config '", config.name,
           "' is missing from this checkpoint (of config '", saved.name,
           "'): it was trained with another config; use a checkpoint of this config or --config of the checkpoint");
    const Shape& have = checkpoint.info(name).shape;
    if (have != value.shape())
      fail(checkpoint.path(), ": tensor ", name, " has shape ", shape_str(have), " in the checkpoint (config '",
           saved.name, "') but ", value.shape_str(), " in config '", config.name,
           "': it was trained with another config; use a checkpoint of this config or --config of the checkpoint");
  }
  for (const std::string& name : checkpoint.names())
    if (name.rfind(model::kTrainingTensorPrefix, 0) != 0 && !model.params().contains(name))
      fail(checkpoint.path(), ": tensor ", name, " is not a parameter of config '", config.name,
           "': the checkpoint was trained with another config");
  if (!same_config) return;
  const auto [field, a, b] = first_difference(json::parse(saved.to_json()), json::parse(config.to_json()));
  if (!field.empty())
    fail(checkpoint.path(), ": the checkpoint's config has ", field, " = ", a, " but this run's config has ", b,
         "; resume with the run's config (drop --config / --set, or pass the ones it was started with)");
}

void save_training_checkpoint(const std::string& path, const TrainingParts& parts, const TrainingState& state,
                              const std::string& tokenizer_json) {
  NoGradGuard no_grad;
  std::vector<std::pair<std::string, Tensor>> extra;
  extra.emplace_back("train.logit_scale", parts.logit_scale.detach());
  for (const auto& [name, value] : parts.optimizer->state()) extra.emplace_back("train." + name, value);
  if (parts.reference && *parts.reference)
    for (const auto& [name, value] : (*parts.reference)->params().all()) extra.emplace_back("train.ref." + name, value.detach());
  std::map<std::string, std::string> meta = {{kTrainingStateKey, state.to_json()}};
  if (!tokenizer_json.empty()) meta.emplace(model::kTokenizerKey, tokenizer_json);
  io::make_dirs(fs::path(path).parent_path().string());
  model::save_params(path, parts.model->config(), parts.model->params(), meta, DType::F32, extra);
}

TrainingState load_training_checkpoint(const std::string& path, TrainingParts& parts) {
  io::Checkpoint checkpoint(path);
  check_checkpoint_matches(checkpoint, *parts.model, true);
  const auto& meta = checkpoint.metadata();
  auto it = meta.find(kTrainingStateKey);
  MOON_CHECK(it != meta.end(), path, ": no ", kTrainingStateKey,
             " in the metadata: this is a model, not a training checkpoint; start a new run with --init ", path);
  TrainingState state = TrainingState::from_json(it->second, path);
  model::load_params(checkpoint, parts.model->params());

  auto training_tensor = [&](const std::string& name, const Shape& shape) {
    MOON_CHECK(checkpoint.contains(name), path, ": training-state tensor ", name,
               " is missing (a damaged checkpoint?); resume from an older checkpoint or start again");
    Tensor t = checkpoint.tensor_as(name, DType::F32);
    MOON_CHECK(t.shape() == shape, path, ": training-state tensor ", name, " has shape ", t.shape_str(), ", expected ",
               shape_str(shape));
    return t;
  };
  NoGradGuard no_grad;
  parts.logit_scale.copy_(training_tensor("train.logit_scale", parts.logit_scale.shape()));
  NamedParams adam;
  for (const auto& [name, value] : parts.optimizer->state())
    adam.emplace_back(name, training_tensor("train." + name, value.shape()));
  parts.optimizer->load_state(adam, state.adamw_steps, path);
  if (state.has_reference) {
    MOON_CHECK(parts.reference != nullptr, path, ": the checkpoint holds a GRPO reference but none can be restored");
    *parts.reference = frozen_copy(*parts.model);
    for (const auto& [name, value] : (*parts.reference)->params().all())
      (*parts.reference)->params().assign(name, training_tensor("train.ref." + name, value.shape()), path);
  } else if (parts.reference) {
    parts.reference->reset();
  }
  return state;
}

}  // namespace moon::training
