// Scaled-dot-product attention on the CPU, forward and backward (FlashAttention-2 style).
//
//   out = softmax(scale * q k^T + mask) v        per (batch, head), with lse = log-sum-exp of each row
//
// The kernels walk tiles of queries x tiles of keys with an online softmax, so no (Tq x Tk) matrix is ever
// stored: memory is the inputs, the outputs and a few small tiles of scratch per thread. The backward pass
// recomputes the probabilities from lse instead of keeping them.
//
// attention_kernels.cpp is compiled once per instruction set (cmake/MultiIsa.cmake); call the right copy with
//   MOON_ISA_SELECT(attention_forward)(params, tensors);
#pragma once

#include <cstdint>

namespace moon::cpu {

// Shapes and masking. Views are strided, strides in elements (float32 data):
//   q (B, Hq, Tq, D),  k, v (B, Hkv, Tk, D),  out (B, Hq, Tq, D),  lse (B, Hq, Tq) contiguous.
struct AttnParams {
  int64_t B, Hq, Hkv, Tq, Tk, D;  // Hkv divides Hq (grouped-query: q head h uses kv head h / (Hq/Hkv))
  float scale;                    // usually 1/sqrt(D)
  bool causal;                    // query i may see key j only when j <= i + q_offset
  int64_t q_offset;               // 0 = PyTorch is_causal (top-left); Tk - Tq for a KV cache
  const uint8_t* key_keep;        // (B, Tk) nullable; 0 = padded key, never attended
};

// Forward operands. lse may be null in the forward (inference); the backward needs it.
struct AttnTensors {
  const float* q; int64_t q_stride[4];
  const float* k; int64_t k_stride[4];
  const float* v; int64_t v_stride[4];
  float* out;     int64_t out_stride[4];
  float* lse;
};

// Backward operands: dout like out; dq like q; dk, dv like k, v. Outputs are overwritten, not accumulated.
struct AttnGradTensors {
  const float* dout; int64_t dout_stride[4];
  float* dq;         int64_t dq_stride[4];
  float* dk;         int64_t dk_stride[4];
  float* dv;         int64_t dv_stride[4];
};

// A query that sees no key at all (every key padded, or causality hides all) gets out = 0 and lse = -inf,
// and passes zero gradient. Both functions throw moon::Error on invalid parameters.
#define MOON_DECLARE_ATTENTION_KERNELS(isa)                                                           \
  namespace isa {                                                                                   \
  void attention_forward(const AttnParams& p, const AttnTensors& t);                                \
  void attention_backward(const AttnParams& p, const AttnTensors& t, const AttnGradTensors& g);     \
  }
MOON_DECLARE_ATTENTION_KERNELS(avx512)
MOON_DECLARE_ATTENTION_KERNELS(avx2)
MOON_DECLARE_ATTENTION_KERNELS(generic)
#undef MOON_DECLARE_ATTENTION_KERNELS

}  // namespace moon::cpu
