// Registry entries for attention and rope, with plain double-precision references (materialised softmax).
#include <algorithm>
#include <cmath>

#include "ops/attention.h"
#include "ops/registry.h"

namespace moon {

namespace {

// out[b,h,i,:] = sum_j softmax_j(scale * q_i . k_j, masked) v_j, kv head h / (Hq / Hkv); rows with no
// visible key are zero.
RefTensor ref_attention(const RefTensor& q, const RefTensor& k, const RefTensor& v, const RefTensor* keep, bool causal,
                        int64_t q_offset) {
  const int64_t B = q.shape[0], Hq = q.shape[1], Tq = q.shape[2], D = q.shape[3];
  const int64_t Hkv = k.shape[1], Tk = k.shape[2], group = Hq / Hkv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  RefTensor out{q.shape, std::vector<double>(q.data.size(), 0.0)};
  std::vector<double> s(static_cast<size_t>(Tk));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t hk = h / group;
        double mx = -INFINITY;
        for (int64_t j = 0; j < Tk; ++j) {
          const bool visible = (!causal || j <= i + q_offset) && (!keep || keep->data[b * Tk + j] != 0);
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += q.data[((b * Hq + h) * Tq + i) * D + d] * k.data[((b * Hkv + hk) * Tk + j) * D + d];
          s[j] = visible ? dot * scale : -INFINITY;
          mx = std::max(mx, s[j]);
        }
        if (mx == -INFINITY) continue;
        double denom = 0;
        for (int64_t j = 0; j < Tk; ++j) denom += s[j] == -INFINITY ? 0 : std::exp(s[j] - mx);
        for (int64_t j = 0; j < Tk; ++j) {
          if (s[j] == -INFINITY) continue;
          const double pj = std::exp(s[j] - mx) / denom;
          for (int64_t d = 0; d < D; ++d)
            out.data[((b * Hq + h) * Tq + i) * D + d] += pj * v.data[((b * Hkv + hk) * Tk + j) * D + d];
        }
      }
  return out;
}

RefTensor ref_rope(const RefTensor& x, const RefTensor& pos, double theta) {
  const int64_t B = x.shape[0], H = x.shape[1], T = x.shape[2], D = x.shape[3], half = D / 2;
  RefTensor out = x;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const double p = pos.shape.size() == 2 ? pos.data[b * T + t] : pos.data[t];
        for (int64_t i = 0; i < half; ++i) {
          const double a = p * std::pow(theta, -2.0 * i / D);
          const int64_t o = ((b * H + h) * T + t) * D;
          const double x1 = x.data[o + i], x2 = x.data[o + i + half];
          out.data[o + i] = x1 * std::cos(a) - x2 * std::sin(a);
          out.data[o + i + half] = x2 * std::cos(a) + x1 * std::sin(a);
        }
      }
  return out;
}

enum class MaskKind { None, Causal, CausalOffset, Padding };

OpInfo attention_entry(const char* name, MaskKind mask, int64_t hq, int64_t hkv) {
  OpInfo info;
  info.name = name;
  info.family = "attention";
  info.arity = 3;
  info.make_case = [mask, hq, hkv](CaseGen& g) {
    OpCase c;
    // Tq, Tk >= 4. A query that sees a single key has P = 1 and a true q-gradient of 0 (and a key seen only by
    // such queries a k-gradient of 0), so with Tq = Tk = 1 a comparison (bf16 against f32, or a device against
    // the CPU) measures rounding noise only; with 2 or 3 keys dq is a difference of nearly equal terms in which
    // the bf16 rounding of out (the backward's Delta = rowsum(dO * O) reads it, as in FlashAttention-2) can
    // exceed the bf16 check's nmse 1e-4 (17 of 300 seeds at 2, 2 of 300 at 3, none at 4). The kernel tests and
    // tests/cuda_emu cover Tq, Tk = 1.
    const int64_t T = std::max<int64_t>(g.small(), 4);
    const int64_t B = 2, Tq = T, Tk = mask == MaskKind::CausalOffset ? Tq + g.pick(0, 5) : T;
    const int64_t D = g.pick(0, 1) ? 32 : 8 * g.pick(1, 3);
    const bool causal = mask == MaskKind::Causal || mask == MaskKind::CausalOffset;
    const int64_t q_offset = mask == MaskKind::CausalOffset ? Tk - Tq : 0;
    c.desc = "B=2 Hq=" + std::to_string(hq) + " Hkv=" + std::to_string(hkv) + " Tq=" + std::to_string(Tq) +
             " Tk=" + std::to_string(Tk) + " D=" + std::to_string(D);
    c.inputs = {g.normal({B, hq, Tq, D}), g.normal({B, hkv, Tk, D}), g.normal({B, hkv, Tk, D})};
    if (mask == MaskKind::Padding) {
      Tensor keep = g.mask({B, Tk}, 0.7);
      uint8_t* kp = keep.data<uint8_t>();
      kp[0] = kp[1] = 1;                                   // batch 0 sees at least two keys
      for (int64_t j = 0; j < Tk; ++j) kp[Tk + j] = j == 0 && Tk > 1 ? 0 : kp[Tk + j];
      c.inputs.push_back(keep);
    }
    c.run = [causal, q_offset](const std::vector<Tensor>& in) {
      AttentionOptions o;
      o.causal = causal;
      o.q_offset = q_offset;
      if (in.size() > 3) o.key_keep = in[3];
      return std::vector<Tensor>{scaled_dot_product_attention(in[0], in[1], in[2], o)};
    };
    c.reference = [causal, q_offset](const std::vector<RefTensor>& in) {
      return std::vector<RefTensor>{ref_attention(in[0], in[1], in[2], in.size() > 3 ? &in[3] : nullptr, causal, q_offset)};
    };
    c.grad_inputs = {0, 1, 2};
    c.fwd_tol = 1e-5;
    return c;
  };
  return info;
}

}  // namespace

void register_attention_ops(std::vector<OpInfo>& r) {
  r.push_back(attention_entry("attention", MaskKind::None, 2, 2));
  r.push_back(attention_entry("attention_causal", MaskKind::Causal, 2, 2));
  r.push_back(attention_entry("attention_causal_kvcache", MaskKind::CausalOffset, 4, 2));
  r.push_back(attention_entry("attention_padding_gqa", MaskKind::Padding, 4, 1));

  OpInfo rope_info;
  rope_info.name = "rope";
  rope_info.family = "attention";
  rope_info.arity = 2;
  rope_info.make_case = [](CaseGen& g) {
    OpCase c;
    const int64_t T = g.small(), D = 2 * g.pick(1, 8);
    const bool per_batch = g.pick(0, 1) == 1;
    c.desc = std::string("T=") + std::to_string(T) + " D=" + std::to_string(D) + (per_batch ? " positions (B,T)" : " positions (T)");
    c.inputs = {g.normal({2, 3, T, D}), per_batch ? g.integers({2, T}, 0, 5000) : g.integers({T}, 0, 5000)};
    c.run = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{rope(in[0], in[1])}; };
    c.reference = [](const std::vector<RefTensor>& in) { return std::vector<RefTensor>{ref_rope(in[0], in[1], 10000.0)}; };
    c.grad_inputs = {0};
    c.fwd_tol = 1e-5;
    return c;
  };
  r.push_back(rope_info);
}

}  // namespace moon
