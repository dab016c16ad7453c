// bf16 attention: the converted ops/cuda/attention_cuda.cu tensor entry points (forward; backward with its
// delta pre-pass, dK/dV and dQ kernels) on bf16 q, k, v, dout in several layouts (contiguous BHTD, BTHD
// permuted views, misaligned starts, gapped rows), every head-size tier, causal with q offsets, key padding
// (queries that see no key), grouped-query heads, empty sizes. Checks:
//   (a) bitwise: the bf16 run equals the same entry point run on the f32-widened inputs (the backward on the
//       bf16 run's widened out), rounded to bf16; lse (f32) equal; the kernels read bf16 into f32 tiles and
//       keep the f32 arithmetic, so this holds exactly;
//   (b) agreement with the CPU op (scaled_dot_product_attention and its backward) in bf16, nmse <= 1e-4.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"
#include "emu/ops/cuda/attention_cuda.h"
#include "ops/attention.h"
#include "runtime/autograd.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace emutest {

namespace {
using namespace moon;
namespace cuda = moon::cuda_emu;
using cpu::AttnParams;

// A (B, H, T, D) tensor of dtype `dt` in a layout: 0 = contiguous BHTD, 1 = BTHD (a permuted view),
// 2 = contiguous but starting one element into its storage (misaligned), 3 = gapped rows (row stride D + 3).
// Filled with NaN; fill_from copies values in.
Tensor make_layout(int64_t B, int64_t H, int64_t T, int64_t D, int layout, DType dt) {
  switch (layout) {
    case 1: return full({B, T, H, D}, NaN, dt).permute({0, 2, 1, 3});
    case 2: return full({B * H * T * D + 1}, NaN, dt).slice(0, 1, 1 + B * H * T * D).view({B, H, T, D});
    case 3: return full({B, H, T, D + 3}, NaN, dt).narrow(3, 0, D);
    default: return full({B, H, T, D}, NaN, dt);
  }
}
Tensor laid_out(const Tensor& src, int layout) {
  NoGradGuard ng;
  Tensor t = make_layout(src.size(0), src.size(1), src.size(2), src.size(3), layout, src.dtype());
  t.copy_(src);
  return t;
}

struct Case {
  int64_t B, Hq, Hkv, Tq, Tk, D;
  bool causal = false;
  int64_t q_offset = 0;
  bool padding = false;
  int ql = 0, kl = 0;  // layouts of q/out/dout/dq and of k/v/dk/dv
};

std::string ctx_of(const Case& c) {
  char m[200];
  std::snprintf(m, sizeof m, "bf16 B=%ld Hq=%ld Hkv=%ld Tq=%ld Tk=%ld D=%ld causal=%d off=%ld pad=%d layouts %d/%d",
                long(c.B), long(c.Hq), long(c.Hkv), long(c.Tq), long(c.Tk), long(c.D), int(c.causal),
                long(c.q_offset), int(c.padding), c.ql, c.kl);
  return m;
}

// Bitwise comparison of two tensors' values (bf16 widened exactly to f32, so equal floats = equal bits).
void same_bits(const char* what, const Tensor& a, const Tensor& b, const std::string& ctx) {
  const std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  if (x.size() != y.size()) {
    ++checks;
    fail(std::string(what) + " [" + ctx + "]: sizes differ");
    return;
  }
  cmp_bits(what, x.data(), y.data(), int64_t(x.size()), ctx.c_str());
}

// sum (a - b)^2 / max(sum b^2, tiny) must be <= tol, and no NaN.
void close_nmse(const char* what, const Tensor& a, const Tensor& b, double tol, const std::string& ctx) {
  ++checks;
  const std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  double e = 0, n = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = double(x[i]) - double(y[i]);
    e += std::isnan(d) ? INFINITY : d * d;
    n += double(y[i]) * double(y[i]);
  }
  const double r = x.size() == y.size() ? e / std::max(n, 1e-30) : INFINITY;
  if (!(r <= tol)) {
    char m[400];
    std::snprintf(m, sizeof m, "%s [%s]: nmse %.3g > %.3g", what, ctx.c_str(), r, tol);
    fail(m);
  }
}

