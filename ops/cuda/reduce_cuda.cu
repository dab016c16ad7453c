// CUDA reductions over the middle axis of a contiguous (outer, len, inner) view: sum, max with first-maximum
// indices and its backward, cumsum; and the row l2 normalisation of ops/similarity.cpp.
//
// Layout strategy of the middle reductions (sum, max):
//   * inner == 1 (each output reduces one contiguous row): one warp per row, lanes striding along the row,
//     then a warp-shuffle butterfly;
//   * inner > 1 (column reduce): a 32 x 8 block per (outer, 32 columns): threadIdx.x runs over 32 adjacent
//     columns (coalesced 128-byte loads per row), threadIdx.y over 8 interleaved row subsets; the 8 partial
//     results are combined in y order through shared memory.
//   * When there are too few outputs to fill the GPU and the reduced axis is long, the axis is cut into
//     chunks, each chunk reduced into a partial buffer (outer, chunks, inner), and the partials reduced again
//     by the same kernels. The chunking depends only on the shape (fixed constants, not the SM count), so a
//     result is bitwise reproducible from run to run and across GPU models.
// Determinism: every sum is taken in an order fixed by the shape; max/argmax combines with a total order
// (NaN first, then larger value, then lower index), so its result does not depend on the order at all and
// equals the CPU's sequential "first maximum, NaN wins" rule.
// bf16 (runtime/cuda/kernel_util.cuh): the kernels are templated on the storage type T of the data tensors
// (float or __nv_bfloat16). Elements are widened on load; sums, scans and partial buffers stay f32 and each
// result is rounded once on store, so a bf16 result is the f32 kernel's result on the widened input, rounded
// (same order of additions). Max compares the widened values, which is exact, and stores the maximum exactly.
#include "ops/cuda/reduce_cuda.h"

#include "runtime/cuda/kernel_util.cuh"

namespace moon::cuda {

namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kThreads = 256;
constexpr int kColsX = 32, kColsY = 8;           // column-reduce block
constexpr int64_t kRowSlotsWanted = 8192;        // warps wanted in flight for row reduces
constexpr int64_t kColBlocksWanted = 1024;       // 32 x 8 blocks wanted in flight for column reduces
constexpr int64_t kMinRowChunk = 1024, kMinColChunk = 256;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- combine rules

struct SumOp {
  using Acc = float;
  __device__ static Acc identity() { return 0.0f; }
  __device__ static Acc combine(Acc a, Acc b) { return a + b; }
  __device__ static Acc shfl_xor(Acc a, int o) { return __shfl_xor_sync(kFull, a, o); }
};

// A candidate maximum: value and position along the reduced axis (i < 0: none yet).
struct ArgMax {
  float v;
  int64_t i;
};
// a ranks before b as "the maximum": a real candidate before none, NaN before numbers, then the larger
// value, then the lower index. A strict total order, so the selected element is order independent.
__device__ __forceinline__ bool max_before(ArgMax a, ArgMax b) {
  if (a.i < 0) return false;
  if (b.i < 0) return true;
  const bool an = a.v != a.v, bn = b.v != b.v;
  if (an != bn) return an;
  if (!an && a.v != b.v) return a.v > b.v;
  return a.i < b.i;
}
struct MaxOp {
  using Acc = ArgMax;
  __device__ static Acc identity() { return ArgMax{0.0f, -1}; }
  __device__ static Acc combine(Acc a, Acc b) { return max_before(b, a) ? b : a; }
  __device__ static Acc shfl_xor(Acc a, int o) {
    const long long i = __shfl_xor_sync(kFull, static_cast<long long>(a.i), o);
    return ArgMax{__shfl_xor_sync(kFull, a.v, o), static_cast<int64_t>(i)};
  }
};

// ---- sources (element (o, k, j) of the reduced view) and sinks (output slot)

template <class T>
struct SumSrc {
  const T* in;
  int64_t len, inner;
  __device__ float load(int64_t o, int64_t k, int64_t j) const { return to_float(in[(o * len + k) * inner + j]); }
};
template <class T>
struct SumSink {
  T* out;
  __device__ void store(int64_t slot, float v) const { out[slot] = from_float<T>(v); }
};
template <class T>
struct MaxSrc {  // first pass: the value and its position k
  const T* in;
  int64_t len, inner;
  __device__ ArgMax load(int64_t o, int64_t k, int64_t j) const {
    return ArgMax{to_float(in[(o * len + k) * inner + j]), k};
  }
};
struct MaxPairSrc {  // later passes: partial (value, index) pairs
  const float* v;
  const int64_t* i;
  int64_t len, inner;
  __device__ ArgMax load(int64_t o, int64_t k, int64_t j) const {
    const int64_t at = (o * len + k) * inner + j;
    return ArgMax{v[at], i[at]};
  }
};
template <class T>
struct MaxSink {  // the value stored as T: exact, it is a widened T (or a partial's f32 copy of one)
  T* v;
  int64_t* i;
  __device__ void store(int64_t slot, ArgMax a) const {
    v[slot] = from_float<T>(a.v);
    i[slot] = a.i;
  }
};

// Row reduce (inner == 1): slot w = (o, c) reduces k in chunk c of row o into sink slot w, one warp per
// slot. Sum: 1 FLOP and sizeof(T) bytes per element read; max: 2 compares, sizeof(T) bytes per element, 12
// bytes per slot (f32).
template <class Op, class Src, class Sink>
__global__ void reduce_rows_kernel(Src src, Sink sink, int64_t outer, int64_t len, int64_t chunks, int64_t chunk_len) {
  using Acc = typename Op::Acc;
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t{gridDim.x} * (blockDim.x >> 5);
  const int64_t slots = outer * chunks;
  for (int64_t w = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) >> 5; w < slots; w += warps) {  // warp-uniform
    const int64_t o = w / chunks, c = w % chunks;
    const int64_t k0 = c * chunk_len, k1 = k0 + chunk_len < len ? k0 + chunk_len : len;
    Acc acc = Op::identity();
    for (int64_t k = k0 + lane; k < k1; k += 32) acc = Op::combine(acc, src.load(o, k, 0));
    for (int off = 16; off > 0; off >>= 1) acc = Op::combine(acc, Op::shfl_xor(acc, off));
    if (lane == 0) sink.store(w, acc);
  }
}

