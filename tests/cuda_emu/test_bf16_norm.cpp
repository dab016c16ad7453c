// bf16 activations through the converted ops/cuda/{norm,loss,rope}_cuda.cu entry points (softmax, log_softmax,
// layer_norm, rms_norm, column_sum, cross_entropy, rope; forward and backward) and reduce_cuda.cu's l2_normalize. Each case runs an entry point
// on bf16 CPU tensors and again on the same values held in f32 with the same layout (alignment, strides), and
// checks (a) the bf16 result is the f32 result rounded once, bit for bit (the kernels compute in f32 in the
// same order and round on store), and (b) it agrees with the CPU op / CPU kernel in bf16.
// Entry: test_bf16_norm(only) (declared in common.h); runs when `only` is empty, "bf16" or "bf16_norm".
#include <random>
#include <tuple>
#include <vector>

#include "common.h"
#include "emu/ops/cuda/loss_cuda.h"
#include "emu/ops/cuda/norm_cuda.h"
#include "emu/ops/cuda/reduce_cuda.h"
#include "ops/attention.h"
#include "ops/cpu/loss_kernels.h"
#include "ops/cpu/norm_kernels.h"
#include "ops/norm.h"
#include "runtime/dtype.h"
#include "runtime/tensor.h"

namespace emutest {

namespace {
using namespace moon;
namespace G = moon::cpu::generic;
namespace cuda = moon::cuda_emu;
std::mt19937 rng(11);

uint16_t* B16(const Tensor& t) { return static_cast<uint16_t*>(t.raw_data()); }
float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// A NaN-filled tensor of `dt` (f32 or bf16), contiguous; its first element aligned for the vector path
// (mis = false) or one element past it (mis = true: 4 bytes for f32, 2 for bf16, so both take the scalar path).
Tensor nan_buf(const Shape& s, DType dt, bool mis = false) { return nan_tensor(s, dt, mis ? 1 : 0); }

// The same random values (bf16-representable) in an f32 tensor and a bf16 tensor of the same layout.
struct Twin {
  Tensor f, b;
};
Twin twin(const Shape& s, bool mis = false, float scale = 1.f, float shift = 0.f) {
  Twin t{nan_buf(s, DType::F32, mis), nan_buf(s, DType::BF16, mis)};
  std::normal_distribution<float> N(shift, scale);
  for (int64_t i = 0; i < t.f.numel(); ++i) {
    const uint16_t h = f32_to_bf16(N(rng));
    B16(t.b)[i] = h;
    F(t.f)[i] = bf16_to_f32(h);
  }
  return t;
}
void set(const Twin& t, int64_t i, float v) {
  B16(t.b)[i] = f32_to_bf16(v);
  F(t.f)[i] = round_bf16(v);
}

// bf16 `got` (contiguous, n elements) must be the f32 `want` rounded to bf16, bit for bit.
void cmp_rounded(const char* what, const Tensor& got, const float* want, int64_t n, const char* ctx) {
  ++checks;
  const uint16_t* g = B16(got);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t w = f32_to_bf16(want[i]);
    if (g[i] != w) {
      char m[512];
      std::snprintf(m, sizeof m, "%s [%s]: bf16 result is not the f32 result rounded at %ld: %.9g vs %.9g (f32 %.9g)",
                    what, ctx, long(i), bf16_to_f32(g[i]), bf16_to_f32(w), want[i]);
      fail(m);
      return;
    }
  }
}
// The floats of a bf16 tensor's first n (contiguous) elements.
std::vector<float> widen(const Tensor& t, int64_t n) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = bf16_to_f32(B16(t)[i]);
  return v;
}
// bf16 `got` against an f32 reference (CPU kernel or op) within a few bf16 ulps (2^-8 relative each).
void cmp_close(const char* what, const Tensor& got, const float* want, int64_t n, double abs_, const char* ctx) {
  const std::vector<float> g = widen(got, n);
  cmp(what, g.data(), want, n, 1.6e-2, abs_, ctx);
}

