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
template <bool kWarpRow, int kW>
__global__ void softmax_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t rows, int64_t C,
                               bool log) {
  using R = Row<kWarpRow>;
  __shared__ float scratch[32];
  const int64_t groups = C / kW;
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
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
template <bool kWarpRow, int kW>
__global__ void softmax_backward_kernel(const float* __restrict__ y, const float* __restrict__ g,
                                        float* __restrict__ dx, int64_t rows, int64_t C, bool log) {
  using R = Row<kWarpRow>;
  __shared__ float scratch[32];
  const int64_t groups = C / kW;
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const float* yr = y + r * C;
    const float* gr = g + r * C;
    float* dr = dx + r * C;
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
template <bool kWarpRow, int kW>
__global__ void layer_norm_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                  const float* __restrict__ b, float* __restrict__ y, float* __restrict__ mean,
                                  float* __restrict__ rstd, int64_t rows, int64_t C, float eps) {
  using R = Row<kWarpRow>;
  __shared__ float scratch[32];
  const int64_t groups = C / kW;
  const float inv_c = 1.0f / static_cast<float>(C);
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    const float shift = xr[0];
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
template <bool kWarpRow, int kW>
__global__ void layer_norm_backward_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                           const float* __restrict__ mean, const float* __restrict__ rstd,
                                           const float* __restrict__ g, float* __restrict__ dx, int64_t rows,
                                           int64_t C) {
  using R = Row<kWarpRow>;
  __shared__ float scratch[32];
  const int64_t groups = C / kW;
  const float inv_c = 1.0f / static_cast<float>(C);
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const float* xr = x + r * C;
    const float* gr = g + r * C;
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
    float* dr = dx + r * C;
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
template <bool kWarpRow, int kW>
__global__ void rms_norm_kernel(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
                                float* __restrict__ rstd, int64_t rows, int64_t C, float eps) {
  using R = Row<kWarpRow>;
  __shared__ float scratch[32];
  const int64_t groups = C / kW;
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
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
template <bool kWarpRow, int kW>
__global__ void rms_norm_backward_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                         const float* __restrict__ rstd, const float* __restrict__ g,
                                         float* __restrict__ dx, int64_t rows, int64_t C) {
  using R = Row<kWarpRow>;
  __shared__ float scratch[32];
  const int64_t groups = C / kW;
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const float* xr = x + r * C;
    const float* gr = g + r * C;
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
    float* dr = dx + r * C;
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
struct LayerNormParamTerm {  // dw += g * xhat, db += g
  const float *x, *g, *mean, *rstd;
  int64_t C;
  static constexpr int kOut = 2;
  __device__ void operator()(int64_t r, int64_t c, float (&acc)[2]) const {
    const float gv = g[r * C + c];
    acc[0] = fmaf(gv, (x[r * C + c] - mean[r]) * rstd[r], acc[0]);
    acc[1] += gv;
  }
};
struct RmsNormParamTerm {  // dw += g * x * rstd
  const float *x, *g, *rstd;
  int64_t C;
  static constexpr int kOut = 1;
  __device__ void operator()(int64_t r, int64_t c, float (&acc)[1]) const {
    acc[0] = fmaf(g[r * C + c], x[r * C + c] * rstd[r], acc[0]);
  }
};
struct StridedTerm {  // out += g[r, c] of a strided view
  const float* g;
  int64_t rs, cs;
  static constexpr int kOut = 1;
  __device__ void operator()(int64_t r, int64_t c, float (&acc)[1]) const { acc[0] += g[r * rs + c * cs]; }
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

// out_o[col] = sum over chunks (in order) of partial[chunk, o, col]; an undefined output (nullptr) is
// skipped. Per column: `chunks` adds, 4 * chunks bytes.
__global__ void column_finish_kernel(const float* __restrict__ partial, int64_t chunks, int64_t cols, int n_out,
                                     float* out0, float* out1) {
  const int64_t n = cols * n_out;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int o = static_cast<int>(i / cols);
    const int64_t col = i % cols;
    float* out = o == 0 ? out0 : out1;
    if (!out) continue;
    float s = 0.0f;
    for (int64_t c = 0; c < chunks; ++c) s += partial[(c * n_out + o) * cols + col];
    out[col] = s;
  }
}

// Sums each term over the rows of a (rows, cols) problem into out0 (and out1 for two-output terms).
template <class Term>
void column_reduce(const Term& term, int64_t rows, int64_t cols, const Tensor& like, float* out0, float* out1) {
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
  column_finish_kernel<<<blocks_for(cols * Term::kOut, kThreads), kThreads, 0, s>>>(
      ptr<float>(partial), chunks, cols, Term::kOut, out0, out1);
  MOON_CUDA_LAUNCH_CHECK("column_finish_kernel");
}

// ---------------------------------------------------------------------------------------------------------
// Launch helpers

float* opt_ptr(const Tensor& t) { return t.defined() ? ptr<float>(t) : nullptr; }

// True when the float4 path applies: C % 4 == 0 and every given (non-null) base pointer is 16-byte aligned
// (then every row is, since rows are C floats apart).
bool vec_ok(int64_t C, std::initializer_list<const void*> ptrs) {
  if (C % 4 != 0) return false;
  for (const void* p : ptrs)
    if (p && !aligned(p, 16)) return false;
  return true;
}

// Launch adapters (a class template per kernel so launch_rows can pick the instantiation).
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
  const float* xp = cptr<float>(x);
  float* yp = ptr<float>(y);
  launch_rows<SoftmaxLaunch>("softmax_kernel", stream_of(x), rows, C, vec_ok(C, {xp, yp}), xp, yp, rows, C, log);
}

void softmax_backward(const Tensor& y, const Tensor& g, const Tensor& dx, int64_t rows, int64_t C, bool log) {
  if (rows == 0 || C == 0) return;
  DeviceGuard guard(y.device());
  const float* yp = cptr<float>(y);
  const float* gp = cptr<float>(g);
  float* dp = ptr<float>(dx);
  launch_rows<SoftmaxBackwardLaunch>("softmax_backward_kernel", stream_of(y), rows, C, vec_ok(C, {yp, gp, dp}), yp,
                                     gp, dp, rows, C, log);
}

void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                const Tensor& rstd, double eps) {
  const int64_t C = x.size(-1), rows = rows_of(x);
  if (rows == 0) return;
  DeviceGuard guard(x.device());
  const float* xp = cptr<float>(x);
  const float* wp = opt_ptr(w);
  const float* bp = opt_ptr(b);
  float* yp = ptr<float>(y);
  launch_rows<LayerNormLaunch>("layer_norm_kernel", stream_of(x), rows, C, vec_ok(C, {xp, wp, bp, yp}), xp, wp, bp,
                               yp, ptr<float>(mean), ptr<float>(rstd), rows, C, static_cast<float>(eps));
}

void layer_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd, const Tensor& g,
                         const Tensor& dx, const Tensor& dw, const Tensor& db) {
  const int64_t C = x.size(-1), rows = rows_of(x);
  DeviceGuard guard(x.device());
  const float* xp = cptr<float>(x);
  const float* wp = opt_ptr(w);
  const float* gp = cptr<float>(g);
  const float* mp = cptr<float>(mean);
  const float* rp = cptr<float>(rstd);
  if (dx.defined() && rows > 0) {
    float* dp = ptr<float>(dx);
    launch_rows<LayerNormBackwardLaunch>("layer_norm_backward_kernel", stream_of(x), rows, C,
                                         vec_ok(C, {xp, wp, gp, dp}), xp, wp, mp, rp, gp, dp, rows, C);
  }
  if (dw.defined() || db.defined())
    column_reduce(LayerNormParamTerm{xp, gp, mp, rp, C}, rows, C, x, opt_ptr(dw), opt_ptr(db));
}

