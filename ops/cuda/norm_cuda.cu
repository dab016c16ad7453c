// CUDA row normalisations: softmax / log_softmax, layer_norm, rms_norm (forward and backward), and the
// deterministic column reductions behind their weight/bias gradients and the linear bias gradient.
//
// Row kernels: a warp per row when C <= kWarpRowMax (blockDim (32, kRowsPerBlock)), else a block per row.
// Each kernel makes one pass over the row for the statistics (reduced with warp shuffles, then across warps
// through shared memory) and one pass for the output (the row is re-read, mostly from L1/L2). Rows are read
// and written as float4 when C % 4 == 0 and every row pointer is 16-byte aligned.
//
// Column reductions (dweight, dbias): a first kernel sums a fixed chunk of rows per block for 32 columns
// (each column summed by 8 threads in a fixed row order, then combined in fixed order through shared
// memory) into a partials tensor; a second kernel adds the chunks in chunk order. The chunking depends only
// on the shape, so results are bitwise reproducible; no float atomics.
//
// bf16 activations: every kernel is templated on the storage type T (float or __nv_bfloat16) of x, w, b, y,
// g and dx; it loads to f32, computes exactly as the f32 kernel does and rounds once on store, so a bf16
// result is the f32 kernel's result on the widened inputs, rounded (bit for bit; T = float is the f32 kernel
// unchanged). mean / rstd and the column partials stay f32; dw / db are summed in f32 and rounded once.
#include "ops/cuda/norm_cuda.h"

#include <algorithm>

#include "ops/cuda/row_util.cuh"
#include "runtime/cuda/kernel_util.cuh"

namespace moon::cuda {

namespace {

// ---------------------------------------------------------------------------------------------------------
// softmax / log_softmax

// y = softmax(x) or log_softmax(x) per row of (rows, C): an online max/sum-exp pass then the output pass.
// Per element: ~2 exp + 4 FLOP, 8 bytes of HBM traffic (x read, y written; the second read of x hits cache).
template <bool kWarpRow, int kW, class T>
__global__ void softmax_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t C, bool log) {
  using R = Row<kWarpRow>;
  __shared__ float scratch[32];
  const int64_t groups = C / kW;
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    const RowSoftmaxStats st = row_softmax_stats<kWarpRow, kW, false>(xr, groups, scratch);
    const float M = st.max, S = st.sum_exp;
    // Output.
    if (log) {
      const float ls = logf(S);
      for (int64_t gi = R::lane(); gi < groups; gi += R::width()) {
        float v[kW];
        load<kW>(xr + gi * kW, v);
        for (int k = 0; k < kW; ++k) v[k] = (v[k] - M) - ls;
        store<kW>(yr + gi * kW, v);
      }
    } else {
      const float inv = 1.0f / S;
      for (int64_t gi = R::lane(); gi < groups; gi += R::width()) {
        float v[kW];
        load<kW>(xr + gi * kW, v);
        for (int k = 0; k < kW; ++k) v[k] = expf(v[k] - M) * inv;
        store<kW>(yr + gi * kW, v);
      }
    }
  }
}

