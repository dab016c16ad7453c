// bf16 through the converted ops/cuda/{reduce,index,topk}_cuda.cu entry points (suite "bf16_index"; also run by
// the filters "bf16", "index"). Each case checks
//   (a) bitwise: the entry point on bf16 tensors equals the same entry point on the f32-widened tensors, rounded
//       once (.to(DType::BF16)): the kernels add in the same order whatever the storage type;
//   (b) the CPU op in bf16 (moon::sum, cumsum, max, scatter_add, gather, embedding, index_select, topk): bitwise
//       where the CPU's order is the GPU's (max, copies, scatter_add, the embedding backward, top-k, cumsum along
//       inner), else within a bf16 rounding of each other (sum, the row cumsum: different addition orders).
// Shapes cover the chunked (multi-pass) sums and max, odd sizes, and aligned and misaligned bf16 rows.
#include <array>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "common.h"
#include "emu/ops/cuda/index_cuda.h"
#include "emu/ops/cuda/reduce_cuda.h"
#include "ops/index.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"

namespace emutest {

namespace {
using namespace moon;
namespace cuda = moon::cuda_emu;

Random R(4242);

// A contiguous bf16 tensor of `s` with values of `mode` (rounded from f32).
Tensor bf16_data(const Shape& s, int mode) {
  Tensor t = empty(s);
  float* p = F(t);
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = R.sample(mode);
  return t.to(DType::BF16);
}
// A bf16 tensor of `n` elements starting `off` elements into a fresh buffer (off odd: 2-byte aligned only).
Tensor bf16_at(int64_t n, int64_t off, int mode) {
  Tensor b = bf16_data({n + off}, mode);
  return b.narrow(0, off, n);
}
Tensor garbage(const Shape& s, DType d) {
  Tensor t = empty(s, d);
  std::memset(t.raw_data(), 0xff, size_t(t.numel()) * dtype_size(d));
  return t;
}
Tensor widened(const Tensor& t) {
  NoGradGuard ng;
  return t.to(DType::F32).contiguous();
}
Tensor rounded(const Tensor& t) {
  NoGradGuard ng;
  return t.to(DType::BF16);
}

// Bitwise equality of two tensors of one dtype (bf16 or i64; any NaN equals any NaN for floating ones).
void same_bits(const std::string& what, const Tensor& a, const Tensor& b) {
  ++checks;
  if (a.dtype() != b.dtype() || a.numel() != b.numel()) {
    fail(what + ": dtype/size " + a.desc() + " vs " + b.desc());
    return;
  }
  const Tensor ac = a.contiguous(), bc = b.contiguous();
  const size_t es = dtype_size(a.dtype());
  const bool floating = a.dtype() == DType::BF16 || a.dtype() == DType::F32;
  const std::vector<double> av = floating ? ac.to_vector<double>() : std::vector<double>();
  const std::vector<double> bv = floating ? bc.to_vector<double>() : std::vector<double>();
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (floating && av[i] != av[i] && bv[i] != bv[i]) continue;
    if (std::memcmp(static_cast<const char*>(ac.raw_data()) + i * es, static_cast<const char*>(bc.raw_data()) + i * es,
                    es) != 0) {
      fail(what + fmt(": not bitwise equal at %ld", long(i)) +
           (floating ? fmt(" (%.9g vs %.9g)", av[i], bv[i]) : std::string()));
      return;
    }
  }
}
// |a - b| <= rel * max(|a|, |b|) + abs_ elementwise (NaN must match NaN, infinities exactly).
void close_to(const std::string& what, const Tensor& a, const Tensor& b, double rel, double abs_) {
  ++checks;
  const std::vector<double> av = a.contiguous().to_vector<double>(), bv = b.contiguous().to_vector<double>();
  if (av.size() != bv.size()) {
    fail(what + ": sizes differ");
    return;
  }
  for (size_t i = 0; i < av.size(); ++i) {
    const bool an = av[i] != av[i], bn = bv[i] != bv[i];
    const bool bad = an || bn ? an != bn
                     : std::isinf(av[i]) || std::isinf(bv[i])
                         ? av[i] != bv[i]
                         : !(std::fabs(av[i] - bv[i]) <= rel * std::max(std::fabs(av[i]), std::fabs(bv[i])) + abs_);
    if (bad) {
      fail(what + fmt(": at %ld %.9g vs %.9g", long(i), av[i], bv[i]));
      return;
    }
  }
}
constexpr double kBf16Ulp = 1.0 / 128;  // a relative step of bf16 (8 significant bits), with margin

// ---------------- sum_middle (bf16 -> bf16, and bf16 -> f32 as mean uses it)
void sum_case(int64_t outer, int64_t len, int64_t inner) {
  const std::string ctx = fmt("sum outer=%ld len=%ld inner=%ld", outer, len, inner);
  const Tensor x = bf16_data({outer, len, inner}, 0), xf = widened(x);
  Tensor y = garbage({outer, inner}, DType::BF16), yf = garbage({outer, inner}, DType::F32),
         ymix = garbage({outer, inner}, DType::F32);
  cuda::sum_middle(x, y, outer, len, inner);
  cuda::sum_middle(xf, yf, outer, len, inner);
  cuda::sum_middle(x, ymix, outer, len, inner);
  same_bits(ctx + " bf16 vs rounded f32", y, rounded(yf));
  same_bits(ctx + " bf16 -> f32 out vs f32", ymix, yf);
  const Tensor cpu = sum(x, {1});  // the CPU op: another order of additions
  close_to(ctx + " vs cpu", y, cpu, kBf16Ulp, 1e-5 * double(len));
}

// ---------------- cumsum_middle
void cumsum_case(int64_t outer, int64_t len, int64_t inner, bool reverse) {
  const std::string ctx = fmt("cumsum outer=%ld len=%ld inner=%ld rev=%d", outer, len, inner, int(reverse));
  const Tensor x = bf16_data({outer, len, inner}, 0), xf = widened(x);
  Tensor y = garbage({outer, len, inner}, DType::BF16), yf = garbage({outer, len, inner}, DType::F32);
  cuda::cumsum_middle(x, y, outer, len, inner, reverse);
  cuda::cumsum_middle(xf, yf, outer, len, inner, reverse);
  same_bits(ctx + " bf16 vs rounded f32", y, rounded(yf));
  if (!reverse) {
    const Tensor cpu = cumsum(x, 1);
    if (inner > 1)  // the column scan adds in the CPU's sequential order
      same_bits(ctx + " vs cpu", y, cpu);
    else  // the row scan adds lane partials: another order
      close_to(ctx + " vs cpu", y, cpu, kBf16Ulp, 1e-5 * double(len));
  }
}

// ---------------- max_middle and its backward
void max_case(int64_t outer, int64_t len, int64_t inner, int mode) {
  const std::string ctx = fmt("max outer=%ld len=%ld inner=%ld mode=%d", outer, len, inner, mode);
  const Tensor x = bf16_data({outer, len, inner}, mode), xf = widened(x);
  Tensor v = garbage({outer, inner}, DType::BF16), ix = garbage({outer, inner}, DType::I64);
  Tensor vf = garbage({outer, inner}, DType::F32), ixf = garbage({outer, inner}, DType::I64);
  cuda::max_middle(x, v, ix, outer, len, inner);
  cuda::max_middle(xf, vf, ixf, outer, len, inner);
  same_bits(ctx + " values bf16 vs rounded f32", v, rounded(vf));
  same_bits(ctx + " indices bf16 vs f32", ix, ixf);
  const MaxResult cpu = max(x, 1);
  same_bits(ctx + " values vs cpu", v, cpu.values.reshape({outer, inner}));
  same_bits(ctx + " indices vs cpu", ix, cpu.indices.reshape({outer, inner}));
  const Tensor g = bf16_data({outer, inner}, 0);
  Tensor dx = garbage({outer, len, inner}, DType::BF16), dxf = garbage({outer, len, inner}, DType::F32);
  cuda::max_middle_backward(g, ix, dx, outer, len, inner);
  cuda::max_middle_backward(widened(g), ix, dxf, outer, len, inner);
  same_bits(ctx + " backward bf16 vs rounded f32", dx, rounded(dxf));
}

// ---------------- scatter_add_dim (f32 and bf16 destinations, bf16 src) and gather_dim of bf16
void scatter_case(const Shape& xs, const Shape& is, int64_t dim) {
  const std::string ctx = "scatter_add x " + shape_str(xs) + " index " + shape_str(is) + fmt(" dim=%ld", dim);
  Tensor idx = empty(is, DType::I64);
  for (int64_t i = 0; i < idx.numel(); ++i) idx.data<int64_t>()[i] = R.irand(0, xs[dim] - 1);
  const Tensor x = bf16_data(xs, 0), src = bf16_data(is, 0);
  Tensor acc = widened(x), accf = widened(x);  // f32 destinations, bf16 and f32 src
  cuda::scatter_add_dim(acc, dim, idx, src);
  cuda::scatter_add_dim(accf, dim, idx, widened(src));
  same_bits(ctx + " f32 out: bf16 src vs f32 src", acc, accf);
  Tensor out = x.clone();  // a bf16 destination
  cuda::scatter_add_dim(out, dim, idx, src);
  same_bits(ctx + " bf16 out vs rounded f32", out, rounded(accf));
  same_bits(ctx + " vs cpu", out, scatter_add(x, dim, idx, src));  // same order: increasing position
  Tensor gout = garbage(is, DType::BF16);
  cuda::gather_dim(gout, x, dim, idx);
  same_bits(ctx + " gather vs cpu", gout, gather(x, dim, idx));
}

// ---------------- gather_rows (embedding / index_select forward) and scatter_rows (their backward)
void rows_case(int64_t outer, int64_t V, int64_t N, int64_t C, int64_t off, int64_t used) {
  const std::string ctx = fmt("rows outer=%ld V=%ld N=%ld C=%ld off=%ld", outer, V, N, C, off);
  Tensor ids = empty({N}, DType::I64);
  for (int64_t j = 0; j < N; ++j) ids.data<int64_t>()[j] = R.irand(0, std::min(used, V) - 1);
  // forward: a row gather of the bf16 table, raw 2-byte elements
  const Tensor w = bf16_at(outer * V * C, off, 0);
  Tensor y = bf16_at(outer * N * C, off, 0);
  cuda::gather_rows(y, w, ids, outer, V, N, C * 2);
  if (outer == 1)
    same_bits(ctx + " gather vs cpu embedding", y, embedding(w.view({V, C}), ids).reshape({N * C}));
  else
    same_bits(ctx + " gather vs cpu index_select", y,
              index_select(w.view({outer, V, C}), 1, ids).reshape({outer * N * C}));
  // backward: segment sums in f32, one rounding per element (off % 4 == 0 and C % 4 == 0: the vector path)
  const Tensor g = bf16_at(outer * N * C, off, 0);
  Tensor dw = bf16_at(outer * V * C, off, 0), dwf = garbage({outer * V * C}, DType::F32);
  std::memset(dw.raw_data(), 0xff, size_t(dw.numel()) * 2);
  cuda::scatter_rows(dw, g, ids, outer, V, N, C);
  cuda::scatter_rows(dwf, widened(g), ids, outer, V, N, C);
  same_bits(ctx + " backward bf16 vs rounded f32", dw, rounded(dwf));
  if (outer == 1) {  // the CPU backward through autograd: the same order (increasing position per id)
    Tensor wl = w.view({V, C}).detach().clone();
    wl.set_requires_grad(true);
    const Tensor out = embedding(wl, ids);
    run_backward({out}, {g.view({N, C})}, false);
    same_bits(ctx + " backward vs cpu", dw, wl.grad().reshape({V * C}));
  }
}

// ---------------- topk_rows
void topk_case(int64_t outer, int64_t n, int64_t inner, int64_t k, bool largest, int mode) {
  const std::string ctx =
      fmt("topk outer=%ld n=%ld inner=%ld k=%ld largest=%d mode=%d", outer, n, inner, k, int(largest), mode);
  const Tensor x = bf16_data({outer, n, inner}, mode);
  Tensor v = garbage({outer, k, inner}, DType::BF16), ix = garbage({outer, k, inner}, DType::I64);
  Tensor vf = garbage({outer, k, inner}, DType::F32), ixf = garbage({outer, k, inner}, DType::I64);
  cuda::topk_rows(v, ix, x, outer, n, inner, k, largest);
  cuda::topk_rows(vf, ixf, widened(x), outer, n, inner, k, largest);
  same_bits(ctx + " values bf16 vs rounded f32", v, rounded(vf));
  same_bits(ctx + " indices bf16 vs f32", ix, ixf);
  const TopKResult cpu = topk(x, k, 1, largest);
  same_bits(ctx + " values vs cpu", v, cpu.values);
  same_bits(ctx + " indices vs cpu", ix, cpu.indices);
}

using Shape3 = std::array<int64_t, 3>;

}  // namespace

