// Scaled-dot-product attention on CUDA, forward and backward, FlashAttention-2 style (f32 arithmetic, SIMT FMA).
//
//   out = softmax(scale * q k^T + mask) v   per (batch, q head), lse = log-sum-exp of each score row
//
// Same semantics as ops/cpu/attention_kernels.cpp. Every kernel works on a block of 256 threads seen as a
// 16 x 16 grid (ty = tid / 16, tx = tid % 16) and on tiles in shared memory:
//   forward:   a block per (query tile of 64, b, h). Per key tile of 64: S = Q K^T, online softmax (running
//              max m and sum l per query, kept in registers), O = alpha O + P V. No Tq x Tk matrix is stored.
//   backward:  Delta = rowsum(dO * O) (one warp per query row), then
//              dK/dV: a block per (key tile, b, kv head), looping over the q heads of its group and the query
//                     tiles that see the keys; P is recomputed from lse; dV += P^T dO, dK += dS^T Q;
//              dQ:    a block per (query tile, b, h), looping over key tiles, recomputing P and dS, dQ += dS K.
//              Each output element is owned by one thread of one block and summed in a fixed order, so the
//              gradients are deterministic (no atomics at all).
// Tile rows are zero-filled past Tq / Tk and tile columns past D (up to the template head size DMAX), so the
// inner loops have compile-time bounds; invisible (query, key) pairs get score -inf / probability 0.
// A thread owns score rows ty + 16 i and score columns tx + 16 j of a tile; accumulators over D are owned as
// rows (queries or keys) ty + 16 i and columns d = tx + 16 j. Rows of Q/K/V tiles in shared memory are padded
// to an odd stride (DMAX + 1) and score tiles to BC + 16 floats, so the reads of a warp hit distinct banks or
// broadcast.
// Storage: q, k, v, out, dout, dq, dk, dv are f32 or bf16 (T, one dtype per call); lse and the delta pre-pass
// stay f32. The global loads convert T to f32 as they fill the f32 shared-memory tiles (load_tile) and every
// store rounds once (from_float<T>), so the arithmetic is the f32 kernel's, operation for operation: a bf16
// result equals the f32 kernel's result on the widened inputs, rounded to bf16, bit for bit.
// The byte counts in the kernels' comments are for f32 storage; bf16 halves those of the T operands.
#include "ops/cuda/attention_cuda.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include "runtime/cuda/kernel_util.cuh"

