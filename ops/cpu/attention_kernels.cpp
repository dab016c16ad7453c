// CPU scaled-dot-product attention, forward and backward, FlashAttention-2 style (see attention_kernels.h).
//
// Every matrix product below is a small GEMM  C = A B  whose A operand is read one scalar at a time
// (broadcast) through two strides, so A can be a block of q, k, v or dout straight from the tensor, in any
// layout and either orientation; B is a tile packed in per-thread scratch whose rows are loaded as vectors.
// Each pass packs only what it reuses across its inner loop, transposed, and keeps its accumulators
// transposed (D x tile), writing them back once at the end:
//   forward and dQ pass:  per query tile, pack Q^T (and dO^T); per key tile compute the key-major scores
//                         S^T = K Q^T, so the softmax over keys runs down columns, vectorised over queries.
//   dK/dV pass:           per key tile, pack K^T and V^T; per query tile compute query-major S = Q K^T.
// Scores are computed unscaled (one FMA chain over d = 0..D-1) and then multiplied by `scale`, the same way
// in every pass, so the backward recomputes bit-identical scores.

#include "ops/cpu/attention_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <limits>
#include <new>

#include "ops/cpu/vec.h"
#include "runtime/error.h"

#ifndef MOON_ISA_NS
#error "attention_kernels.cpp is compiled once per instruction set: see cmake/MultiIsa.cmake"
#endif

