// The contrastive step of docs/training.md sections 1 and 3: a loader batch becomes four views of model rows
// (P, T, V, M), each view is embedded by MoonModel::forward (whole, or in chunks), L_con is computed and
// backpropagated, directly (chunk = 0) or through gradient caching (chunk > 0).
#include "training/contrastive_step.h"

#include <algorithm>

#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"
#include "runtime/error.h"

namespace moon::training {

namespace {

// The rows of `all` that `keep` accepts, with their product indices, over `images`.
View pick_rows(const std::vector<model::InputRow>& all, const Tensor& images,
               bool (*keep)(const model::InputRow&)) {
  View v;
  for (size_t b = 0; b < all.size(); ++b) {
    if (!keep(all[b])) continue;
    v.rows.push_back(all[b]);
    v.product.push_back(static_cast<int64_t>(b));
  }
  bool any_image = false;
  for (const auto& r : v.rows) any_image = any_image || r.image >= 0;
  if (any_image) v.images = images;
  return v;
}

// The four views' embeddings (each (n_X, D); undefined for a view without rows), in P, T, V, M order.
struct Embedded {
  Tensor views[4];
};

const View& view_at(const ContrastiveViews& views, int i) {
  const View* all[4] = {&views.products, &views.text, &views.image, &views.multimodal};
  return *all[i];
}

// The ViewEmbeddings of `views` over the four embeddings.
ViewEmbeddings view_embeddings(const ContrastiveViews& views, const Embedded& e, const Tensor& aux) {
  ViewEmbeddings out;
  out.products = e.views[0], out.text = e.views[1], out.image = e.views[2], out.multimodal = e.views[3];
  out.product_of_text = views.text.product;
  out.product_of_image = views.image.product;
  out.product_of_multimodal = views.multimodal.product;
  out.category = views.category;
  out.aux = aux;
  return out;
}

// Mean of () tensors (undefined for none).
Tensor mean_aux(const std::vector<Tensor>& aux) {
  if (aux.empty()) return Tensor();
  Tensor total = aux[0].reshape({});
  for (size_t i = 1; i < aux.size(); ++i) total = add(total, aux[i].reshape({}));
  return scale(total, 1.0 / static_cast<double>(aux.size()));
}

// One forward over rows [begin, end) of a view.
model::ModelOutput forward_rows(const model::MoonModel& model, const View& view, const model::SpecialTokens& special,
                                int64_t begin, int64_t end) {
  std::vector<model::InputRow> rows(view.rows.begin() + begin, view.rows.begin() + end);
  return model.forward(model::assemble(rows, view.images, special, model.config()));
}

// A copy of every loss part, detached from the graph.
ContrastiveLoss detached(const ContrastiveLoss& loss) {
  ContrastiveLoss out = loss;
  for (Tensor* t : {&out.total, &out.inter, &out.intra, &out.aux, &out.matryoshka})
    if (t->defined()) *t = t->detach();
  return out;
}

// Backward of loss_scale * total when it depends on anything that requires a gradient.
void backward_scaled(const Tensor& total, double loss_scale) {
  if (!total.requires_grad()) return;
  run_backward({total}, {scalar_tensor(loss_scale)}, false);
}

}  // namespace

ContrastiveViews make_views(const io::Batch& batch) {
  MOON_CHECK(batch.token_ids.defined() && batch.token_ids.dim() == 2, "make_views: batch token_ids must be (B, T)");
  const int64_t B = batch.token_ids.size(0);
  MOON_CHECK(batch.attention_mask.defined() && batch.attention_mask.shape() == batch.token_ids.shape(),
             "make_views: batch attention_mask must be (", B, ", ", batch.token_ids.size(1), ") like token_ids");
  MOON_CHECK(batch.has_image.defined() && batch.has_image.numel() == B, "make_views: batch has_image must be (", B,
             ")");
  MOON_CHECK(batch.labels.defined() && batch.labels.numel() == B, "make_views: batch labels must be (", B, ")");
  std::vector<model::InputRow> both = model::rows_from_loader(batch, model::Use::Both);
  std::vector<int64_t> has = batch.has_image.to_vector<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    MOON_CHECK(both[b].image >= 0 || !both[b].text.empty(), "make_views: product ", b,
               " of the batch has neither text nor an image");
    if (has[b])
      MOON_CHECK(batch.images.defined() && batch.images.dim() == 4 && batch.images.size(0) == B,
                 "make_views: product ", b, " has an image but batch images is not (", B, ", 3, S, S)");
  }
  const Tensor& second = batch.images2.defined() ? batch.images2 : batch.images;
  if (batch.images2.defined())
    MOON_CHECK(batch.images2.shape() == batch.images.shape(), "make_views: batch images2 ", batch.images2.desc(),
               " differs in shape from images ", batch.images.desc());
  ContrastiveViews v;
  v.products = pick_rows(both, batch.images, [](const model::InputRow&) { return true; });
  // T: text only; V: image only; M: image (view 2) + text. Each keeps only the products that have it.
  std::vector<model::InputRow> text = both, image = both;
  for (auto& r : text) r.image = -1;
  for (auto& r : image) r.text.clear();
  v.text = pick_rows(text, Tensor(), [](const model::InputRow& r) { return !r.text.empty(); });
  v.image = pick_rows(image, batch.images, [](const model::InputRow& r) { return r.image >= 0; });
  v.multimodal = pick_rows(both, second, [](const model::InputRow& r) { return r.image >= 0 && !r.text.empty(); });
  v.category = batch.labels.to_vector<int64_t>();
  return v;
}