namespace moon::cuda {

using cpu::AttnParams;

namespace {

// The operands with pointers of storage type T (float or __nv_bfloat16); strides in elements. lse stays f32.
template <class T>
struct Operands {
  const T* q; int64_t q_stride[4];
  const T* k; int64_t k_stride[4];
  const T* v; int64_t v_stride[4];
  T* out;     int64_t out_stride[4];
  float* lse;
};
template <class T>
struct GradOperands {
  const T* dout; int64_t dout_stride[4];
  T* dq;         int64_t dq_stride[4];
  T* dk;         int64_t dk_stride[4];
  T* dv;         int64_t dv_stride[4];
};

constexpr int kThreads = 256;  // 16 x 16
constexpr int kMaxHeadSize = 256;

// ---------------------------------------------------------------------------------------------------------
// Device helpers

// Reductions over the 16 lanes that share ty (lanes 0-15 or 16-31 of a warp). All 32 lanes must call.
__device__ __forceinline__ float max16(float v) {
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float sum16(float v) {
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// sm[r * LD + c] = src[r * rs + c * cs] for r < rows and c < D, 0 elsewhere, for r < ROWS, c < DMAX: a tile
// of a strided (rows x D) matrix of storage type T, widened to f32 (exact for bf16), coalesced when cs == 1.
// 0 FLOP, sizeof(T) bytes per element.
template <int ROWS, int DMAX, int LD, class T>
__device__ __forceinline__ void load_tile(float* __restrict__ sm, const T* __restrict__ src, int64_t rs,
                                          int64_t cs, int64_t rows, int D) {
  for (int e = threadIdx.x; e < ROWS * DMAX; e += kThreads) {
    const int r = e / DMAX, c = e % DMAX;
    sm[r * LD + c] = (r < rows && c < D) ? to_float(src[r * rs + c * cs]) : 0.f;
  }
}

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Whether key j of batch b exists and is not padding.
__device__ __forceinline__ bool key_kept(const AttnParams& p, int64_t b, int64_t j) {
  return j < p.Tk && (!p.key_keep || p.key_keep[b * p.Tk + j] != 0);
}

// Whether causality lets query i see key j.
__device__ __forceinline__ bool causal_visible(const AttnParams& p, int64_t i, int64_t j) {
  return !p.causal || j <= i + p.q_offset;
}

// End of the keys any query before i_end may see (keys [key_end, Tk) are hidden from all of them).
__host__ __device__ __forceinline__ int64_t key_end(const AttnParams& p, int64_t i_end) {
  if (!p.causal) return p.Tk;
  const int64_t e = i_end + p.q_offset;
  return e < 0 ? 0 : (e > p.Tk ? p.Tk : e);
}

// S[i][j] += sum_{d < DMAX} A[(ty + 16 i) * LD + d] * B[(tx + 16 j) * LD + d]: a (16 TM x 16 TN) block of
// A B^T, 2 TM TN DMAX flops per thread.
template <int TM, int TN, int DMAX, int LD>
__device__ __forceinline__ void tile_abt(const float* __restrict__ A, const float* __restrict__ Bm, int ty, int tx,
                                         float (&s)[TM][TN]) {
#pragma unroll 4
  for (int d = 0; d < DMAX; ++d) {
    float a[TM], b[TN];
#pragma unroll
    for (int i = 0; i < TM; ++i) a[i] = A[(ty + 16 * i) * LD + d];
#pragma unroll
    for (int j = 0; j < TN; ++j) b[j] = Bm[(tx + 16 * j) * LD + d];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) s[i][j] = fmaf(a[i], b[j], s[i][j]);
  }
}

// acc[i][d] += sum_{c < BC} A[(ty + 16 i) * LDA + c] * B[c * LDB + tx + 16 d]: a (16 TM x 16 TD) block of
// A B for an A tile of BC columns, 2 TM TD BC flops per thread.
template <int TM, int TD, int BC, int LDA, int LDB>
__device__ __forceinline__ void tile_ab(const float* __restrict__ A, const float* __restrict__ Bm, int ty, int tx,
                                        float (&acc)[TM][TD]) {
#pragma unroll 4
  for (int c = 0; c < BC; ++c) {
    float a[TM], b[TD];
#pragma unroll
    for (int i = 0; i < TM; ++i) a[i] = A[(ty + 16 * i) * LDA + c];
#pragma unroll
    for (int d = 0; d < TD; ++d) b[d] = Bm[c * LDB + tx + 16 * d];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int d = 0; d < TD; ++d) acc[i][d] = fmaf(a[i], b[d], acc[i][d]);
  }
}

// Two products sharing the thread mapping: S = A1 B1^T and T = A2 B2^T (16 TM x 16 TN blocks).
// 4 TM TN DMAX flops per thread.
template <int TM, int TN, int DMAX, int LD>
__device__ __forceinline__ void tile_abt2(const float* __restrict__ A1, const float* __restrict__ B1,
                                          const float* __restrict__ A2, const float* __restrict__ B2, int ty, int tx,
                                          float (&s)[TM][TN], float (&t)[TM][TN]) {
#pragma unroll 2
  for (int d = 0; d < DMAX; ++d) {
    float a1[TM], b1[TN], a2[TM], b2[TN];
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      a1[i] = A1[(ty + 16 * i) * LD + d];
      a2[i] = A2[(ty + 16 * i) * LD + d];
    }
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      b1[j] = B1[(tx + 16 * j) * LD + d];
      b2[j] = B2[(tx + 16 * j) * LD + d];
    }
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        s[i][j] = fmaf(a1[i], b1[j], s[i][j]);
        t[i][j] = fmaf(a2[i], b2[j], t[i][j]);
      }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Tile configurations (shared memory in floats; every size below stays under the 163 KB an sm_80 block may
// opt into).

template <int DMAX>
struct Tiles {
  static_assert(DMAX % 16 == 0 && DMAX <= kMaxHeadSize, "head size tiers are multiples of 16");
  static constexpr int LD = DMAX + 1;  // odd row stride of Q/K/V/dO tiles
  // forward
  static constexpr int kFwdBR = 64, kFwdBC = 64;
  // dK/dV pass
  static constexpr int kKvBR = 32, kKvBC = DMAX > 128 ? 32 : 64;
  // dQ pass
  static constexpr int kQBR = DMAX > 128 ? 32 : 64, kQBC = DMAX > 64 ? 32 : 64;

  static constexpr size_t fwd_smem() {
    return (size_t(kFwdBR) * LD + size_t(kFwdBC) * LD + size_t(kFwdBR) * (kFwdBC + 16)) * sizeof(float);
  }
  static constexpr size_t kv_smem() {
    return (2 * size_t(kKvBC) * LD + 2 * size_t(kKvBR) * LD + 2 * size_t(kKvBR) * (kKvBC + 16) + 2 * size_t(kKvBR)) *
           sizeof(float);
  }
  static constexpr size_t q_smem() {
    return (2 * size_t(kQBR) * LD + 2 * size_t(kQBC) * LD + size_t(kQBR) * (kQBC + 16)) * sizeof(float);
  }
  static_assert(fwd_smem() <= 163 * 1024 && kv_smem() <= 163 * 1024 && q_smem() <= 163 * 1024, "sm_80 limit");
};

// ---------------------------------------------------------------------------------------------------------
// Forward

// out and lse of BR queries of one (b, h), grid (q tiles * B * Hq), last query tiles first. Per key tile:
// S = Q K^T and O += P V (4 BR BC D flops), BR BC exps. Per head 4 Tq Tk D flops (about half under causality);
// bytes: q and out once (8 Tq D) plus k and v once per query tile (8 Tk D Tq / BR).
template <class T, int DMAX, int BR, int BC>
__global__ void __launch_bounds__(kThreads) attention_fwd_kernel(const AttnParams p, const Operands<T> t,
                                                                int64_t q_tiles) {
  constexpr int LD = DMAX + 1, LDP = BC + 16, TM = BR / 16, TN = BC / 16, TD = DMAX / 16;
  extern __shared__ float smem[];
  float* sQ = smem;               // [BR][LD]
  float* sKV = sQ + BR * LD;      // [BC][LD]: K, then V of the same key tile
  float* sP = sKV + BC * LD;      // [BR][LDP]
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16, D = int(p.D);
  const int64_t heads = p.B * p.Hq, blk = blockIdx.x;
  const int64_t bh = blk % heads, qt = q_tiles - 1 - blk / heads;
  const int64_t b = bh / p.Hq, h = bh % p.Hq, kvh = h / (p.Hq / p.Hkv);
  const int64_t i0 = qt * BR, rows = min64(BR, p.Tq - i0);
  const T* k = t.k + b * t.k_stride[0] + kvh * t.k_stride[1];
  const T* v = t.v + b * t.v_stride[0] + kvh * t.v_stride[1];
  load_tile<BR, DMAX, LD>(sQ, t.q + b * t.q_stride[0] + h * t.q_stride[1] + i0 * t.q_stride[2], t.q_stride[2],
                          t.q_stride[3], rows, D);

  float o[TM][TD], m[TM], l[TM];
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int c = 0; c < TD; ++c) o[i][c] = 0.f;
  }

