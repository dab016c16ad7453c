// The training loop of `moon train` (docs/training.md sections 5 and 6): data, contrastive + GRPO steps,
// AdamW with warm-up + cosine and clipping, accumulation, NaN handling, periodic evaluation, atomic
// checkpoints with exact resume, progress and the JSONL metrics log.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/moon_model.h"
#include "training/contrastive.h"
#include "training/grpo.h"

namespace moon::training {

struct TrainOptions {
  std::string config = "small";             // a config name or JSON path
  std::vector<std::string> overrides;       // "section.field=value" (model::with_overrides)
  std::string manifest;                     // training products (split "train"); evaluation uses "val"
  std::string out;                          // RUN_DIR
  std::string tokenizer;                    // a tokenizer.json; empty: train one on the training text
  std::string init;                         // start from this model checkpoint instead of fresh weights
  bool resume = false;
  int64_t steps = 1000;
  int64_t stop_after = 0;                   // > 0: stop (with a checkpoint) once this many steps are done,
                                            // keeping the schedule of `steps` (resume later)
  int64_t batch = 32;
  int64_t accum = 1;
  int64_t chunk = 0;                        // gradient-caching chunk (0: off)
  double lr = 3e-4;
  int64_t warmup = 50;
  double weight_decay = 0.05;
  double clip = 1.0;
  bool bf16 = false;
  int workers = 2;
  int64_t max_tokens = 32;
  uint64_t seed = 0;
  int64_t eval_every = 0;                   // 0: only before the first step and at the end
  size_t eval_limit = 500;                  // 0: no evaluation at all
  int64_t save_every = 100;
  int64_t keep = 3;
  int64_t max_bad_steps = 5;
  bool progress = true;
  ContrastiveOptions contrastive;
  GrpoOptions grpo;

  // Not options of the command line (not saved in run.json):
  const std::atomic<bool>* interrupt = nullptr;  // when it becomes true: finish the step, checkpoint, return
  // Runs after each step's backward, before the finiteness check (tests poison a gradient with it).
  std::function<void(int64_t step, model::MoonModel& model)> after_backward;
};

struct TrainSummary {
  int64_t steps_done = 0;    // steps completed in this process (after a resume: since the resume)
  int64_t last_step = 0;     // the run's step count at exit
  int64_t bad_steps = 0;
  double seconds = 0;
  double products_per_second = 0;
  double last_loss = 0;      // the last good step's loss
  bool interrupted = false;  // stopped by the interrupt flag or stop_after (a checkpoint was written)
  std::string last_checkpoint;  // the newest checkpoint written
  std::string final_model;   // RUN_DIR/model.safetensors (empty when interrupted)
};

// Runs (or resumes) a training run. Throws moon::Error on bad input or after max_bad_steps bad steps.
TrainSummary train(const TrainOptions& options);

// The GRPO sampling seed of a step: a 64-bit mix of (seed, step), so that rollouts depend on nothing else.
uint64_t grpo_step_seed(uint64_t seed, int64_t step);

}  // namespace moon::training