void test_softmax_bf16() {
  for (int64_t C : {1, 5, 8, 64, 1028, 1030})
    for (int64_t rows : {1, 5})
      for (bool mis : {false, true})
        for (bool log : {false, true}) {
          if (C > 1024 && rows > 1) continue;  // block-per-row: one row (runtime)
          char ctx[128];
          snprintf(ctx, sizeof ctx, "C=%ld rows=%ld mis=%d log=%d", (long)C, (long)rows, mis, log);
          const int64_t n = rows * C;
          Twin x = twin({rows, C}, mis, 3.f);
          if (C > 2) set(x, 1, -INFINITY);
          Tensor y = nan_buf({rows, C}, DType::BF16, mis), yf = nan_buf({rows, C}, DType::F32, mis);
          cuda::softmax(x.b, y, rows, C, log);
          cuda::softmax(x.f, yf, rows, C, log);
          cmp_rounded(log ? "bf16 log_softmax" : "bf16 softmax", y, F(yf), n, ctx);
          // the CPU op in bf16
          const Tensor yc = log ? moon::log_softmax(x.b, -1) : moon::softmax(x.b, -1);
          const std::vector<float> ycw = widen(yc.contiguous(), n);
          cmp_close(log ? "bf16 log_softmax vs cpu" : "bf16 softmax vs cpu", y, ycw.data(), n, log ? 2e-2 : 1e-6,
                    ctx);
          // backward from the bf16 output
          Twin yy{nan_buf({rows, C}, DType::F32, mis), y};
          for (int64_t i = 0; i < n; ++i) F(yy.f)[i] = bf16_to_f32(B16(y)[i]);
          Twin g = twin({rows, C}, mis);
          Tensor dx = nan_buf({rows, C}, DType::BF16, mis), dxf = nan_buf({rows, C}, DType::F32, mis);
          cuda::softmax_backward(yy.b, g.b, dx, rows, C, log);
          cuda::softmax_backward(yy.f, g.f, dxf, rows, C, log);
          cmp_rounded("bf16 softmax_backward", dx, F(dxf), n, ctx);
          std::vector<float> dr(n);
          G::softmax_backward_rows(F(yy.f), F(g.f), dr.data(), rows, C, log);
          cmp_close("bf16 softmax_backward vs cpu", dx, dr.data(), n, 1e-3 * std::sqrt(double(C)), ctx);
        }
}