// dx per row from y and g: softmax dx = y * (g - sum(g*y)); log_softmax dx = g - exp(y) * sum(g).
// Per element: 3 FLOP (+1 exp for log), 12 bytes (y, g read; dx written).
template <bool kWarpRow, int kW, class T>
__global__ void softmax_backward_kernel(const T* __restrict__ y, const T* __restrict__ g, T* __restrict__ dx,
                                        int64_t rows, int64_t C, bool log) {
  using R = Row<kWarpRow>;
  __shared__ float scratch[32];
  const int64_t groups = C / kW;
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const T* yr = y + r * C;
    const T* gr = g + r * C;
    T* dr = dx + r * C;
    float acc = 0.0f;
    for (int64_t gi = R::lane(); gi < groups; gi += R::width()) {
      float gv[kW], yv[kW];
      load<kW>(gr + gi * kW, gv);
      if (log) {
        for (int k = 0; k < kW; ++k) acc += gv[k];
      } else {
        load<kW>(yr + gi * kW, yv);
        for (int k = 0; k < kW; ++k) acc = fmaf(gv[k], yv[k], acc);
      }
    }
    const float d = R::sum(acc, scratch);
    for (int64_t gi = R::lane(); gi < groups; gi += R::width()) {
      float gv[kW], yv[kW];
      load<kW>(gr + gi * kW, gv);
      load<kW>(yr + gi * kW, yv);
      for (int k = 0; k < kW; ++k) gv[k] = log ? gv[k] - expf(yv[k]) * d : yv[k] * (gv[k] - d);
      store<kW>(dr + gi * kW, gv);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// layer_norm

// y = (x - mean) * rstd * w + b per row; mean, rstd per row from shifted one-pass sums (shift = the row's
// first element, as on the CPU). Per element: ~7 FLOP, 8 bytes (+8 for w, b, mostly cached).
template <bool kWarpRow, int kW, class T>
__global__ void layer_norm_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                  T* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, int64_t rows,
                                  int64_t C, float eps) {
  using R = Row<kWarpRow>;
  __shared__ float scratch[32];
  const int64_t groups = C / kW;
  const float inv_c = 1.0f / static_cast<float>(C);
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    const float shift = to_float(xr[0]);
    float s1 = 0.0f, s2 = 0.0f;
    for (int64_t gi = R::lane(); gi < groups; gi += R::width()) {
      float v[kW];
      load<kW>(xr + gi * kW, v);
      for (int k = 0; k < kW; ++k) {
        const float d = v[k] - shift;
        s1 += d;
        s2 = fmaf(d, d, s2);
      }
    }
    const float S1 = R::sum(s1, scratch);
    const float S2 = R::sum(s2, scratch);
    const float m1 = S1 * inv_c;
    float var = __fsub_rn(__fmul_rn(S2, inv_c), __fmul_rn(m1, m1));  // as the CPU: no contraction
    var = var > 0.0f ? var : 0.0f;
    const float mu = shift + m1, rs = 1.0f / sqrtf(var + eps);
    if (R::lane() == 0) {
      mean[r] = mu;
      rstd[r] = rs;
    }
    for (int64_t gi = R::lane(); gi < groups; gi += R::width()) {
      float v[kW], wv[kW], bv[kW];
      load<kW>(xr + gi * kW, v);
      for (int k = 0; k < kW; ++k) v[k] = (v[k] - mu) * rs;
      if (w) {
        load<kW>(w + gi * kW, wv);
        for (int k = 0; k < kW; ++k) v[k] = v[k] * wv[k];
      }
      if (b) {
        load<kW>(b + gi * kW, bv);
        for (int k = 0; k < kW; ++k) v[k] = v[k] + bv[k];
      }
      store<kW>(yr + gi * kW, v);
    }
  }
}

