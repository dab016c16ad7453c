// CUDA half of the AdamW update (training/optimizer.cpp): one multi-tensor launch over every parameter of a
// step. Plain C++ declarations, safe to include in any build; defined in ops/cuda/adamw_cuda.cu (CUDA builds
// only) and referenced through MOON_CUDA_KERNEL.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/device.h"

namespace moon::cuda {

// One parameter's dense f32 buffers, all on the same device, and its decay factor.
struct AdamWTensor {
  float* param = nullptr;
  const float* grad = nullptr;
  float* m = nullptr;
  float* v = nullptr;
  int64_t numel = 0;
  float keep = 1.0f;  // 1 - lr * weight_decay for decaying parameters, else 1
};

// The step's scalars, computed in float on the host exactly as the CPU loop uses them.
struct AdamWScalars {
  float step_size;        // lr / (1 - b1^t)
  float inv_sqrt_c2;      // 1 / sqrt(1 - b2^t)
  float eps;
  float beta1, one_minus_beta1;  // b1, 1 - b1 (float arithmetic)
  float beta2, one_minus_beta2;
};

// For every element of every listed tensor, in one kernel launch and bitwise like the CPU loop:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g g;  p = p keep - step_size m / (sqrt(v) inv_sqrt_c2 + eps)
void adamw_step(const std::vector<AdamWTensor>& tensors, const AdamWScalars& s, Device device);

}  // namespace moon::cuda
