// MoonModel: the whole MOON3.0 model (docs/model.md): vision encoder, projector, decoder (with MoE), FIRE,
// pooling, fusion and the embedding head, wired per the config's switches.
//
//   auto model = MoonModel(load_config("tiny"));
//   ModelOutput out = model.forward(assemble(rows, images, special, model.config()));
//   out.embedding  // (B, D) L2-normalised
#pragma once
#include <memory>
#include <vector>

#include "model/config.h"
#include "model/decoder.h"
#include "model/fire.h"
#include "model/fusion.h"
#include "model/inputs.h"
#include "model/params.h"
#include "model/vision.h"

namespace moon::model {

struct ModelOutput {
  Tensor embedding;                   // (B, D) L2-normalised
  Tensor pooled;                      // (B, C) s: pooled final hidden state
  Tensor hidden;                      // (B, T, C) final hidden state (after model.norm)
  Tensor aux_loss;                    // () MoE load-balance loss (0 without MoE)
  std::vector<Tensor> router_counts;  // per decoder layer (E, 3) i64, MoE only
};

class MoonModel {
 public:
  // Fresh parameters, initialised from config.init_seed (docs/model.md section 9).
  explicit MoonModel(const ModelConfig& config);
  const ModelConfig& config() const { return config_; }
  ParamStore& params() { return params_; }
  const ParamStore& params() const { return params_; }
  Compute& compute() { return compute_; }
  const Compute& compute() const { return compute_; }

  ModelOutput forward(const ModelBatch& batch) const;

  // The decoder input embeddings of a batch (token embeddings with the vision tokens placed) and what FIRE
  // needs, shared by forward() and generation's prefill.
  struct Prepared {
    Tensor inputs;                 // (B, T, C)
    Tensor token_embeds;           // (B, T, C) raw token embeddings
    Tensor features;               // (Bi, N, Cv) vision features (undefined without images)
    std::vector<Tensor> fire;      // FIRE's r_j (empty when off or without images)
  };
  Prepared prepare(const ModelBatch& batch) const;
  // The FIRE hook for decoder.forward (null when FIRE is off or the batch has no image).
  std::function<Tensor(int64_t, const Tensor&)> fire_hook(const Prepared& prepared, const ModelBatch& batch) const;

  const VisionEncoder& vision() const { return *vision_; }
  const Decoder& decoder() const { return *decoder_; }

 private:
  ModelConfig config_;
  ParamStore params_;
  Compute compute_;
  std::unique_ptr<VisionEncoder> vision_;
  std::unique_ptr<Projector> projector_;
  std::unique_ptr<Decoder> decoder_;
  std::unique_ptr<Fire> fire_;      // when config.fire.enabled
  std::unique_ptr<Fusion> fusion_;  // when config.fusion.enabled
  Tensor head_w_, head_b_;
  Tensor image_head_w_, image_head_b_;  // architecture "dual": the image tower's head

  // architecture "dual" (docs/model.md section 11): the text tower over the rows' text and the image tower.
  ModelOutput forward_dual(const ModelBatch& batch) const;
  Tensor pool(const Tensor& hidden, const Tensor& pool_mask, const Tensor& emb_index) const;  // (B, C)
};

// e[:, :d] re-normalised (a Matryoshka prefix). d in [1, D].
Tensor embedding_prefix(const Tensor& embedding, int64_t d);

// The contrastive loss of docs/model.md section 10 (used by the parity tests): rows split in halves.
Tensor parity_loss(const ModelOutput& out, const ModelConfig& config);

}  // namespace moon::model