namespace moon::cpu::MOON_ISA_NS {
namespace {

constexpr int64_t kTile = 64;              // queries per query tile, and keys per key tile
// Micro-kernel block: kMR rows x kNV vectors. kMR*kNV accumulators, kNV loads and 1 broadcast fit in the 32
// (AVX-512: 6*4 + 4 + 1) or 16 (AVX2, SSE: 4*3 + 3 + 1) vector registers.
constexpr int kMR = kLanes >= 16 ? 6 : 4;
constexpr int kNV = kLanes >= 16 ? 4 : 3;
constexpr float kInf = std::numeric_limits<float>::infinity();
static_assert(kTile % kLanes == 0, "tiles are whole vectors wide");

// p[0, n) = x. (A local loop rather than std::fill: std:: templates instantiated here could be emitted out of
// line with this copy's instruction set and then shared with the other copies by the linker; see vec.h.)
void fill(float* p, int64_t n, float x) {
  for (int64_t i = 0; i < n; ++i) p[i] = x;
}

// ---------------------------------------------------------------------------------------------------------
// Small GEMM

// A matrix read element by element: A(r, c) = p[r * rs + c * cs].
struct Strided {
  const float* p;
  int64_t rs, cs;
};

// C[R x NV*kLanes] = (acc ? C : 0) + A[R x K] B[K x NV*kLanes]: 2*R*K*NV*kLanes flops.
// Each step over K broadcasts R scalars of A, loads NV vectors of B and does R*NV register FMAs.
template <int R, int NV>
void micro_kernel(int64_t K, Strided A, const float* B, int64_t ldb, float* C, int64_t ldc, bool acc) {
  vfloat c[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) c[r][v] = acc ? vload(C + r * ldc + v * kLanes) : vzero();
  for (int64_t k = 0; k < K; ++k) {
    vfloat b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = vload(B + k * ldb + v * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const vfloat a = vset1(A.p[r * A.rs + k * A.cs]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) c[r][v] = vfma(a, b[v], c[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) vstore(C + r * ldc + v * kLanes, c[r][v]);
}

using MicroKernel = void (*)(int64_t, Strided, const float*, int64_t, float*, int64_t, bool);

// The micro-kernel for a block of r rows and nv vectors (1 <= r <= kMR, 1 <= nv <= kNV).
MicroKernel micro_kernel_for(int r, int nv) {
  static_assert(kMR <= 6 && kNV <= 4, "table below");
  static constexpr MicroKernel table[6][4] = {
      {micro_kernel<1, 1>, micro_kernel<1, 2>, micro_kernel<1, 3>, micro_kernel<1, 4>},
      {micro_kernel<2, 1>, micro_kernel<2, 2>, micro_kernel<2, 3>, micro_kernel<2, 4>},
      {micro_kernel<3, 1>, micro_kernel<3, 2>, micro_kernel<3, 3>, micro_kernel<3, 4>},
      {micro_kernel<4, 1>, micro_kernel<4, 2>, micro_kernel<4, 3>, micro_kernel<4, 4>},
      {micro_kernel<5, 1>, micro_kernel<5, 2>, micro_kernel<5, 3>, micro_kernel<5, 4>},
      {micro_kernel<6, 1>, micro_kernel<6, 2>, micro_kernel<6, 3>, micro_kernel<6, 4>}};
  return table[r - 1][nv - 1];
}

// C[M x N] = (acc ? C : 0) + A[M x K] B[K x N]; B, C row-major, N a multiple of kLanes: 2*M*N*K flops.
void gemm(int64_t M, int64_t N, int64_t K, Strided A, const float* B, int64_t ldb, float* C, int64_t ldc,
          bool acc) {
  for (int64_t j = 0; j < N; j += kNV * kLanes) {
    const int nv = int(std::min<int64_t>(kNV, (N - j) / kLanes));
    for (int64_t i = 0; i < M; i += kMR) {
      const int r = int(std::min<int64_t>(kMR, M - i));
      const Strided Ai{A.p + i * A.rs, A.rs, A.cs};
      micro_kernel_for(r, nv)(K, Ai, B + j, ldb, C + i * ldc + j, ldc, acc);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Tensor views and tiles

// A (B, H, T, D) view with strides in elements.
struct View {
  const float* p;
  const int64_t* s;
  // The (T x D) matrix of head (b, h) from row i on, and its transpose (D x T).
  Strided rows(int64_t b, int64_t h, int64_t i) const { return {at(b, h, i), s[2], s[3]}; }
  Strided cols(int64_t b, int64_t h, int64_t i) const { return {at(b, h, i), s[3], s[2]}; }
  const float* at(int64_t b, int64_t h, int64_t i) const { return p + b * s[0] + h * s[1] + i * s[2]; }
};

// Zero-initialised, 64-byte aligned float buffer (per-thread scratch).
class Buffer {
 public:
  explicit Buffer(int64_t n)
      : p_(static_cast<float*>(::operator new(size_t(n) * sizeof(float), std::align_val_t{64}))), n_(n) {
    fill(0.f);
  }
  ~Buffer() { ::operator delete(p_, std::align_val_t{64}); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  operator float*() const { return p_; }
  void fill(float x) { moon::cpu::MOON_ISA_NS::fill(p_, n_, x); }

 private:
  float* p_;
  int64_t n_;
};

// dst(d, i) = A(i, d) for i < n, d < D, zero for n <= i < kTile: packs an (n x D) block as a (D x kTile) tile.
void pack_transposed(Strided A, int64_t n, int64_t D, float* dst) {
  for (int64_t d = 0; d < D; ++d) {
    float* row = dst + d * kTile;
    for (int64_t i = 0; i < n; ++i) row[i] = A.p[i * A.rs + d * A.cs];
    fill(row + n, kTile - n, 0.f);
  }
}

// out(i, d) = factor[i] * src(d, i) for i < n, d < D: writes a (D x kTile) accumulator tile back to a view.
void store_transposed(const float* src, int64_t n, int64_t D, const float* factor, float* out, int64_t rs,
                      int64_t cs) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < D; ++d) out[i * rs + d * cs] = factor[i] * src[d * kTile + i];
}

// acc(d, i) *= factor[i] for d < D, i < w: rescales the queries (columns) of a (D x kTile) accumulator.
void scale_columns(int64_t D, int64_t w, const float* factor, float* acc) {
  for (int64_t d = 0; d < D; ++d)
    for (int64_t i = 0; i < w; i += kLanes) vstore(acc + d * kTile + i, vload(acc + d * kTile + i) * vload(factor + i));
}

// ---------------------------------------------------------------------------------------------------------
// Masking and softmax pieces. A tile of n queries (or keys) uses only its first w = width(n) columns.

// n rounded up to whole vectors.
int64_t width(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// End of the keys any query before i_end may see: keys [key_end, Tk) are hidden from all of them.
int64_t key_end(const AttnParams& p, int64_t i_end) {
  return p.causal ? std::clamp<int64_t>(i_end + p.q_offset, 0, p.Tk) : p.Tk;
}

// Whether any key of [j0, j0+n) is kept (not padding).
bool any_key_kept(const uint8_t* keep, int64_t j0, int64_t n) {
  return !keep || std::any_of(keep + j0, keep + j0 + n, [](uint8_t x) { return x != 0; });
}

// Key-major scores S^T (n keys x w queries): S^T *= scale, then -inf where query i0+i may not see key j0+j
// (padded key, or causality). n*w flops.
void scale_mask_key_major(const AttnParams& p, const uint8_t* keep, int64_t i0, int64_t j0, int64_t n,
                          int64_t w, float* st) {
  for (int64_t j = 0; j < n; ++j) {
    float* row = st + j * kTile;
    for (int64_t i = 0; i < w; i += kLanes) vstore(row + i, vload(row + i) * vset1(p.scale));
    int64_t hidden = 0;  // queries [0, hidden) of the tile do not see this key
    if (keep && !keep[j0 + j])
      hidden = w;
    else if (p.causal)
      hidden = std::clamp<int64_t>(j0 + j - p.q_offset - i0, 0, w);
    fill(row, hidden, -kInf);
  }
}

// Query-major scores S (m queries x w keys, keys from n on absent): S *= scale, then -inf where query i0+i
// may not see key j0+j. m*w flops.
void scale_mask_query_major(const AttnParams& p, const uint8_t* keep, int64_t i0, int64_t m, int64_t j0,
                            int64_t n, int64_t w, float* s) {
  for (int64_t i = 0; i < m; ++i) {
    float* row = s + i * kTile;
    for (int64_t j = 0; j < w; j += kLanes) vstore(row + j, vload(row + j) * vset1(p.scale));
    const int64_t visible = p.causal ? std::clamp<int64_t>(i0 + i + p.q_offset - j0 + 1, 0, n) : n;
    fill(row + visible, w - visible, -kInf);
    if (keep)
      for (int64_t j = 0; j < visible; ++j)
        if (!keep[j0 + j]) row[j] = -kInf;
  }
}

// One online-softmax step over a key tile, vectorised over queries. On S^T (n x w, scaled and masked):
// m_new = max(m, column max); P^T = exp(S^T - m_new) in place; alpha = exp(m - m_new);
// l = alpha*l + column sum of P^T; m = m_new. The caller rescales its accumulator by alpha. n*w exps.
void online_softmax(int64_t n, int64_t w, float* st, float* m, float* l, float* alpha) {
  for (int64_t i = 0; i < w; i += kLanes) {
    const vfloat m_old = vload(m + i);
    vfloat m_new = m_old;
    for (int64_t j = 0; j < n; ++j) m_new = vmax(m_new, vload(st + j * kTile + i));
    // A query that has seen no key yet keeps m = -inf; shift it by 0 so no -inf - -inf = NaN appears
    // (vexp(-inf) = 0).
    const vfloat shift = vselect(m_new == vset1(-kInf), vzero(), m_new);
    vfloat sum = vzero();
    for (int64_t j = 0; j < n; ++j) {
      const vfloat pj = vexp(vload(st + j * kTile + i) - shift);
      vstore(st + j * kTile + i, pj);
      sum += pj;
    }
    const vfloat a = vexp(m_old - shift);
    vstore(alpha + i, a);
    vstore(l + i, vfma(a, vload(l + i), sum));
    vstore(m + i, m_new);
  }
}

// Per-query statistics of a query tile for the backward: lse, with -inf (query sees nothing) turned into
// +inf so that exp(s - lse) = 0 for it, and Delta; the pad entries i >= m behave as such empty queries.
void load_row_stats(const float* lse, const float* delta, int64_t m, float* lse_tile, float* delta_tile) {
  for (int64_t i = 0; i < kTile; ++i) {
    lse_tile[i] = i < m && lse[i] != -kInf ? lse[i] : kInf;
    delta_tile[i] = i < m ? delta[i] : 0.f;
  }
}

// Key-major (n x w): P^T(j, i) = exp(S^T(j, i) - lse_i), then dS^T(j, i) = P^T(j, i) * (dP^T(j, i) - Delta_i)
// written over dP^T. n*w exps.
void softmax_grad_key_major(int64_t n, int64_t w, const float* lse, const float* delta, float* pt, float* dpt) {
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < w; i += kLanes) {
      const int64_t e = j * kTile + i;
      const vfloat pe = vexp(vload(pt + e) - vload(lse + i));
      vstore(pt + e, pe);
      vstore(dpt + e, pe * (vload(dpt + e) - vload(delta + i)));
    }
}

// Query-major (m x w): P(i, j) = exp(S(i, j) - lse_i), then dS(i, j) = P(i, j) * (dP(i, j) - Delta_i) written
// over dP. m*w exps.
void softmax_grad_query_major(int64_t m, int64_t w, const float* lse, const float* delta, float* p, float* dp) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < w; j += kLanes) {
      const int64_t e = i * kTile + j;
      const vfloat pe = vexp(vload(p + e) - vset1(lse[i]));
      vstore(p + e, pe);
      vstore(dp + e, pe * (vload(dp + e) - vset1(delta[i])));
    }
}

// ---------------------------------------------------------------------------------------------------------
// Forward

struct ForwardScratch {
  explicit ForwardScratch(int64_t D)
      : qt(D * kTile), ot(D * kTile), st(kTile * kTile), m(kTile), l(kTile), alpha(kTile), inv_l(kTile) {}
  Buffer qt, ot, st, m, l, alpha, inv_l;
};

// out and lse for queries [i0, i0+kTile) of head (b, h): per key tile S^T = K Q^T, online softmax,
// O^T = alpha O^T + V^T P^T. 4*m*Tk*D flops, about half of that under causality.
void forward_tile(const AttnParams& p, const AttnTensors& t, ForwardScratch& s, int64_t b, int64_t h,
                  int64_t i0) {
  const int64_t m = std::min(kTile, p.Tq - i0), w = width(m), D = p.D, kvh = h / (p.Hq / p.Hkv);
  const View q{t.q, t.q_stride}, k{t.k, t.k_stride}, v{t.v, t.v_stride};
  const uint8_t* keep = p.key_keep ? p.key_keep + b * p.Tk : nullptr;
  pack_transposed(q.rows(b, h, i0), m, D, s.qt);
  s.ot.fill(0.f);
  s.m.fill(-kInf);
  s.l.fill(0.f);
  for (int64_t j0 = 0; j0 < key_end(p, i0 + m); j0 += kTile) {
    const int64_t n = std::min(kTile, p.Tk - j0);
    if (!any_key_kept(keep, j0, n)) continue;
    gemm(n, w, D, k.rows(b, kvh, j0), s.qt, kTile, s.st, kTile, false);  // S^T = K Q^T
    scale_mask_key_major(p, keep, i0, j0, n, w, s.st);
    online_softmax(n, w, s.st, s.m, s.l, s.alpha);
    scale_columns(D, w, s.alpha, s.ot);
    gemm(D, w, n, v.cols(b, kvh, j0), s.st, kTile, s.ot, kTile, true);  // O^T += V^T P^T
  }
  float* lse = t.lse ? t.lse + (b * p.Hq + h) * p.Tq + i0 : nullptr;
  for (int64_t i = 0; i < m; ++i) {
    const bool empty = s.l[i] == 0.f;  // the query saw no key
    s.inv_l[i] = empty ? 0.f : 1.f / s.l[i];
    if (lse) lse[i] = empty ? -kInf : s.m[i] + logf(s.l[i]);
  }
  float* out = t.out + b * t.out_stride[0] + h * t.out_stride[1] + i0 * t.out_stride[2];
  store_transposed(s.ot, m, D, s.inv_l, out, t.out_stride[2], t.out_stride[3]);
}

// Throws moon::Error for invalid parameters (and, for the backward, a missing lse). Formats with snprintf
// rather than MOON_CHECK, whose templates the linker could share between the ISA copies (see vec.h).
void check_params(const AttnParams& p, bool need_lse, const float* lse) {
  using ll = long long;
  char msg[256] = "";
  if (p.B < 0 || p.Hq < 0 || p.Tq < 0 || p.Tk < 0)
    std::snprintf(msg, sizeof msg, "attention: negative size (B=%lld, Hq=%lld, Tq=%lld, Tk=%lld)", ll(p.B),
                  ll(p.Hq), ll(p.Tq), ll(p.Tk));
  else if (p.D < 1)
    std::snprintf(msg, sizeof msg, "attention: head size D must be at least 1, got %lld", ll(p.D));
  else if (p.Hkv < 1 || p.Hq % p.Hkv != 0)
    std::snprintf(msg, sizeof msg, "attention: the number of kv heads (%lld) must divide the number of query "
                  "heads (%lld)", ll(p.Hkv), ll(p.Hq));
  else if (need_lse && !lse && p.B * p.Hq * p.Tq > 0)
    std::snprintf(msg, sizeof msg, "attention backward: needs the lse saved by the forward, got null");
  if (msg[0]) throw moon::Error(msg);
}

int64_t num_tiles(int64_t T) { return (T + kTile - 1) / kTile; }

}  // namespace

void attention_forward(const AttnParams& p, const AttnTensors& t) {
  check_params(p, false, t.lse);
  const int64_t tiles = num_tiles(p.Tq);
#pragma omp parallel
  {
    ForwardScratch s(p.D);
    // Last query tiles first: under causality they have the most keys, so dynamic scheduling balances.
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < p.B; ++b)
      for (int64_t h = 0; h < p.Hq; ++h)
        for (int64_t it = 0; it < tiles; ++it) forward_tile(p, t, s, b, h, (tiles - 1 - it) * kTile);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Backward

namespace {

// The backward's operands as views.
struct GradViews {
  View q, k, v, dout;
  const float* lse;    // (B, Hq, Tq)
  const float* delta;  // (B, Hq, Tq): rowsum(dO * O)
};

// Delta[b, h, i] = sum_d dO[b, h, i, d] * O[b, h, i, d]: 2*B*Hq*Tq*D flops.
void row_dot(const AttnParams& p, const AttnTensors& t, const AttnGradTensors& g, float* delta) {
  const View o{t.out, t.out_stride}, dout{g.dout, g.dout_stride};
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.Hq; ++h)
      for (int64_t i = 0; i < p.Tq; ++i) {
        const float *x = o.at(b, h, i), *dx = dout.at(b, h, i);
        double sum = 0;
        for (int64_t d = 0; d < p.D; ++d) sum += double(x[d * o.s[3]]) * dx[d * dout.s[3]];
        delta[(b * p.Hq + h) * p.Tq + i] = float(sum);
      }
}

struct KeyTileScratch {
  explicit KeyTileScratch(int64_t D)
      : kt(D * kTile), vt(D * kTile), dkt(D * kTile), dvt(D * kTile), s(kTile * kTile), dp(kTile * kTile),
        lse(kTile), delta(kTile), scale(kTile), one(kTile) {}
  Buffer kt, vt, dkt, dvt, s, dp, lse, delta, scale, one;
};

// One (query tile, key tile) step of the dK/dV pass, with K^T, V^T of keys [j0, j0+n) packed in s:
// S = Q K^T, P = exp(S - lse), dP = dO V^T, dS = P (dP - Delta), dV^T += dO^T P, dK^T += Q^T dS.
// 8*m*n*D flops.
void dkdv_step(const AttnParams& p, const GradViews& x, KeyTileScratch& s, const uint8_t* keep, int64_t b,
               int64_t h, int64_t i0, int64_t j0, int64_t n) {
  const int64_t m = std::min(kTile, p.Tq - i0), w = width(n), D = p.D, row = (b * p.Hq + h) * p.Tq + i0;
  load_row_stats(x.lse + row, x.delta + row, m, s.lse, s.delta);
  gemm(m, w, D, x.q.rows(b, h, i0), s.kt, kTile, s.s, kTile, false);      // S = Q K^T
  scale_mask_query_major(p, keep, i0, m, j0, n, w, s.s);
  gemm(m, w, D, x.dout.rows(b, h, i0), s.vt, kTile, s.dp, kTile, false);  // dP = dO V^T
  softmax_grad_query_major(m, w, s.lse, s.delta, s.s, s.dp);             // P, dS
  gemm(D, w, m, x.dout.cols(b, h, i0), s.s, kTile, s.dvt, kTile, true);   // dV^T += dO^T P
  gemm(D, w, m, x.q.cols(b, h, i0), s.dp, kTile, s.dkt, kTile, true);     // dK^T += Q^T dS
}

// dK, dV for keys [j0, j0+kTile) of kv head (b, kvh): the sum of dkdv_step over the q heads of its group
// and the query tiles that see these keys. 8*Tq*n*D flops per q head, about half under causality.
void dkdv_tile(const AttnParams& p, const GradViews& x, const AttnGradTensors& g, KeyTileScratch& s,
               int64_t b, int64_t kvh, int64_t j0) {
  const int64_t n = std::min(kTile, p.Tk - j0), D = p.D, group = p.Hq / p.Hkv;
  const uint8_t* keep = p.key_keep ? p.key_keep + b * p.Tk : nullptr;
  pack_transposed(x.k.rows(b, kvh, j0), n, D, s.kt);
  pack_transposed(x.v.rows(b, kvh, j0), n, D, s.vt);
  s.dkt.fill(0.f);
  s.dvt.fill(0.f);
  const int64_t i_first = p.causal ? std::max<int64_t>(0, j0 - p.q_offset) : 0;  // first query seeing j0
  if (any_key_kept(keep, j0, n))
    for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h)
      for (int64_t i0 = i_first / kTile * kTile; i0 < p.Tq; i0 += kTile) dkdv_step(p, x, s, keep, b, h, i0, j0, n);
  s.scale.fill(p.scale);
  s.one.fill(1.f);
  const int64_t *ks = g.dk_stride, *vs = g.dv_stride;
  store_transposed(s.dkt, n, D, s.scale, g.dk + b * ks[0] + kvh * ks[1] + j0 * ks[2], ks[2], ks[3]);
  store_transposed(s.dvt, n, D, s.one, g.dv + b * vs[0] + kvh * vs[1] + j0 * vs[2], vs[2], vs[3]);
}

struct QueryTileScratch {
  explicit QueryTileScratch(int64_t D)
      : qt(D * kTile), dot(D * kTile), dqt(D * kTile), st(kTile * kTile), dpt(kTile * kTile), lse(kTile),
        delta(kTile), scale(kTile) {}
  Buffer qt, dot, dqt, st, dpt, lse, delta, scale;
};

// dQ for queries [i0, i0+kTile) of head (b, h): per key tile S^T = K Q^T, P^T = exp(S^T - lse),
// dP^T = V dO^T, dS^T = P^T (dP^T - Delta), dQ^T += K^T dS^T. 6*m*Tk*D flops, about half under causality.
void dq_tile(const AttnParams& p, const GradViews& x, const AttnGradTensors& g, QueryTileScratch& s,
             int64_t b, int64_t h, int64_t i0) {
  const int64_t m = std::min(kTile, p.Tq - i0), w = width(m), D = p.D, kvh = h / (p.Hq / p.Hkv);
  const int64_t row = (b * p.Hq + h) * p.Tq + i0;
  const uint8_t* keep = p.key_keep ? p.key_keep + b * p.Tk : nullptr;
  pack_transposed(x.q.rows(b, h, i0), m, D, s.qt);
  pack_transposed(x.dout.rows(b, h, i0), m, D, s.dot);
  load_row_stats(x.lse + row, x.delta + row, m, s.lse, s.delta);
  s.dqt.fill(0.f);
  for (int64_t j0 = 0; j0 < key_end(p, i0 + m); j0 += kTile) {
    const int64_t n = std::min(kTile, p.Tk - j0);
    if (!any_key_kept(keep, j0, n)) continue;
    gemm(n, w, D, x.k.rows(b, kvh, j0), s.qt, kTile, s.st, kTile, false);    // S^T = K Q^T
    scale_mask_key_major(p, keep, i0, j0, n, w, s.st);
    gemm(n, w, D, x.v.rows(b, kvh, j0), s.dot, kTile, s.dpt, kTile, false);  // dP^T = V dO^T
    softmax_grad_key_major(n, w, s.lse, s.delta, s.st, s.dpt);              // P^T, dS^T
    gemm(D, w, n, x.k.cols(b, kvh, j0), s.dpt, kTile, s.dqt, kTile, true);   // dQ^T += K^T dS^T
  }
  s.scale.fill(p.scale);
  float* dq = g.dq + b * g.dq_stride[0] + h * g.dq_stride[1] + i0 * g.dq_stride[2];
  store_transposed(s.dqt, m, D, s.scale, dq, g.dq_stride[2], g.dq_stride[3]);
}

}  // namespace

void attention_backward(const AttnParams& p, const AttnTensors& t, const AttnGradTensors& g) {
  check_params(p, true, t.lse);
  Buffer delta(p.B * p.Hq * p.Tq);
  row_dot(p, t, g, delta);
  const GradViews x{{t.q, t.q_stride}, {t.k, t.k_stride}, {t.v, t.v_stride}, {g.dout, g.dout_stride},
                    t.lse, delta};
  const int64_t q_tiles = num_tiles(p.Tq), k_tiles = num_tiles(p.Tk);
#pragma omp parallel
  {
    {
      KeyTileScratch s(p.D);
      // First key tiles first: under causality they are seen by the most queries.
#pragma omp for collapse(3) schedule(dynamic)
      for (int64_t b = 0; b < p.B; ++b)
        for (int64_t kvh = 0; kvh < p.Hkv; ++kvh)
          for (int64_t jt = 0; jt < k_tiles; ++jt) dkdv_tile(p, x, g, s, b, kvh, jt * kTile);
    }
    QueryTileScratch s(p.D);
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < p.B; ++b)
      for (int64_t h = 0; h < p.Hq; ++h)
        for (int64_t it = 0; it < q_tiles; ++it) dq_tile(p, x, g, s, b, h, (q_tiles - 1 - it) * kTile);
  }
}

}  // namespace moon::cpu::MOON_ISA_NS
