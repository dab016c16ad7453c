// The Qwen2-style decoder (docs/model.md section 4) and its KV cache: RMSNorm, RoPE at per-row positions,
// grouped-query attention over the new and cached keys, SwiGLU MLP or the modality-driven MoE.
#include "model/decoder.h"

#include <cmath>
#include <string>

#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/norm.h"
#include "runtime/autograd.h"
#include "runtime/error.h"

namespace moon::model {

KVCache KVCache::create(const DecoderConfig& config, int64_t batch, int64_t capacity) {
  MOON_CHECK(batch > 0 && capacity > 0, "KVCache: batch (", batch, ") and capacity (", capacity,
             ") must be positive");
  KVCache cache;
  cache.capacity = capacity;
  for (int64_t l = 0; l < config.layers; ++l) {
    // Zero-filled so that unused slots are finite even if a kernel ever reads them.
    cache.k.push_back(zeros({batch, config.kv_heads, capacity, config.head_dim()}));  // (B, Hkv, cap, hd)
    cache.v.push_back(zeros({batch, config.kv_heads, capacity, config.head_dim()}));  // (B, Hkv, cap, hd)
  }
  cache.keep = zeros({batch, capacity}, DType::U8);  // (B, cap)
  return cache;
}

Decoder::Decoder(const ModelConfig& config, ParamStore& params) : config_(config) {
  const DecoderConfig& d = config.decoder;
  const int64_t C = d.hidden, kv = d.kv_heads * d.head_dim(), I = d.mlp;
  const double out_std = 0.02 / std::sqrt(2.0 * static_cast<double>(d.layers));  // o_proj, down_proj
  embed_w_ = params.normal("model.embed_tokens.weight", {d.vocab, C}, 0.02);  // (V, C)
  for (int64_t l = 0; l < d.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    Layer L;
    L.in_norm_w = params.constant(p + "input_layernorm.weight", {C}, 1.0);
    L.q_w = params.normal(p + "self_attn.q_proj.weight", {C, C}, 0.02);
    L.q_b = params.constant(p + "self_attn.q_proj.bias", {C}, 0.0);
    L.k_w = params.normal(p + "self_attn.k_proj.weight", {kv, C}, 0.02);
    L.k_b = params.constant(p + "self_attn.k_proj.bias", {kv}, 0.0);
    L.v_w = params.normal(p + "self_attn.v_proj.weight", {kv, C}, 0.02);
    L.v_b = params.constant(p + "self_attn.v_proj.bias", {kv}, 0.0);
    L.o_w = params.normal(p + "self_attn.o_proj.weight", {C, C}, out_std);
    L.post_norm_w = params.constant(p + "post_attention_layernorm.weight", {C}, 1.0);
    if (config.moe.enabled) {
      L.moe = std::make_unique<MoeFFN>(config, params, l);
    } else {
      L.gate_w = params.normal(p + "mlp.gate_proj.weight", {I, C}, 0.02);
      L.up_w = params.normal(p + "mlp.up_proj.weight", {I, C}, 0.02);
      L.down_w = params.normal(p + "mlp.down_proj.weight", {C, I}, out_std);
    }
    layers_.push_back(std::move(L));
  }
  norm_w_ = params.constant("model.norm.weight", {C}, 1.0);
  lm_head_w_ = d.tie_embeddings ? embed_w_ : params.normal("lm_head.weight", {d.vocab, C}, 0.02);  // (V, C)
}

Tensor Decoder::embed(const Tensor& token_ids) const { return embedding(embed_w_, token_ids); }

Tensor Decoder::logits(const Tensor& hidden, const Compute& compute) const {
  return dense(hidden, lm_head_w_, Tensor(), compute);  // (..., V)
}

namespace {

// Checks the decoder inputs against each other and the config; errors name the tensor and both shapes.
void check_inputs(const Tensor& x, const Tensor& positions, const Tensor& keep, const Tensor& modality,
                  const DecoderConfig& d, const KVCache* cache, int64_t layers, bool moe,
                  bool tracks_grad) {
  MOON_CHECK(x.dim() == 3 && x.size(2) == d.hidden, "decoder: input embeddings must be (B, T, ", d.hidden,
             "), got ", x.desc());
  const int64_t B = x.size(0), T = x.size(1);
  MOON_CHECK(positions.dim() == 2 && positions.size(0) == B && positions.size(1) == T &&
                 (positions.dtype() == DType::I64 || positions.dtype() == DType::I32),
             "decoder: positions must be i64 (", B, ", ", T, ") like the input ", x.desc(), ", got ", positions.desc());
  MOON_CHECK(keep.dim() == 2 && keep.size(0) == B && keep.size(1) == T && keep.dtype() == DType::U8,
             "decoder: keep must be u8 (", B, ", ", T, ") like the input ", x.desc(), ", got ", keep.desc());
  if (modality.defined() || moe)
    MOON_CHECK(modality.defined() && modality.dim() == 1 && modality.size(0) == B && modality.dtype() == DType::I64,
               "decoder: modality must be i64 (", B, ") (0 text, 1 image, 2 both; the MoE router needs it), got ",
               modality.defined() ? modality.desc() : std::string("none"));
  if (!cache) return;
  MOON_CHECK(static_cast<int64_t>(cache->k.size()) == layers && static_cast<int64_t>(cache->v.size()) == layers,
             "decoder: the KV cache has ", cache->k.size(), " layers but the decoder has ", layers,
             "; create it with KVCache::create for this config");
  MOON_CHECK(cache->keep.defined() && cache->keep.size(0) == B, "decoder: the KV cache was made for ",
             cache->keep.defined() ? cache->keep.size(0) : 0, " rows but the input has ", B);
  MOON_CHECK(cache->length + T <= cache->capacity, "decoder: the KV cache holds ", cache->length, " of ",
             cache->capacity, " positions and cannot take ", T, " more; create it with a larger capacity");
  MOON_CHECK(!tracks_grad, "decoder: forward with a KV cache is for inference (gradients do not flow through ",
             "cached keys); run it under NoGradGuard");
}

// (B, T, H*hd) -> (B, H, T, hd) view (strided, no copy).
Tensor split_heads(const Tensor& t, int64_t heads) {
  return t.reshape({t.size(0), t.size(1), heads, -1}).permute({0, 2, 1, 3});
}

}  // namespace

DecoderOutput Decoder::forward(const Tensor& x_in, const Tensor& positions, const Tensor& keep,
                               const Tensor& modality, const std::function<Tensor(int64_t, const Tensor&)>& before_layer,
                               KVCache* cache, const Compute& compute) const {
  const DecoderConfig& d = config_.decoder;
  const int64_t layers = static_cast<int64_t>(layers_.size());
  check_inputs(x_in, positions, keep, modality, d, cache, layers, config_.moe.enabled,
               needs_grad({&x_in, &embed_w_, &norm_w_}));
  const int64_t B = x_in.size(0), T = x_in.size(1), C = d.hidden;
  const int64_t past = cache ? cache->length : 0;  // cached positions before these T

  AttentionOptions attn;
  attn.causal = true;
  attn.q_offset = past;  // queries are the last T of past + T keys
  if (cache) {
    NoGradGuard no_grad;
    cache->keep.slice(1, past, past + T).copy_(keep);  // (B, T) of the (B, cap) mask
    attn.key_keep = cache->keep.slice(1, 0, past + T);  // (B, past + T) strided view
  } else {
    attn.key_keep = keep;  // (B, T)
  }

  DecoderOutput out;
  std::vector<Tensor> aux_terms;
  Tensor x = x_in;  // (B, T, C) residual stream
  for (int64_t l = 0; l < layers; ++l) {
    const Layer& L = layers_[l];
    if (before_layer) x = before_layer(l, x);
    Tensor a = rms_norm(x, L.in_norm_w, d.rms_norm_eps);                            // (B, T, C)
    Tensor q = rope(split_heads(dense(a, L.q_w, L.q_b, compute), d.heads), positions, d.rope_theta);     // (B, Hq, T, hd)
    Tensor k = rope(split_heads(dense(a, L.k_w, L.k_b, compute), d.kv_heads), positions, d.rope_theta);  // (B, Hkv, T, hd)
    Tensor v = split_heads(dense(a, L.v_w, L.v_b, compute), d.kv_heads);                                // (B, Hkv, T, hd)
    Tensor keys = k, values = v;
    if (cache) {
      NoGradGuard no_grad;
      cache->k[l].slice(2, past, past + T).copy_(k);
      cache->v[l].slice(2, past, past + T).copy_(v);
      keys = cache->k[l].slice(2, 0, past + T);    // (B, Hkv, past + T, hd) strided view of the cache
      values = cache->v[l].slice(2, 0, past + T);  // (B, Hkv, past + T, hd)
    }
    Tensor o = scaled_dot_product_attention(q, keys, values, attn);  // (B, Hq, T, hd)
    o = o.permute({0, 2, 1, 3}).reshape({B, T, C});                   // (B, T, C)
    Tensor h = add(x, dense(o, L.o_w, Tensor(), compute));           // (B, T, C)
    Tensor f = rms_norm(h, L.post_norm_w, d.rms_norm_eps);           // (B, T, C)
    Tensor ffn;                                                       // (B, T, C)
    if (L.moe) {
      MoeOutput m = L.moe->forward(f, modality, keep, compute);
      ffn = m.y;
      aux_terms.push_back(m.aux);
      out.router_counts.push_back(m.counts);
    } else {
      Tensor g = silu(dense(f, L.gate_w, Tensor(), compute));  // (B, T, I)
      ffn = dense(mul(g, dense(f, L.up_w, Tensor(), compute)), L.down_w, Tensor(), compute);
    }
    x = add(h, ffn);
  }
  if (cache) cache->length = past + T;
  out.hidden = rms_norm(x, norm_w_, d.rms_norm_eps);  // (B, T, C)
  if (aux_terms.empty()) {
    out.aux_loss = scalar_tensor(0.0);
  } else {
    Tensor total = aux_terms[0];
    for (size_t i = 1; i < aux_terms.size(); ++i) total = add(total, aux_terms[i]);
    out.aux_loss = scale(total, 1.0 / static_cast<double>(aux_terms.size()));  // ()
  }
  return out;
}

}  // namespace moon::model
