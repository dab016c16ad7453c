// matmul, linear, bmm: shape logic, autograd, and the N-d strided GEMM driver over ops/cpu/gemm_onednn.h.
#include "ops/matmul.h"

#include <algorithm>
#include <vector>

#include "ops/cpu/gemm_onednn.h"
#include "ops/cuda/matmul_cuda.h"
#include "ops/cuda/norm_cuda.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

// ---------------------------------------------------------------------------------------------------------
// The N-d driver.
//
// out (S..., M, N) = A (S..., M, K) @ B (S..., K, N) [+ bias (N)], all three with the same batch sizes S.
// A and B may have batch stride 0 (broadcast). A batch dimension where `out` has stride 0 is a *reduced*
// dimension: its products are summed into the same output matrix (used by the backward of a broadcast
// operand). Reduced dimensions are folded into the GEMM's K when the strides allow (one GEMM), otherwise
// accumulated by successive GEMMs. Kept batch dimensions fold into M when B is broadcast over them, else
// merge into the GEMM's batch, else loop. Nothing is copied here. Each GEMM runs on the tensors' device
// through g_gemm (oneDNN on the CPU, cuBLASLt on CUDA); all pointers are device pointers.
using GemmFn = void (*)(const cpu::GemmArgs& args, Device device);
void gemm_cpu(const cpu::GemmArgs& args, Device) { cpu::gemm(args); }
KernelTable<GemmFn> g_gemm{"matmul", {gemm_cpu, MOON_CUDA_KERNEL(cuda::gemm)}};

