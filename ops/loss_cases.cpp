// Registry entries for cross_entropy, l2_normalize and cosine_similarity_matrix.
#include <algorithm>
#include <cmath>

#include "ops/loss.h"
#include "ops/registry.h"

namespace moon {

namespace {

// Mean smoothed cross-entropy in double.
RefTensor ref_cross_entropy(const RefTensor& x, const RefTensor& t, int64_t ignore, double s) {
  const int64_t N = x.shape[0], C = x.shape[1];
  double total = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t ti = static_cast<int64_t>(t.data[i]);
    if (ti == ignore) continue;
    const double* r = x.data.data() + i * C;
    double m = r[0], sum = 0, sx = 0;
    for (int64_t j = 0; j < C; ++j) m = std::max(m, r[j]);
    for (int64_t j = 0; j < C; ++j) {
      sum += std::exp(r[j] - m);
      sx += r[j];
    }
    total += m + std::log(sum) - (1 - s) * r[ti] - s * sx / static_cast<double>(C);
    ++count;
  }
  return RefTensor{{}, {count ? total / static_cast<double>(count) : 0.0}};
}

// Rows of (outer, len, inner) normalised along the middle axis, in double.
RefTensor ref_l2_normalize(const RefTensor& x, int64_t dim, double eps) {
  const DimSplit s = ref_split(x.shape, dim);
  RefTensor y = x;
  for (int64_t o = 0; o < s.outer; ++o)
    for (int64_t j = 0; j < s.inner; ++j) {
      double n2 = 0;
      for (int64_t k = 0; k < s.size; ++k) n2 += x.data[(o * s.size + k) * s.inner + j] * x.data[(o * s.size + k) * s.inner + j];
      const double d = std::max(std::sqrt(n2), eps);
      for (int64_t k = 0; k < s.size; ++k) y.data[(o * s.size + k) * s.inner + j] /= d;
    }
  return y;
}

}  // namespace

void register_loss_ops(std::vector<OpInfo>& r) {
  // Logits (n, C); about a third of the rows ignored (ignore_index -100 or a custom one); smoothing 0 or 0.1.
  r.push_back(op_entry("cross_entropy", "loss", 2, [](CaseGen& g) {
    const int64_t N = g.small(), C = g.pick(1, 4) == 1 ? g.pick(2, 5) : g.pick(2, 40);
    const double s = g.pick(0, 1) ? 0.1 : 0.0;
    const int64_t ignore = g.pick(0, 1) ? -100 : 0;
    Tensor t = g.integers({N}, 0, C);
    Tensor u = g.uniform({N}, 0.0, 1.0);
    int64_t* tp = t.data<int64_t>();
    const float* up = u.data<float>();
    for (int64_t i = 0; i < N; ++i)
      if (up[i] < 0.3f) tp[i] = ignore;
    OpCase c;
    c.desc = "logits (" + std::to_string(N) + ", " + std::to_string(C) + ") ignore_index=" + std::to_string(ignore) +
             " smoothing=" + (s > 0 ? "0.1" : "0");
    c.inputs = {g.normal({N, C}, 2.0), t};
    c.run = [ignore, s](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{cross_entropy(in[0], in[1], ignore, s)};
    };
    c.reference = [ignore, s](const std::vector<RefTensor>& in) {
      return std::vector<RefTensor>{ref_cross_entropy(in[0], in[1], ignore, s)};
    };
    c.grad_inputs = {0};
    c.fwd_tol = 5e-5;
    return c;
  }));
  r.back().f32_outputs = true;  // bf16 logits give an f32 loss
  // x (n, D) along -1, (2, n, D) along -1, or (n, D, 3) along dim 1.
  r.push_back(op_entry("l2_normalize", "loss", 1, [](CaseGen& g) {
    const int64_t n = g.small(), D = g.pick(1, 40), v = g.pick(0, 2);
    const Shape shape = v == 0 ? Shape{n, D} : v == 1 ? Shape{2, n, D} : Shape{n, D, 3};
    const int64_t dim = v == 2 ? 1 : -1;
    OpCase c;
    c.desc = shape_str(shape) + " dim=" + std::to_string(dim);
    c.inputs = {g.away_from_zero(shape, 0.2, 2.0)};
    c.run = [dim](const std::vector<Tensor>& in) { return std::vector<Tensor>{l2_normalize(in[0], dim)}; };
    c.reference = [dim, shape](const std::vector<RefTensor>& in) {
      return std::vector<RefTensor>{ref_l2_normalize(in[0], dim < 0 ? static_cast<int64_t>(shape.size()) - 1 : dim, 1e-12)};
    };
    c.grad_inputs = {0};
    return c;
  }));
  // a (n, D), b (M, D) -> (n, M).
  r.push_back(op_entry("cosine_similarity_matrix", "loss", 2, [](CaseGen& g) {
    const int64_t n = g.small(), M = g.pick(1, 6), D = g.pick(1, 24);
    OpCase c;
    c.desc = "a (" + std::to_string(n) + ", " + std::to_string(D) + "), b (" + std::to_string(M) + ", " +
             std::to_string(D) + ")";
    c.inputs = {g.away_from_zero({n, D}, 0.2, 2.0), g.away_from_zero({M, D}, 0.2, 2.0)};
    c.run = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{cosine_similarity_matrix(in[0], in[1])}; };
    c.reference = [](const std::vector<RefTensor>& in) {
      const RefTensor a = ref_l2_normalize(in[0], 1, 1e-8), b = ref_l2_normalize(in[1], 1, 1e-8);
      const int64_t N = a.shape[0], M = b.shape[0], D = a.shape[1];
      RefTensor out{{N, M}, std::vector<double>(static_cast<size_t>(N * M), 0.0)};
      for (int64_t i = 0; i < N; ++i)
        for (int64_t j = 0; j < M; ++j)
          for (int64_t k = 0; k < D; ++k) out.data[i * M + j] += a.data[i * D + k] * b.data[j * D + k];
      return std::vector<RefTensor>{out};
    };
    c.grad_inputs = {0, 1};
    return c;
  }));
}

}  // namespace moon
