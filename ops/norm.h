// Normalisations and dropout: softmax, log_softmax, layer_norm, rms_norm, dropout. All differentiable, with
// fused CPU kernels (ops/cpu/norm_kernels.cpp): one pass for the row statistics, one for the output, and
// separate fused backward kernels. f32 or bf16 (bf16 activations, ops/float_storage.h): all floating operands
// of a call share a dtype (a bf16 model hands layer_norm / rms_norm its weights as w.to(DType::BF16)); outputs
// and input gradients take it (computed in f32, rounded once; dweight / dbias reduced in f32); the saved
// statistics stay f32.
#pragma once

#include <cstdint>

#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace moon {

// exp(x) / sum(exp(x)) along dim (max-shifted: stable for huge inputs).
Tensor softmax(const Tensor& x, int64_t dim);
// x - log(sum(exp(x))) along dim.
Tensor log_softmax(const Tensor& x, int64_t dim);

// (x - mean) / sqrt(var + eps) * weight + bias over the last dimension (biased variance). weight and bias are
// (C) with C = x.size(-1); pass an undefined Tensor() for none.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
// x * rsqrt(mean(x^2) + eps) * weight over the last dimension (Qwen2 / LLaMA form); weight (C) or undefined.
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);

// Zeroes each element with probability p and scales the rest by 1/(1-p) while training; identity when
// !training or p == 0. The mask comes from Philox: element i is kept when dropout_uniform(seed, offset, i)
// >= p, where (seed, offset) is gen's state before the call (the call reserves numel values from gen).
// The backward applies the same mask.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);
Tensor dropout(const Tensor& x, double p, bool training);  // with default_generator()
// The uniform [0, 1) draw that decides element i of a dropout mask (for references and tests).
float dropout_uniform(uint64_t seed, uint64_t offset, int64_t i);

}  // namespace moon