// Column reduce (inner > 1): block (32, 8) per (o, c, 32 columns); slot (o, c, j) = reduce over k in chunk c
// of src(o, k, j). Per element: 1 FLOP (sum) or 2 compares (max), 4 bytes read; per slot 4 or 12 bytes out.
template <class Op, class Src, class Sink>
__global__ void reduce_cols_kernel(Src src, Sink sink, int64_t outer, int64_t len, int64_t inner, int64_t chunks,
                                   int64_t chunk_len) {
  using Acc = typename Op::Acc;
  __shared__ Acc part[kColsY][kColsX];
  const int64_t jblocks = (inner + kColsX - 1) / kColsX;
  const int64_t total = outer * chunks * jblocks;
  for (int64_t b = blockIdx.x; b < total; b += gridDim.x) {  // block-uniform
    const int64_t jb = b % jblocks, rest = b / jblocks;
    const int64_t c = rest % chunks, o = rest / chunks;
    const int64_t j = jb * kColsX + threadIdx.x;
    const int64_t k0 = c * chunk_len, k1 = k0 + chunk_len < len ? k0 + chunk_len : len;
    Acc acc = Op::identity();
    if (j < inner)
      for (int64_t k = k0 + threadIdx.y; k < k1; k += kColsY) acc = Op::combine(acc, src.load(o, k, j));
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < inner) {
      Acc r = part[0][threadIdx.x];
      for (int y = 1; y < kColsY; ++y) r = Op::combine(r, part[y][threadIdx.x]);
      sink.store((o * chunks + c) * inner + j, r);
    }
    __syncthreads();
  }
}

// How a middle reduction is cut: `chunks` pieces of `chunk_len` along the reduced axis.
struct Plan {
  int64_t chunks = 1, chunk_len = 1;
};
Plan plan_for(int64_t outer, int64_t len, int64_t inner) {
  Plan p;
  p.chunk_len = len > 0 ? len : 1;
  if (inner == 1) {
    if (outer >= kRowSlotsWanted / 8 || len <= 2 * kMinRowChunk) return p;
    p.chunks = std::min(ceil_div(len, kMinRowChunk), ceil_div(kRowSlotsWanted, outer));
  } else {
    const int64_t blocks = outer * ceil_div(inner, kColsX);
    if (blocks >= kColBlocksWanted / 2 || len <= 2 * kMinColChunk) return p;
    p.chunks = std::min(ceil_div(len, kMinColChunk), ceil_div(kColBlocksWanted, blocks));
  }
  if (p.chunks <= 1) {
    p.chunks = 1;
    return p;
  }
  p.chunk_len = ceil_div(len, p.chunks);
  p.chunks = ceil_div(len, p.chunk_len);
  return p;
}