  const int64_t kend = key_end(p, i0 + rows);
  for (int64_t j0 = 0; j0 < kend; j0 += BC) {
    const int64_t nk = min64(BC, p.Tk - j0);
    __syncthreads();  // sQ is loaded; the previous tile's reads of sKV (V) and sP are done
    load_tile<BC, DMAX, LD>(sKV, k + j0 * t.k_stride[2], t.k_stride[2], t.k_stride[3], nk, D);
    __syncthreads();

    float s[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) s[i][j] = 0.f;
    tile_abt<TM, TN, DMAX, LD>(sQ, sKV, ty, tx, s);  // S = Q K^T (unscaled)

    bool kept[TN];
#pragma unroll
    for (int j = 0; j < TN; ++j) kept[j] = key_kept(p, b, j0 + tx + 16 * j);
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int64_t qi = i0 + ty + 16 * i;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const bool ok = kept[j] && causal_visible(p, qi, j0 + tx + 16 * j);
        s[i][j] = ok ? s[i][j] * p.scale : -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
      // Online softmax. A row that has seen no key yet keeps m = -inf; it is shifted by 0 so that no
      // -inf - -inf = NaN appears (expf(-inf) = 0).
      const float m_new = fmaxf(m[i], max16(mx));
      const float shift = m_new == -INFINITY ? 0.f : m_new;
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        s[i][j] = expf(s[i][j] - shift);
        sum += s[i][j];
        sP[(ty + 16 * i) * LDP + tx + 16 * j] = s[i][j];
      }
      const float alpha = expf(m[i] - shift);
      l[i] = fmaf(alpha, l[i], sum16(sum));
      m[i] = m_new;
#pragma unroll
      for (int c = 0; c < TD; ++c) o[i][c] *= alpha;
    }
    __syncthreads();  // reads of K done, P complete
    load_tile<BC, DMAX, LD>(sKV, v + j0 * t.v_stride[2], t.v_stride[2], t.v_stride[3], nk, D);
    __syncthreads();

    tile_ab<TM, TD, BC, LDP, LD>(sP, sKV, ty, tx, o);  // O += P V
  }

  float* lse = t.lse ? t.lse + bh * p.Tq + i0 : nullptr;
  T* out = t.out + b * t.out_stride[0] + h * t.out_stride[1] + i0 * t.out_stride[2];
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int r = ty + 16 * i;
    if (r >= rows) continue;
    const bool empty = l[i] == 0.f;  // the query saw no key
    const float inv = empty ? 0.f : 1.f / l[i];
    if (lse && tx == 0) lse[r] = empty ? -INFINITY : m[i] + logf(l[i]);