void test_norms_bf16() {
  for (int64_t C : {5, 64, 1032})
    for (int64_t rows : {3, 70})
      for (bool mis : {false, true})
        for (int wb : {0, 1, 3}) {
          if (rows == 70 && C > 64) continue;
          if (C > 64 && wb != (mis ? 1 : 3)) continue;  // block-per-row: two of the six combinations (runtime)
          char ctx[128];
          snprintf(ctx, sizeof ctx, "C=%ld rows=%ld mis=%d wb=%d", (long)C, (long)rows, mis, wb);
          const int64_t n = rows * C;
          Twin x = twin({rows, C}, mis, 2.f, 3.f);
          Twin w = wb & 1 ? twin({C}, mis) : Twin{}, b = wb & 2 ? twin({C}, mis) : Twin{};
          const float* wp = w.f.defined() ? F(w.f) : nullptr;
          const float* bp = b.f.defined() ? F(b.f) : nullptr;
          // layer_norm forward
          Tensor y = nan_buf({rows, C}, DType::BF16, mis), yf = nan_buf({rows, C}, DType::F32, mis);
          Tensor mean = nan_buf({rows}, DType::F32), rstd = nan_buf({rows}, DType::F32);
          Tensor mf = nan_buf({rows}, DType::F32), rf = nan_buf({rows}, DType::F32);
          cuda::layer_norm(x.b, w.b, b.b, y, mean, rstd, 1e-5);
          cuda::layer_norm(x.f, w.f, b.f, yf, mf, rf, 1e-5);
          cmp_rounded("bf16 layer_norm y", y, F(yf), n, ctx);
          cmp_bits("bf16 layer_norm mean", F(mean), F(mf), rows, ctx);
          cmp_bits("bf16 layer_norm rstd", F(rstd), F(rf), rows, ctx);
          {
            const Tensor yc = moon::layer_norm(x.b, w.b, b.b, 1e-5);
            const std::vector<float> ycw = widen(yc, n);
            cmp_close("bf16 layer_norm vs cpu op", y, ycw.data(), n, 2e-2, ctx);
          }
          // layer_norm backward: dx, dw, db in bf16
          Twin g = twin({rows, C}, mis);
          Tensor dx = nan_buf({rows, C}, DType::BF16, mis), dxf = nan_buf({rows, C}, DType::F32, mis);
          Tensor dw = nan_buf({C}, DType::BF16), dwf = nan_buf({C}, DType::F32);
          Tensor db = nan_buf({C}, DType::BF16), dbf = nan_buf({C}, DType::F32);
          cuda::layer_norm_backward(x.b, w.b, mean, rstd, g.b, dx, dw, db);
          cuda::layer_norm_backward(x.f, w.f, mf, rf, g.f, dxf, dwf, dbf);
          cmp_rounded("bf16 layer_norm dx", dx, F(dxf), n, ctx);
          cmp_rounded("bf16 layer_norm dw", dw, F(dwf), C, ctx);
          cmp_rounded("bf16 layer_norm db", db, F(dbf), C, ctx);
          {
            std::vector<float> dxr(n), dwr(C), dbr(C);
            G::layer_norm_backward_rows(F(x.f), wp, F(mf), F(rf), F(g.f), dxr.data(), dwr.data(), dbr.data(), rows,
                                        C);
            cmp_close("bf16 layer_norm dx vs cpu", dx, dxr.data(), n, 2e-3 * std::sqrt(double(C)), ctx);
            cmp_close("bf16 layer_norm dw vs cpu", dw, dwr.data(), C, 1e-4 * rows, ctx);
            cmp_close("bf16 layer_norm db vs cpu", db, dbr.data(), C, 1e-4 * rows, ctx);
          }
          (void)bp;
          // rms_norm forward and backward
          Tensor ry = nan_buf({rows, C}, DType::BF16, mis), ryf = nan_buf({rows, C}, DType::F32, mis);
          Tensor rs = nan_buf({rows}, DType::F32), rsf = nan_buf({rows}, DType::F32);
          cuda::rms_norm(x.b, w.b, ry, rs, 1e-6);
          cuda::rms_norm(x.f, w.f, ryf, rsf, 1e-6);
          cmp_rounded("bf16 rms_norm y", ry, F(ryf), n, ctx);
          cmp_bits("bf16 rms_norm rstd", F(rs), F(rsf), rows, ctx);
          {
            const Tensor yc = moon::rms_norm(x.b, w.b, 1e-6);
            const std::vector<float> ycw = widen(yc, n);
            cmp_close("bf16 rms_norm vs cpu op", ry, ycw.data(), n, 1e-2, ctx);
          }
          Tensor rdx = nan_buf({rows, C}, DType::BF16, mis), rdxf = nan_buf({rows, C}, DType::F32, mis);
          Tensor rdw = w.b.defined() ? nan_buf({C}, DType::BF16) : Tensor();
          Tensor rdwf = w.b.defined() ? nan_buf({C}, DType::F32) : Tensor();
          cuda::rms_norm_backward(x.b, w.b, rs, g.b, rdx, rdw);
          cuda::rms_norm_backward(x.f, w.f, rsf, g.f, rdxf, rdwf);
          cmp_rounded("bf16 rms_norm dx", rdx, F(rdxf), n, ctx);
          if (rdw.defined()) cmp_rounded("bf16 rms_norm dw", rdw, F(rdwf), C, ctx);
          {
            std::vector<float> dxr(n), dwr(C);
            G::rms_norm_backward_rows(F(x.f), wp, F(rsf), F(g.f), dxr.data(), dwr.data(), rows, C);
            cmp_close("bf16 rms_norm dx vs cpu", rdx, dxr.data(), n, 1e-3 * std::sqrt(double(C)), ctx);
            if (rdw.defined()) cmp_close("bf16 rms_norm dw vs cpu", rdw, dwr.data(), C, 1e-4 * rows, ctx);
          }
        }
  // column_sum: a bf16 (strided) g into a bf16 or an f32 out
  for (auto [R, C, tr] : std::vector<std::tuple<int64_t, int64_t, bool>>{{1, 1, false}, {300, 33, false}, {77, 70, true}}) {
    Twin base = twin(tr ? Shape{C, R} : Shape{R, C});
    const Tensor gb = tr ? base.b.transpose(0, 1) : base.b, gf = tr ? base.f.transpose(0, 1) : base.f;
    Tensor ob = nan_buf({C}, DType::BF16), of = nan_buf({C}, DType::F32), ob32 = nan_buf({C}, DType::F32);
    cuda::column_sum(gb, ob);
    cuda::column_sum(gf, of);
    cuda::column_sum(gb, ob32);
    char ctx[64];
    snprintf(ctx, sizeof ctx, "R=%ld C=%ld tr=%d", (long)R, (long)C, tr);
    cmp_rounded("bf16 column_sum", ob, F(of), C, ctx);
    cmp_bits("bf16 column_sum into f32", F(ob32), F(of), C, ctx);
  }
}

