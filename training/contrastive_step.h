// One contrastive forward + backward on a data-loader batch: the four views (docs/training.md section 1),
// their embeddings, L_con, and gradient caching (section 3) for batches larger than memory allows.
#pragma once
#include <cstdint>
#include <vector>

#include "io/data_loader.h"
#include "model/moon_model.h"
#include "training/contrastive.h"

namespace moon::training {

// The rows of one view, and which product (row of the batch) each is.
struct View {
  std::vector<model::InputRow> rows;  // InputRow::image indexes `images`
  Tensor images;                      // (n, 3, S, S) f32: the loader's images or images2 (undefined: none)
  std::vector<int64_t> product;       // (rows) index of the row's product in the batch
};

struct ContrastiveViews {
  View products, text, image, multimodal;
  std::vector<int64_t> category;  // (B) the loader's labels
};

// The views of a loader batch (built with views = 2; without images2, M uses view 1).
ContrastiveViews make_views(const io::Batch& batch);

// The embeddings of a view, (n, D), with autograd when grad mode is on. Runs forwards of at most `chunk` rows
// (0: one forward); each forward's aux_loss is appended to `aux` (when not null).
Tensor embed_view(const model::MoonModel& model, const View& view, const model::SpecialTokens& special,
                  int64_t chunk, std::vector<Tensor>* aux);

struct ContrastiveStepResult {
  ContrastiveLoss loss;   // detached values
  Tensor multimodal;      // (n_M, D) the M view's embeddings, detached (GRPO's positives and negatives)
  std::vector<int64_t> product_of_multimodal;
  int64_t forwards = 0;   // model forward calls with gradient (for throughput)
};

// Forward + backward of loss_scale * L_con: gradients accumulate into the model's parameters and
// logit_scale. chunk = 0 embeds each view in one forward; chunk > 0 uses gradient caching (section 3).
ContrastiveStepResult contrastive_step(const model::MoonModel& model, const ContrastiveViews& views,
                                       const model::SpecialTokens& special, const Tensor& logit_scale,
                                       const ContrastiveOptions& options, double margin, int64_t chunk,
                                       double loss_scale = 1.0);

}  // namespace moon::training