void matmul_nd(const Tensor& out, const Tensor& A, const Tensor& B, const float* bias,
               cpu::GemmEpilogue epilogue = cpu::GemmEpilogue::None) {
  const int64_t r = out.dim();
  const int64_t M = out.size(r - 2), N = out.size(r - 1), K = A.size(r - 1);
  if (out.numel() == 0) return;
  const bool bf16 = A.dtype() == DType::BF16;
  const int64_t esize = static_cast<int64_t>(dtype_size(A.dtype()));

  struct Dim {
    int64_t size, sa, sb, sc;
  };
  std::vector<Dim> kept, reduced;  // outermost first
  for (int64_t d = 0; d < r - 2; ++d) {
    if (out.size(d) == 1) continue;
    const Dim dim{out.size(d), A.stride(d), B.stride(d), out.stride(d)};
    (dim.sc == 0 ? reduced : kept).push_back(dim);
  }
  MOON_CHECK((!bias && epilogue == cpu::GemmEpilogue::None) || reduced.empty(),
             "matmul: internal error: a bias or epilogue with a reduced batch dimension");

  int64_t Mf = M, Kf = K;
  const int64_t sam = A.stride(r - 2), sak = A.stride(r - 1);
  const int64_t sbk = B.stride(r - 2), sbn = B.stride(r - 1);
  const int64_t scm = out.stride(r - 2), scn = out.stride(r - 1);

  // Reduced dims into K, innermost first: k' = (d, k) needs stride(d) == Kf * stride(k) in A and B.
  for (int64_t i = static_cast<int64_t>(reduced.size()) - 1; i >= 0; --i) {
    const Dim& d = reduced[i];
    if (d.sa == Kf * sak && d.sb == Kf * sbk) {
      Kf *= d.size;
      reduced.erase(reduced.begin() + i);
    }
  }
  // Kept dims over which B is broadcast into M, innermost first: m' = (d, m) in A and out.
  for (int64_t i = static_cast<int64_t>(kept.size()) - 1; i >= 0; --i) {
    const Dim& d = kept[i];
    if (d.sb == 0 && d.sa == Mf * sam && d.sc == Mf * scm) {
      Mf *= d.size;
      kept.erase(kept.begin() + i);
    } else {
      break;  // keep m' a single-stride run: only fold a contiguous innermost run
    }
  }
  // The innermost kept dims that stack regularly become the GEMM batch.
  Dim g{1, 0, 0, 0};
  if (!kept.empty()) {
    g = kept.back();
    kept.pop_back();
    while (!kept.empty()) {
      const Dim& d = kept.back();
      if (d.sa != g.size * g.sa || d.sb != g.size * g.sb || d.sc != g.size * g.sc) break;
      g.size *= d.size;
      kept.pop_back();
    }
  }

  cpu::GemmArgs args;
  args.batch = g.size;
  args.M = Mf;
  args.N = N;
  args.K = Kf;
  args.in_dtype = bf16 ? cpu::GemmDType::BF16 : cpu::GemmDType::F32;
  args.a_stride[0] = g.sa, args.a_stride[1] = sam, args.a_stride[2] = sak;
  args.b_stride[0] = g.sb, args.b_stride[1] = sbk, args.b_stride[2] = sbn;
  args.c_stride[0] = g.sc, args.c_stride[1] = scm, args.c_stride[2] = scn;
  args.bias = bias;
  args.epilogue = epilogue;

  const char* a0 = static_cast<const char*>(A.raw_data());
  const char* b0 = static_cast<const char*>(B.raw_data());
  MOON_CHECK(out.dtype() == DType::F32, "matmul: internal error: output ", out.desc(), " is not f32");
  float* c0 = static_cast<float*>(out.raw_data());
  const GemmFn gemm = g_gemm.get(out.device());
  // Loop over the leftover kept dims (outer) and reduced dims (inner, accumulating after the first).
  std::vector<Dim> loop = kept;
  loop.insert(loop.end(), reduced.begin(), reduced.end());
  int64_t n_kept = 1, n_red = 1;
  for (const Dim& d : kept) n_kept *= d.size;
  for (const Dim& d : reduced) n_red *= d.size;
  std::vector<int64_t> idx(loop.size(), 0);
  for (int64_t it = 0; it < n_kept * n_red; ++it) {
    int64_t rem = it, oa = 0, ob = 0, oc = 0;
    for (int64_t j = static_cast<int64_t>(loop.size()) - 1; j >= 0; --j) {
      const int64_t i = rem % loop[j].size;
      rem /= loop[j].size;
      oa += i * loop[j].sa;
      ob += i * loop[j].sb;
      oc += i * loop[j].sc;
    }
    args.A = a0 + oa * esize;
    args.B = b0 + ob * esize;
    args.C = c0 + oc;
    args.accumulate = (it % n_red) != 0;
    gemm(args, out.device());
  }
}


// out[j] = sum_i g[i, j] over the rows of a (R, C) view: the bias gradient.
void column_sum_cpu(const Tensor& g, const Tensor& out) {
  const int64_t R = g.size(0), C = g.size(1), rs = g.stride(0), cs = g.stride(1);
  const float* p = g.data<float>();
  float* o = out.data<float>();
  constexpr int64_t kBlock = 256;  // columns per task: each task sums all rows of one column block
#pragma omp parallel for schedule(static) if (R * C > (1 << 16))
  for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
    const int64_t c1 = std::min(C, c0 + kBlock);
    float acc[kBlock];
    for (int64_t c = c0; c < c1; ++c) acc[c - c0] = 0.0f;
    for (int64_t i = 0; i < R; ++i) {
      const float* row = p + i * rs;
      if (cs == 1) {
        for (int64_t c = c0; c < c1; ++c) acc[c - c0] += row[c];
      } else {
        for (int64_t c = c0; c < c1; ++c) acc[c - c0] += row[c * cs];
      }
    }
    for (int64_t c = c0; c < c1; ++c) o[c] = acc[c - c0];
  }
}

using ColumnSumFn = void (*)(const Tensor& g, const Tensor& out);
KernelTable<ColumnSumFn> g_column_sum{"linear bias backward", {column_sum_cpu, MOON_CUDA_KERNEL(cuda::column_sum)}};

// ---------------------------------------------------------------------------------------------------------
// Helpers on raw views (no autograd: the ops record one node each).