void test_ce_bf16() {
  for (int64_t C : {3, 8, 1027, 2048})
    for (int64_t N : {1, 6})
      for (int pad : {0, 3})
        for (bool mis : {false, true}) {
          if (C > 1024 && N > 1) continue;  // block-per-row: one row (runtime)
          const float s = pad ? 0.1f : 0.f;
          char ctx[128];
          snprintf(ctx, sizeof ctx, "C=%ld N=%ld pad=%d mis=%d", (long)C, (long)N, pad, mis);
          Twin wide = twin({N, C + pad}, mis, 4.f);
          set(wide, 2, -INFINITY);
          const Tensor xb = wide.b.slice(1, 0, C), xf = wide.f.slice(1, 0, C);
          std::vector<int64_t> tv(N);
          int64_t count = 0;
          for (int64_t i = 0; i < N; ++i) {
            tv[i] = i % 3 == 1 ? -100 : (i * 7 + 3) % C;
            if (tv[i] == 2) tv[i] = 0;
            if (tv[i] != -100) ++count;
          }
          Tensor t = from_vector<int64_t>(tv, {N}, DType::I64);
          CeParams p{-100, s};
          Tensor loss = full({}, NaN), lossf = full({}, NaN);
          Tensor probs = nan_buf({N, C}, DType::F32), probsf = nan_buf({N, C}, DType::F32);
          cuda::cross_entropy(xb, t, p, loss, probs, count);
          cuda::cross_entropy(xf, t, p, lossf, probsf, count);
          cmp_bits("bf16 ce loss (f32)", F(loss), F(lossf), 1, ctx);
          for (int64_t i = 0; i < N; ++i)
            if (tv[i] != -100) cmp_bits("bf16 ce probs (f32)", F(probs) + i * C, F(probsf) + i * C, C, ctx);
          std::vector<float> pr(N * C);
          const double tot = G::cross_entropy_rows(F(xf), N, C, xf.stride(0), tv.data(), 1, -100, s, pr.data());
          const float lr = count > 0 ? float(tot / count) : 0.f;
          cmp("bf16 ce loss vs cpu", F(loss), &lr, 1, 1e-5, 1e-6, ctx);
          // backward: dx in bf16 from the f32 probs, the CPU's arithmetic exactly
          Tensor pm = nan_buf({N, C}, DType::F32, mis);
          std::memcpy(F(pm), F(probs), 4 * N * C);
          Tensor dx = nan_buf({N, C}, DType::BF16, mis), dxf = nan_buf({N, C}, DType::F32, mis);
          cuda::cross_entropy_backward(pm, t, p, 0.37f, dx);
          cuda::cross_entropy_backward(pm, t, p, 0.37f, dxf);
          cmp_rounded("bf16 ce backward", dx, F(dxf), N * C, ctx);
          std::vector<float> dr(N * C);
          G::cross_entropy_backward_rows(F(pm), tv.data(), 1, N, C, -100, s, 0.37f, dr.data());
          cmp_rounded("bf16 ce backward vs cpu", dx, dr.data(), N * C, ctx);
        }
}