// dx = rstd * (g*w - mean(g*w) - xhat * mean(g*w*xhat)) per row. Per element: ~10 FLOP, 12 bytes (x, g
// read twice, the second time from cache; dx written; w cached).
template <bool kWarpRow, int kW, class T>
__global__ void layer_norm_backward_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                           const float* __restrict__ mean, const float* __restrict__ rstd,
                                           const T* __restrict__ g, T* __restrict__ dx, int64_t rows, int64_t C) {
  using R = Row<kWarpRow>;
  __shared__ float scratch[32];
  const int64_t groups = C / kW;
  const float inv_c = 1.0f / static_cast<float>(C);
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const T* xr = x + r * C;
    const T* gr = g + r * C;
    const float mu = mean[r], rs = rstd[r];
    float a = 0.0f, c = 0.0f;
    for (int64_t gi = R::lane(); gi < groups; gi += R::width()) {
      float xv[kW], gv[kW], wv[kW];
      load<kW>(xr + gi * kW, xv);
      load<kW>(gr + gi * kW, gv);
      if (w) load<kW>(w + gi * kW, wv);
      for (int k = 0; k < kW; ++k) {
        const float gw = w ? gv[k] * wv[k] : gv[k];
        a += gw;
        c = fmaf(gw, (xv[k] - mu) * rs, c);
      }
    }
    const float ma = R::sum(a, scratch) * inv_c;
    const float mc = R::sum(c, scratch) * inv_c;
    T* dr = dx + r * C;
    for (int64_t gi = R::lane(); gi < groups; gi += R::width()) {
      float xv[kW], gv[kW], wv[kW];
      load<kW>(xr + gi * kW, xv);
      load<kW>(gr + gi * kW, gv);
      if (w) load<kW>(w + gi * kW, wv);
      for (int k = 0; k < kW; ++k) {
        const float gw = w ? gv[k] * wv[k] : gv[k];
        const float xh = (xv[k] - mu) * rs;
        xv[k] = rs * (gw - ma - xh * mc);
      }
      store<kW>(dr + gi * kW, xv);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// rms_norm

// y = x * rstd * w per row, rstd = 1 / sqrt(sum(x^2) / C + eps). Per element: 4 FLOP, 8 bytes (+4 for w).
template <bool kWarpRow, int kW, class T>
__global__ void rms_norm_kernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                                float* __restrict__ rstd, int64_t rows, int64_t C, float eps) {
  using R = Row<kWarpRow>;
  __shared__ float scratch[32];
  const int64_t groups = C / kW;
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    float ss = 0.0f;
    for (int64_t gi = R::lane(); gi < groups; gi += R::width()) {
      float v[kW];
      load<kW>(xr + gi * kW, v);
      for (int k = 0; k < kW; ++k) ss = fmaf(v[k], v[k], ss);
    }
    const float rs = 1.0f / sqrtf(R::sum(ss, scratch) / static_cast<float>(C) + eps);
    if (R::lane() == 0) rstd[r] = rs;
    for (int64_t gi = R::lane(); gi < groups; gi += R::width()) {
      float v[kW], wv[kW];
      load<kW>(xr + gi * kW, v);
      for (int k = 0; k < kW; ++k) v[k] = v[k] * rs;
      if (w) {
        load<kW>(w + gi * kW, wv);
        for (int k = 0; k < kW; ++k) v[k] = v[k] * wv[k];
      }
      store<kW>(yr + gi * kW, v);
    }
  }
}

