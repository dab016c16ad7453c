// Losses and similarities: cross_entropy (fused log-softmax + NLL with label smoothing), l2_normalize and
// cosine_similarity_matrix. f32 or bf16 inputs (computed in f32; cross_entropy's loss is f32, the other results
// and every input gradient take the input's dtype); all differentiable.
#pragma once

#include "runtime/tensor.h"

namespace moon {

// Mean cross-entropy of logits (N, C) against class indices targets (N) i64, like
// torch.nn.functional.cross_entropy(reduction="mean"):
//   loss_i = logsumexp(x_i) - (1 - s) * x_i[t_i] - s * mean_c(x_i[c])     (s = label_smoothing)
//   loss   = sum over rows with t_i != ignore_index of loss_i, divided by the number of such rows.
// If every row is ignored the loss is 0 (not NaN as in PyTorch's 0/0) and the gradient is 0.
// One fused kernel computes the row max, the log-sum-exp, the loss and (when a gradient is needed) the
// softmax that backward uses: d logits = (softmax - (1 - s) onehot - s / C) * g / count, 0 on ignored rows.
// A target outside [0, C) that is not ignore_index throws naming the row.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100,
                     double label_smoothing = 0.0);

// x / max(||x||_2, eps) along `dim`.
Tensor l2_normalize(const Tensor& x, int64_t dim = -1, double eps = 1e-12);

// (N, M) matrix of cosine similarities between the rows of a (N, D) and of b (M, D):
// l2_normalize(a) @ l2_normalize(b)^T (each row normalised with the given eps).
Tensor cosine_similarity_matrix(const Tensor& a, const Tensor& b, double eps = 1e-8);

}  // namespace moon