void run_case(const Case& c, uint64_t seed) {
  const std::string ctx = ctx_of(c);
  Generator gen(seed);
  const DType bf = DType::BF16, f32 = DType::F32;
  // Values: bf16 (the rounding of normal f32 draws), laid out as the case says.
  const Tensor q0 = randn({c.B, c.Hq, c.Tq, c.D}, gen).to(bf), k0 = randn({c.B, c.Hkv, c.Tk, c.D}, gen).to(bf),
               v0 = randn({c.B, c.Hkv, c.Tk, c.D}, gen).to(bf), g0 = randn({c.B, c.Hq, c.Tq, c.D}, gen).to(bf);
  const Tensor q = laid_out(q0, c.ql), k = laid_out(k0, c.kl), v = laid_out(v0, c.kl), dout = laid_out(g0, c.ql);
  Tensor keep = ones({c.B, c.Tk}, DType::U8);
  if (c.padding) {
    uint8_t* kp = keep.data<uint8_t>();
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t j = 0; j < c.Tk; ++j) kp[b * c.Tk + j] = b == 1 ? 0 : ((j * 7 + b) % 5 != 0);
  }
  AttnParams p{c.B, c.Hq, c.Hkv, c.Tq, c.Tk, c.D, float(1.0 / std::sqrt(double(c.D))), c.causal, c.q_offset,
               c.padding ? keep.data<uint8_t>() : nullptr};

  // bf16 run on the views.
  const Tensor out = make_layout(c.B, c.Hq, c.Tq, c.D, c.ql, bf), lse = full({c.B, c.Hq, c.Tq}, NaN, f32);
  cuda::attention_forward(p, q, k, v, out, lse);
  const Tensor dq = make_layout(c.B, c.Hq, c.Tq, c.D, c.ql, bf), dk = make_layout(c.B, c.Hkv, c.Tk, c.D, c.kl, bf),
               dv = make_layout(c.B, c.Hkv, c.Tk, c.D, c.kl, bf);
  cuda::attention_backward(p, q, k, v, out, lse, dout, dq, dk, dv);

  // (a) the same entry points on the widened values (contiguous f32), rounded once.
  const Tensor qf = q0.to(f32), kf = k0.to(f32), vf = v0.to(f32), gf = g0.to(f32);
  const Tensor outf = full(qf.shape(), NaN, f32), lsef = full({c.B, c.Hq, c.Tq}, NaN, f32);
  cuda::attention_forward(p, qf, kf, vf, outf, lsef);
  same_bits("bf16 out", out, outf.to(bf), ctx);
  same_bits("bf16 lse", lse, lsef, ctx);
  const Tensor outw = out.to(f32).contiguous();  // the backward reads the bf16 run's out, widened
  const Tensor dqf = full(qf.shape(), NaN, f32), dkf = full(kf.shape(), NaN, f32), dvf = full(vf.shape(), NaN, f32);
  cuda::attention_backward(p, qf, kf, vf, outw, lsef, gf, dqf, dkf, dvf);
  same_bits("bf16 dq", dq, dqf.to(bf), ctx);
  same_bits("bf16 dk", dk, dkf.to(bf), ctx);
  same_bits("bf16 dv", dv, dvf.to(bf), ctx);

  // (b) the CPU op in bf16 (its f32 kernels on widened inputs, rounded), forward and backward.
  const Tensor ql = q.detach().set_requires_grad(), kl = k.detach().set_requires_grad(),
               vl = v.detach().set_requires_grad();
  AttentionOptions o;
  o.causal = c.causal;
  o.q_offset = c.q_offset;
  if (c.padding) o.key_keep = keep;
  const Tensor y = scaled_dot_product_attention(ql, kl, vl, o);
  if (y.dtype() != bf) {
    ++checks;
    fail("bf16 cpu out is " + y.desc() + " [" + ctx + "]");
    return;
  }
  close_nmse("bf16 out vs cpu", out, y, 1e-4, ctx);
  if (c.B * c.Hq * c.Tq == 0 || c.Tk == 0) return;
  y.backward(dout);
  close_nmse("bf16 dq vs cpu", dq, ql.grad(), 1e-4, ctx);
  close_nmse("bf16 dk vs cpu", dk, kl.grad(), 1e-4, ctx);
  close_nmse("bf16 dv vs cpu", dv, vl.grad(), 1e-4, ctx);
  ++checks;
  if (ql.grad().dtype() != bf || kl.grad().dtype() != bf || vl.grad().dtype() != bf)
    fail("bf16 cpu gradients are not bf16 [" + ctx + "]");
}

}  // namespace

void test_bf16_attention(const std::string& only) {
  if (!only.empty() && only != "attention" && only != "bf16" && only != "bf16_attention") return;
  lap();
  const std::vector<Case> cases = {
      {1, 1, 1, 5, 7, 3},                               // tier 32, odd D
      {2, 1, 1, 3, 5, 17, false, 0, false, 2, 2},       // misaligned starts
      {2, 2, 2, 17, 70, 32, false, 0, false, 1, 3},     // BTHD q, gapped k/v rows
      {1, 2, 2, 65, 66, 64, true, 0, false, 2, 1},      // causal, two query tiles
      {2, 2, 1, 33, 40, 80, false, 0, true, 3, 0},      // tier 128, padding (batch 1 sees nothing), GQA
      {2, 4, 2, 20, 37, 24, true, 17, false, 1, 2},     // kv-cache offset, GQA
      {1, 2, 2, 30, 3, 32, true, -27, false, 0, 0},     // negative offset: early queries see nothing
      {1, 2, 1, 9, 20, 200, true, 11, true, 3, 1},      // tier 256
      {1, 1, 1, 0, 5, 8}, {1, 1, 1, 4, 0, 8},           // empty
  };
  uint64_t seed = 77;
  for (const Case& c : cases) guarded("bf16_attention", [&] { run_case(c, seed++); });
  done("bf16_attention");
}

}  // namespace emutest