#pragma unroll
    for (int d = 0; d < TD; ++d) {
      const int c = tx + 16 * d;
      if (c < D) out[r * t.out_stride[2] + c * t.out_stride[3]] = from_float<T>(o[i][d] * inv);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Backward

// delta[r] = sum_d dO[r, d] * O[r, d] for the B*Hq*Tq query rows r, one warp per row (double accumulation,
// as on the CPU): 2 D flops, 8 D + 4 bytes per row.
template <class T>
__global__ void __launch_bounds__(kThreads) attention_delta_kernel(const AttnParams p, const Operands<T> t,
                                                                  const GradOperands<T> g, float* delta) {
  constexpr int kWarps = kThreads / 32;
  const int lane = threadIdx.x % 32;
  const int64_t rows = p.B * p.Hq * p.Tq;
  for (int64_t r = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32; r < rows; r += int64_t{gridDim.x} * kWarps) {
    const int64_t i = r % p.Tq, bh = r / p.Tq, h = bh % p.Hq, b = bh / p.Hq;
    const T* o = t.out + b * t.out_stride[0] + h * t.out_stride[1] + i * t.out_stride[2];
    const T* dout = g.dout + b * g.dout_stride[0] + h * g.dout_stride[1] + i * g.dout_stride[2];
    double sum = 0;
    for (int64_t d = lane; d < p.D; d += 32)
      sum += double(to_float(o[d * t.out_stride[3]])) * double(to_float(dout[d * g.dout_stride[3]]));
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) delta[r] = float(sum);
  }
}

// dK, dV of BC keys of one (b, kv head), grid (k tiles * B * Hkv), first key tiles first. For each q head of
// the group and each query tile that may see the keys: S = Q K^T, dP = dO V^T (4 BR BC D flops),
// P = exp(scale S - lse), dS = P (dP - Delta) (BR BC exps), dV += P^T dO, dK += dS^T Q (4 BR BC D flops).
// Per kv head 8 group Tq Tk D flops (about half under causality); bytes: k, v, dk, dv once (16 Tk D) plus
// q and dout once per key tile (8 group Tq D Tk / BC).
template <class T, int DMAX, int BR, int BC>
__global__ void __launch_bounds__(kThreads) attention_dkdv_kernel(const AttnParams p, const Operands<T> t,
                                                                 const GradOperands<T> g, const float* delta) {
  constexpr int LD = DMAX + 1, LDP = BC + 16, TM = BR / 16, TN = BC / 16, TD = DMAX / 16;
  extern __shared__ float smem[];
  float* sK = smem;              // [BC][LD]
  float* sV = sK + BC * LD;      // [BC][LD]
  float* sQ = sV + BC * LD;      // [BR][LD]
  float* sdO = sQ + BR * LD;     // [BR][LD]
  float* sP = sdO + BR * LD;     // [BR][LDP]
  float* sdS = sP + BR * LDP;    // [BR][LDP]
  float* sLse = sdS + BR * LDP;  // [BR]: lse, +inf for a query that sees nothing or is past Tq
  float* sDelta = sLse + BR;     // [BR]
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16, D = int(p.D);
  const int64_t heads = p.B * p.Hkv, blk = blockIdx.x;
  const int64_t bk = blk % heads, kt = blk / heads;
  const int64_t b = bk / p.Hkv, kvh = bk % p.Hkv, group = p.Hq / p.Hkv;
  const int64_t j0 = kt * BC, nk = min64(BC, p.Tk - j0);
  load_tile<BC, DMAX, LD>(sK, t.k + b * t.k_stride[0] + kvh * t.k_stride[1] + j0 * t.k_stride[2], t.k_stride[2],
                          t.k_stride[3], nk, D);
  load_tile<BC, DMAX, LD>(sV, t.v + b * t.v_stride[0] + kvh * t.v_stride[1] + j0 * t.v_stride[2], t.v_stride[2],
                          t.v_stride[3], nk, D);
  bool kept[TN];
#pragma unroll
  for (int j = 0; j < TN; ++j) kept[j] = key_kept(p, b, j0 + tx + 16 * j);

  // Accumulators: keys ty + 16 u (u < BC/16), columns d = tx + 16 c.
  constexpr int TK = BC / 16;
  float dk[TK][TD], dv[TK][TD];
#pragma unroll
  for (int u = 0; u < TK; ++u)
#pragma unroll
    for (int c = 0; c < TD; ++c) dk[u][c] = dv[u][c] = 0.f;

  const int64_t i_first = p.causal ? max64(0, j0 - p.q_offset) : 0;  // first query that sees key j0
  for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
    const int64_t bh = b * p.Hq + h;
    const T* q = t.q + b * t.q_stride[0] + h * t.q_stride[1];
    const T* dout = g.dout + b * g.dout_stride[0] + h * g.dout_stride[1];
    for (int64_t i0 = i_first / BR * BR; i0 < p.Tq; i0 += BR) {
      const int64_t rows = min64(BR, p.Tq - i0);
      __syncthreads();  // the previous step's reads of sQ, sdO, sP, sdS are done (and sK, sV are loaded)
      load_tile<BR, DMAX, LD>(sQ, q + i0 * t.q_stride[2], t.q_stride[2], t.q_stride[3], rows, D);
      load_tile<BR, DMAX, LD>(sdO, dout + i0 * g.dout_stride[2], g.dout_stride[2], g.dout_stride[3], rows, D);
      if (tid < BR) {
        const bool in = tid < rows;
        const float x = in ? t.lse[bh * p.Tq + i0 + tid] : INFINITY;
        sLse[tid] = x == -INFINITY ? INFINITY : x;
        sDelta[tid] = in ? delta[bh * p.Tq + i0 + tid] : 0.f;
      }
      __syncthreads();

      float s[TM][TN], dp[TM][TN];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) s[i][j] = dp[i][j] = 0.f;
      tile_abt2<TM, TN, DMAX, LD>(sQ, sK, sdO, sV, ty, tx, s, dp);  // S = Q K^T, dP = dO V^T
#pragma unroll
      for (int i = 0; i < TM; ++i) {
        const int r = ty + 16 * i;
        const int64_t qi = i0 + r;
        const float lse_r = sLse[r], delta_r = sDelta[r];
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          const bool ok = kept[j] && causal_visible(p, qi, j0 + tx + 16 * j);
          const float pr = ok ? expf(s[i][j] * p.scale - lse_r) : 0.f;
          sP[r * LDP + tx + 16 * j] = pr;
          sdS[r * LDP + tx + 16 * j] = pr * (dp[i][j] - delta_r);
        }
      }
      __syncthreads();

