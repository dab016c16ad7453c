// CUDA top-k along the middle axis of a contiguous (outer, n, inner) view, one block per (o, i) row. The data
// is f32 or bf16 (T): entries are widened on load (exact), compared in f32 and stored back as T (exact), so a
// bf16 result equals the f32 kernel's on the widened input.
//
// The CPU's order is a strict total order on (value, position): for `largest`, NaN first, then larger values,
// then the lower position; for smallest, numbers before NaN, then smaller values, then the lower position.
// Because it is total, the k selected entries and their order are unique, and both strategies below produce
// exactly the CPU's output (values and indices, ties included):
//   * k <= kRoundsMaxK, or rows too long for shared memory: k rounds of a block-wide arg-best. Round r keeps,
//     in each thread, the best entry ranked strictly after round r-1's pick (so nothing is marked), then a
//     warp-shuffle and a shared-memory step reduce over the block. O(k n) reads per row; meant for small k
//     (MoE routing, sampling), and correct (though slow) for any k.
//   * larger k with n <= kSortMax: the row is loaded into shared memory and bitonic-sorted with the same
//     comparator (padding ranks last); the first k are written.
#include "ops/cuda/index_cuda.h"

#include "runtime/cuda/kernel_util.cuh"

namespace moon::cuda {

namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int64_t kRoundsMaxK = 16;
constexpr int kSortMax = 2048;     // entries of a row sorted in shared memory (16 KiB)
constexpr int kSortThreads = 512;

// An entry of a row: value and position (i < 0: none / padding, ranks after everything).
struct Cand {
  float v;
  int64_t i;
};

// a ranks strictly before b in the CPU's order.
template <bool kLargest>
__device__ __forceinline__ bool ranks_before(Cand a, Cand b) {
  if (a.i < 0) return false;
  if (b.i < 0) return true;
  const bool an = a.v != a.v, bn = b.v != b.v;
  if (an != bn) return kLargest ? an : bn;
  if (!an && a.v != b.v) return kLargest ? a.v > b.v : a.v < b.v;
  return a.i < b.i;
}

template <bool kLargest>
__device__ __forceinline__ Cand warp_best(Cand c) {
  for (int off = 16; off > 0; off >>= 1) {
    const long long i = __shfl_xor_sync(kFull, static_cast<long long>(c.i), off);
    const Cand o{__shfl_xor_sync(kFull, c.v, off), static_cast<int64_t>(i)};
    if (ranks_before<kLargest>(o, c)) c = o;
  }
  return c;
}

// k rounds of a block arg-best per row: per round 1 compare and 4 bytes read per entry; 12 bytes written per
// selected entry. blockDim.x is a multiple of 32.
template <bool kLargest, class T>
__global__ void topk_rounds_kernel(T* __restrict__ values, int64_t* __restrict__ indices, const T* __restrict__ x,
                                   int64_t outer, int64_t n, int64_t inner, int64_t k) {
  __shared__ float wv[32];
  __shared__ long long wi[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int64_t rows = outer * inner;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {  // block-uniform
    const int64_t o = r / inner, i = r % inner;
    const T* src = x + o * n * inner + i;
    Cand prev{0.0f, -1};
    for (int64_t j = 0; j < k; ++j) {
      Cand best{0.0f, -1};
      for (int64_t t = threadIdx.x; t < n; t += blockDim.x) {
        const Cand c{to_float(src[t * inner]), t};
        if ((prev.i < 0 || ranks_before<kLargest>(prev, c)) && ranks_before<kLargest>(c, best)) best = c;
      }
      best = warp_best<kLargest>(best);
      if (lane == 0) {
        wv[warp] = best.v;
        wi[warp] = best.i;
      }
      __syncthreads();
      Cand all = lane < warps ? Cand{wv[lane], static_cast<int64_t>(wi[lane])} : Cand{0.0f, -1};
      all = warp_best<kLargest>(all);  // every warp reduces the per-warp picks: all threads hold the result
      if (threadIdx.x == 0) {
        values[(o * k + j) * inner + i] = from_float<T>(all.v);
        indices[(o * k + j) * inner + i] = all.i;
      }
      prev = all;
      __syncthreads();  // wv / wi are rewritten next round
    }
  }
}

// The row in shared memory, bitonic-sorted by the CPU's order (padded to `p`, a power of two <= kSortMax);
// the first k written. O(n log^2 n) compares per row, 4 bytes read per entry, 12 written per selected entry.
template <bool kLargest, class T>
__global__ void topk_sort_kernel(T* __restrict__ values, int64_t* __restrict__ indices, const T* __restrict__ x,
                                 int64_t outer, int64_t n, int64_t inner, int64_t k, int p) {
  __shared__ float sv[kSortMax];
  __shared__ int si[kSortMax];
  const int64_t rows = outer * inner;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {  // block-uniform
    const int64_t o = r / inner, i = r % inner;
    const T* src = x + o * n * inner + i;
    for (int t = threadIdx.x; t < p; t += blockDim.x) {
      sv[t] = t < n ? to_float(src[t * inner]) : 0.0f;
      si[t] = t < n ? t : -1;
    }
    __syncthreads();
    for (int size = 2; size <= p; size <<= 1) {
      for (int stride = size >> 1; stride > 0; stride >>= 1) {
        for (int t = threadIdx.x; t < p / 2; t += blockDim.x) {
          const int a = 2 * t - (t & (stride - 1)), b = a + stride;
          const Cand ca{sv[a], si[a]}, cb{sv[b], si[b]};
          const bool ascending = (a & size) == 0;
          const bool swap = ascending ? ranks_before<kLargest>(cb, ca) : ranks_before<kLargest>(ca, cb);
          if (swap) {
            sv[a] = cb.v;
            si[a] = static_cast<int>(cb.i);
            sv[b] = ca.v;
            si[b] = static_cast<int>(ca.i);
          }
        }
        __syncthreads();
      }
    }
    for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
      values[(o * k + j) * inner + i] = from_float<T>(sv[j]);
      indices[(o * k + j) * inner + i] = si[j];
    }
    __syncthreads();  // the next row overwrites sv / si
  }
}

template <bool kLargest, class T>
void launch_topk(T* v, int64_t* ix, const T* x, int64_t outer, int64_t n, int64_t inner, int64_t k, cudaStream_t s) {
  const int64_t rows = outer * inner;
  if (k > kRoundsMaxK && n <= kSortMax) {
    int p = 1;
    while (p < n) p <<= 1;
    const int threads = p / 2 >= kSortThreads ? kSortThreads : (p / 2 >= 32 ? p / 2 : 32);
    topk_sort_kernel<kLargest, T><<<blocks_for(rows, 1), threads, 0, s>>>(v, ix, x, outer, n, inner, k, p);
    MOON_CUDA_LAUNCH_CHECK("topk_sort_kernel");
    return;
  }
  int threads = 32;
  while (threads < 512 && threads < n) threads <<= 1;
  topk_rounds_kernel<kLargest, T><<<blocks_for(rows, 1), threads, 0, s>>>(v, ix, x, outer, n, inner, k);
  MOON_CUDA_LAUNCH_CHECK("topk_rounds_kernel");
}

}  // namespace

void topk_rows(const Tensor& values, const Tensor& indices, const Tensor& x, int64_t outer, int64_t n, int64_t inner,
               int64_t k, bool largest) {
  if (outer * inner * k == 0) return;
  DeviceGuard guard(values.device());
  const cudaStream_t s = stream_of(values);
  MOON_CHECK(x.dtype() == values.dtype(), "topk: x ", x.desc(), " and values ", values.desc(), " differ in dtype");
  visit_float("topk", x, [&](auto tag) {
    using T = decltype(tag);
    if (largest)
      launch_topk<true>(ptr<T>(values), ptr<int64_t>(indices), cptr<T>(x), outer, n, inner, k, s);
    else
      launch_topk<false>(ptr<T>(values), ptr<int64_t>(indices), cptr<T>(x), outer, n, inner, k, s);
  });
}

}  // namespace moon::cuda
