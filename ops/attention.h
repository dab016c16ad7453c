// Attention-side ops: fused scaled-dot-product attention (tiled, online softmax, linear memory) and the
// rotary position embedding of Qwen2.
#pragma once

#include "runtime/tensor.h"

namespace moon {

struct AttentionOptions {
  bool causal = false;     // query i sees key j only when j <= i + q_offset
  int64_t q_offset = 0;    // 0 = PyTorch's is_causal; Tk - Tq when queries are the last Tq of the keys
  Tensor key_keep;         // optional (B, Tk) u8: 0 marks a padded key that no query may attend
  double scale = 0.0;      // 0 = 1/sqrt(D)
};

// out (B, Hq, Tq, D) = softmax(scale * q k^T + masks) v, with grouped-query heads: q (B, Hq, Tq, D),
// k and v (B, Hkv, Tk, D), Hkv dividing Hq. A query that sees no key gets zeros. Differentiable in q, k, v.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options = {});

// Rotary embedding, Qwen2 form ("rotate half"): for pair (i, i + D/2) of each head vector at position p,
// angle = p * theta^(-2i/D), (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin).
// x (B, H, T, D) with D even; positions (B, T) or (T) of i64/i32, any values (packing, offsets).
Tensor rope(const Tensor& x, const Tensor& positions, double theta = 10000.0);

}  // namespace moon
