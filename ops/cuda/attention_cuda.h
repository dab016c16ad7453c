// CUDA halves of scaled-dot-product attention (ops/attention.cpp), FlashAttention-2 style: the CPU kernels'
// parameter struct (ops/cpu/attention_kernels.h; key_keep a device pointer) and tensors on q's device. Same
// semantics: scale, causal with q_offset, key padding, grouped-query heads, a query that sees no key gets
// out = 0, lse = -inf and zero gradient; outputs are overwritten. Head sizes D up to 256. Launches on the
// device's stream, no sync; deterministic (no float atomics).
// Plain C++ declarations: safe to include in any build; defined only with the CUDA backend.
#pragma once

#include "ops/cpu/attention_kernels.h"
#include "runtime/device.h"
#include "runtime/tensor.h"

namespace moon::cuda {

// q (B, Hq, Tq, D), k, v (B, Hkv, Tk, D), out like q, any strides, all of one dtype (f32 or bf16); lse
// (B, Hq, Tq) contiguous f32 (may be undefined in the forward). The kernels read T and compute in f32 exactly
// as the f32 kernels do, rounding each output once on store: a bf16 result is the f32 kernel's result on the
// widened inputs, rounded, bit for bit (lse and the delta pre-pass stay f32).
void attention_forward(const cpu::AttnParams& p, const Tensor& q, const Tensor& k, const Tensor& v,
                               const Tensor& out, const Tensor& lse);

// dq like q, dk and dv like k, v (any strides, the dtype of q) from dout (like q, same dtype) and the
// forward's q, k, v, out, lse.
void attention_backward(const cpu::AttnParams& p, const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& out, const Tensor& lse, const Tensor& dout, const Tensor& dq,
                                const Tensor& dk, const Tensor& dv);

}  // namespace moon::cuda
