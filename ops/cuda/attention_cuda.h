// CUDA halves of scaled-dot-product attention (ops/attention.cpp), FlashAttention-2 style: the same
// parameter and operand structs as the CPU kernels (ops/cpu/attention_kernels.h), holding device pointers of
// `device` (key_keep included). Same semantics: scale, causal with q_offset, key padding, grouped-query
// heads, a query that sees no key gets out = 0, lse = -inf and zero gradient; outputs are overwritten.
// Plain C++ declarations: safe to include in any build; defined only with the CUDA backend.
#pragma once

#include "ops/cpu/attention_kernels.h"
#include "runtime/device.h"

namespace moon::cuda {

// out, lse (lse may be null) from q, k, v. Head sizes D up to 256. Launches on device's stream, no sync.
void attention_forward(Device device, const cpu::AttnParams& p, const cpu::AttnTensors& t);

// dq, dk, dv from dout and the forward's q, k, v, out, lse (needed). Deterministic: no float atomics.
void attention_backward(Device device, const cpu::AttnParams& p, const cpu::AttnTensors& t,
                        const cpu::AttnGradTensors& g);

}  // namespace moon::cuda