template <class Op, class Src, class Sink>
void launch_reduce(Src src, Sink sink, int64_t outer, int64_t len, int64_t inner, const Plan& p, cudaStream_t s) {
  if (inner == 1) {
    const int64_t slots = outer * p.chunks;
    reduce_rows_kernel<Op><<<blocks_for(slots * 32, kThreads), kThreads, 0, s>>>(src, sink, outer, len, p.chunks,
                                                                                  p.chunk_len);
    MOON_CUDA_LAUNCH_CHECK("reduce_rows_kernel");
  } else {
    const int64_t blocks = outer * p.chunks * ceil_div(inner, kColsX);
    reduce_cols_kernel<Op><<<blocks_for(blocks, 1), dim3(kColsX, kColsY), 0, s>>>(src, sink, outer, len, inner,
                                                                                     p.chunks, p.chunk_len);
    MOON_CUDA_LAUNCH_CHECK("reduce_cols_kernel");
  }
}

// out (outer, inner) = sum over len, through f32 partial buffers while the plan cuts the axis; the final pass
// rounds into Tout.
template <class Tin, class Tout>
void sum_impl(const Tin* in, Tout* out, int64_t outer, int64_t len, int64_t inner, Device dev, cudaStream_t s) {
  const Plan p = plan_for(outer, len, inner);
  if (p.chunks == 1)
    return launch_reduce<SumOp>(SumSrc<Tin>{in, len, inner}, SumSink<Tout>{out}, outer, len, inner, p, s);
  Tensor part = empty({outer * p.chunks * inner}, DType::F32, dev);  // stream-ordered reuse after return
  launch_reduce<SumOp>(SumSrc<Tin>{in, len, inner}, SumSink<float>{ptr<float>(part)}, outer, len, inner, p, s);
  sum_impl(cptr<float>(part), out, outer, p.chunks, inner, dev, s);
}

// (values, indices) of partial pairs (outer, len, inner) reduced over len; values stored as T.
template <class T>
void max_pairs_impl(const float* v, const int64_t* i, T* vo, int64_t* io, int64_t outer, int64_t len, int64_t inner,
                    Device dev, cudaStream_t s) {
  const Plan p = plan_for(outer, len, inner);
  if (p.chunks == 1)
    return launch_reduce<MaxOp>(MaxPairSrc{v, i, len, inner}, MaxSink<T>{vo, io}, outer, len, inner, p, s);
  const int64_t slots = outer * p.chunks * inner;
  Tensor pv = empty({slots}, DType::F32, dev), pi = empty({slots}, DType::I64, dev);
  launch_reduce<MaxOp>(MaxPairSrc{v, i, len, inner}, MaxSink<float>{ptr<float>(pv), ptr<int64_t>(pi)}, outer, len,
                       inner, p, s);
  max_pairs_impl(cptr<float>(pv), cptr<int64_t>(pi), vo, io, outer, p.chunks, inner, dev, s);
}

// Inclusive scan of each contiguous row (inner == 1), one warp per row in tiles of 128 (4 per lane): a
// sequential scan in each lane, a shuffle scan of the lane totals, and a running carry between tiles (all
// f32; each stored element rounded once to T). 1-2 FLOP and 2 * sizeof(T) bytes per element.
template <class T>
__global__ void cumsum_rows_kernel(const T* __restrict__ in, T* __restrict__ out, int64_t outer, int64_t len,
                                   bool reverse) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t{gridDim.x} * (blockDim.x >> 5);
  for (int64_t w = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) >> 5; w < outer; w += warps) {  // warp-uniform
    const T* p = in + w * len;
    T* q = out + w * len;
    float carry = 0.0f;
    for (int64_t t0 = 0; t0 < len; t0 += 128) {
      float v[4];
      for (int e = 0; e < 4; ++e) {
        const int64_t t = t0 + lane * 4 + e;  // position in scan order
        v[e] = t < len ? to_float(p[reverse ? len - 1 - t : t]) : 0.0f;
      }
      v[1] += v[0];
      v[2] += v[1];
      v[3] += v[2];
      float incl = v[3];
      for (int off = 1; off < 32; off <<= 1) {
        const float y = __shfl_up_sync(kFull, incl, off);
        if (lane >= off) incl += y;
      }
      float excl = __shfl_up_sync(kFull, incl, 1);
      if (lane == 0) excl = 0.0f;
      const float base = carry + excl;
      for (int e = 0; e < 4; ++e) {
        const int64_t t = t0 + lane * 4 + e;
        if (t < len) q[reverse ? len - 1 - t : t] = from_float<T>(base + v[e]);
      }
      carry += __shfl_sync(kFull, incl, 31);
    }
  }
}

