// Suites "trainer" (fast: the progress line, the metrics log, the training state, plots) and "trainer_slow"
// (whole runs of the tiny config on a small real PNG manifest: exact resume with GRPO crossing it,
// checkpoints with keep-last-K, NaN steps, bad manifest lines, config mismatches, SIGINT through the binary).
#include <signal.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "io/file_util.h"
#include "io/manifest.h"
#include "io/safetensors_sharded.h"
#include "model/checkpoint.h"
#include "runtime/autograd.h"
#include "test_util.h"
#include "training/metrics_log.h"
#include "training/plot.h"
#include "training/progress.h"
#include "training/run_state.h"
#include "training/trainer.h"

using namespace moon;
using namespace moon::training;
using moon::test::contains;
using moon::test::error_of;
using moon::test::TempDir;
using nlohmann::json;

namespace {

// A manifest of n products (train / val split) with 12x10 PNGs; every third product has no image.
std::string write_manifest(const TempDir& dir, int n_train, int n_val, const std::vector<std::string>& junk_lines = {}) {
  io::make_dirs(dir / "images");
  std::vector<io::Product> products;
  const char* kinds[] = {"shirt", "boot", "bag", "hat"};
  for (int i = 0; i < n_train + n_val; ++i) {
    io::Product p;
    p.id = std::string("p").append(std::to_string(i));
    p.title = std::string("a ") + (i % 2 ? "red " : "blue ") + kinds[i % 4] + " number " + std::to_string(i);
    p.category = {"shop", kinds[i % 4]};
    p.attributes = {{"colour", i % 2 ? "red" : "blue"}};
    p.split = i < n_train ? "train" : "val";
    if (i % 3 != 2) {
      std::vector<uint8_t> rgb(12 * 10 * 3);  // (H=10, W=12, 3) u8
      for (size_t k = 0; k < rgb.size(); ++k) rgb[k] = static_cast<uint8_t>((i * 37 + k * (1 + i % 4) + (k % 3) * 80) % 256);
      p.images = {"images/" + p.id + ".png"};
      REQUIRE(stbi_write_png((dir / p.images[0]).c_str(), 12, 10, 3, rgb.data(), 36) != 0);
    }
    products.push_back(p);
  }
  std::string text;
  for (size_t i = 0; i < products.size(); ++i) {
    text += io::to_json_line(products[i]) + "\n";
    if (i == 3)
      for (const std::string& j : junk_lines) text += j + "\n";
  }
  io::write_file_atomic(dir / "manifest.jsonl", text);
  return dir / "manifest.jsonl";
}

// tiny with 2 vision and 2 decoder layers (FIRE's layer lists must fit even though it is off)
const char* const kShrink[] = {"vision.layers=2", "decoder.layers=2", "fire.vision_layers=[1,2]", "fire.decoder_layers=[0,1]"};
const std::string kShrinkFlags =
    "--set vision.layers=2 --set decoder.layers=2 --set 'fire.vision_layers=[1,2]' --set 'fire.decoder_layers=[0,1]'";

TrainOptions tiny_options(const std::string& manifest, const std::string& out) {
  TrainOptions o;
  o.config = "tiny";
  o.overrides = {kShrink[0], kShrink[1], kShrink[2], kShrink[3]};
  o.manifest = manifest;
  o.out = out;
  o.steps = 6;
  o.batch = 4;
  o.lr = 1e-3;
  o.warmup = 2;
  o.workers = 1;
  o.max_tokens = 12;
  o.seed = 5;
  o.eval_limit = 0;
  o.save_every = 100;
  o.progress = false;
  return o;
}

// The per-step records of a metrics file (evaluations left out).
std::vector<json> step_records(const std::string& run_dir) {
  std::vector<json> out;
  for (const json& j : read_metrics(run_dir + "/metrics.jsonl"))
    if (!j.contains("eval")) out.push_back(j);
  return out;
}

// Every tensor of a checkpoint file as raw f32 values.
std::map<std::string, std::vector<float>> tensors_of(const std::string& path) {
  io::Checkpoint c(path);
  std::map<std::string, std::vector<float>> out;
  for (const std::string& name : c.names()) out[name] = c.tensor_as(name, DType::F32).to_vector<float>();
  return out;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_SUITE("trainer") {
  TEST_CASE("the progress line, durations and ticks") {
    ProgressInfo info;
    info.step = 12;
    info.total = 40;
    info.first_step = 2;
    info.elapsed_seconds = 25;  // 2.5 s per step, 28 to go
    info.loss = 3.21449;
    info.lr = 3e-4;
    info.products_per_second = 52.14;
    info.peak_rss_mb = 812.4;
    CHECK(format_progress(info, 10) ==
          "step 12/40 [###.......]  30% ETA 1m10s loss 3.2145 lr 3.00e-04 52.1 prod/s 812 MB");
    info.reward = 0.1234;
    CHECK(contains(format_progress(info, 10), "loss 3.2145 reward 0.123 lr"));
    info.step = info.first_step;  // nothing done yet: no ETA
    CHECK(contains(format_progress(info, 4), "[....]   5% ETA ? loss"));
    CHECK(format_duration(5) == "5s");
    CHECK(format_duration(3725) == "1h02m");
    CHECK(format_duration(-1) == "?");
    auto same = [](const std::vector<double>& a, const std::vector<double>& b) {
      if (a.size() != b.size()) return false;
      for (size_t i = 0; i < a.size(); ++i)
        if (std::fabs(a[i] - b[i]) > 1e-12) return false;
      return true;
    };
    CHECK(same(nice_ticks(0, 1, 5), {0, 0.2, 0.4, 0.6, 0.8, 1.0}));
    CHECK(same(nice_ticks(3, 47, 5), {10, 20, 30, 40}));
    CHECK(same(nice_ticks(3, 47, 4), {20, 40}));
    CHECK(same(nice_ticks(-0.05, 0.12, 4), {-0.05, 0, 0.05, 0.1}));
    CHECK(peak_rss_mb() > 1);
  }

  TEST_CASE("the metrics log drops lines after the checkpoint's step on resume") {
    TempDir dir("metrics");
    const std::string path = dir / "metrics.jsonl";
    {
      MetricsLog log(path, -1);
      log.append({{"step", 0}, {"eval", {{"t2i.R@1", 0.25}}}});
      for (int s = 1; s <= 5; ++s) log.append({{"step", s}, {"loss", 1.0 / 3.0 + s}});
      log.sync();
    }
    {
      std::ofstream torn(path, std::ios::app);
      torn << "{\"step\": 6, \"lo";  // a crash mid-line
    }
    MetricsLog log(path, 3);
    CHECK(log.earlier().size() == 4);
    CHECK(log.earlier()[0].contains("eval"));
    log.append({{"step", 4}, {"loss", 9.5}});
    const std::vector<json> all = read_metrics(path);
    REQUIRE(all.size() == 5);
    CHECK(all[3]["loss"].dump() == json(1.0 / 3.0 + 3).dump());  // doubles round-trip exactly
    CHECK(all[4]["loss"] == 9.5);
    CHECK(finite_or_null(std::nan("")).is_null());
    io::write_file_atomic(dir / "bad.jsonl", "{\"step\": 1}\nnot json\n");
    CHECK(error_of([&] { read_metrics(dir / "bad.jsonl"); }) == dir / "bad.jsonl" + ":2: not a JSON object");
  }

  TEST_CASE("training state and run.json round trips, with errors naming the field") {
    TrainingState s;
    s.step = 7;
    s.loader.seed = 3;
    s.loader.epoch = 1;
    s.loader.batch_in_epoch = 2;
    s.adamw_steps = 6;
    s.bad_steps = 1;
    s.has_reference = true;
    s.fixed = fixed_options(TrainOptions{});
    const TrainingState r = TrainingState::from_json(s.to_json(), "ck");
    CHECK(r.step == 7);
    CHECK(r.loader.epoch == 1);
    CHECK(r.loader.batch_in_epoch == 2);
    CHECK(r.adamw_steps == 6);
    CHECK(r.bad_steps == 1);
    CHECK(r.has_reference);
    CHECK(error_of([] { TrainingState::from_json("{\"step\": 1}", "ck"); }) ==
          "ck: moon.training_state field 'adamw_steps' is missing or not an integer (a damaged checkpoint?)");
    TrainOptions a, b;
    b.batch = 8;
    CHECK(contains(error_of([&] { check_fixed_options(fixed_options(a), fixed_options(b), "ck"); }),
                   "ck: the run was trained with batch = 32, but this command asks for 8"));
    b = a;
    b.grpo.start_step = 3;
    CHECK(contains(error_of([&] { check_fixed_options(fixed_options(a), fixed_options(b), "ck"); }),
                   "grpo.start_step = -1, but this command asks for 3"));
    a.lr = 0.5;
    a.grpo.group = 3;
    a.overrides = {"decoder.layers=1"};
    const TrainOptions back = options_from_json(options_to_json(a, model::load_config("tiny")), "run.json");
    CHECK(back.lr == 0.5);
    CHECK(back.grpo.group == 3);
    CHECK(back.overrides == a.overrides);
    CHECK(checkpoint_path("R", 12) == "R/checkpoints/step-00000012.safetensors");
  }

  TEST_CASE("moon plot: three panels with GRPO and evaluation records") {
    TempDir dir("trainer-plot");
    std::string text;
    for (int s = 1; s <= 30; ++s)
      text += json{{"step", s}, {"loss", 3.0 / s}, {"inter", 2.0 / s}, {"reward_mean", s > 10 ? json(0.01 * s) : json(nullptr)}}
                  .dump() + "\n";
    text += json{{"step", 0}, {"eval", {{"t2i.R@1", 0.1}, {"zeroshot.acc", 0.3}}}}.dump() + "\n";
    text += json{{"step", 30}, {"eval", {{"t2i.R@1", 0.4}, {"zeroshot.acc", 0.6}}}}.dump() + "\n";
    io::write_file_atomic(dir / "m.jsonl", text);
    const std::vector<Panel> panels = metrics_panels(dir / "m.jsonl");
    REQUIRE(panels.size() == 3);
    CHECK(panels[0].series.size() == 2);
    CHECK(panels[1].series[0].points.size() == 20);
    CHECK(panels[2].series.size() == 2);
    const std::string png = plot_run(dir / "m.jsonl", dir / "out/c.png");
    int w = 0, h = 0, c = 0;
    uint8_t* pixels = stbi_load(png.c_str(), &w, &h, &c, 3);
    REQUIRE(pixels != nullptr);
    stbi_image_free(pixels);
    CHECK(w == 960);
    CHECK(h == 900);
  }

}

// Whole training runs: seconds each in a release build, too slow for the ASan build's fast label.
TEST_SUITE("trainer_slow") {
  TEST_CASE("exact resume: 3 steps + resume to 6 == 6 straight, with GRPO from step 2") {
    TempDir dir("trainer-resume");
    const std::string manifest = write_manifest(dir, 12, 0);
    TrainOptions o = tiny_options(manifest, dir / "straight");
    o.grpo.start_step = 2;
    o.grpo.group = 2;
    o.grpo.anchors = 2;
    o.grpo.max_tokens = 3;
    o.contrastive.matryoshka_dims = {16, 32};
    const TrainSummary straight = train(o);
    CHECK(straight.steps_done == 6);
    CHECK_FALSE(straight.interrupted);

    TrainOptions first = o;
    first.out = dir / "split";
    first.stop_after = 3;
    const TrainSummary part = train(first);
    CHECK(part.interrupted);
    CHECK(part.last_step == 3);
    CHECK(part.final_model.empty());
    CHECK(list_checkpoints(first.out).size() == 1);
    TrainOptions second = o;
    second.out = first.out;
    second.resume = true;
    const TrainSummary rest = train(second);
    CHECK(rest.steps_done == 3);
    CHECK(rest.last_step == 6);

    const std::vector<json> a = step_records(o.out), b = step_records(first.out);
    REQUIRE(a.size() == 6);
    REQUIRE(b.size() == 6);
    for (size_t i = 0; i < a.size(); ++i) {
      CAPTURE(i);
      CHECK(b[i]["step"] == a[i]["step"]);
      for (const char* key : {"loss", "inter", "intra", "mat", "pg", "reward_mean", "reward_std", "kl", "reason_len",
                              "lr", "grad_norm", "temperature", "kept"})
        CHECK_MESSAGE(b[i][key].dump() == a[i][key].dump(), key);
    }
    CHECK(a[1]["pg"].is_null());          // before GRPO starts
    CHECK(a[2]["pg"].is_number());        // GRPO from step index 2 (the third step)
    CHECK(a[5]["reward_mean"].is_number());
    CHECK(a[0]["loss"] != a[5]["loss"]);  // it trains
    const auto pa = tensors_of(o.out + "/model.safetensors"), pb = tensors_of(first.out + "/model.safetensors");
    REQUIRE(pa.size() == pb.size());
    for (const auto& [name, values] : pa) CHECK_MESSAGE(bit_equal(values, pb.at(name)), name);
    // the final training checkpoints agree too, reference and AdamW state included
    const auto ca = tensors_of(newest_checkpoint(o.out)), cb = tensors_of(newest_checkpoint(first.out));
    CHECK(ca.count("train.ref.model.norm.weight") == 1);
    CHECK(ca.count("train.adamw.m.logit_scale") == 1);
    for (const auto& [name, values] : ca) CHECK_MESSAGE(bit_equal(values, cb.at(name)), name);
  }

  TEST_CASE("checkpoints: keep-last-K, atomic, loadable as models, with state and tokenizer") {
    TempDir dir("trainer-ckpt");
    const std::string manifest = write_manifest(dir, 8, 4);
    TrainOptions o = tiny_options(manifest, dir / "run");
    o.steps = 4;
    o.save_every = 1;
    o.keep = 2;
    o.eval_limit = 4;
    const TrainSummary s = train(o);
    const auto kept = list_checkpoints(o.out);
    REQUIRE(kept.size() == 2);
    CHECK(kept[0].first == 3);
    CHECK(kept[1].first == 4);
    for (const auto& entry : std::filesystem::recursive_directory_iterator(o.out))
      CHECK_MESSAGE(!contains(entry.path().filename().string(), ".tmp"), entry.path().string());
    for (const char* f : {"run.json", "tokenizer.json", "metrics.jsonl", "model.safetensors"})
      CHECK_MESSAGE(std::filesystem::exists(o.out + "/" + f), f);
    auto model = model::load_checkpoint(kept[1].second);
    CHECK(model->config().decoder.layers == 2);
    const auto meta = model::checkpoint_metadata(kept[1].second);
    REQUIRE(meta.count(kTrainingStateKey) == 1);
    CHECK(TrainingState::from_json(meta.at(kTrainingStateKey), "x").step == 4);
    CHECK(meta.count(model::kTokenizerKey) == 1);
    CHECK(meta.at(model::kTokenizerKey) == io::read_file_text(o.out + "/tokenizer.json"));
    CHECK(s.final_model == o.out + "/model.safetensors");
    // evaluations before the first step and at the end
    int evals = 0;
    for (const json& j : read_metrics(o.out + "/metrics.jsonl"))
      if (j.contains("eval")) {
        CHECK((j["step"] == 0 || j["step"] == 4));
        CHECK(j["eval"].size() > 0);
        ++evals;
      }
    CHECK(evals == 2);
    // a fresh run refuses the non-empty folder; --resume at the end of the run has nothing left to do
    CHECK(error_of([&] { train(o); }) == "--out " + o.out + " is not empty (it holds " +
                                             std::filesystem::directory_iterator(o.out)->path().filename().string() +
                                             "); pass --resume to continue the run in it, or choose an empty or new "
                                             "--out folder");
  }

  TEST_CASE("NaN gradients: steps skipped naming the tensor, then a stop with the last good state saved") {
    TempDir dir("trainer-nan");
    const std::string manifest = write_manifest(dir, 8, 0);
    TrainOptions o = tiny_options(manifest, dir / "run");
    o.steps = 10;
    o.max_bad_steps = 2;
    std::string poisoned;
    o.after_backward = [&](int64_t step, model::MoonModel& m) {
      if (step < 2) return;
      const auto& [name, p] = m.params().all()[5];
      poisoned = name;
      Tensor g = p.grad();
      REQUIRE(g.defined());
      g.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
    };
    const std::string err = error_of([&] { train(o); });
    CHECK(err == "stopped after 2 bad steps (the last, step 4: the gradient of " + poisoned +
                     " holds NaN); the last good state is saved in " + checkpoint_path(o.out, 4) +
                     ". Lower --lr, check the data, or allow more with --max-bad-steps");
    const std::vector<json> steps = step_records(o.out);
    REQUIRE(steps.size() == 4);
    CHECK(steps[1]["bad"] == false);
    CHECK(steps[2]["bad"] == true);
    CHECK(steps[3]["bad"] == true);
    // the checkpoint holds the parameters after the 2 good steps: the same as a clean 2-step stop
    TrainOptions clean = tiny_options(manifest, dir / "clean");
    clean.steps = 10;
    clean.stop_after = 2;
    train(clean);
    const auto bad = tensors_of(checkpoint_path(o.out, 4)), good = tensors_of(checkpoint_path(clean.out, 2));
    for (const auto& [name, values] : good)
      if (name.rfind("train.", 0) != 0) CHECK_MESSAGE(bit_equal(values, bad.at(name)), name);
    CHECK(TrainingState::from_json(model::checkpoint_metadata(checkpoint_path(o.out, 4)).at(kTrainingStateKey), "x")
              .bad_steps == 2);
  }

  TEST_CASE("a checkpoint of another config is refused on --resume and --init, naming the tensor") {
    TempDir dir("trainer-config");
    const std::string manifest = write_manifest(dir, 8, 0);
    TrainOptions o = tiny_options(manifest, dir / "run");
    o.steps = 1;
    train(o);
    const std::string ckpt = checkpoint_path(o.out, 1);
    TrainOptions other = o;
    other.resume = true;
    other.steps = 2;
    other.overrides = {kShrink[0], kShrink[1], kShrink[2], kShrink[3], "decoder.mlp=256"};
    CHECK(error_of([&] { train(other); }) ==
          ckpt + ": tensor model.layers.0.mlp.gate_proj.weight has shape (384, 128) in the checkpoint (config 'tiny') "
                 "but (256, 128) in config 'tiny': it was trained with another config; use a checkpoint of this config "
                 "or --config of the checkpoint");
    other.overrides = {kShrink[0], "decoder.layers=1", "fire.vision_layers=[1]", "fire.decoder_layers=[0]"};
    const std::string fewer = error_of([&] { train(other); });
    CHECK_MESSAGE(contains(fewer, "tensor model.layers.1.input_layernorm.weight is not a parameter of config 'tiny'"), fewer);
    other.overrides = {kShrink[0], kShrink[1], kShrink[2], kShrink[3], "embedding.pooling=emb_token"};
    CHECK(contains(error_of([&] { train(other); }),
                   "the checkpoint's config has embedding.pooling = \"mean\" but this run's config has \"emb_token\""));
    TrainOptions changed = o;
    changed.resume = true;
    changed.steps = 2;
    changed.batch = 5;
    CHECK(contains(error_of([&] { train(changed); }), "the run was trained with batch = 4, but this command asks for 5"));
    TrainOptions init = tiny_options(manifest, dir / "init");
    init.overrides = {kShrink[0], kShrink[1], kShrink[2], kShrink[3], "decoder.mlp=256"};
    init.init = ckpt;
    CHECK(contains(error_of([&] { train(init); }),
                   "tensor model.layers.0.mlp.gate_proj.weight has shape (384, 128) in the checkpoint"));
    // --init of the same config starts from its weights
    TrainOptions same = tiny_options(manifest, dir / "same");
    same.init = ckpt;
    same.steps = 1;
    same.lr = 1e-12;  // the update barely moves them
    train(same);
    const auto from = tensors_of(ckpt), now = tensors_of(same.out + "/model.safetensors");
    const auto& a = from.at("model.norm.weight");
    const auto& b = now.at("model.norm.weight");
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) CHECK(std::fabs(a[i] - b[i]) < 1e-6);
  }

  TEST_CASE("moon train: bad manifest lines skipped and counted, --help, plot of the run") {
    TempDir dir("trainer-cli");
    const std::string manifest = write_manifest(dir, 8, 0, {"{not json", "{\"id\": \"x\"}"});
    const std::string out = dir / "run";
    const auto run = moon::test::run_moon(
        dir, "train --config tiny " + kShrinkFlags + " --manifest " + moon::test::quoted(manifest) +
                 " --out " + moon::test::quoted(out) + " --steps 2 --batch 4 --workers 1 --eval-limit 0 --quiet");
    INFO(run.err);
    REQUIRE(run.status == 0);
    CHECK(contains(run.err, "moon train: 2 bad lines skipped (first: " + manifest + ":5: "));
    CHECK(contains(run.out, "wrote " + out + "/model.safetensors (step 2, 0 bad steps)"));
    CHECK(step_records(out).size() == 2);
    const auto help = moon::test::run_moon(dir, "train --help");
    CHECK(help.status == 0);
    for (const char* flag : {"--config", "--manifest", "--out", "--steps", "--resume", "--batch", "--lr", "--warmup",
                             "--accum", "--chunk", "--bf16", "--workers", "--seed", "--eval-every", "--eval-limit",
                             "--save-every", "--keep", "--max-bad-steps", "--tokenizer", "--init", "--set", "--grpo-start",
                             "--grpo-weight", "--group", "--anchors", "--reason-tokens", "--no-filtering", "--no-intra",
                             "--matryoshka", "--quiet"})
      CHECK_MESSAGE(contains(help.out, flag), flag);
    const auto again = moon::test::run_moon(dir, "train --config tiny --manifest " + moon::test::quoted(manifest) +
                                                     " --out " + moon::test::quoted(out) + " --steps 2");
    CHECK(again.status == 2);
    CHECK(contains(again.err, "moon train: error: --out " + out + " is not empty"));

    const auto plot = moon::test::run_moon(dir, "plot " + moon::test::quoted(out));
    INFO(plot.err);
    REQUIRE(plot.status == 0);
    int w = 0, h = 0, c = 0;
    uint8_t* pixels = stbi_load((out + "/curves.png").c_str(), &w, &h, &c, 3);
    REQUIRE(pixels != nullptr);
    CHECK(w == 960);
    CHECK(h == 300);  // one panel: the loss (no GRPO, no evaluation)
    size_t coloured = 0;  // the loss line is drawn in the first palette colour
    for (int i = 0; i < w * h; ++i) coloured += pixels[i * 3] == 0x1f && pixels[i * 3 + 1] == 0x77 && pixels[i * 3 + 2] == 0xb4;
    stbi_image_free(pixels);
    CHECK(coloured > 100);
    const auto bad = moon::test::run_moon(dir, "plot " + moon::test::quoted(dir / "nothing"));
    CHECK(bad.status == 2);
    CHECK(contains(bad.err, dir / "nothing" + ": no such metrics file"));
  }

  TEST_CASE("SIGINT through the binary: exit 130 with a resumable checkpoint") {
    TempDir dir("trainer-sigint");
    const std::string manifest = write_manifest(dir, 8, 0);
    const std::string out = dir / "run", binary = moon::test::moon_binary();
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      const std::string log = dir / "stderr.txt";
      FILE* f = std::freopen(log.c_str(), "w", stderr);
      (void)f;
      FILE* g = std::freopen((dir / "stdout.txt").c_str(), "w", stdout);
      (void)g;
      execl(binary.c_str(), binary.c_str(), "train", "--config", "tiny", "--set", kShrink[0], "--set", kShrink[1], "--set",
            kShrink[2], "--set", kShrink[3], "--manifest", manifest.c_str(), "--out", out.c_str(), "--steps", "100000", "--batch",
            "4", "--workers", "1", "--eval-limit", "0", "--save-every", "100000", "--quiet", nullptr);
      _exit(127);
    }
    // wait for the first step's line in metrics.jsonl
    bool stepped = false;
    for (int i = 0; i < 600 && !stepped; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      int early = 0;
      if (waitpid(pid, &early, WNOHANG) == pid) FAIL("moon train exited early: ", io::read_file_text(dir / "stderr.txt"));
      std::error_code ec;
      if (std::filesystem::exists(out + "/metrics.jsonl", ec))
        stepped = contains(io::read_file_text(out + "/metrics.jsonl"), "\"loss\"");
    }
    kill(pid, SIGINT);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(stepped);
    REQUIRE(WIFEXITED(status));
    const std::string err = io::read_file_text(dir / "stderr.txt");
    INFO(err);
    CHECK(WEXITSTATUS(status) == 130);
    CHECK(contains(err, "resume with: moon train --out " + out + " --resume"));
    const std::string ckpt = newest_checkpoint(out);
    REQUIRE(!ckpt.empty());
    const TrainingState state = TrainingState::from_json(model::checkpoint_metadata(ckpt).at(kTrainingStateKey), ckpt);
    CHECK(state.step >= 1);
    CHECK(step_records(out).size() == static_cast<size_t>(state.step));
    CHECK(model::load_checkpoint(ckpt)->config().decoder.layers == 2);
  }
}