void rms_norm(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& rstd, double eps) {
  const int64_t C = x.size(-1), rows = rows_of(x);
  if (rows == 0) return;
  DeviceGuard guard(x.device());
  const float* xp = cptr<float>(x);
  const float* wp = opt_ptr(w);
  float* yp = ptr<float>(y);
  launch_rows<RmsNormLaunch>("rms_norm_kernel", stream_of(x), rows, C, vec_ok(C, {xp, wp, yp}), xp, wp, yp,
                             ptr<float>(rstd), rows, C, static_cast<float>(eps));
}

void rms_norm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& g, const Tensor& dx,
                       const Tensor& dw) {
  const int64_t C = x.size(-1), rows = rows_of(x);
  DeviceGuard guard(x.device());
  const float* xp = cptr<float>(x);
  const float* wp = opt_ptr(w);
  const float* gp = cptr<float>(g);
  const float* rp = cptr<float>(rstd);
  if (dx.defined() && rows > 0) {
    float* dp = ptr<float>(dx);
    launch_rows<RmsNormBackwardLaunch>("rms_norm_backward_kernel", stream_of(x), rows, C, vec_ok(C, {xp, wp, gp, dp}),
                                       xp, wp, rp, gp, dp, rows, C);
  }
  if (dw.defined()) column_reduce(RmsNormParamTerm{xp, gp, rp, C}, rows, C, x, ptr<float>(dw), nullptr);
}

void column_sum(const Tensor& g, const Tensor& out) {
  const int64_t R = g.size(0), C = g.size(1);
  if (C == 0) return;
  DeviceGuard guard(out.device());
  const float* gp = R > 0 ? cptr<float>(g) : nullptr;
  column_reduce(StridedTerm{gp, g.stride(0), g.stride(1)}, R, C, out, ptr<float>(out), nullptr);
}

}  // namespace moon::cuda