// Inclusive scan along the middle axis with inner > 1: one thread per (o, j), sequential over k in the CPU's
// order (first output = input, then previous + input; an f32 running sum, each stored element rounded to T);
// coalesced over j. 1 FLOP and 2 * sizeof(T) bytes per element.
template <class T>
__global__ void cumsum_cols_kernel(const T* __restrict__ in, T* __restrict__ out, int64_t outer, int64_t len,
                                   int64_t inner, bool reverse) {
  const int64_t n = outer * inner;
  for (int64_t t = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; t < n; t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t o = t / inner, j = t % inner;
    const T* p = in + o * len * inner + j;
    T* q = out + o * len * inner + j;
    float s = 0.0f;
    for (int64_t step = 0; step < len; ++step) {
      const int64_t k = reverse ? len - 1 - step : step;
      const float x = to_float(p[k * inner]);
      s = step == 0 ? x : s + x;
      q[k * inner] = from_float<T>(s);
    }
  }
}

// dx[o, k, j] = indices[o, j] == k ? g[o, j] : 0 over every element of dx (g copied as stored, T):
// 0 FLOP, sizeof(T) bytes written and up to 8 + sizeof(T) read per element (one pass, no scatter, no races).
template <class T>
__global__ void max_backward_kernel(const T* __restrict__ g, const int64_t* __restrict__ idx, T* __restrict__ dx,
                                    int64_t len, int64_t inner, int64_t n) {
  for (int64_t t = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; t < n; t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = t % inner, ok = t / inner;
    const int64_t k = ok % len, o = ok / len;
    const int64_t src = o * inner + j;
    dx[t] = idx[src] == k ? g[src] : from_float<T>(0.0f);
  }
}

// ---- l2 normalisation of rows: a group of threads per row (one warp, or the whole block for long rows)

template <bool kBlock>
__device__ __forceinline__ float group_sum(float v, float* scratch) {
  if constexpr (kBlock) return block_sum(v, scratch);
  else return warp_sum(v);
}

// y = x * 1 / max(||x||, eps) per row, norm = ||x||: 3 FLOP per element (dot, scale), 2*sizeof(T) bytes per
// element and 4 bytes per row. x and y are T (f32 or bf16, computed in f32, y rounded once); kW = 4: one
// vector access per 4 elements (D % 4 == 0, rows aligned to kVecBytes<T>).
template <bool kBlock, int kW, class T>
__global__ void l2_rows_kernel(const T* __restrict__ x, int64_t xs, int64_t R, int64_t D, float eps,
                               T* __restrict__ y, float* __restrict__ norm) {
  __shared__ float scratch[32];
  const int group = kBlock ? blockDim.x : 32;
  const int t = kBlock ? threadIdx.x : (threadIdx.x & 31);
  const int64_t per_block = kBlock ? 1 : (blockDim.x >> 5);
  const int64_t first = int64_t{blockIdx.x} * per_block + (kBlock ? 0 : (threadIdx.x >> 5));
  for (int64_t i = first; i < R; i += int64_t{gridDim.x} * per_block) {  // group-uniform
    const T* r = x + i * xs;
    T* o = y + i * D;
    float s = 0.0f;
    for (int64_t j = t; j < D / kW; j += group) {
      float a[kW];
      load_floats<kW>(r + j * kW, a);
      for (int k = 0; k < kW; ++k) s = fmaf(a[k], a[k], s);
    }
    s = group_sum<kBlock>(s, scratch);
    const float n = sqrtf(s);
    if (t == 0) norm[i] = n;
    const float inv = 1.0f / (n > eps ? n : eps);
    for (int64_t j = t; j < D / kW; j += group) {
      float a[kW];
      load_floats<kW>(r + j * kW, a);
      for (int k = 0; k < kW; ++k) a[k] *= inv;
      store_floats<kW>(o + j * kW, a);
    }
  }
}