void test_bf16_index(const std::string& only) {
  if (!only.empty() && only != "bf16" && only != "bf16_index" && only != "index") return;
  lap();
  for (auto [o, l, i] : std::vector<Shape3>{{1, 1, 1}, {3, 17, 1}, {2, 0, 3}, {1, 5000, 1}, {3, 3001, 1}, {5, 17, 33},
                                            {2, 1500, 70}, {1, 30003, 2}, {1, 600, 3}})
    guarded("bf16 sum", [&] { sum_case(o, l, i); });
  for (bool rev : {false, true})
    for (auto [o, l, i] : std::vector<Shape3>{{1, 1, 1}, {2, 129, 1}, {3, 300, 1}, {2, 17, 3}, {3, 40, 33}})
      guarded("bf16 cumsum", [&] { cumsum_case(o, l, i, rev); });
  for (int mode : {0, 1, 3})
    for (auto [o, l, i] :
         std::vector<Shape3>{{1, 1, 1}, {17, 127, 1}, {1, 5000, 1}, {1, 3, 5}, {2, 1500, 70}, {5, 17, 33}})
      guarded("bf16 max", [&] { max_case(o, l, i, mode); });
  guarded("bf16 scatter_add", [&] { scatter_case({5, 3}, {4, 3}, 0); });
  guarded("bf16 scatter_add", [&] { scatter_case({5, 3}, {2, 7}, 1); });
  guarded("bf16 scatter_add", [&] { scatter_case({3, 9, 4}, {2, 13, 3}, 1); });
  guarded("bf16 scatter_add", [&] { scatter_case({6, 2, 33}, {6, 2, 40}, 2); });
  for (auto c : std::vector<std::array<int64_t, 6>>{{1, 1, 1, 1, 0, 1}, {1, 5, 9, 4, 0, 2}, {1, 5, 9, 4, 1, 2},
                                                    {1, 7, 20, 3, 0, 3}, {2, 10, 33, 8, 0, 4}, {2, 10, 33, 8, 3, 4},
                                                    {1, 50, 300, 260, 4, 7}, {1, 3, 0, 4, 0, 1},
                                                    {3, 17, 40, 127, 1, 5}})
    guarded("bf16 rows", [&] { rows_case(c[0], c[1], c[2], c[3], c[4], c[5]); });
  for (int mode : {0, 1, 3})
    for (bool lg : {true, false})
      for (auto c :
           std::vector<std::array<int64_t, 4>>{{2, 17, 3, 5}, {1, 600, 1, 16}, {1, 33, 2, 20}, {2, 40, 1, 40}})
        guarded("bf16 topk", [&] { topk_case(c[0], c[1], c[2], c[3], lg, mode); });
  done("bf16_index");
}

}  // namespace emutest
