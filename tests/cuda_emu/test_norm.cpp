// The converted ops/cuda/{norm,loss,rope,adamw,elementwise,dropout}_cuda.cu entry points on CPU tensors,
// against the CPU kernels (generic ISA copy) or exact references; bitwise where the kernels promise the CPU's
// arithmetic (cross-entropy backward, rope, adamw, elementwise, dropout).
#include <random>
#include <tuple>
#include <vector>

#include "common.h"
#include "emu/ops/cuda/adamw_cuda.h"
#include "emu/ops/cuda/elementwise_cuda.h"
#include "emu/ops/cuda/loss_cuda.h"
#include "emu/ops/cuda/norm_cuda.h"
#include "ops/attention.h"
#include "ops/cpu/elementwise_kernels.h"
#include "ops/cpu/loss_kernels.h"
#include "ops/cpu/norm_kernels.h"
#include "ops/norm.h"
#include "runtime/tensor.h"

namespace emutest {
namespace {
using namespace moon;
namespace G = moon::cpu::generic;
namespace cuda = moon::cuda_emu;
std::mt19937 rng(7);

// A NaN-filled f32 tensor, 16-byte aligned (mis = false) or starting 4 bytes past alignment (mis = true).
Tensor buf(const Shape& s, bool mis = false) { return nan_tensor(s, DType::F32, mis ? 1 : 0); }
Tensor rnd(const Shape& s, bool mis = false, float scale = 1.f) {
  Tensor t = buf(s, mis); std::normal_distribution<float> N(0.f, scale);
  float* p = static_cast<float*>(t.raw_data()); for (int64_t i = 0; i < t.numel(); ++i) p[i] = N(rng);
  return t;
}
void test_softmax() {
  for (int64_t C : {1, 3, 4, 31, 64, 130, 1024, 1025, 1028, 4100})
    for (int64_t rows : {1, 6, 9})
      for (bool mis : {false, true})
        for (bool log : {false, true}) {
          if (rows == 9 && C > 1024) continue;
          char ctx[128]; snprintf(ctx, sizeof ctx, "C=%ld rows=%ld mis=%d log=%d", (long)C, (long)rows, mis, log);
          Tensor x = rnd({rows, C}, mis, 3.f);
          float* xp = F(x);
          if (C > 2) { xp[1] = -INFINITY; if (rows > 2) xp[C + C - 1] = -INFINITY; }
          if (rows > 3) for (int64_t j = 0; j < C; ++j) xp[3 * C + j] = j % 3 ? -INFINITY : xp[3 * C + j];
          if (rows > 4) for (int64_t j = 0; j < C; ++j) xp[4 * C + j] = -INFINITY;  // whole row -inf: NaN both
          Tensor y = buf({rows, C}, mis), yr = buf({rows, C});
          cuda::softmax(x, y, rows, C, log);
          G::softmax_rows(xp, F(yr), rows, C, log);
          cmp(log ? "log_softmax" : "softmax", F(y), F(yr), rows * C, 2e-5, log ? 2e-5 : 1e-7, ctx);
          // backward from the CPU's y (the -inf-row made finite)
          for (int64_t j = 0; rows > 4 && j < C; ++j) F(yr)[4 * C + j] = log ? -std::log(float(C)) : 1.f / C;
          Tensor g = rnd({rows, C}, mis), dx = buf({rows, C}, mis), dr = buf({rows, C});
          Tensor yy = buf({rows, C}, mis); std::memcpy(F(yy), F(yr), 4 * rows * C);
          cuda::softmax_backward(yy, g, dx, rows, C, log);
          G::softmax_backward_rows(F(yy), F(g), F(dr), rows, C, log);
          cmp("softmax_backward", F(dx), F(dr), rows * C, 1e-4, 1e-5 * std::sqrt(double(C)), ctx);
        }
}

void test_norms() {
  for (int64_t C : {1, 5, 33, 64, 1024, 1030, 2052})
    for (int64_t rows : {1, 7, 300})
      for (bool mis : {false, true})
        for (int wb : {0, 1, 3}) {
          if (rows == 300 && C > 64) continue;
          if (C > 64 && wb != (mis ? 1 : 3)) continue;  // wide rows: two of the six combinations (runtime)
          char ctx[128]; snprintf(ctx, sizeof ctx, "C=%ld rows=%ld mis=%d wb=%d", (long)C, (long)rows, mis, wb);
          Tensor x = rnd({rows, C}, mis, 2.f);
          for (int64_t i = 0; i < rows * C; ++i) F(x)[i] += 5.f;
          Tensor w = wb & 1 ? rnd({C}, mis) : Tensor(), b = wb & 2 ? rnd({C}, mis) : Tensor();
          float* wp = w.defined() ? F(w) : nullptr; float* bp = b.defined() ? F(b) : nullptr;
          Tensor y = buf({rows, C}, mis), mean = buf({rows}), rstd = buf({rows});
          Tensor yr = buf({rows, C}), mr = buf({rows}), rr = buf({rows});
          cuda::layer_norm(x, w, b, y, mean, rstd, 1e-5);
          G::layer_norm_rows(F(x), wp, bp, F(yr), F(mr), F(rr), rows, C, 1e-5f);
          cmp("layer_norm y", F(y), F(yr), rows * C, 1e-4, 1e-4, ctx);
          cmp("layer_norm mean", F(mean), F(mr), rows, 1e-5, 1e-5, ctx);
          cmp("layer_norm rstd", F(rstd), F(rr), rows, 1e-4, 0, ctx);
          Tensor g = rnd({rows, C}, mis);
          for (int mask : {7, 1, 6, 2}) {
            Tensor dx = mask & 1 ? buf({rows, C}, mis) : Tensor(), dw = mask & 2 ? buf({C}) : Tensor(),
                   db = mask & 4 ? buf({C}) : Tensor();
            Tensor dxr = buf({rows, C}), dwr = buf({C}), dbr = buf({C});
            cuda::layer_norm_backward(x, w, mr, rr, g, dx, dw, db);
            G::layer_norm_backward_rows(F(x), wp, F(mr), F(rr), F(g), F(dxr), F(dwr), F(dbr), rows, C);
            if (dx.defined()) cmp("layer_norm dx", F(dx), F(dxr), rows * C, 1e-3, 1e-4 * std::sqrt(double(C)), ctx);
            if (dw.defined()) cmp("layer_norm dw", F(dw), F(dwr), C, 1e-4, 1e-5 * rows, ctx);
            if (db.defined()) cmp("layer_norm db", F(db), F(dbr), C, 1e-4, 1e-5 * rows, ctx);
          }
          // rms_norm
          Tensor ry = buf({rows, C}, mis), rs = buf({rows}), ryr = buf({rows, C}), rsr = buf({rows});
          cuda::rms_norm(x, w, ry, rs, 1e-6);
          G::rms_norm_rows(F(x), wp, F(ryr), F(rsr), rows, C, 1e-6f);
          cmp("rms_norm y", F(ry), F(ryr), rows * C, 1e-5, 1e-6, ctx);
          cmp("rms_norm rstd", F(rs), F(rsr), rows, 1e-5, 0, ctx);
          for (int mask : {3, 1, 2}) {
            Tensor dx = mask & 1 ? buf({rows, C}, mis) : Tensor(), dw = mask & 2 ? buf({C}) : Tensor();
            Tensor dxr = buf({rows, C}), dwr = buf({C});
            cuda::rms_norm_backward(x, w, rsr, g, dx, dw);
            G::rms_norm_backward_rows(F(x), wp, F(rsr), F(g), F(dxr), F(dwr), rows, C);
            if (dx.defined()) cmp("rms_norm dx", F(dx), F(dxr), rows * C, 1e-3, 1e-5 * std::sqrt(double(C)), ctx);
            if (dw.defined()) cmp("rms_norm dw", F(dw), F(dwr), C, 1e-4, 1e-5 * rows, ctx);
          }
        }
  // column_sum over strided views, double reference
  for (auto [R, C, tr] : std::vector<std::tuple<int64_t, int64_t, bool>>{{1, 1, false}, {0, 5, false}, {1000, 33, false}, {77, 70, true}, {5000, 3, true}}) {
    Tensor base = rnd(tr ? Shape{C, R} : Shape{R, C});
    Tensor gv = tr ? base.transpose(0, 1) : base;
    Tensor out = buf({C});
    cuda::column_sum(gv, out);
    std::vector<float> ref(C);
    for (int64_t j = 0; j < C; ++j) { double s = 0; for (int64_t i = 0; i < R; ++i) s += F(base)[tr ? j * R + i : i * C + j]; ref[j] = float(s); }
    char ctx[64]; snprintf(ctx, sizeof ctx, "R=%ld C=%ld tr=%d", (long)R, (long)C, tr);
    cmp("column_sum", F(out), ref.data(), C, 1e-5, 1e-5 * std::sqrt(double(R)), ctx);
  }
}

void test_ce() {
  for (int64_t C : {1, 3, 8, 1000, 1027, 2048})
    for (int64_t N : {1, 6, 9})
      for (int pad : {0, 3})
        for (float s : {0.f, 0.1f})
          for (int ign : {0, 1, 2}) {  // 0 none ignored, 1 some, 2 all
            if (N == 9 && C > 1024) continue;
            char ctx[128]; snprintf(ctx, sizeof ctx, "C=%ld N=%ld pad=%d s=%g ign=%d", (long)C, (long)N, pad, s, ign);
            Tensor wide = rnd({N, C + pad}, false, 4.f);
            Tensor x = wide.slice(1, 0, C);
            if (C > 2) F(x)[2] = -INFINITY;
            std::vector<int64_t> tv(N); int64_t count = 0;
            for (int64_t i = 0; i < N; ++i) {
              tv[i] = (i * 7 + 3) % C;
              if (ign == 2 || (ign == 1 && i % 3 == 1)) tv[i] = -100; else ++count;
              if (C > 2 && tv[i] == 2) tv[i] = 0;
            }
            Tensor t = from_vector<int64_t>(tv, {N}, DType::I64);
            CeParams p{-100, s};
            Tensor loss = full({}, NaN), probs = count ? buf({N, C}) : Tensor();
            Tensor probs_r = buf({N, C});
            cuda::cross_entropy(x, t, p, loss, probs, count);
            const double tot = G::cross_entropy_rows(F(x), N, C, x.stride(0), tv.data(), 1, -100, s, F(probs_r));
            const float lr = count > 0 ? float(tot / count) : 0.f;
            cmp("ce loss", F(loss), &lr, 1, 1e-5, 1e-6, ctx);
            if (!count) continue;
            for (int64_t i = 0; i < N; ++i) if (tv[i] != -100) cmp("ce probs", F(probs) + i * C, F(probs_r) + i * C, C, 1e-5, 1e-8, ctx);
            for (bool mis : {false, true}) {
              Tensor pr = buf({N, C}, mis); std::memcpy(F(pr), F(probs_r), 4 * N * C);
              Tensor dx = buf({N, C}, mis), dxr = buf({N, C});
              cuda::cross_entropy_backward(pr, t, p, 0.37f, dx);
              G::cross_entropy_backward_rows(F(pr), tv.data(), 1, N, C, -100, s, 0.37f, F(dxr));
              cmp_bits("ce backward", F(dx), F(dxr), N * C, ctx);
            }
          }
}

void test_rope() {
  for (auto [B, H, T, half, bt, i32] : std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t, bool, bool>>{
           {2, 3, 5, 3, false, false}, {2, 2, 7, 1, true, false}, {1, 4, 3, 32, true, true}, {3, 1, 9, 5, false, true}}) {
    std::vector<int64_t> pos(bt ? B * T : T);
    for (size_t i = 0; i < pos.size(); ++i) pos[i] = int64_t(i * 37 + 1) + (i == 2 ? 100001 : 0);
    Tensor P = from_vector<int64_t>(pos, bt ? Shape{B, T} : Shape{T}, DType::I64);
    if (i32) P = P.to(DType::I32);
    Tensor ct = buf({B * T, half}), st = buf({B * T, half});
    cuda::rope_tables(P, B, T, half, 10000.0, ct, st);
    Tensor x = rnd({B, H, T, 2 * half}), y = buf({B, H, T, 2 * half});
    cuda::rope(x, y, ct, st, B, H, T, half, 1.f);
    Tensor yr = moon::rope(x, P, 10000.0);
    char ctx[64]; snprintf(ctx, sizeof ctx, "B=%ld H=%ld T=%ld half=%ld", (long)B, (long)H, (long)T, (long)half);
    cmp_bits("rope fwd", F(y), F(yr), x.numel(), ctx);
    // backward: the inverse rotation, reference loop as rope_cpu with sign -1
    Tensor dx = buf({B, H, T, 2 * half}); std::vector<float> ref(x.numel());
    cuda::rope(x, dx, ct, st, B, H, T, half, -1.f);
    for (int64_t b = 0; b < B; ++b) for (int64_t h = 0; h < H; ++h) for (int64_t t = 0; t < T; ++t) {
      const int64_t r = ((b * H + h) * T + t) * 2 * half;
      for (int64_t i = 0; i < half; ++i) {
        const double ang = double(pos[bt ? b * T + t : t]) * std::pow(10000.0, -2.0 * double(i) / double(2 * half));
        const float c = float(std::cos(ang)), sn = -1.f * float(std::sin(ang)), x1 = F(x)[r + i], x2 = F(x)[r + i + half];
        ref[r + i] = x1 * c - x2 * sn; ref[r + i + half] = x2 * c + x1 * sn;
      }
    }
    cmp_bits("rope bwd", F(dx), ref.data(), x.numel(), ctx);
  }
}

void test_adamw() {
  const std::vector<int64_t> sizes{1, 3, 8191, 8192, 8193, 20000, 5, 0, 16387};
  std::vector<Tensor> P, G_, M, V; std::vector<std::vector<float>> p2, m2, v2;
  for (size_t k = 0; k < sizes.size(); ++k) {
    const bool mis = k % 3 == 1;
    P.push_back(rnd({sizes[k]}, mis)); G_.push_back(rnd({sizes[k]}, k == 5));
    M.push_back(buf({sizes[k]}, mis)); V.push_back(buf({sizes[k]}, k == 6));
    M.back().zero_(); V.back().zero_();
    p2.emplace_back(F(P.back()), F(P.back()) + sizes[k]); m2.emplace_back(sizes[k], 0.f); v2.emplace_back(sizes[k], 0.f);
  }
  const double b1 = 0.9, b2 = 0.95, eps_d = 1e-8, wd = 0.1;
  for (int step = 1; step <= 3; ++step) {
    const double lr = 3e-3 * step;
    const double correction1 = 1.0 - std::pow(b1, double(step)), correction2 = 1.0 - std::pow(b2, double(step));
    const float step_size = float(lr / correction1), inv_sqrt_c2 = float(1.0 / std::sqrt(correction2)), eps = float(eps_d);
    const float fb1 = float(b1), fb2 = float(b2);
    std::vector<cuda::AdamWTensor> ts;
    for (size_t k = 0; k < sizes.size(); ++k) {
      const float keep = k % 2 ? float(1.0 - lr * wd) : 1.0f;
      ts.push_back({F(P[k]), F(G_[k]), F(M[k]), F(V[k]), sizes[k], keep});
      const float* gw = F(G_[k]); float *pw = p2[k].data(), *mw = m2[k].data(), *vw = v2[k].data();
      for (int64_t j = 0; j < sizes[k]; ++j) {  // the CPU loop of training/optimizer.cpp
        const float gj = gw[j];
        const float mj = fb1 * mw[j] + (1.0f - fb1) * gj;
        const float vj = fb2 * vw[j] + (1.0f - fb2) * gj * gj;
        mw[j] = mj, vw[j] = vj;
        pw[j] = pw[j] * keep - step_size * mj / (std::sqrt(vj) * inv_sqrt_c2 + eps);
      }
    }
    cuda::adamw_step(ts, {step_size, inv_sqrt_c2, eps, fb1, 1.0f - fb1, fb2, 1.0f - fb2}, kCPU);
    for (size_t k = 0; k < sizes.size(); ++k) {
      char ctx[64]; snprintf(ctx, sizeof ctx, "step %d tensor %zu n=%ld", step, k, (long)sizes[k]);
      cmp_bits("adamw p", F(P[k]), p2[k].data(), sizes[k], ctx);
      cmp_bits("adamw m", F(M[k]), m2[k].data(), sizes[k], ctx);
      cmp_bits("adamw v", F(V[k]), v2[k].data(), sizes[k], ctx);
    }
  }
}

void test_elementwise() {
  using cpu::BinaryOp; using cpu::UnaryOp;
  // binary forward through the Indexer path: a (3,1,5) expanded to (3,4,5), b a transposed (5,4) view
  for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min}) {
    Tensor a0 = rnd({3, 1, 5}), b0 = rnd({5, 4});
    F(a0)[2] = NaN; F(b0)[7] = NaN; F(b0)[0] = F(a0)[0];
    Tensor a = a0.expand({3, 4, 5}), b = b0.transpose(0, 1).unsqueeze(0).expand({3, 4, 5});
    Tensor out = buf({3, 4, 5}); std::vector<float> ref(60);
    cuda::binary_forward(op, out, a, b);
    for (int64_t i = 0; i < 3; ++i) for (int64_t j = 0; j < 4; ++j) for (int64_t k = 0; k < 5; ++k)
      G::binary_row(op, F(a0) + i * 5 + k, 0, F(b0) + k * 4 + j, 0, &ref[(i * 4 + j) * 5 + k], 1);
    cmp_bits("binary strided", F(out), ref.data(), 60, "op");
    // backward on the same operands
    if (op == BinaryOp::Add || op == BinaryOp::Sub) continue;
    Tensor g = rnd({3, 4, 5}), ga = buf({3, 4, 5}), gb = buf({3, 4, 5}); std::vector<float> ra(60), rb(60);
    cuda::binary_backward(op, g, a, b, ga, gb);
    for (int64_t i = 0; i < 3; ++i) for (int64_t j = 0; j < 4; ++j) for (int64_t k = 0; k < 5; ++k) {
      const int64_t e = (i * 4 + j) * 5 + k;
      G::binary_backward_row(op, F(g) + e, F(a0) + i * 5 + k, 0, F(b0) + k * 4 + j, 0, &ra[e], &rb[e], 1);
    }
    cmp_bits("binary backward strided ga", F(ga), ra.data(), 60, "op");
    cmp_bits("binary backward strided gb", F(gb), rb.data(), 60, "op");
  }
  // flat paths with a tail: contiguous a, broadcast scalar b, n = 4k + 3, aligned and not
  for (bool mis : {false, true})
    for (BinaryOp op : {BinaryOp::Add, BinaryOp::Div, BinaryOp::Max, BinaryOp::Mul}) {
      const int64_t n = 1027;
      Tensor a = rnd({n}, mis), b0 = rnd({1}), out = buf({n}, mis), ref = buf({n});
      F(a)[5] = F(b0)[0];
      Tensor b = b0.expand({n});
      cuda::binary_forward(op, out, a, b);
      G::binary_row(op, F(a), 1, F(b0), 0, F(ref), n);
      cmp_bits("binary flat", F(out), F(ref), n, mis ? "mis" : "aligned");
      if (op == BinaryOp::Add) continue;
      Tensor g = rnd({n}, mis), ga = buf({n}, mis), gb = buf({n}), ra = buf({n}), rb = buf({n});
      cuda::binary_backward(op, g, a, b, ga, gb);
      G::binary_backward_row(op, F(g), F(a), 1, F(b0), 0, F(ra), F(rb), n);
      cmp_bits("binary backward flat ga", F(ga), F(ra), n, mis ? "mis" : "aligned");
      cmp_bits("binary backward flat gb", F(gb), F(rb), n, mis ? "mis" : "aligned");
      Tensor gb_only = buf({n});
      cuda::binary_backward(op, g, a, b, Tensor(), gb_only);
      cmp_bits("binary backward gb only", F(gb_only), F(rb), n, mis ? "mis" : "aligned");
    }
  // unary forward / backward, every op
  for (int o = 0; o <= int(UnaryOp::Pow); ++o)
    for (bool mis : {false, true}) {
      const UnaryOp op = UnaryOp(o);
      const float p0 = op == UnaryOp::Clamp ? -0.5f : (op == UnaryOp::Pow ? 2.5f : 1.7f), p1 = 0.8f;
      const int64_t n = 1031;
      Tensor x = rnd({n}, mis, 1.5f);
      if (op == UnaryOp::Log || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt || op == UnaryOp::Pow)
        for (int64_t i = 0; i < n; ++i) F(x)[i] = std::fabs(F(x)[i]) + 0.1f;
      F(x)[3] = 0.f; if (op == UnaryOp::Clamp) { F(x)[4] = -0.5f; F(x)[5] = 0.8f; }
      Tensor y = buf({n}, mis), yr = buf({n});
      cuda::unary_forward(op, p0, p1, x, y);
      G::unary_forward(op, p0, p1, F(x), F(yr), n);
      char ctx[32]; snprintf(ctx, sizeof ctx, "op %d mis %d", o, mis);
      cmp("unary fwd", F(y), F(yr), n, 2e-6, 2e-6, ctx);
      const auto needs = cpu::unary_backward_needs(op);
      Tensor g = rnd({n}, mis), dx = buf({n}, mis), dr = buf({n});
      cuda::unary_backward(op, p0, p1, needs.x ? x : Tensor(), needs.y ? yr : Tensor(), g, dx);
      G::unary_backward(op, p0, p1, F(x), needs.y ? F(yr) : nullptr, F(g), F(dr), n);
      cmp("unary bwd", F(dx), F(dr), n, 2e-6, 2e-6, ctx);
    }
  // where: flat with a broadcast condition, and strided
  {
    const int64_t n = 1030;
    std::vector<uint8_t> cv(n); for (int64_t i = 0; i < n; ++i) cv[i] = (i * 5) % 3 == 0;
    Tensor c = from_vector<uint8_t>(cv, {n}, DType::U8);
    for (bool mis : {false, true}) {
      Tensor a = rnd({n}, mis), b = rnd({n}), out = buf({n}, mis); std::vector<float> ref(n);
      cuda::where_forward(out, c, a, b);
      for (int64_t i = 0; i < n; ++i) ref[i] = cv[i] ? F(a)[i] : F(b)[i];
      cmp_bits("where flat", F(out), ref.data(), n, mis ? "mis" : "aligned");
      Tensor g = rnd({n}, mis), ga = buf({n}, mis), gb = buf({n}, mis); std::vector<float> ra(n), rb(n);
      cuda::where_backward(c, g, ga, gb);
      for (int64_t i = 0; i < n; ++i) { ra[i] = cv[i] ? F(g)[i] : 0.f; rb[i] = cv[i] ? 0.f : F(g)[i]; }
      cmp_bits("where grad a", F(ga), ra.data(), n, "");
      cmp_bits("where grad b", F(gb), rb.data(), n, "");
    }
    // strided: cond (4, 1) expanded to (4, 6), a (6, 4) transposed, b scalar
    Tensor c2 = from_vector<uint8_t>(std::vector<uint8_t>{1, 0, 0, 1}, {4, 1}, DType::U8).expand({4, 6});
    Tensor a0 = rnd({6, 4}), b0 = rnd({1});
    Tensor out = buf({4, 6}); std::vector<float> ref(24);
    cuda::where_forward(out, c2, a0.transpose(0, 1), b0.expand({4, 6}));
    for (int i = 0; i < 4; ++i) for (int j = 0; j < 6; ++j) ref[i * 6 + j] = (i == 0 || i == 3) ? F(a0)[j * 4 + i] : F(b0)[0];
    cmp_bits("where strided", F(out), ref.data(), 24, "");
    Tensor g = rnd({4, 6}), ga = buf({4, 6}); std::vector<float> ra(24);
    cuda::where_backward(c2, g, ga, Tensor());
    for (int i = 0; i < 4; ++i) for (int j = 0; j < 6; ++j) ra[i * 6 + j] = (i == 0 || i == 3) ? F(g)[i * 6 + j] : 0.f;
    cmp_bits("where grad strided", F(ga), ra.data(), 24, "");
  }
  // in-place scale and axpy on a strided view
  {
    Tensor base = rnd({6, 5}); std::vector<float> before(F(base), F(base) + 30);
    Tensor v = base.transpose(0, 1).slice(0, 1, 4);  // (3, 6) view
    cuda::scale_inplace(v, 2.5);
    Tensor xx = rnd({6});
    cuda::axpy_inplace(v, xx.expand({3, 6}), 0.5);
    std::vector<float> ref(before);
    for (int i = 0; i < 6; ++i) for (int j = 1; j < 4; ++j) { float& r = ref[i * 5 + j]; r = r * 2.5f; r = std::fmaf(0.5f, F(xx)[i], r); }
    cmp_bits("scale+axpy strided", F(base), ref.data(), 30, "");
  }
}

