// Registry entries for matmul, bmm and linear: 2-D, batched with broadcasting, 1-D operands, transposed
// (strided) operands, linear with and without bias, and bf16 inputs.
#include <algorithm>

#include <cmath>

#include "ops/matmul.h"
#include "ops/registry.h"

namespace moon {

namespace {

// The last two dims of a swapped (a materialised transpose).
RefTensor ref_transpose_last(const RefTensor& x) {
  const int64_t r = static_cast<int64_t>(x.shape.size());
  if (r < 2) return x;
  RefTensor out = x;
  const int64_t R = x.shape[r - 2], C = x.shape[r - 1], mats = x.numel() / std::max<int64_t>(R * C, 1);
  std::swap(out.shape[r - 2], out.shape[r - 1]);
  for (int64_t m = 0; m < mats; ++m)
    for (int64_t i = 0; i < R; ++i)
      for (int64_t j = 0; j < C; ++j) out.data[m * R * C + j * R + i] = x.data[m * R * C + i * C + j];
  return out;
}

// torch.matmul in double: 1-D promotion, batch broadcasting.
RefTensor ref_matmul(const RefTensor& a_in, const RefTensor& b_in) {
  RefTensor a = a_in, b = b_in;
  const bool av = a.shape.size() == 1, bv = b.shape.size() == 1;
  if (av) a.shape.insert(a.shape.begin(), 1);
  if (bv) b.shape.push_back(1);
  const Shape ba(a.shape.begin(), a.shape.end() - 2), bb(b.shape.begin(), b.shape.end() - 2);
  const Shape batch = broadcast_shapes(ba, bb, "ref_matmul");
  const int64_t M = a.shape[a.shape.size() - 2], K = a.shape.back(), N = b.shape.back();
  const int64_t nb = shape_numel(batch);
  // Batch offsets of a and b: broadcast each batch index back to the operand.
  auto batch_index = [&](const Shape& own, int64_t flat) {
    std::vector<int64_t> idx(batch.size());
    for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
      idx[d] = flat % batch[d];
      flat /= batch[d];
    }
    int64_t off = 0;
    const size_t lead = batch.size() - own.size();
    for (size_t d = 0; d < own.size(); ++d) off = off * own[d] + (own[d] == 1 ? 0 : idx[d + lead]);
    return off;
  };
  RefTensor out;
  out.shape = batch;
  if (!av) out.shape.push_back(M);
  if (!bv) out.shape.push_back(N);
  out.data.assign(static_cast<size_t>(nb * M * N), 0.0);
  for (int64_t t = 0; t < nb; ++t) {
    const double* pa = a.data.data() + batch_index(ba, t) * M * K;
    const double* pb = b.data.data() + batch_index(bb, t) * K * N;
    double* po = out.data.data() + t * M * N;
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += pa[i * K + k] * pb[k * N + j];
        po[i * N + j] = s;
      }
  }
  return out;
}

// A matmul case: stored input shapes sa, sb; ta / tb: the op sees the input transposed (a strided view).
OpCase matmul_case(CaseGen& g, const Shape& sa, const Shape& sb, bool ta, bool tb, DType dtype = DType::F32) {
  OpCase c;
  c.desc = shape_str(sa) + (ta ? ".mT" : "") + " @ " + shape_str(sb) + (tb ? ".mT" : "");
  Tensor a = g.normal(sa), b = g.normal(sb);
  if (dtype == DType::BF16) {
    a = a.to(DType::BF16);
    b = b.to(DType::BF16);
    c.desc += " bf16";
    // Inputs are exactly bf16, so the double reference sees the same values; the bf16 rounding of the
    // result (relative 2^-9) and, in backward, of the incoming and the leaf gradients need more slack.
    c.fwd_tol = 4e-3;
    c.grad_tol = 3e-2;
  }
  c.inputs = {a, b};
  c.run = [ta, tb](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{matmul(ta ? in[0].mT() : in[0], tb ? in[1].mT() : in[1])};
  };
  c.reference = [ta, tb](const std::vector<RefTensor>& in) {
    return std::vector<RefTensor>{ref_matmul(ta ? ref_transpose_last(in[0]) : in[0], tb ? ref_transpose_last(in[1]) : in[1])};
  };
  c.grad_inputs = {0, 1};
  return c;
}

// linear reference: x (..., in) @ W^T + b.
RefTensor ref_linear(const RefTensor& x, const RefTensor& w, const RefTensor* bias) {
  RefTensor y = ref_matmul(x, ref_transpose_last(w));
  if (bias) {
    const int64_t out_f = w.shape[0];
    for (int64_t i = 0; i < y.numel(); ++i) y.data[i] += bias->data[i % out_f];
  }
  return y;
}

}  // namespace