// dx = rstd * (g*w - xhat * mean(g*w*xhat)), xhat = x * rstd, per row. Per element: ~7 FLOP, 12 bytes.
template <bool kWarpRow, int kW, class T>
__global__ void rms_norm_backward_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                         const float* __restrict__ rstd, const T* __restrict__ g,
                                         T* __restrict__ dx, int64_t rows, int64_t C) {
  using R = Row<kWarpRow>;
  __shared__ float scratch[32];
  const int64_t groups = C / kW;
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const T* xr = x + r * C;
    const T* gr = g + r * C;
    const float rs = rstd[r];
    float c = 0.0f;
    for (int64_t gi = R::lane(); gi < groups; gi += R::width()) {
      float xv[kW], gv[kW], wv[kW];
      load<kW>(xr + gi * kW, xv);
      load<kW>(gr + gi * kW, gv);
      if (w) load<kW>(w + gi * kW, wv);
      for (int k = 0; k < kW; ++k) c = fmaf(w ? gv[k] * wv[k] : gv[k], xv[k] * rs, c);
    }
    const float mc = R::sum(c, scratch) / static_cast<float>(C);
    T* dr = dx + r * C;
    for (int64_t gi = R::lane(); gi < groups; gi += R::width()) {
      float xv[kW], gv[kW], wv[kW];
      load<kW>(xr + gi * kW, xv);
      load<kW>(gr + gi * kW, gv);
      if (w) load<kW>(w + gi * kW, wv);
      for (int k = 0; k < kW; ++k) {
        const float gw = w ? gv[k] * wv[k] : gv[k];
        xv[k] = rs * (gw - (xv[k] * rs) * mc);
      }
      store<kW>(dr + gi * kW, xv);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Column reductions

// Terms summed over rows, per column: acc[o] += term_o(row, col).
template <class T>
struct LayerNormParamTerm {  // dw += g * xhat, db += g
  const T *x, *g;
  const float *mean, *rstd;
  int64_t C;
  static constexpr int kOut = 2;
  __device__ void operator()(int64_t r, int64_t c, float (&acc)[2]) const {
    const float gv = to_float(g[r * C + c]);
    acc[0] = fmaf(gv, (to_float(x[r * C + c]) - mean[r]) * rstd[r], acc[0]);
    acc[1] += gv;
  }
};
template <class T>
struct RmsNormParamTerm {  // dw += g * x * rstd
  const T *x, *g;
  const float* rstd;
  int64_t C;
  static constexpr int kOut = 1;
  __device__ void operator()(int64_t r, int64_t c, float (&acc)[1]) const {
    acc[0] = fmaf(to_float(g[r * C + c]), to_float(x[r * C + c]) * rstd[r], acc[0]);
  }
};
template <class T>
struct StridedTerm {  // out += g[r, c] of a strided view
  const T* g;
  int64_t rs, cs;
  static constexpr int kOut = 1;
  __device__ void operator()(int64_t r, int64_t c, float (&acc)[1]) const { acc[0] += to_float(g[r * rs + c * cs]); }
};

constexpr int kColTile = 32;  // columns per block (one per lane)
constexpr int kColRows = 8;   // threads per column (blockDim.y)

// partial[chunk, o, col] = sum of term_o over rows [chunk * rows_per_chunk, +rows_per_chunk) of 32 columns:
// each (x, y) thread sums rows y, y + 8, ... in order, then thread y = 0 adds the 8 sums in order.
// Per (row, col): the term's FLOP (1-4) and its bytes (4-8), read coalesced across the 32 lanes.
template <class Term>
__global__ void column_partials_kernel(Term term, int64_t rows, int64_t cols, int64_t rows_per_chunk,
                                       float* __restrict__ partial) {
  constexpr int kOut = Term::kOut;
  __shared__ float sh[kOut][kColRows][kColTile + 1];
  const int64_t col = int64_t{blockIdx.x} * kColTile + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t r0 = chunk * rows_per_chunk, r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  float acc[kOut];
  for (int o = 0; o < kOut; ++o) acc[o] = 0.0f;
  if (col < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kColRows) term(r, col, acc);
  for (int o = 0; o < kOut; ++o) sh[o][threadIdx.y][threadIdx.x] = acc[o];
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    for (int o = 0; o < kOut; ++o) {
      float s = 0.0f;
      for (int yy = 0; yy < kColRows; ++yy) s += sh[o][yy][threadIdx.x];
      partial[(chunk * kOut + o) * cols + col] = s;
    }
  }
}

// out_o[col] = sum over chunks (in order) of partial[chunk, o, col], rounded once to the output's storage
// type O; an undefined output (nullptr) is skipped. Per column: `chunks` adds, 4 * chunks bytes.
template <class O>
__global__ void column_finish_kernel(const float* __restrict__ partial, int64_t chunks, int64_t cols, int n_out,
                                     O* out0, O* out1) {
  const int64_t n = cols * n_out;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int o = static_cast<int>(i / cols);
    const int64_t col = i % cols;
    O* out = o == 0 ? out0 : out1;
    if (!out) continue;
    float s = 0.0f;
    for (int64_t c = 0; c < chunks; ++c) s += partial[(c * n_out + o) * cols + col];
    out[col] = from_float<O>(s);
  }
}

// Sums each term over the rows of a (rows, cols) problem into out0 (and out1 for two-output terms).
template <class Term, class O>
void column_reduce(const Term& term, int64_t rows, int64_t cols, const Tensor& like, O* out0, O* out1) {
  if (cols == 0) return;
  const int64_t tiles = (cols + kColTile - 1) / kColTile;
  // Chunks of rows: enough blocks to fill the GPU, each chunk at least 32 rows; shape-only (reproducible).
  int64_t chunks = std::max<int64_t>(1, (512 + tiles - 1) / tiles);
  chunks = std::min<int64_t>(chunks, std::max<int64_t>(1, (rows + 31) / 32));
  const int64_t rows_per_chunk = std::max<int64_t>(1, (rows + chunks - 1) / chunks);
  chunks = std::max<int64_t>(1, (rows + rows_per_chunk - 1) / rows_per_chunk);
  const cudaStream_t s = stream_of(like);
  Tensor partial = empty({chunks * Term::kOut * cols}, DType::F32, like.device());
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(chunks));
  column_partials_kernel<Term><<<grid, dim3(kColTile, kColRows), 0, s>>>(term, rows, cols, rows_per_chunk,
                                                                          ptr<float>(partial));
  MOON_CUDA_LAUNCH_CHECK("column_partials_kernel");
  constexpr int kThreads = 256;
  column_finish_kernel<O><<<blocks_for(cols * Term::kOut, kThreads), kThreads, 0, s>>>(
      ptr<float>(partial), chunks, cols, Term::kOut, out0, out1);
  MOON_CUDA_LAUNCH_CHECK("column_finish_kernel");
}