Tensor embed_view(const model::MoonModel& model, const View& view, const model::SpecialTokens& special,
                  int64_t chunk, std::vector<Tensor>* aux) {
  MOON_CHECK(chunk >= 0, "embed_view: chunk must be >= 0, got ", chunk);
  const int64_t n = static_cast<int64_t>(view.rows.size());
  if (n == 0) return Tensor();
  const int64_t step = chunk == 0 ? n : chunk;
  std::vector<Tensor> parts;
  for (int64_t begin = 0; begin < n; begin += step) {
    model::ModelOutput out = forward_rows(model, view, special, begin, std::min(n, begin + step));
    parts.push_back(out.embedding);
    if (aux) aux->push_back(out.aux_loss);
  }
  return parts.size() == 1 ? parts[0] : concat(parts, 0);
}

ContrastiveStepResult contrastive_step(const model::MoonModel& model, const ContrastiveViews& views,
                                       const model::SpecialTokens& special, const Tensor& logit_scale,
                                       const ContrastiveOptions& options, double margin, int64_t chunk,
                                       double loss_scale) {
  MOON_CHECK(chunk >= 0, "contrastive_step: chunk must be >= 0, got ", chunk);
  ContrastiveStepResult result;
  Embedded e;
  std::vector<Tensor> aux;
  if (chunk == 0) {
    for (int i = 0; i < 4; ++i) e.views[i] = embed_view(model, view_at(views, i), special, 0, &aux);
    result.forwards = static_cast<int64_t>(aux.size());
    ContrastiveLoss loss = contrastive_loss(view_embeddings(views, e, mean_aux(aux)), logit_scale, options, margin);
    backward_scaled(loss.total, loss_scale);
    result.loss = detached(loss);
  } else {
    // 1. Every view chunk by chunk without a graph.
    {
      NoGradGuard no_grad;
      for (int i = 0; i < 4; ++i) e.views[i] = embed_view(model, view_at(views, i), special, chunk, &aux);
    }
    const int64_t n_forwards = static_cast<int64_t>(aux.size());
    // 2. L_con on embedding leaves (the aux term is a constant here): dL/de per row, and logit_scale's gradient.
    Embedded leaves;
    for (int i = 0; i < 4; ++i)
      if (e.views[i].defined()) leaves.views[i] = e.views[i].detach().set_requires_grad(true);
    Tensor aux_value = mean_aux(aux);
    ContrastiveLoss loss = contrastive_loss(view_embeddings(views, leaves, aux_value), logit_scale, options, margin);
    backward_scaled(loss.total, loss_scale);
    result.loss = detached(loss);
    // 3. Each chunk again with a graph: backward from its embeddings with the cached gradient, plus its share
    //    of the aux term.
    const double aux_grad = loss_scale * options.aux_weight / static_cast<double>(std::max<int64_t>(1, n_forwards));
    for (int i = 0; i < 4; ++i) {
      if (!leaves.views[i].defined()) continue;
      const View& view = view_at(views, i);
      const Tensor cached = leaves.views[i].grad();  // (n, D), undefined when the loss does not use the view
      const int64_t n = static_cast<int64_t>(view.rows.size());
      for (int64_t begin = 0; begin < n; begin += chunk) {
        const int64_t end = std::min(n, begin + chunk);
        const bool aux_needed = aux_grad != 0 && model.config().moe.enabled;
        if (!cached.defined() && !aux_needed) continue;
        model::ModelOutput out = forward_rows(model, view, special, begin, end);
        ++result.forwards;
        std::vector<Tensor> roots, grads;
        if (cached.defined() && out.embedding.requires_grad()) {
          roots.push_back(out.embedding);
          grads.push_back(cached.slice(0, begin, end).contiguous());
        }
        if (aux_needed && out.aux_loss.requires_grad()) {
          roots.push_back(out.aux_loss);
          grads.push_back(full(out.aux_loss.shape(), aux_grad));
        }
        if (!roots.empty()) run_backward(roots, grads, false);
      }
    }
  }
  if (e.views[3].defined()) result.multimodal = e.views[3].detach();
  result.product_of_multimodal = views.multimodal.product;
  return result;
}

}  // namespace moon::training