// t (..., R, C) as a view whose leading dims are `batch` (broadcast: stride 0 where t has none or size 1).
Tensor expand_batch(const Tensor& t, const Shape& batch) {
  const int64_t nb = static_cast<int64_t>(batch.size()), lead = t.dim() - 2;
  Shape shape = batch;
  Strides strides(nb, 0);
  for (int64_t d = 0; d < lead; ++d) {
    const int64_t od = nb - lead + d;
    strides[od] = t.size(d) == 1 ? 0 : t.stride(d);
  }
  for (int64_t d = lead; d < t.dim(); ++d) {
    shape.push_back(t.size(d));
    strides.push_back(t.stride(d));
  }
  return make_view(t, shape, strides, t.offset());
}

// Swaps the last two dims of a raw view.
Tensor swap_last(const Tensor& t) {
  Shape s = t.shape();
  Strides st = t.strides();
  const int64_t r = t.dim();
  std::swap(s[r - 1], s[r - 2]);
  std::swap(st[r - 1], st[r - 2]);
  return make_view(t, s, st, t.offset());
}

// A fresh f32 tensor of `shape`, (..., R, C), seen as a view with leading dims `batch` (stride 0 on
// broadcast dims, which the driver then sums over).
struct GradBuffer {
  Tensor storage;   // `shape`, contiguous
  Tensor expanded;  // batch + last two dims
};
GradBuffer grad_buffer(const Shape& shape, const Shape& batch, Device device) {
  GradBuffer gb;
  gb.storage = empty(shape, DType::F32, device);
  gb.expanded = expand_batch(gb.storage, batch);
  return gb;
}

// A gradient of the result shape (promoted dims removed) as a view of the full (batch..., M, N) shape: the
// size-1 M dim (1-D left operand) and N dim (1-D right operand) are put back.
Tensor regrow(const Tensor& g, const Shape& full_shape, bool a_vec, bool b_vec) {
  Shape s = g.shape();
  Strides st = g.strides();
  const size_t nb = full_shape.size() - 2;
  if (a_vec) {
    s.insert(s.begin() + nb, 1);
    st.insert(st.begin() + nb, 1);
  }
  if (b_vec) {
    s.push_back(1);
    st.push_back(1);
  }
  return make_view(g, s, st, g.offset());
}

Tensor as_bf16_if(const Tensor& g, bool bf16) { return bf16 && g.dtype() != DType::BF16 ? g.to(DType::BF16) : g; }

std::string pair_str(const Tensor& a, const Tensor& b) { return a.shape_str() + " @ " + b.shape_str(); }

void check_operands(const char* op, const Tensor& a, const Tensor& b) {
  MOON_CHECK(a.defined() && b.defined(), op, ": an operand is an undefined tensor");
  MOON_CHECK(a.device() == b.device(), op, ": operands are on different devices: ", a.desc(), " and ", b.desc(),
             "; move one with .to(device)");
  MOON_CHECK(a.dtype() == b.dtype() && (a.dtype() == DType::F32 || a.dtype() == DType::BF16), op,
             ": expected two f32 or two bf16 operands, got ", a.desc(), " and ", b.desc(),
             "; convert with .to(DType::F32) or .to(DType::BF16)");
}

// The core: a2 (..., M, K) @ b2 (..., K, N) with the batch dims broadcast, as a fresh (batch..., M, N) in the
// operands' dtype. The GEMM accumulates and writes f32 (the epilogue applied in f32); bf16 operands get the
// f32 result rounded once.
Tensor matmul_forward(const Tensor& a2, const Tensor& b2, const Shape& batch, const float* bias,
                      cpu::GemmEpilogue epilogue = cpu::GemmEpilogue::None, bool f32_out = false) {
  Shape out_shape = batch;
  out_shape.push_back(a2.size(-2));
  out_shape.push_back(b2.size(-1));
  Tensor out = empty(out_shape, DType::F32, a2.device());  // (batch..., M, N) f32
  matmul_nd(out, expand_batch(a2, batch), expand_batch(b2, batch), bias, epilogue);
  return a2.dtype() == DType::BF16 && !f32_out ? out.to(DType::BF16) : out;
}