// ---------------------------------------------------------------------------------------------------------
// Launch helpers

template <class T>
T* opt_ptr(const Tensor& t) {
  return t.defined() ? ptr<T>(t) : nullptr;
}

// True when the vector path applies: C % 4 == 0 and every given (non-null) base pointer is aligned to
// kVecBytes<T> (16 bytes for f32, 8 for bf16); then every row is, since rows are C elements apart.
template <class T>
bool vec_ok(int64_t C, std::initializer_list<const void*> ptrs) {
  if (C % 4 != 0) return false;
  for (const void* p : ptrs)
    if (p && !aligned(p, kVecBytes<T>)) return false;
  return true;
}

// Launch adapters (a class template per kernel so launch_rows can pick the instantiation; the storage type
// T is deduced from the pointer arguments).
template <bool kWarpRow, int kW>
struct SoftmaxLaunch {
  template <class... A>
  static void launch(dim3 g, dim3 b, cudaStream_t s, A... a) { softmax_kernel<kWarpRow, kW><<<g, b, 0, s>>>(a...); }
};
template <bool kWarpRow, int kW>
struct SoftmaxBackwardLaunch {
  template <class... A>
  static void launch(dim3 g, dim3 b, cudaStream_t s, A... a) {
    softmax_backward_kernel<kWarpRow, kW><<<g, b, 0, s>>>(a...);
  }
};
template <bool kWarpRow, int kW>
struct LayerNormLaunch {
  template <class... A>
  static void launch(dim3 g, dim3 b, cudaStream_t s, A... a) {
    layer_norm_kernel<kWarpRow, kW><<<g, b, 0, s>>>(a...);
  }
};
template <bool kWarpRow, int kW>
struct LayerNormBackwardLaunch {
  template <class... A>
  static void launch(dim3 g, dim3 b, cudaStream_t s, A... a) {
    layer_norm_backward_kernel<kWarpRow, kW><<<g, b, 0, s>>>(a...);
  }
};
template <bool kWarpRow, int kW>
struct RmsNormLaunch {
  template <class... A>
  static void launch(dim3 g, dim3 b, cudaStream_t s, A... a) { rms_norm_kernel<kWarpRow, kW><<<g, b, 0, s>>>(a...); }
};
template <bool kWarpRow, int kW>
struct RmsNormBackwardLaunch {
  template <class... A>
  static void launch(dim3 g, dim3 b, cudaStream_t s, A... a) {
    rms_norm_backward_kernel<kWarpRow, kW><<<g, b, 0, s>>>(a...);
  }
};

int64_t rows_of(const Tensor& x) { return x.numel() / x.size(-1); }

}  // namespace

void softmax(const Tensor& x, const Tensor& y, int64_t rows, int64_t C, bool log) {
  if (rows == 0 || C == 0) return;
  DeviceGuard guard(x.device());
  visit_float("softmax", x, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    T* yp = ptr<T>(y);
    launch_rows<SoftmaxLaunch>("softmax_kernel", stream_of(x), rows, C, vec_ok<T>(C, {xp, yp}), xp, yp, rows, C,
                               log);
  });
}

void softmax_backward(const Tensor& y, const Tensor& g, const Tensor& dx, int64_t rows, int64_t C, bool log) {
  if (rows == 0 || C == 0) return;
  DeviceGuard guard(y.device());
  visit_float("softmax backward", y, [&](auto tag) {
    using T = decltype(tag);
    const T* yp = cptr<T>(y);
    const T* gp = cptr<T>(g);
    T* dp = ptr<T>(dx);
    launch_rows<SoftmaxBackwardLaunch>("softmax_backward_kernel", stream_of(y), rows, C, vec_ok<T>(C, {yp, gp, dp}),
                                       yp, gp, dp, rows, C, log);
  });
}

