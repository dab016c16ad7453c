// The run folder of `moon train` (docs/training.md section 6): run.json, tokenizer.json, numbered checkpoints
// with keep-last-K, and the training state saved beside the parameters (train.* tensors + the
// moon.training_state metadata) so that a resumed run continues exactly.
//
//   RUN_DIR/run.json, tokenizer.json, metrics.jsonl, checkpoints/step-00000100.safetensors, model.safetensors
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/data_loader.h"
#include "model/moon_model.h"
#include "training/optimizer.h"
#include "training/trainer.h"

namespace moon::io {
class Checkpoint;
}

namespace moon::training {

inline constexpr const char* kTrainingStateKey = "moon.training_state";

// What moon.training_state holds besides the tensors.
struct TrainingState {
  int64_t step = 0;           // optimizer steps done
  io::LoaderState loader;     // the batch the next step starts with
  int64_t adamw_steps = 0;    // AdamW's t
  int64_t bad_steps = 0;      // skipped (non-finite) steps so far
  bool has_reference = false; // train.ref.* tensors present (GRPO started)
  std::string fixed;          // JSON of the options that must not change on resume (fixed_options())
  std::string to_json() const;
  static TrainingState from_json(const std::string& text, const std::string& origin);  // errors name origin + field
};

// The options of a run that a resume must repeat (batch, accumulation, seed, the loss and GRPO switches), as JSON.
std::string fixed_options(const TrainOptions& options);
// Fails naming `origin`, the first differing option and both values when `now` differs from `saved`.
void check_fixed_options(const std::string& saved, const std::string& now, const std::string& origin);

// run.json: every command-line option of TrainOptions and the model config (JSON), and back.
std::string options_to_json(const TrainOptions& options, const model::ModelConfig& config);
TrainOptions options_from_json(const std::string& text, const std::string& origin);

// Paths in a run folder.
std::string checkpoint_dir(const std::string& run_dir);                  // RUN_DIR/checkpoints
std::string checkpoint_path(const std::string& run_dir, int64_t step);  // .../step-%08d.safetensors
// The checkpoints in RUN_DIR/checkpoints as (step, path), oldest first (files that do not match are ignored).
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& run_dir);
// The newest checkpoint, or "" when there is none.
std::string newest_checkpoint(const std::string& run_dir);
// Deletes all but the newest `keep` checkpoints (keep >= 1).
void prune_checkpoints(const std::string& run_dir, int64_t keep);
// A fresh run needs an empty (or missing) RUN_DIR: fails saying what is there and what to do otherwise.
void check_fresh_run_dir(const std::string& run_dir);

// Fails when `checkpoint` does not fit `model` (the run's config): names the first parameter that is missing
// or of another shape (both shapes), else the first config field that differs (when `same_config` is true).
void check_checkpoint_matches(const io::Checkpoint& checkpoint, const model::MoonModel& model, bool same_config);

// The parts of a training run a checkpoint holds.
struct TrainingParts {
  model::MoonModel* model = nullptr;
  Tensor logit_scale;                             // (1) f32 leaf: train.logit_scale
  AdamW* optimizer = nullptr;                     // over the model's parameters and "logit_scale"
  std::unique_ptr<model::MoonModel>* reference = nullptr;  // the GRPO reference (null pointer inside: none yet)
};

// Writes a checkpoint atomically: parameters, train.logit_scale, train.adamw.{m,v}.<name>, train.ref.<name>
// (when a reference exists), metadata moon.training_state and moon.tokenizer (when non-empty).
void save_training_checkpoint(const std::string& path, const TrainingParts& parts, const TrainingState& state,
                              const std::string& tokenizer_json);

// Reads a checkpoint written by save_training_checkpoint back into `parts` (the model must have the
// checkpoint's config: checked first) and returns its state. Errors name the file and the tensor or field.
TrainingState load_training_checkpoint(const std::string& path, TrainingParts& parts);

}  // namespace moon::training