#pragma unroll 2
      for (int r = 0; r < BR; ++r) {  // dV += P^T dO, dK += dS^T Q
        float pr[TK], dsr[TK], qr[TD], dor[TD];
#pragma unroll
        for (int u = 0; u < TK; ++u) {
          pr[u] = sP[r * LDP + ty + 16 * u];
          dsr[u] = sdS[r * LDP + ty + 16 * u];
        }
#pragma unroll
        for (int c = 0; c < TD; ++c) {
          qr[c] = sQ[r * LD + tx + 16 * c];
          dor[c] = sdO[r * LD + tx + 16 * c];
        }
#pragma unroll
        for (int u = 0; u < TK; ++u)
#pragma unroll
          for (int c = 0; c < TD; ++c) {
            dv[u][c] = fmaf(pr[u], dor[c], dv[u][c]);
            dk[u][c] = fmaf(dsr[u], qr[c], dk[u][c]);
          }
      }
    }
  }

  T* dkp = g.dk + b * g.dk_stride[0] + kvh * g.dk_stride[1] + j0 * g.dk_stride[2];
  T* dvp = g.dv + b * g.dv_stride[0] + kvh * g.dv_stride[1] + j0 * g.dv_stride[2];
#pragma unroll
  for (int u = 0; u < TK; ++u) {
    const int r = ty + 16 * u;
    if (r >= nk) continue;
#pragma unroll
    for (int c = 0; c < TD; ++c) {
      const int d = tx + 16 * c;
      if (d >= D) continue;
      dkp[r * g.dk_stride[2] + d * g.dk_stride[3]] = from_float<T>(dk[u][c] * p.scale);
      dvp[r * g.dv_stride[2] + d * g.dv_stride[3]] = from_float<T>(dv[u][c]);
    }
  }
}