void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                const Tensor& rstd, double eps) {
  const int64_t C = x.size(-1), rows = rows_of(x);
  if (rows == 0) return;
  DeviceGuard guard(x.device());
  visit_float("layer_norm", x, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    const T* wp = opt_ptr<T>(w);
    const T* bp = opt_ptr<T>(b);
    T* yp = ptr<T>(y);
    launch_rows<LayerNormLaunch>("layer_norm_kernel", stream_of(x), rows, C, vec_ok<T>(C, {xp, wp, bp, yp}), xp, wp,
                                 bp, yp, ptr<float>(mean), ptr<float>(rstd), rows, C, static_cast<float>(eps));
  });
}

void layer_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd, const Tensor& g,
                         const Tensor& dx, const Tensor& dw, const Tensor& db) {
  const int64_t C = x.size(-1), rows = rows_of(x);
  DeviceGuard guard(x.device());
  visit_float("layer_norm backward", x, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    const T* wp = opt_ptr<T>(w);
    const T* gp = cptr<T>(g);
    const float* mp = cptr<float>(mean);
    const float* rp = cptr<float>(rstd);
    if (dx.defined() && rows > 0) {
      T* dp = ptr<T>(dx);
      launch_rows<LayerNormBackwardLaunch>("layer_norm_backward_kernel", stream_of(x), rows, C,
                                           vec_ok<T>(C, {xp, wp, gp, dp}), xp, wp, mp, rp, gp, dp, rows, C);
    }
    // dw / db in the weight's dtype (x's dtype: the operands share one).
    if (dw.defined() || db.defined())
      column_reduce(LayerNormParamTerm<T>{xp, gp, mp, rp, C}, rows, C, x, opt_ptr<T>(dw), opt_ptr<T>(db));
  });
}

void rms_norm(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& rstd, double eps) {
  const int64_t C = x.size(-1), rows = rows_of(x);
  if (rows == 0) return;
  DeviceGuard guard(x.device());
  visit_float("rms_norm", x, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    const T* wp = opt_ptr<T>(w);
    T* yp = ptr<T>(y);
    launch_rows<RmsNormLaunch>("rms_norm_kernel", stream_of(x), rows, C, vec_ok<T>(C, {xp, wp, yp}), xp, wp, yp,
                               ptr<float>(rstd), rows, C, static_cast<float>(eps));
  });
}

void rms_norm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& g, const Tensor& dx,
                       const Tensor& dw) {
  const int64_t C = x.size(-1), rows = rows_of(x);
  DeviceGuard guard(x.device());
  visit_float("rms_norm backward", x, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    const T* wp = opt_ptr<T>(w);
    const T* gp = cptr<T>(g);
    const float* rp = cptr<float>(rstd);
    if (dx.defined() && rows > 0) {
      T* dp = ptr<T>(dx);
      launch_rows<RmsNormBackwardLaunch>("rms_norm_backward_kernel", stream_of(x), rows, C,
                                         vec_ok<T>(C, {xp, wp, gp, dp}), xp, wp, rp, gp, dp, rows, C);
    }
    if (dw.defined())
      column_reduce(RmsNormParamTerm<T>{xp, gp, rp, C}, rows, C, x, ptr<T>(dw), static_cast<T*>(nullptr));
  });
}

void column_sum(const Tensor& g, const Tensor& out) {
  const int64_t R = g.size(0), C = g.size(1);
  if (C == 0) return;
  DeviceGuard guard(out.device());
  // g and out each f32 or bf16 (summed in f32, rounded once into out).
  visit_float("column_sum", g, [&](auto gtag) {
    using T = decltype(gtag);
    visit_float("column_sum", out, [&](auto otag) {
      using O = decltype(otag);
      const T* gp = R > 0 ? cptr<T>(g) : nullptr;
      column_reduce(StridedTerm<T>{gp, g.stride(0), g.stride(1)}, R, C, out, ptr<O>(out), static_cast<O*>(nullptr));
    });
  });
}

}  // namespace moon::cuda
