// The Qwen2-style decoder (Hugging Face Qwen2ForCausalLM names, docs/model.md section 4): RMSNorm, RoPE,
// grouped-query attention with q/k/v biases, SwiGLU MLP or modality-driven MoE, a KV cache for generation.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "model/config.h"
#include "model/moe.h"
#include "model/params.h"

namespace moon::model {

// Keys and values of every layer for generation. Preallocated for `capacity` positions; Decoder::forward
// writes the new positions' keys (after RoPE) and values in place at [length, length + T) and attends over
// strided views of [0, length + T): no per-step allocation or copy of the whole cache. Inference only.
struct KVCache {
  std::vector<Tensor> k, v;  // per layer (B, Hkv, capacity, hd) f32
  Tensor keep;               // (B, capacity) u8: 1 where a real key is stored
  int64_t length = 0;        // positions filled
  int64_t capacity = 0;
  static KVCache create(const DecoderConfig& config, int64_t batch, int64_t capacity);
};

struct DecoderOutput {
  Tensor hidden;                      // (B, T, C): model.norm of the last layer's output
  Tensor aux_loss;                    // () mean MoE load-balance loss over layers (0 without MoE)
  std::vector<Tensor> router_counts;  // per layer (E, 3) i64 (empty without MoE)
};

class Decoder {
 public:
  Decoder(const ModelConfig& config, ParamStore& params);  // model.*, lm_head.weight unless tied
  // token_ids (B, T) i64 -> (B, T, C) rows of model.embed_tokens.
  Tensor embed(const Tensor& token_ids) const;
  // x (B, T, C) input embeddings; positions (B, T) i64; keep (B, T) u8; modality (B) i64 (MoE router).
  // before_layer(l, x) may change a layer's input (FIRE); null for none.
  // With a cache: keys/values of these T positions are appended to it, and attention covers the cached
  // positions too (queries are the last T positions; keep marks padding of the new positions).
  DecoderOutput forward(const Tensor& x, const Tensor& positions, const Tensor& keep, const Tensor& modality,
                        const std::function<Tensor(int64_t, const Tensor&)>& before_layer, KVCache* cache,
                        const Compute& compute) const;
  // hidden (..., C) -> logits (..., V) through lm_head (or the tied embedding).
  Tensor logits(const Tensor& hidden, const Compute& compute) const;
  const Tensor& embed_weight() const { return embed_w_; }

 private:
  ModelConfig config_;
  Tensor embed_w_, norm_w_, lm_head_w_;
  struct Layer {
    Tensor in_norm_w, q_w, q_b, k_w, k_b, v_w, v_b, o_w, post_norm_w, gate_w, up_w, down_w;
    std::unique_ptr<MoeFFN> moe;  // set when config.moe.enabled (then gate/up/down are undefined)
  };
  std::vector<Layer> layers_;
};

}  // namespace moon::model
