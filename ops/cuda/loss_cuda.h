// CUDA halves of cross_entropy (ops/cross_entropy.cpp). Plain C++ declarations, safe to include in any
// build; defined in ops/cuda/loss_cuda.cu (CUDA builds only) and referenced through MOON_CUDA_KERNEL.
#pragma once

#include <cstdint>

#include "runtime/tensor.h"

namespace moon {

// The parameters of one cross_entropy call (shared by the CPU and CUDA kernels).
struct CeParams {
  int64_t ignore_index;
  float smoothing;
};

namespace cuda {

// Logits and dx are f32 or bf16 (bf16 activations: computed in f32, dx rounded once); probs, loss f32.
// Per row i of logits (N, C) (unit column stride, any row stride): loss_i = lse(x_i) - (1-s) x_i[t_i] -
// s mean(x_i), or 0 when t_i == ignore_index; loss (0-d) = sum_i loss_i / count (0 when count == 0). When
// probs is defined also probs[i, :] = softmax(x_i) (dense (N, C); ignored rows left unwritten). Targets
// i64 (N), any stride, already validated.
void cross_entropy(const Tensor& logits, const Tensor& targets, const CeParams& p, const Tensor& loss,
                   const Tensor& probs, int64_t count);
// dx (N, C) dense = (probs - s/C - (1-s) onehot(t_i)) * scale on kept rows, 0 on ignored rows.
void cross_entropy_backward(const Tensor& probs, const Tensor& targets, const CeParams& p, float scale,
                            const Tensor& dx);

}  // namespace cuda
}  // namespace moon