void register_matmul_ops(std::vector<OpInfo>& r) {
  // (n, K) @ (K, N), with either operand possibly a transposed view.
  r.push_back(op_entry("matmul", "matmul", 2, [](CaseGen& g) {
    const int64_t n = g.small(), K = g.pick(1, 9), N = g.pick(1, 6);
    const int64_t v = g.pick(0, 3);
    const bool ta = v == 1 || v == 3, tb = v == 2 || v == 3;
    return matmul_case(g, ta ? Shape{K, n} : Shape{n, K}, tb ? Shape{N, K} : Shape{K, N}, ta, tb);
  }));
  // Batch broadcasting: (2, 1, n, K) @ (3, K, N), (B, n, K) @ (K, N) (folds into one GEMM),
  // (K, n) @ (2, K, N) (left broadcast), and (B, n, K) @ (B, N, K).mT.
  r.push_back(op_entry("matmul_batched", "matmul", 2, [](CaseGen& g) {
    const int64_t n = g.small(), K = g.pick(1, 7), N = g.pick(1, 5);
    switch (g.pick(0, 3)) {
      case 0: return matmul_case(g, {2, 1, n, K}, {3, K, N}, false, false);
      case 1: return matmul_case(g, {2, n, K}, {K, N}, false, false);
      case 2: return matmul_case(g, {K, n}, {2, K, N}, true, false);
      default: return matmul_case(g, {3, n, K}, {3, N, K}, false, true);
    }
  }));
  // 1-D operands: (K)@(K), (n,K)@(K), (K)@(K,n), (K)@(2,K,n), (2,n,K)@(K).
  r.push_back(op_entry("matmul_1d", "matmul", 2, [](CaseGen& g) {
    const int64_t n = g.small(), K = g.pick(1, 9);
    switch (g.pick(0, 4)) {
      case 0: return matmul_case(g, {K * n}, {K * n}, false, false);
      case 1: return matmul_case(g, {n, K}, {K}, false, false);
      case 2: return matmul_case(g, {K}, {K, n}, false, false);
      case 3: return matmul_case(g, {K}, {2, K, n}, false, false);
      default: return matmul_case(g, {2, n, K}, {K}, false, false);
    }
  }));
  r.push_back(op_entry("bmm", "matmul", 2, [](CaseGen& g) {
    const int64_t n = g.small(), K = g.pick(1, 7), N = g.pick(1, 5), B = g.pick(1, 3);
    OpCase c = matmul_case(g, {B, n, K}, {B, K, N}, false, false);
    c.run = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{bmm(in[0], in[1])}; };
    return c;
  }));
  // bf16 operands (f32 accumulation, bf16 result), 2-D and batched with a transposed right operand.
  r.push_back(op_entry("matmul_bf16", "matmul", 2, [](CaseGen& g) {
    const int64_t n = g.small(), K = g.pick(1, 9), N = g.pick(1, 6);
    if (g.pick(0, 1) == 0) return matmul_case(g, {n, K}, {K, N}, false, false, DType::BF16);
    return matmul_case(g, {2, n, K}, {2, N, K}, false, true, DType::BF16);
  }));
  // linear with bias: x (2, n, in) or (in).
  r.push_back(op_entry("linear", "matmul", 3, [](CaseGen& g) {
    const int64_t n = g.small(), in_f = g.pick(1, 8), out_f = g.pick(1, 6);
    const bool vec = g.pick(0, 3) == 0;
    OpCase c;
    const Shape xs = vec ? Shape{in_f} : Shape{2, n, in_f};
    c.desc = "x " + shape_str(xs) + ", W (" + std::to_string(out_f) + ", " + std::to_string(in_f) + "), bias";
    c.inputs = {g.normal(xs), g.normal({out_f, in_f}), g.normal({out_f})};
    c.run = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{linear(in[0], in[1], in[2])}; };
    c.reference = [](const std::vector<RefTensor>& in) {
      return std::vector<RefTensor>{ref_linear(in[0], in[1], &in[2])};
    };
    c.grad_inputs = {0, 1, 2};
    return c;
  }));
  // linear + GELU (erf and tanh forms): fused into the GEMM's epilogue in the harness's forward (no autograd),
  // linear then gelu when gradients are checked. x (2, n, in), with or without bias.
  for (GeluApprox approx : {GeluApprox::Erf, GeluApprox::Tanh}) {
    const std::string name = approx == GeluApprox::Erf ? "linear_gelu" : "linear_gelu_tanh";
    r.push_back(op_entry(name, "matmul", 3, [approx](CaseGen& g) {
      const int64_t n = g.small(), in_f = g.pick(1, 8), out_f = g.pick(1, 6);
      const bool with_bias = g.pick(0, 2) != 0;
      OpCase c;
      c.desc = "x (2, " + std::to_string(n) + ", " + std::to_string(in_f) + "), W (" + std::to_string(out_f) + ", " +
               std::to_string(in_f) + ")" + (with_bias ? ", bias" : "");
      c.inputs = {g.normal({2, n, in_f}), g.normal({out_f, in_f}), g.normal({out_f})};
      c.run = [approx, with_bias](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{linear_gelu(in[0], in[1], with_bias ? in[2] : Tensor(), approx)};
      };
      c.reference = [approx, with_bias](const std::vector<RefTensor>& in) {
        RefTensor y = ref_linear(in[0], in[1], with_bias ? &in[2] : nullptr);
        for (double& v : y.data)
          v = approx == GeluApprox::Erf ? 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)))
                                        : 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
        return std::vector<RefTensor>{y};
      };
      c.grad_inputs = with_bias ? std::vector<int>{0, 1, 2} : std::vector<int>{0, 1};
      return c;
    }));
  }
  // linear without bias: x (n, in) or a transposed view of it.
  r.push_back(op_entry("linear_nobias", "matmul", 2, [](CaseGen& g) {
    const int64_t n = g.small(), in_f = g.pick(1, 8), out_f = g.pick(1, 6);
    const bool tx = g.pick(0, 1) == 1;
    OpCase c;
    c.desc = "x (" + std::to_string(n) + ", " + std::to_string(in_f) + ")" + (tx ? " as a transposed view" : "") +
             ", W (" + std::to_string(out_f) + ", " + std::to_string(in_f) + ")";
    c.inputs = {tx ? g.normal({in_f, n}) : g.normal({n, in_f}), g.normal({out_f, in_f})};
    c.run = [tx](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{linear(tx ? in[0].mT() : in[0], in[1])};
    };
    c.reference = [tx](const std::vector<RefTensor>& in) {
      return std::vector<RefTensor>{ref_linear(tx ? ref_transpose_last(in[0]) : in[0], in[1], nullptr)};
    };
    c.grad_inputs = {0, 1};
    return c;
  }));
}

}  // namespace moon