// Gradients of a2 (..., M, K) and b2 (..., K, N) given g (batch..., M, N); each summed to its own shape.
Tensor grad_lhs(const Tensor& g, const Tensor& b2, const Shape& a2_shape, const Shape& batch) {
  GradBuffer ga = grad_buffer(a2_shape, batch, g.device());
  matmul_nd(ga.expanded, g, swap_last(expand_batch(b2, batch)), nullptr);  // dC @ B^T
  return ga.storage;
}
Tensor grad_rhs(const Tensor& g, const Tensor& a2, const Shape& b2_shape, const Shape& batch) {
  GradBuffer gb = grad_buffer(b2_shape, batch, g.device());
  matmul_nd(gb.expanded, swap_last(expand_batch(a2, batch)), g, nullptr);  // A^T @ dC
  return gb.storage;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_operands("matmul", a, b);
  MOON_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: ", pair_str(a, b),
             ": both operands need at least one dimension; multiply by a scalar with mul() or scale()");
  const int64_t ka = a.size(-1), kb = b.dim() == 1 ? b.size(0) : b.size(-2);
  MOON_CHECK(ka == kb, "matmul: ", pair_str(a, b), ": inner dimensions ", ka, " and ", kb,
             " differ; the last dim of the left operand must equal the ",
             b.dim() == 1 ? "length" : "second-to-last dim", " of the right one (transpose one with .mT()?)");
  // Promote 1-D operands: (K) -> (1, K) on the left, (K) -> (K, 1) on the right.
  const Tensor a2 = a.dim() == 1 ? make_view(a, {1, ka}, {ka * a.stride(0), a.stride(0)}, a.offset()) : a;
  const Tensor b2 = b.dim() == 1 ? make_view(b, {kb, 1}, {b.stride(0), 1}, b.offset()) : b;
  const Shape ba(a2.shape().begin(), a2.shape().end() - 2), bb(b2.shape().begin(), b2.shape().end() - 2);
  Shape batch;
  {
    const size_t nb = std::max(ba.size(), bb.size());
    batch.resize(nb);
    for (size_t i = 0; i < nb; ++i) {
      const int64_t x = i < nb - ba.size() ? 1 : ba[i - (nb - ba.size())];
      const int64_t y = i < nb - bb.size() ? 1 : bb[i - (nb - bb.size())];
      MOON_CHECK(x == y || x == 1 || y == 1, "matmul: ", pair_str(a, b), ": batch dimensions ", shape_str(ba),
                 " and ", shape_str(bb), " do not broadcast (sizes ", x, " and ", y, ")");
      batch[i] = x == 1 ? y : x;
    }
  }
  Tensor full = matmul_forward(a2, b2, batch, nullptr);
  // The result shape: the promoted dims removed again.
  Shape rs = batch;
  if (a.dim() > 1) rs.push_back(a2.size(-2));
  if (b.dim() > 1) rs.push_back(b2.size(-1));
  Tensor out = rs == full.shape() ? full : make_view(full, rs, contiguous_strides(rs), 0);

  if (needs_grad({&a, &b})) {
    SavedTensor sa(a, "matmul"), sb(b, "matmul");
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    const Shape full_shape = full.shape();
    record_op("matmul", {a, b}, {out}, [sa, sb, ga, gb, batch, full_shape](const std::vector<Tensor>& gs) {
      const Tensor& x = sa.get();
      const Tensor& y = sb.get();
      const bool bf16 = x.dtype() == DType::BF16;
      const int64_t k = x.size(-1);
      const Tensor x2 = x.dim() == 1 ? make_view(x, {1, k}, {k * x.stride(0), x.stride(0)}, x.offset()) : x;
      const Tensor y2 = y.dim() == 1 ? make_view(y, {k, 1}, {y.stride(0), 1}, y.offset()) : y;
      const Tensor g = regrow(as_bf16_if(gs[0], bf16), full_shape, x.dim() == 1, y.dim() == 1);  // (batch.., M, N)
      std::vector<Tensor> res(2);
      if (ga) res[0] = grad_lhs(g, y2, x2.shape(), batch).view(x.shape()).to(x.dtype());
      if (gb) res[1] = grad_rhs(g, x2, y2.shape(), batch).view(y.shape()).to(y.dtype());
      return res;
    });
  }
  return out;
}