// dx = (g - y * dot(g, y)) / norm per row, or g / eps where the norm was clamped: 5 FLOP and 3*sizeof(T) bytes
// per element, 4 bytes per row. g, y, dx are T (computed in f32, dx rounded once).
template <bool kBlock, int kW, class T>
__global__ void l2_rows_backward_kernel(const T* __restrict__ g, int64_t gs, const T* __restrict__ y,
                                        const float* __restrict__ norm, int64_t R, int64_t D, float eps,
                                        T* __restrict__ dx) {
  __shared__ float scratch[32];
  const int group = kBlock ? blockDim.x : 32;
  const int t = kBlock ? threadIdx.x : (threadIdx.x & 31);
  const int64_t per_block = kBlock ? 1 : (blockDim.x >> 5);
  const int64_t first = int64_t{blockIdx.x} * per_block + (kBlock ? 0 : (threadIdx.x >> 5));
  for (int64_t i = first; i < R; i += int64_t{gridDim.x} * per_block) {  // group-uniform
    const T* gr = g + i * gs;
    const T* yr = y + i * D;
    T* o = dx + i * D;
    const float ni = norm[i];
    const bool clamped = !(ni > eps);  // uniform over the group
    const float inv = 1.0f / (clamped ? eps : ni);
    float dot = 0.0f;
    if (!clamped) {
      for (int64_t j = t; j < D / kW; j += group) {
        float a[kW], b[kW];
        load_floats<kW>(gr + j * kW, a);
        load_floats<kW>(yr + j * kW, b);
        for (int k = 0; k < kW; ++k) dot = fmaf(a[k], b[k], dot);
      }
      dot = group_sum<kBlock>(dot, scratch);
    }
    for (int64_t j = t; j < D / kW; j += group) {
      float a[kW], b[kW];
      load_floats<kW>(gr + j * kW, a);
      load_floats<kW>(yr + j * kW, b);
      for (int k = 0; k < kW; ++k) a[k] = (a[k] - b[k] * dot) * inv;
      store_floats<kW>(o + j * kW, a);
    }
  }
}

constexpr int64_t kBlockRowMin = 2048;  // rows at least this long get a whole block, shorter ones a warp

template <int kW, class T>
void launch_l2(const T* x, int64_t xs, int64_t R, int64_t D, float eps, T* y, float* norm, cudaStream_t s) {
  if (D >= kBlockRowMin) {
    l2_rows_kernel<true, kW><<<blocks_for(R, 1), kThreads, 0, s>>>(x, xs, R, D, eps, y, norm);
  } else {
    l2_rows_kernel<false, kW><<<blocks_for(R * 32, kThreads), kThreads, 0, s>>>(x, xs, R, D, eps, y, norm);
  }
  MOON_CUDA_LAUNCH_CHECK("l2_rows_kernel");
}

template <int kW, class T>
void launch_l2_back(const T* g, int64_t gs, const T* y, const float* norm, int64_t R, int64_t D, float eps, T* dx,
                    cudaStream_t s) {
  if (D >= kBlockRowMin) {
    l2_rows_backward_kernel<true, kW><<<blocks_for(R, 1), kThreads, 0, s>>>(g, gs, y, norm, R, D, eps, dx);
  } else {
    l2_rows_backward_kernel<false, kW><<<blocks_for(R * 32, kThreads), kThreads, 0, s>>>(g, gs, y, norm, R, D, eps,
                                                                                           dx);
  }
  MOON_CUDA_LAUNCH_CHECK("l2_rows_backward_kernel");
}

}  // namespace

void sum_middle(const Tensor& src, const Tensor& out, int64_t outer, int64_t len, int64_t inner) {
  if (outer * inner == 0) return;
  DeviceGuard guard(out.device());
  visit_float("sum", src, [&](auto in_tag) {
    using Tin = decltype(in_tag);
    visit_float("sum", out, [&](auto out_tag) {
      using Tout = decltype(out_tag);
      sum_impl(cptr<Tin>(src), ptr<Tout>(out), outer, len, inner, out.device(), stream_of(out));
    });
  });
}

void cumsum_middle(const Tensor& src, const Tensor& out, int64_t outer, int64_t len, int64_t inner, bool reverse) {
  if (outer * len * inner == 0) return;
  MOON_CHECK(src.dtype() == out.dtype(), "cumsum: src ", src.desc(), " and out ", out.desc(), " differ in dtype");
  DeviceGuard guard(out.device());
  const cudaStream_t s = stream_of(out);
  visit_float("cumsum", out, [&](auto tag) {
    using T = decltype(tag);
    if (inner == 1) {
      cumsum_rows_kernel<T><<<blocks_for(outer * 32, kThreads), kThreads, 0, s>>>(cptr<T>(src), ptr<T>(out), outer,
                                                                                  len, reverse);
      MOON_CUDA_LAUNCH_CHECK("cumsum_rows_kernel");
    } else {
      cumsum_cols_kernel<T><<<blocks_for(outer * inner, kThreads), kThreads, 0, s>>>(cptr<T>(src), ptr<T>(out), outer,
                                                                                     len, inner, reverse);
      MOON_CUDA_LAUNCH_CHECK("cumsum_cols_kernel");
    }
  });
}