// dQ of BR queries of one (b, h), grid (q tiles * B * Hq), last query tiles first. Per key tile: S = Q K^T,
// dP = dO V^T (4 BR BC D flops), P = exp(scale S - lse), dS = P (dP - Delta) (BR BC exps), dQ += dS K
// (2 BR BC D flops). Per head 6 Tq Tk D flops (about half under causality); bytes: q, dout, dq once
// (12 Tq D) plus k and v once per query tile (8 Tk D Tq / BR).
template <class T, int DMAX, int BR, int BC>
__global__ void __launch_bounds__(kThreads) attention_dq_kernel(const AttnParams p, const Operands<T> t,
                                                               const GradOperands<T> g, const float* delta,
                                                               int64_t q_tiles) {
  constexpr int LD = DMAX + 1, LDP = BC + 16, TM = BR / 16, TN = BC / 16, TD = DMAX / 16;
  extern __shared__ float smem[];
  float* sQ = smem;            // [BR][LD]
  float* sdO = sQ + BR * LD;   // [BR][LD]
  float* sK = sdO + BR * LD;   // [BC][LD]
  float* sV = sK + BC * LD;    // [BC][LD]
  float* sdS = sV + BC * LD;   // [BR][LDP]
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16, D = int(p.D);
  const int64_t heads = p.B * p.Hq, blk = blockIdx.x;
  const int64_t bh = blk % heads, qt = q_tiles - 1 - blk / heads;
  const int64_t b = bh / p.Hq, h = bh % p.Hq, kvh = h / (p.Hq / p.Hkv);
  const int64_t i0 = qt * BR, rows = min64(BR, p.Tq - i0);
  load_tile<BR, DMAX, LD>(sQ, t.q + b * t.q_stride[0] + h * t.q_stride[1] + i0 * t.q_stride[2], t.q_stride[2],
                          t.q_stride[3], rows, D);
  load_tile<BR, DMAX, LD>(sdO, g.dout + b * g.dout_stride[0] + h * g.dout_stride[1] + i0 * g.dout_stride[2],
                          g.dout_stride[2], g.dout_stride[3], rows, D);
  const T* k = t.k + b * t.k_stride[0] + kvh * t.k_stride[1];
  const T* v = t.v + b * t.v_stride[0] + kvh * t.v_stride[1];

  float lse_r[TM], delta_r[TM], dq[TM][TD];
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int r = ty + 16 * i;
    const bool in = r < rows;
    const float x = in ? t.lse[bh * p.Tq + i0 + r] : INFINITY;
    lse_r[i] = x == -INFINITY ? INFINITY : x;  // a query that sees nothing gets P = 0
    delta_r[i] = in ? delta[bh * p.Tq + i0 + r] : 0.f;
#pragma unroll
    for (int c = 0; c < TD; ++c) dq[i][c] = 0.f;
  }

  const int64_t kend = key_end(p, i0 + rows);
  for (int64_t j0 = 0; j0 < kend; j0 += BC) {
    const int64_t nk = min64(BC, p.Tk - j0);
    __syncthreads();  // sQ, sdO are loaded; the previous tile's reads of sK and sdS are done
    load_tile<BC, DMAX, LD>(sK, k + j0 * t.k_stride[2], t.k_stride[2], t.k_stride[3], nk, D);
    load_tile<BC, DMAX, LD>(sV, v + j0 * t.v_stride[2], t.v_stride[2], t.v_stride[3], nk, D);
    __syncthreads();

    float s[TM][TN], dp[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) s[i][j] = dp[i][j] = 0.f;
    tile_abt2<TM, TN, DMAX, LD>(sQ, sK, sdO, sV, ty, tx, s, dp);  // S = Q K^T, dP = dO V^T
    bool kept[TN];
#pragma unroll
    for (int j = 0; j < TN; ++j) kept[j] = key_kept(p, b, j0 + tx + 16 * j);
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int64_t qi = i0 + ty + 16 * i;
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const bool ok = kept[j] && causal_visible(p, qi, j0 + tx + 16 * j);
        const float pr = ok ? expf(s[i][j] * p.scale - lse_r[i]) : 0.f;
        sdS[(ty + 16 * i) * LDP + tx + 16 * j] = pr * (dp[i][j] - delta_r[i]);
      }
    }
    __syncthreads();

    tile_ab<TM, TD, BC, LDP, LD>(sdS, sK, ty, tx, dq);  // dQ += dS K
  }

  T* dqp = g.dq + b * g.dq_stride[0] + h * g.dq_stride[1] + i0 * g.dq_stride[2];
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int r = ty + 16 * i;
    if (r >= rows) continue;
