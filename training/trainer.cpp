// The training loop: a run folder (fresh or resumed), the tokenizer, the loader, contrastive + GRPO steps with
// accumulation, NaN handling, AdamW, evaluation, checkpoints, the metrics log and the progress line.
#include "training/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "io/bpe_trainer.h"
#include "io/data_loader.h"
#include "io/file_util.h"
#include "io/manifest_reader.h"
#include "io/product_text.h"
#include "io/safetensors_sharded.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/embed.h"
#include "ops/elementwise.h"
#include "runtime/autograd.h"
#include "runtime/error.h"
#include "training/contrastive_step.h"
#include "training/evaluate.h"
#include "training/metrics_log.h"
#include "training/optimizer.h"
#include "training/progress.h"
#include "training/run_state.h"

namespace moon::training {
namespace fs = std::filesystem;
using nlohmann::json;

uint64_t grpo_step_seed(uint64_t seed, int64_t step) {
  // splitmix64 of the seed, mixed with the step, mixed again
  auto mix = [](uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  return mix(mix(seed) ^ static_cast<uint64_t>(step));
}

namespace {

// The largest vocabulary trained for a run's own tokenizer (small text sets do not fill more).
constexpr int kMaxTrainedVocab = 2048;

void check_options(const TrainOptions& o) {
  MOON_CHECK(!o.manifest.empty(), "moon train needs --manifest M (a product manifest with a train split)");
  MOON_CHECK(!o.out.empty(), "moon train needs --out RUN_DIR (the run folder)");
  MOON_CHECK(o.steps >= 1, "--steps must be at least 1, got ", o.steps);
  MOON_CHECK(o.batch >= 2, "--batch must be at least 2 (in-batch negatives), got ", o.batch);
  MOON_CHECK(o.accum >= 1, "--accum must be at least 1, got ", o.accum);
  MOON_CHECK(o.chunk >= 0, "--chunk must be 0 (off) or positive, got ", o.chunk);
  MOON_CHECK(o.lr > 0 && std::isfinite(o.lr), "--lr must be a positive number, got ", o.lr);
  MOON_CHECK(o.warmup >= 0, "--warmup must be 0 or more, got ", o.warmup);
  MOON_CHECK(o.save_every >= 1, "--save-every must be at least 1, got ", o.save_every);
  MOON_CHECK(o.keep >= 1, "--keep must be at least 1, got ", o.keep);
  MOON_CHECK(o.max_bad_steps >= 1, "--max-bad-steps must be at least 1, got ", o.max_bad_steps);
  MOON_CHECK(o.eval_every >= 0, "--eval-every must be 0 (start and end only) or positive, got ", o.eval_every);
  MOON_CHECK(o.max_tokens >= 1, "--max-tokens must be at least 1, got ", o.max_tokens);
  if (o.grpo.start_step >= 0) {
    MOON_CHECK(o.grpo.group >= 2, "--group must be at least 2 (advantages are normalised within a group), got ",
               o.grpo.group);
    MOON_CHECK(o.grpo.anchors >= 1, "--anchors must be at least 1, got ", o.grpo.anchors);
    MOON_CHECK(o.grpo.max_tokens >= 1, "--reason-tokens must be at least 1, got ", o.grpo.max_tokens);
  }
}

// The loader options of training: the config's image preprocessing, two augmented views, the train split.
io::LoaderOptions train_loader_options(const TrainOptions& o, const model::ModelConfig& config) {
  io::LoaderOptions l;
  l.batch_size = o.batch;
  l.image = model::image_preprocess_options(config);
  l.augment = true;
  l.views = 2;
  l.max_tokens = o.max_tokens;
  l.workers = o.workers;
  l.seed = o.seed;
  l.shuffle = true;
  l.drop_last = true;
  l.bad_images = io::BadRecords::Skip;
  return l;
}

// "N bad lines skipped (first: FILE:LINE: reason)", or "" when there are none.
std::string bad_lines_note(const io::Manifest& m) {
  if (m.issues.empty()) return "";
  return std::to_string(m.issues.size()) + " bad line" + (m.issues.size() == 1 ? "" : "s") + " skipped (first: " +
         m.path + ":" + std::to_string(m.issues[0].line) + ": " + m.issues[0].reason + ")";
}

// The run's tokenizer: --tokenizer, else RUN_DIR/tokenizer.json on resume, else one trained on the training
// text. It is (re)written to RUN_DIR/tokenizer.json; returns it with its JSON text (for moon.tokenizer).
std::shared_ptr<const io::BpeTokenizer> run_tokenizer(const TrainOptions& o, const model::ModelConfig& config,
                                                       const io::Manifest& train_set, std::string& json_text) {
  const std::string run_file = (fs::path(o.out) / "tokenizer.json").string();
  const int64_t vocab = config.decoder.vocab;
  std::shared_ptr<const io::BpeTokenizer> tok;
  std::string source;
  std::error_code ec;
  if (!o.tokenizer.empty()) {
    tok = std::make_shared<const io::BpeTokenizer>(io::BpeTokenizer::load(o.tokenizer));
    source = o.tokenizer;
  } else if (o.resume && fs::exists(run_file, ec)) {
    tok = std::make_shared<const io::BpeTokenizer>(io::BpeTokenizer::load(run_file));
    source = run_file;
  } else {
    const int64_t floor = 256 + static_cast<int64_t>(std::size(io::kSpecialTokens));
    MOON_CHECK(vocab >= floor, "config '", config.name, "': decoder.vocab = ", vocab, " is too small for a byte-level ",
               "tokenizer (", floor, " tokens at least); raise it (--set decoder.vocab=", floor, ")");
    std::vector<std::string> texts;
    for (const io::Product& p : train_set.products) {
      std::string t = io::product_text(p);
      if (!t.empty()) texts.push_back(std::move(t));
    }
    const int size = static_cast<int>(std::min<int64_t>(vocab, kMaxTrainedVocab));
    tok = std::make_shared<const io::BpeTokenizer>(io::train_bpe(texts, size, io::PreTokenizer::Qwen2));
    source = "trained on the training text";
  }
  MOON_CHECK(tok->vocab_size() <= vocab, "tokenizer ", source, " has ", tok->vocab_size(),
             " tokens, more than the model's vocabulary (decoder.vocab = ", vocab,
             "); pass a smaller --tokenizer or --set decoder.vocab=", tok->vocab_size());
  // the tokenizer.json alone in RUN_DIR: save() writes three files, so it goes through a scratch folder
  const std::string scratch = (fs::path(o.out) / (".tokenizer." + std::to_string(::getpid()))).string();
  tok->save(scratch);
  fs::rename(fs::path(scratch) / "tokenizer.json", run_file, ec);
  MOON_CHECK(!ec, run_file, ": cannot write the run's tokenizer (", ec.message(), ")");
  fs::remove_all(scratch, ec);
  json_text = io::read_file_text(run_file);
  return tok;
}

// The first of the step's loss parts that is NaN or Inf ("L_inter is nan"), else "".
std::string first_bad_part(const std::vector<std::pair<const char*, double>>& parts) {
  for (const auto& [name, value] : parts)
    if (!std::isfinite(value)) return std::string(name) + " is " + (std::isnan(value) ? "NaN" : "Inf");
  return "";
}

// The first optimised tensor whose gradient holds a NaN or Inf ("the gradient of X holds NaN/Inf"), else "".
std::string first_bad_gradient(const NamedParams& params) {
  for (const auto& [name, p] : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    const std::vector<float> values = g.to_vector<float>();
    for (float v : values)
      if (!std::isfinite(v)) return "the gradient of " + name + " holds " + (std::isnan(v) ? "NaN" : "Inf");
  }
  return "";
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

double std_of(const std::vector<double>& v) {
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return v.empty() ? 0.0 : std::sqrt(s / static_cast<double>(v.size()));
}

// The metrics of an evaluation as a JSON object.
json eval_json(const EvalReport& r) {
  json j = json::object();
  for (const auto& [name, value] : r.metrics) j[name] = finite_or_null(value);
  return j;
}

// "metric  before  after" for every metric of `after` (before may lack it).
std::string compare_table(const json& before, const EvalReport& after) {
  std::string out = "evaluation (val)          before     after\n";
  char line[160];
  for (const auto& [name, value] : after.metrics) {
    std::string b = "-";
    if (before.is_object() && before.contains(name) && before[name].is_number()) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.4f", before[name].get<double>());
      b = buf;
    }
    std::snprintf(line, sizeof line, "  %-22s %8s  %8.4f\n", name.c_str(), b.c_str(), value);
    out += line;
  }
  return out;
}

}  // namespace

TrainSummary train(const TrainOptions& options) {
  TrainOptions o = options;
  check_options(o);
  const model::ModelConfig config = model::with_overrides(model::load_config(o.config), o.overrides);
  o.contrastive.aux_weight = config.moe.enabled ? config.moe.aux_weight : 0.0;
  const bool grpo_enabled = o.grpo.start_step >= 0;

  // ---- the run folder
  if (!o.resume) check_fresh_run_dir(o.out);
  io::make_dirs(o.out);
  const std::string resume_from = o.resume ? newest_checkpoint(o.out) : std::string();
  if (o.resume && resume_from.empty())
    std::fprintf(stderr, "moon train: %s holds no checkpoint yet: starting from step 0\n", o.out.c_str());

  // ---- data
  io::LoadOptions split;
  split.split = "train";
  auto train_set = std::make_shared<const io::Manifest>(io::load_manifest(o.manifest, io::BadRecords::Skip, split));
  if (!train_set->issues.empty()) std::fprintf(stderr, "moon train: %s\n", bad_lines_note(*train_set).c_str());
  MOON_CHECK(static_cast<int64_t>(train_set->products.size()) >= o.batch, o.manifest, ": the train split has ",
             train_set->products.size(), " products, fewer than one batch (--batch ", o.batch,
             "); use a smaller --batch or a manifest with more \"split\": \"train\" products");
  std::shared_ptr<const io::Manifest> val_set;
  if (o.eval_limit > 0) {
    split.split = "val";
    val_set = std::make_shared<const io::Manifest>(io::load_manifest(o.manifest, io::BadRecords::Skip, split));
    if (val_set->products.empty()) {
      std::fprintf(stderr, "moon train: %s has no val split: evaluation is skipped\n", o.manifest.c_str());
      val_set.reset();
    }
  }
  std::string tokenizer_json;
  const auto tokenizer = run_tokenizer(o, config, *train_set, tokenizer_json);
  const model::SpecialTokens special = model::SpecialTokens::from(*tokenizer);
  io::write_file_atomic((fs::path(o.out) / "run.json").string(), options_to_json(o, config));

  // ---- model, temperature, optimizer, reference
  model::MoonModel model(config);
  model.compute().dtype = o.bf16 ? DType::BF16 : DType::F32;
  if (!o.init.empty() && resume_from.empty()) {
    io::Checkpoint init(o.init);
    check_checkpoint_matches(init, model, false);
    model::load_params(init, model.params());
  }
  Tensor logit_scale = make_logit_scale(o.contrastive);
  NamedParams optimised = model.params().all();
  optimised.emplace_back("logit_scale", logit_scale);
  AdamW adamw(optimised, {.weight_decay = o.weight_decay});
  std::unique_ptr<model::MoonModel> reference;
  TrainingParts parts{&model, logit_scale, &adamw, &reference};

  TrainingState state;
  state.loader.seed = o.seed;
  state.fixed = fixed_options(o);
  if (!resume_from.empty()) {
    state = load_training_checkpoint(resume_from, parts);
    check_fixed_options(state.fixed, fixed_options(o), resume_from);
    if (reference) reference->compute().dtype = model.compute().dtype;
    std::fprintf(stderr, "moon train: resuming from %s (step %lld)\n", resume_from.c_str(),
                 static_cast<long long>(state.step));
  }
  MOON_CHECK(state.step <= o.steps, resume_from, ": the run is at step ", state.step, ", beyond --steps ", o.steps,
             "; pass a larger --steps to train further");

  io::DataLoader loader(train_set, tokenizer, train_loader_options(o, config));
  if (!resume_from.empty()) loader.restore(state.loader);
  MetricsLog log((fs::path(o.out) / "metrics.jsonl").string(), resume_from.empty() ? -1 : state.step);

  // ---- evaluation
  EvalOptions eval_options;
  eval_options.split = "val";
  eval_options.limit = o.eval_limit;
  eval_options.batch = std::max<int64_t>(o.batch, 32);
  eval_options.workers = o.workers;
  eval_options.max_tokens = o.max_tokens;
  eval_options.seed = o.seed;
  eval_options.progress = false;
  auto run_eval = [&](int64_t at_step) -> std::optional<EvalReport> {
    if (!val_set) return std::nullopt;
    EvalReport r = evaluate(model, *tokenizer, *val_set, eval_options);
    log.append({{"step", at_step}, {"eval", eval_json(r)}});
    return r;
  };
  json before = nullptr;
  for (const json& j : log.earlier())
    if (j.contains("eval")) {
      before = j["eval"];
      break;
    }
  if (state.step == 0) {
    if (auto r = run_eval(0)) before = eval_json(*r);
  }

  // ---- the loop
  TrainSummary summary;
  ProgressPrinter progress(o.progress, ::isatty(2) != 0);
  const auto start = std::chrono::steady_clock::now();
  const int64_t first_step = state.step;
  int64_t products = 0;
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  auto save = [&](int64_t step) {
    state.step = step;
    state.loader = loader.state();
    state.adamw_steps = adamw.steps();
    state.has_reference = reference != nullptr;
    state.fixed = fixed_options(o);
    const std::string path = checkpoint_path(o.out, step);
    save_training_checkpoint(path, parts, state, tokenizer_json);
    log.sync();
    prune_checkpoints(o.out, o.keep);
    summary.last_checkpoint = path;
  };

  for (int64_t s = state.step; s < o.steps; ++s) {
    const auto step_start = std::chrono::steady_clock::now();
    model.params().zero_grad();
    logit_scale.zero_grad();
    const double margin = filter_margin(o.contrastive, s, o.steps);
    const bool grpo_on = grpo_enabled && s >= o.grpo.start_step;
    if (grpo_on && !reference) {
      reference = frozen_copy(model);
      reference->compute().dtype = model.compute().dtype;
    }
    const double scale = 1.0 / static_cast<double>(o.accum);
    double total = 0, inter = 0, intra = 0, aux = 0, mat = 0, pg = 0, kl = 0, length = 0, kept = 0, temperature = 0;
    std::vector<double> rewards, retrieval, format;
    int64_t grpo_batches = 0;
    for (int64_t k = 0; k < o.accum; ++k) {
      const io::Batch batch = loader.next();
      products += batch.token_ids.size(0);
      const ContrastiveViews views = make_views(batch);
      const ContrastiveStepResult r =
          contrastive_step(model, views, special, logit_scale, o.contrastive, margin, o.chunk, scale);
      total += r.loss.total.item() * scale;
      inter += r.loss.inter.item() * scale;
      intra += r.loss.intra.item() * scale;
      aux += r.loss.aux.item() * scale;
      mat += r.loss.matryoshka.item() * scale;
      kept += r.loss.kept_fraction * scale;
      temperature = r.loss.temperature;
      if (!grpo_on || r.product_of_multimodal.empty()) continue;
      // GRPO on the first A products with image and text (the first rows of the M view)
      const std::vector<model::InputRow> rows = model::rows_from_loader(batch);
      const size_t anchors = std::min<size_t>(static_cast<size_t>(o.grpo.anchors), r.product_of_multimodal.size());
      std::vector<model::InputRow> prompts;
      std::vector<int64_t> candidate_of_anchor;
      for (size_t a = 0; a < anchors; ++a) {
        const int64_t p = r.product_of_multimodal[a];
        model::InputRow prompt;
        prompt.text = rows[static_cast<size_t>(p)].text;
        prompt.image = p;
        prompt.prompt = true;
        prompts.push_back(std::move(prompt));
        candidate_of_anchor.push_back(static_cast<int64_t>(a));
      }
      Rollouts rollouts = sample_rollouts(model, prompts, batch.images, special, o.grpo,
                                          grpo_step_seed(o.seed, s * o.accum + k));
      retrieval_rewards(model, rollouts, special, r.multimodal, candidate_of_anchor, o.grpo);
      rollouts.advantage = group_advantages(rollouts.reward, o.grpo.group);
      const PolicyLoss policy = policy_loss(model, *reference, rollouts, special, o.grpo);
      (policy.loss * (o.grpo.weight * scale)).backward();
      const double lpg = policy.loss.item();
      pg += lpg * scale;
      total += o.grpo.weight * lpg * scale;
      kl += policy.kl * scale;
      length += policy.mean_length * scale;
      rewards.insert(rewards.end(), rollouts.reward.begin(), rollouts.reward.end());
      retrieval.insert(retrieval.end(), rollouts.retrieval.begin(), rollouts.retrieval.end());
      format.insert(format.end(), rollouts.format.begin(), rollouts.format.end());
      ++grpo_batches;
    }
    if (o.after_backward) o.after_backward(s, model);

    // finiteness, clipping, the update
    std::string bad = first_bad_part({{"L_inter", inter}, {"L_intra", intra}, {"aux", aux}, {"L_mat", mat}, {"L_pg", pg}});
    double grad_norm = std::nan("");
    if (bad.empty()) {
      grad_norm = clip_grad_norm(optimised, o.clip);
      if (!std::isfinite(grad_norm)) bad = first_bad_gradient(optimised);
      if (bad.empty() && !std::isfinite(grad_norm)) bad = "the gradient norm is not finite";
    }
    const double lr = warmup_cosine(s, o.warmup, o.steps, o.lr, 0.1 * o.lr);
    if (bad.empty()) {
      adamw.step(lr);
      summary.last_loss = total;
    } else {
      ++state.bad_steps;
      model.params().zero_grad();
      logit_scale.zero_grad();
      progress.message("moon train: step " + std::to_string(s + 1) + " skipped: " + bad + " (bad step " +
                       std::to_string(state.bad_steps) + " of at most " + std::to_string(o.max_bad_steps) + ")");
    }
    const double step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    const double products_per_s = static_cast<double>(products) / std::max(1e-9, elapsed());
    const bool has_grpo = grpo_batches > 0;
    auto grpo_value = [&](double v) { return has_grpo ? finite_or_null(v) : json(nullptr); };
    log.append({{"step", s + 1},
                {"loss", finite_or_null(total)},
                {"inter", finite_or_null(inter)},
                {"intra", finite_or_null(intra)},
                {"aux", finite_or_null(aux)},
                {"mat", finite_or_null(mat)},
                {"pg", grpo_value(pg)},
                {"reward_mean", grpo_value(mean_of(rewards))},
                {"reward_std", grpo_value(std_of(rewards))},
                {"retrieval", grpo_value(mean_of(retrieval))},
                {"format", grpo_value(mean_of(format))},
                {"kl", grpo_value(kl)},
                {"reason_len", grpo_value(length)},
                {"lr", lr},
                {"grad_norm", finite_or_null(grad_norm)},
                {"temperature", finite_or_null(temperature)},
                {"kept", finite_or_null(kept)},
                {"products_per_s", products_per_s},
                {"seconds", step_seconds},
                {"peak_rss_mb", peak_rss_mb()},
                {"bad", !bad.empty()}});
    ++summary.steps_done;
    const int64_t done = s + 1;
    ProgressInfo info;
    info.step = done;
    info.total = o.steps;
    info.first_step = first_step;
    info.elapsed_seconds = elapsed();
    info.loss = total;
    if (has_grpo) info.reward = mean_of(rewards);
    info.lr = lr;
    info.products_per_second = products_per_s;
    info.peak_rss_mb = peak_rss_mb();
    progress.update(info, done == o.steps);

    if (state.bad_steps >= o.max_bad_steps) {
      save(done);
      summary.bad_steps = state.bad_steps;
      fail("stopped after ", state.bad_steps, " bad steps (the last, step ", done, ": ", bad,
           "); the last good state is saved in ", summary.last_checkpoint,
           ". Lower --lr, check the data, or allow more with --max-bad-steps");
    }
    if (o.eval_every > 0 && done % o.eval_every == 0 && done < o.steps) run_eval(done);
    const bool stop = (o.interrupt && o.interrupt->load()) || (o.stop_after > 0 && done >= o.stop_after && done < o.steps);
    if (stop || done % o.save_every == 0 || done == o.steps) save(done);
    if (stop) {
      summary.interrupted = true;
      break;
    }
  }

  summary.last_step = state.step;
  summary.bad_steps = state.bad_steps;
  summary.seconds = elapsed();
  summary.products_per_second = static_cast<double>(products) / std::max(1e-9, summary.seconds);
  char line[256];
  std::snprintf(line, sizeof line, "moon train: %s at step %lld/%lld: %lld steps in %s, %.1f products/s, loss %.4f, %lld bad steps, peak %.0f MB",
                summary.interrupted ? "stopped" : "done", static_cast<long long>(summary.last_step),
                static_cast<long long>(o.steps), static_cast<long long>(summary.steps_done),
                format_duration(summary.seconds).c_str(), summary.products_per_second, summary.last_loss,
                static_cast<long long>(summary.bad_steps), peak_rss_mb());
  progress.finish(line);
  if (summary.interrupted) return summary;

  // ---- the end: final evaluation and model
  if (auto after = run_eval(state.step)) {
    log.sync();
    if (o.progress) std::printf("%s", compare_table(before, *after).c_str());
  }
  summary.final_model = (fs::path(o.out) / "model.safetensors").string();
  model::save_checkpoint(summary.final_model, model, {{model::kTokenizerKey, tokenizer_json}});
  return summary;
}

}  // namespace moon::training