void test_rope_bf16() {
  for (auto [B, H, T, half, bt] : std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t, bool>>{
           {2, 3, 5, 3, false}, {1, 4, 3, 32, true}, {3, 1, 9, 5, true}}) {
    std::vector<int64_t> pos(bt ? B * T : T);
    for (size_t i = 0; i < pos.size(); ++i) pos[i] = int64_t(i * 37 + 1) + (i == 2 ? 100001 : 0);
    Tensor P = from_vector<int64_t>(pos, bt ? Shape{B, T} : Shape{T}, DType::I64);
    Tensor ct = nan_buf({B * T, half}, DType::F32), st = nan_buf({B * T, half}, DType::F32);
    cuda::rope_tables(P, B, T, half, 10000.0, ct, st);
    char ctx[64];
    snprintf(ctx, sizeof ctx, "B=%ld H=%ld T=%ld half=%ld", (long)B, (long)H, (long)T, (long)half);
    const Shape s{B, H, T, 2 * half};
    const int64_t n = B * H * T * 2 * half;
    for (bool mis : {false, true}) {
      Twin x = twin(s, mis);
      for (float sign : {1.f, -1.f}) {
        Tensor y = nan_buf(s, DType::BF16, mis), yf = nan_buf(s, DType::F32, mis);
        cuda::rope(x.b, y, ct, st, B, H, T, half, sign);
        cuda::rope(x.f, yf, ct, st, B, H, T, half, sign);
        cmp_rounded(sign > 0 ? "bf16 rope fwd" : "bf16 rope bwd", y, F(yf), n, ctx);
        if (sign > 0) {  // the CPU op in bf16: the same rotation, rounded (bit for bit)
          const Tensor yc = moon::rope(x.b, P, 10000.0);
          ++checks;
          if (std::memcmp(B16(yc), B16(y), 2 * n) != 0) fail(std::string("bf16 rope vs cpu op: not bitwise [") + ctx + "]");
        }
      }
    }
  }
}

// l2_normalize rows (ops/cuda/reduce_cuda.cu), forward and backward, warp- and block-per-row, vector and scalar
// paths: the bf16 result is the f32 result rounded, the norms are equal bit for bit.
void test_l2_bf16() {
  for (auto [R, D] : std::vector<std::pair<int64_t, int64_t>>{{3, 8}, {5, 17}, {2, 2048}, {1, 3}})
    for (bool mis : {false, true}) {
      char ctx[64];
      snprintf(ctx, sizeof ctx, "R=%ld D=%ld%s", (long)R, (long)D, mis ? " misaligned" : "");
      const int64_t n = R * D;
      Twin x = twin({R, D}, mis), g = twin({R, D}, mis);
      Tensor y = nan_buf({R, D}, DType::BF16, mis), yf = nan_buf({R, D}, DType::F32, mis);
      Tensor nb = nan_buf({R}, DType::F32), nf = nan_buf({R}, DType::F32);
      cuda::l2_normalize_rows(x.b, 1e-12f, y, nb);
      cuda::l2_normalize_rows(x.f, 1e-12f, yf, nf);
      cmp_rounded("bf16 l2 fwd", y, F(yf), n, ctx);
      cmp_bits("bf16 l2 norms", F(nb), F(nf), R, ctx);
      // Backward from the same (bf16-representable) saved output in both dtypes.
      Twin ys{nan_buf({R, D}, DType::F32, mis), y};
      for (int64_t i = 0; i < n; ++i) F(ys.f)[i] = bf16_to_f32(B16(y)[i]);
      Tensor dx = nan_buf({R, D}, DType::BF16, mis), dxf = nan_buf({R, D}, DType::F32, mis);
      cuda::l2_normalize_rows_backward(g.b, ys.b, nb, 1e-12f, dx);
      cuda::l2_normalize_rows_backward(g.f, ys.f, nb, 1e-12f, dxf);
      cmp_rounded("bf16 l2 bwd", dx, F(dxf), n, ctx);
    }
}

}  // namespace

void test_bf16_norm(const std::string& only) {
  if (!only.empty() && only != "bf16" && only != "bf16_norm") return;
  lap();
  auto run = [](const char* name, void (*f)()) {
    guarded(name, f);
    done(name);
  };
  run("bf16_norm softmax", test_softmax_bf16);
  run("bf16_norm norms", test_norms_bf16);
  run("bf16_norm ce", test_ce_bf16);
  run("bf16_norm rope", test_rope_bf16);
  run("bf16_norm l2", test_l2_bf16);
}

}  // namespace emutest