Tensor bmm(const Tensor& a, const Tensor& b) {
  check_operands("bmm", a, b);
  MOON_CHECK(a.dim() == 3 && b.dim() == 3, "bmm: ", pair_str(a, b),
             ": expected two 3-D tensors (B, M, K) and (B, K, N); use matmul() for other ranks or broadcasting");
  MOON_CHECK(a.size(0) == b.size(0), "bmm: ", pair_str(a, b), ": batch sizes ", a.size(0), " and ", b.size(0),
             " differ; bmm does not broadcast (use matmul())");
  MOON_CHECK(a.size(2) == b.size(1), "bmm: ", pair_str(a, b), ": inner dimensions ", a.size(2), " and ", b.size(1),
             " differ");
  return matmul(a, b);
}

namespace {

// linear's forward without autograd: checks, the bias as a dense f32 vector (converted differentiably when it
// is not one), and the product (batch..., R, out) with `epilogue`, viewed as x's shape with out_features last.
struct LinearForward {
  Tensor bias;        // (out) f32 dense, or undefined
  Tensor full;        // (batch..., R, out)
  Tensor out;         // x.shape()[:-1] + (out)
  Shape batch;
};
LinearForward linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias_in, cpu::GemmEpilogue epilogue,
                             DType out_dtype) {
  check_operands("linear", x, weight);
  MOON_CHECK(weight.dim() == 2, "linear: weight ", weight.desc(), " must be 2-D (out_features, in_features)");
  MOON_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), "linear: input ", x.desc(), " and weight ", weight.desc(),
             ": the input's last dim must equal in_features = ", weight.size(1));
  MOON_CHECK(out_dtype == x.dtype() || out_dtype == DType::F32, "linear: the result dtype must be f32 or the operands' (",
             dtype_name(x.dtype()), "), got ", dtype_name(out_dtype));
  const int64_t out_f = weight.size(0), in_f = weight.size(1);
  LinearForward f;
  if (bias_in.defined()) {
    MOON_CHECK(bias_in.device() == x.device(), "linear: bias ", bias_in.desc(), " is not on ", x.device().str());
    MOON_CHECK(bias_in.dim() == 1 && bias_in.size(0) == out_f, "linear: bias ", bias_in.desc(),
               " must be 1-D of size out_features = ", out_f, " (weight ", weight.desc(), ")");
    MOON_CHECK(is_floating(bias_in.dtype()), "linear: bias ", bias_in.desc(), " must be floating point");
    // The GEMM reads a dense f32 bias: convert (differentiably) when it is not one already.
    f.bias = bias_in.dtype() == DType::F32 && bias_in.stride(0) == 1 ? bias_in : bias_in.to(DType::F32).contiguous();
  }
  // x (..., in) as x2 (..., R, in): 1-D input gets a row dim.
  const Tensor x2 = x.dim() == 1 ? make_view(x, {1, in_f}, {in_f * x.stride(0), x.stride(0)}, x.offset()) : x;
  f.batch = Shape(x2.shape().begin(), x2.shape().end() - 2);
  const Tensor wt = swap_last(weight);  // (in, out): W^T by strides
  f.full = matmul_forward(x2, wt, f.batch, f.bias.defined() ? static_cast<const float*>(f.bias.raw_data()) : nullptr,
                          epilogue, out_dtype == DType::F32);
  Shape rs = x.shape();
  rs.back() = out_f;
  f.out = rs == f.full.shape() ? f.full : make_view(f.full, rs, contiguous_strides(rs), 0);
  return f;
}

}  // namespace

Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias, GeluApprox approx) {
  return linear_gelu(x, weight, bias, approx, x.dtype());
}

Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias, GeluApprox approx, DType out_dtype) {
  const cpu::GemmEpilogue epilogue =
      approx == GeluApprox::Tanh ? cpu::GemmEpilogue::GeluTanh : cpu::GemmEpilogue::GeluErf;
  // Fused only without autograd (the backward needs the pre-activation) and where the GEMM has the epilogue.
  const bool fused = !needs_grad({&x, &weight, &bias}) && (x.device().is_cpu() || approx == GeluApprox::Tanh);
  if (!fused) return gelu(linear(x, weight, bias, out_dtype), approx);
  return linear_forward(x, weight, bias, epilogue, out_dtype).out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) { return linear(x, weight, bias, x.dtype()); }

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias_in, DType out_dtype) {
  const LinearForward f = linear_forward(x, weight, bias_in, cpu::GemmEpilogue::None, out_dtype);
  const Tensor& bias = f.bias;
  const Tensor& full = f.full;
  const Tensor& out = f.out;
  const Shape& batch = f.batch;
  const bool has_bias = bias.defined();
  if (needs_grad({&x, &weight, &bias})) {
    SavedTensor sx(x, "linear"), sw(weight, "linear");
    const bool gx = x.requires_grad(), gw = weight.requires_grad(), gbias = has_bias && bias.requires_grad();
    const Shape full_shape = full.shape();
    std::vector<Tensor> inputs = {x, weight};
    if (has_bias) inputs.push_back(bias);
    record_op("linear", inputs, {out},
              [sx, sw, gx, gw, gbias, has_bias, full_shape, batch](const std::vector<Tensor>& gs) {
                const Tensor& xx = sx.get();
                const Tensor& w = sw.get();
                const bool bf16 = xx.dtype() == DType::BF16;
                const int64_t in = w.size(1);
                const Tensor x2 =
                    xx.dim() == 1 ? make_view(xx, {1, in}, {in * xx.stride(0), xx.stride(0)}, xx.offset()) : xx;
                const Tensor g = regrow(as_bf16_if(gs[0], bf16), full_shape, xx.dim() == 1, false);  // (.., R, out)
                std::vector<Tensor> res(has_bias ? 3 : 2);
                if (gx) res[0] = grad_lhs(g, swap_last(w), x2.shape(), batch).view(xx.shape()).to(xx.dtype());  // dy @ W
                if (gw) {
                  // dW (out, in) = dy^T x summed over every leading dim: W^T's grad is x^T dy, so compute
                  // dW directly as (..., out, R) @ (..., R, in) into a buffer with stride 0 on the batch.
                  Shape wb = batch;
                  wb.push_back(w.size(0));
                  wb.push_back(in);
                  Tensor dw = empty(w.shape(), DType::F32, g.device());
                  Strides st(batch.size(), 0);
                  st.push_back(in);
                  st.push_back(1);
                  matmul_nd(make_view(dw, wb, st, 0), swap_last(g), expand_batch(x2, batch), nullptr);
                  res[1] = dw.to(w.dtype());
                }
                if (gbias) {
                  const int64_t out_f = full_shape.back();
                  const int64_t rows = shape_numel(full_shape) / std::max<int64_t>(out_f, 1);
                  const Tensor g32 = gs[0].to(DType::F32).contiguous();  // (..., out) f32
                  Tensor db = empty({out_f}, DType::F32, g32.device());
                  g_column_sum.get(g32.device())(make_view(g32, {rows, out_f}, {out_f, 1}, g32.offset()), db);
                  res[2] = db;
                }
                return res;
              });
  }
  return out;
}

}  // namespace moon