void test_dropout() {
  for (int64_t n : {1, 3, 4, 1027, 4096})
    for (bool mis : {false, true}) {
      Tensor x = rnd({n}, mis), y = buf({n}, mis); std::vector<float> ref(n);
      const uint64_t seed = 0x1234567890abcdefull, off = 77; const float p = 0.3f, sc = 1.f / 0.7f;
      cuda::dropout_forward(x, y, seed, off, p, sc);
      for (int64_t i = 0; i < n; ++i) ref[i] = dropout_uniform(seed, off, i) >= p ? F(x)[i] * sc : 0.f;
      cmp_bits("dropout", F(y), ref.data(), n, mis ? "mis" : "aligned");
    }
}


void test_extra() {
  using cpu::CompareOp; using cpu::UnaryOp;
  // compare: f32 flat (vector path + tail) and i64 strided
  for (CompareOp op : {CompareOp::Eq, CompareOp::Gt, CompareOp::Lt}) {
    const int64_t n = 1027;
    Tensor a = rnd({n}), b0 = rnd({1}); F(a)[9] = F(b0)[0];
    Tensor out = full({n}, 7, DType::U8); std::vector<uint8_t> ref(n);
    cuda::compare_forward(op, out, a, b0.expand({n}));
    G::compare_row(op, F(a), 1, F(b0), 0, ref.data(), n);
    ++checks; if (std::memcmp(out.raw_data(), ref.data(), n)) { ++failures; printf("FAIL compare flat op %d\n", int(op)); }
    std::vector<int64_t> av(12), bv(3); for (int i = 0; i < 12; ++i) av[i] = i % 5; for (int i = 0; i < 3; ++i) bv[i] = i + 1;
    Tensor ai = from_vector<int64_t>(av, {3, 4}, DType::I64).transpose(0, 1), bi = from_vector<int64_t>(bv, {3}, DType::I64).expand({4, 3});
    Tensor o2 = full({4, 3}, 7, DType::U8); uint8_t* op2 = static_cast<uint8_t*>(o2.raw_data());
    cuda::compare_forward(op, o2, ai, bi);
    for (int i = 0; i < 4; ++i) for (int j = 0; j < 3; ++j) {
      const int64_t u = av[j * 4 + i], v = bv[j];
      const uint8_t r = op == CompareOp::Eq ? u == v : op == CompareOp::Gt ? u > v : u < v;
      ++checks; if (op2[i * 3 + j] != r) { ++failures; printf("FAIL compare strided i64 op %d at %d,%d\n", int(op), i, j); }
    }
  }
  // where with a broadcast (scalar) condition on the flat path
  { const int64_t n = 1029; Tensor c = full({1}, 1, DType::U8).expand({n}), a = rnd({n}), b = rnd({n}), out = buf({n});
    cuda::where_forward(out, c, a, b); cmp_bits("where scalar cond", F(out), F(a), n, "");
    Tensor g = rnd({n}), gb = buf({n}); std::vector<float> z(n, 0.f);
    cuda::where_backward(c, g, Tensor(), gb); cmp_bits("where scalar cond grad b", F(gb), z.data(), n, ""); }
  // unary in place (x is y)
  { const int64_t n = 1027; Tensor x = rnd({n}); std::vector<float> ref(n);
    G::unary_forward(UnaryOp::Scale, 3.f, 0.f, F(x), ref.data(), n);
    cuda::unary_forward(UnaryOp::Scale, 3.f, 0.f, x, x); cmp_bits("unary in place", F(x), ref.data(), n, ""); }
  // cross_entropy with strided targets
  { const int64_t N = 7, C = 12; Tensor x = rnd({N, C}); std::vector<int64_t> tv(2 * N);
    for (int64_t i = 0; i < 2 * N; ++i) tv[i] = i % 2 ? 999 : (i * 5) % C;
    Tensor t = from_vector<int64_t>(tv, {N, 2}, DType::I64).select(1, 0);
    std::vector<int64_t> dense(N); for (int64_t i = 0; i < N; ++i) dense[i] = tv[2 * i];
    CeParams p{-1, 0.2f}; Tensor loss = full({}, NaN), probs = buf({N, C}), pr = buf({N, C});
    cuda::cross_entropy(x, t, p, loss, probs, N);
    const float lr = float(G::cross_entropy_rows(F(x), N, C, C, dense.data(), 1, -1, 0.2f, F(pr)) / N);
    cmp("ce strided targets loss", F(loss), &lr, 1, 1e-5, 1e-6, "");
    Tensor dx = buf({N, C}), dr = buf({N, C});
    cuda::cross_entropy_backward(pr, t, p, 1.f, dx);
    G::cross_entropy_backward_rows(F(pr), dense.data(), 1, N, C, -1, 0.2f, 1.f, F(dr));
    cmp_bits("ce strided targets backward", F(dx), F(dr), N * C, ""); }
}

}  // namespace

void test_norm_family(const std::string& only) {
  auto run = [&](const char* name, void (*f)()) {
    if (!only.empty() && only != name) return;
    guarded(name, f);
    done(name);
  };
  run("softmax", test_softmax);
  run("norms", test_norms);
  run("ce", test_ce);
  run("rope", test_rope);
  run("adamw", test_adamw);
  run("elementwise", test_elementwise);
  run("dropout", test_dropout);
  run("extra", test_extra);
}

}  // namespace emutest