#pragma unroll
    for (int c = 0; c < TD; ++c) {
      const int d = tx + 16 * c;
      if (d < D) dqp[r * g.dq_stride[2] + d * g.dq_stride[3]] = from_float<T>(dq[i][c] * p.scale);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Host side

void check_params(const AttnParams& p, bool backward, const float* lse) {
  const char* op = "scaled_dot_product_attention (CUDA)";
  MOON_CHECK(p.B >= 0 && p.Hq >= 0 && p.Tq >= 0 && p.Tk >= 0, op, ": negative size (B=", p.B, ", Hq=", p.Hq,
             ", Tq=", p.Tq, ", Tk=", p.Tk, ")");
  MOON_CHECK(p.D >= 1, op, ": head size D must be at least 1, got ", p.D);
  MOON_CHECK(p.Hkv >= 1 && p.Hq % p.Hkv == 0, op, ": the number of kv heads (", p.Hkv,
             ") must divide the number of query heads (", p.Hq, ")");
  MOON_CHECK(p.D <= kMaxHeadSize, op, ": head size D = ", p.D, " is above the ", kMaxHeadSize,
             " the CUDA kernels support");
  if (backward)
    MOON_CHECK(lse || p.B * p.Hq * p.Tq == 0, op, " backward: needs the lse saved by the forward, got null");
}

int64_t num_tiles(int64_t T, int tile) { return (T + tile - 1) / tile; }

// Grid of `blocks` (checked against gridDim.x) and the kernel's dynamic shared memory (opted into).
template <class Kernel>
unsigned prepare_launch(Kernel kernel, int64_t blocks, size_t smem, Device device, const char* name) {
  MOON_CHECK(blocks <= int64_t{std::numeric_limits<int32_t>::max()}, "scaled_dot_product_attention (CUDA): ",
             blocks, " blocks of ", name, " exceed the grid limit");
  const size_t limit = properties(device).sharedMemPerBlockOptin;
  MOON_CHECK(smem <= limit, "scaled_dot_product_attention (CUDA): ", name, " needs ", smem,
             " bytes of shared memory per block, the device allows ", limit);
  MOON_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  return unsigned(blocks);
}

template <class T, int DMAX>
void forward_impl(Device device, const AttnParams& p, const Operands<T>& t) {
  using Tl = Tiles<DMAX>;
  constexpr int BR = Tl::kFwdBR, BC = Tl::kFwdBC;
  const int64_t q_tiles = num_tiles(p.Tq, BR), blocks = q_tiles * p.B * p.Hq;
  if (blocks == 0) return;
  auto kernel = attention_fwd_kernel<T, DMAX, BR, BC>;
  const unsigned grid = prepare_launch(kernel, blocks, Tl::fwd_smem(), device, "attention_fwd_kernel");
  kernel<<<grid, kThreads, Tl::fwd_smem(), stream(device)>>>(p, t, q_tiles);
  MOON_CUDA_LAUNCH_CHECK("attention_fwd_kernel");
}

template <class T, int DMAX>
void backward_impl(Device device, const AttnParams& p, const Operands<T>& t, const GradOperands<T>& g,
                   const float* delta) {
  using Tl = Tiles<DMAX>;
  const cudaStream_t s = stream(device);
  {
    constexpr int BR = Tl::kKvBR, BC = Tl::kKvBC;
    const int64_t blocks = num_tiles(p.Tk, BC) * p.B * p.Hkv;
    if (blocks > 0) {
      auto kernel = attention_dkdv_kernel<T, DMAX, BR, BC>;
      const unsigned grid = prepare_launch(kernel, blocks, Tl::kv_smem(), device, "attention_dkdv_kernel");
      kernel<<<grid, kThreads, Tl::kv_smem(), s>>>(p, t, g, delta);
      MOON_CUDA_LAUNCH_CHECK("attention_dkdv_kernel");
    }
  }
  {
    constexpr int BR = Tl::kQBR, BC = Tl::kQBC;
    const int64_t q_tiles = num_tiles(p.Tq, BR), blocks = q_tiles * p.B * p.Hq;
    if (blocks > 0) {
      auto kernel = attention_dq_kernel<T, DMAX, BR, BC>;
      const unsigned grid = prepare_launch(kernel, blocks, Tl::q_smem(), device, "attention_dq_kernel");
      kernel<<<grid, kThreads, Tl::q_smem(), s>>>(p, t, g, delta, q_tiles);
      MOON_CUDA_LAUNCH_CHECK("attention_dq_kernel");
    }
  }
}

// Calls f.template operator()<DMAX>() with the smallest head-size tier that holds D.
template <class F>
void with_head_tier(int64_t D, F&& f) {
  if (D <= 32) return f.template operator()<32>();
  if (D <= 64) return f.template operator()<64>();
  if (D <= 128) return f.template operator()<128>();
  return f.template operator()<256>();
}

// The forward and backward for storage type T: checks, then the kernels on device's stream.
template <class T>
void run_forward(Device device, const AttnParams& p, const Operands<T>& t) {
  check_params(p, false, t.lse);
  if (p.B * p.Hq * p.Tq == 0) return;
  DeviceGuard guard(device);
  with_head_tier(p.D, [&]<int DMAX>() { forward_impl<T, DMAX>(device, p, t); });
}

template <class T>
void run_backward(Device device, const AttnParams& p, const Operands<T>& t, const GradOperands<T>& g) {
  check_params(p, true, t.lse);
  if (p.B * p.Hkv * p.Tk == 0 && p.B * p.Hq * p.Tq == 0) return;
  DeviceGuard guard(device);
  const int64_t rows = p.B * p.Hq * p.Tq;
  Tensor delta = empty({rows}, DType::F32, device);  // rowsum(dO * O) in f32, freed to the stream-ordered cache
  float* dp = static_cast<float*>(delta.raw_data());
  if (rows > 0) {
    constexpr int kRowsPerBlock = kThreads / 32;
    attention_delta_kernel<T><<<blocks_for(rows, kRowsPerBlock), kThreads, 0, stream(device)>>>(p, t, g, dp);
    MOON_CUDA_LAUNCH_CHECK("attention_delta_kernel");
  }
  with_head_tier(p.D, [&]<int DMAX>() { backward_impl<T, DMAX>(device, p, t, g, dp); });
}

void tensor_strides(const Tensor& t, int64_t (&to)[4]) {
  for (int d = 0; d < 4; ++d) to[d] = t.stride(d);
}

const char* const kOp = "scaled_dot_product_attention (CUDA)";

// q, k, v, out (and lse when defined) of storage type T as Operands<T>, after checking dtypes and shapes.
template <class T>
Operands<T> tensor_operands(const AttnParams& p, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                            const Tensor& lse) {
  const Shape qs{p.B, p.Hq, p.Tq, p.D}, ks{p.B, p.Hkv, p.Tk, p.D};
  for (const Tensor* x : {&q, &k, &v, &out})
    MOON_CHECK(x->dtype() == q.dtype() && x->device() == q.device() && x->shape() == (x == &k || x == &v ? ks : qs),
               kOp, ": expected q, out (B, Hq, Tq, D) and k, v (B, Hkv, Tk, D) of one dtype and device, got ",
               x->desc(), " with q ", q.desc());
  if (lse.defined())
    MOON_CHECK(lse.dtype() == DType::F32 && lse.is_contiguous() && lse.numel() == p.B * p.Hq * p.Tq &&
                   lse.device() == q.device(),
               kOp, ": expected a contiguous f32 (B, Hq, Tq) lse on the device of q, got ", lse.desc());
  Operands<T> o{};
  o.q = ptr<T>(q), o.k = ptr<T>(k), o.v = ptr<T>(v), o.out = ptr<T>(out);
  o.lse = lse.defined() ? ptr<float>(lse) : nullptr;
  tensor_strides(q, o.q_stride);
  tensor_strides(k, o.k_stride);
  tensor_strides(v, o.v_stride);
  tensor_strides(out, o.out_stride);
  return o;
}

}  // namespace