void max_middle(const Tensor& src, const Tensor& values, const Tensor& indices, int64_t outer, int64_t len,
                int64_t inner) {
  if (outer * inner == 0) return;
  MOON_CHECK(len > 0, "max: the reduced dimension is empty, so it has no maximum");
  MOON_CHECK(src.dtype() == values.dtype(), "max: src ", src.desc(), " and values ", values.desc(),
             " differ in dtype");
  DeviceGuard guard(values.device());
  const Device dev = values.device();
  const cudaStream_t s = stream_of(values);
  visit_float("max", src, [&](auto tag) {
    using T = decltype(tag);
    const T* in = cptr<T>(src);
    T* vo = ptr<T>(values);
    int64_t* io = ptr<int64_t>(indices);
    const Plan p = plan_for(outer, len, inner);
    if (p.chunks == 1)
      return launch_reduce<MaxOp>(MaxSrc<T>{in, len, inner}, MaxSink<T>{vo, io}, outer, len, inner, p, s);
    const int64_t slots = outer * p.chunks * inner;
    Tensor pv = empty({slots}, DType::F32, dev), pi = empty({slots}, DType::I64, dev);
    launch_reduce<MaxOp>(MaxSrc<T>{in, len, inner}, MaxSink<float>{ptr<float>(pv), ptr<int64_t>(pi)}, outer, len,
                         inner, p, s);
    max_pairs_impl(cptr<float>(pv), cptr<int64_t>(pi), vo, io, outer, p.chunks, inner, dev, s);
  });
}

void max_middle_backward(const Tensor& g, const Tensor& indices, const Tensor& dx, int64_t outer, int64_t len,
                         int64_t inner) {
  const int64_t n = outer * len * inner;
  if (n == 0) return;
  MOON_CHECK(g.dtype() == dx.dtype(), "max backward: g ", g.desc(), " and dx ", dx.desc(), " differ in dtype");
  DeviceGuard guard(dx.device());
  visit_float("max backward", dx, [&](auto tag) {
    using T = decltype(tag);
    max_backward_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream_of(dx)>>>(
        cptr<T>(g), cptr<int64_t>(indices), ptr<T>(dx), len, inner, n);
    MOON_CUDA_LAUNCH_CHECK("max_backward_kernel");
  });
}

void l2_normalize_rows(const Tensor& x, float eps, const Tensor& y, const Tensor& norm) {
  const int64_t R = y.size(0), D = y.size(1);
  if (R * D == 0) return;
  DeviceGuard guard(y.device());
  const int64_t xs = R > 1 ? x.stride(0) : D;
  visit_float("l2_normalize", y, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    T* yp = ptr<T>(y);
    const bool vec = D % 4 == 0 && xs % 4 == 0 && aligned(xp, kVecBytes<T>) && aligned(yp, kVecBytes<T>);
    if (vec)
      launch_l2<4>(xp, xs, R, D, eps, yp, ptr<float>(norm), stream_of(y));
    else
      launch_l2<1>(xp, xs, R, D, eps, yp, ptr<float>(norm), stream_of(y));
  });
}

void l2_normalize_rows_backward(const Tensor& g, const Tensor& y, const Tensor& norm, float eps, const Tensor& dx) {
  const int64_t R = y.size(0), D = y.size(1);
  if (R * D == 0) return;
  DeviceGuard guard(dx.device());
  const int64_t gs = R > 1 ? g.stride(0) : D;
  visit_float("l2_normalize backward", dx, [&](auto tag) {
    using T = decltype(tag);
    const T* gp = cptr<T>(g);
    const T* yp = cptr<T>(y);
    T* dp = ptr<T>(dx);
    const bool vec = D % 4 == 0 && gs % 4 == 0 && aligned(gp, kVecBytes<T>) && aligned(yp, kVecBytes<T>) &&
                     aligned(dp, kVecBytes<T>);
    if (vec)
      launch_l2_back<4>(gp, gs, yp, cptr<float>(norm), R, D, eps, dp, stream_of(dx));
    else
      launch_l2_back<1>(gp, gs, yp, cptr<float>(norm), R, D, eps, dp, stream_of(dx));
  });
}

}  // namespace moon::cuda
