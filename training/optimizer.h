// AdamW (decoupled weight decay, PyTorch's update form), the warm-up + cosine learning-rate schedule and
// gradient-norm clipping. f32 master weights and f32 optimizer state on each parameter's device (the CPU, or
// a GPU: there one fused multi-tensor kernel updates every parameter, bitwise like the CPU loop).
//
//   training::AdamW opt(model.params().all(), {.weight_decay = 0.1});
//   loss.backward();
//   double norm = training::clip_grad_norm(model.params().all(), 1.0);
//   opt.step(training::warmup_cosine(step, 100, 2000, 3e-4, 3e-5));
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace moon::training {

using NamedParams = std::vector<std::pair<std::string, Tensor>>;

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

// Whether a parameter gets weight decay: matrices and embeddings do; 1-D tensors (biases, norm weights,
// FIRE gates, class embeddings) do not (DESIGN.md: no decay on norms and biases).
bool decays(const Tensor& param);

class AdamW {
 public:
  // params: contiguous f32 leaves (ParamStore::all()) on any device. State (m, v) starts at zero, on each
  // parameter's device.
  AdamW(NamedParams params, AdamWOptions options = {});
  // One update with learning rate lr, for every parameter that has a gradient (t = steps() + 1):
  //   p -= lr * wd * p                        (decaying parameters only)
  //   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
  //   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
  // A parameter without a gradient is left alone (its state does not move).
  void step(double lr);
  int64_t steps() const { return steps_; }
  // The state as named tensors ("adamw.m.<param>", "adamw.v.<param>"), for checkpoints; load_state()
  // takes them back (with the step count; copied onto the state's device) and names any missing or
  // mis-shaped tensor.
  NamedParams state() const;
  void load_state(const NamedParams& tensors, int64_t steps, const std::string& origin);

 private:
  NamedParams params_;
  std::vector<Tensor> m_, v_;  // per parameter, its shape, f32
  AdamWOptions options_;
  int64_t steps_ = 0;
};

// Linear warm-up from 0 to peak over `warmup` steps, then cosine decay to `floor` at `total` steps (and
// `floor` after). step counts from 0.
double warmup_cosine(int64_t step, int64_t warmup, int64_t total, double peak, double floor);

// Global L2 norm of all gradients; if it exceeds max_norm, every gradient is scaled by max_norm / norm.
// Returns the norm before clipping (NaN or inf when a gradient holds one: then nothing is scaled, and the
// caller decides, e.g. skipping the step).
double clip_grad_norm(const NamedParams& params, double max_norm);

}  // namespace moon::training