void attention_forward(const AttnParams& p, const Tensor& q, const Tensor& k, const Tensor& v,
                               const Tensor& out, const Tensor& lse) {
  visit_float(kOp, q, [&](auto tag) {
    using T = decltype(tag);
    run_forward(q.device(), p, tensor_operands<T>(p, q, k, v, out, lse));
  });
}

void attention_backward(const AttnParams& p, const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& out, const Tensor& lse, const Tensor& dout, const Tensor& dq,
                                const Tensor& dk, const Tensor& dv) {
  MOON_CHECK(lse.defined(), kOp, " backward: needs the lse saved by the forward");
  visit_float(kOp, q, [&](auto tag) {
    using T = decltype(tag);
    const Operands<T> t = tensor_operands<T>(p, q, k, v, out, lse);
    for (const Tensor* x : {&dout, &dq, &dk, &dv})
      MOON_CHECK(x->dtype() == q.dtype() && x->device() == q.device() &&
                     x->shape() == (x == &dk || x == &dv ? k.shape() : q.shape()),
                 kOp, " backward: expected dout, dq like q ", q.desc(), " and dk, dv like k ", k.desc(), ", got ",
                 x->desc());
    GradOperands<T> g{};
    g.dout = ptr<T>(dout), g.dq = ptr<T>(dq), g.dk = ptr<T>(dk), g.dv = ptr<T>(dv);
    tensor_strides(dout, g.dout_stride);
    tensor_strides(dq, g.dq_stride);
    tensor_strides(dk, g.dk_stride);
    tensor_strides(dv, g.dv_stride);
    run_backward(q.device(), p, t, g);
  });
}

}  // namespace moon::cuda
