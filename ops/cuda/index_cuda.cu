// CUDA kernels of the indexing ops: block copies (concat/split), gather and scatter_add along a dimension,
// row gathers (embedding, index_select) and their backward, and the range check of device index tensors.
//
// Determinism (no float atomics anywhere in this file):
//   * scatter_add_dim: one thread owns one (p, q) line of the index, i.e. every position off the scattered
//     dimension; all output elements a line can reach belong to that line alone (they share its coordinates
//     off `dim`), so no two threads ever write the same element. The thread walks j = 0, 1, ... in order, so
//     each output element accumulates its contributions in increasing j, starting from its current value:
//     exactly the CPU's order, bitwise.
//   * scatter_rows (embedding / index_select backward): the positions 0..N-1 are sorted by id with a stable
//     radix sort (CUB's DeviceRadixSort, stable by contract), which groups the positions of each id into one
//     segment in increasing j. A kernel marks each segment's [start, end) per id; then one block per output
//     row (o, v) walks its segment in order and writes the sum column-wise (threads over the columns). Each
//     output row is written once, by one block, in a fixed order (again the CPU's order, bitwise).
//   * first_out_of_range uses an integer atomicMin on the position (order independent).
// bf16 (runtime/cuda/kernel_util.cuh): the copies and gathers move raw elements of any size (2 bytes for
// bf16), so they are exact. The sums load T (float or __nv_bfloat16), add in f32 and round once: scatter_add
// accumulates into an f32 tensor (a bf16 destination goes through an f32 scratch, rounded once at the end),
// and the embedding / index_select backward sums each segment in f32 registers and rounds on the single
// store. Either way a bf16 result is the f32 kernel's result on the widened input, rounded once.
#include "ops/cuda/index_cuda.h"

#include <cub/device/device_radix_sort.cuh>

#include "runtime/copy.h"
#include "runtime/cuda/kernel_util.cuh"

namespace moon::cuda {

namespace {

constexpr int kThreads = 256;

// The widest of 16, 8, 4, 2, 1 bytes that divides every value (pointers as addresses).
int common_width(std::initializer_list<uint64_t> values) {
  for (int w : {16, 8, 4, 2}) {
    bool ok = true;
    for (uint64_t v : values) ok = ok && v % static_cast<uint64_t>(w) == 0;
    if (ok) return w;
  }
  return 1;
}
uint64_t addr(const void* p) { return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p)); }

// Calls f(V{}) with V an unsigned type of `width` bytes (uint4 for 16).
template <class F>
void with_width(int width, F&& f) {
  switch (width) {
    case 16: return f(uint4{});
    case 8: return f(uint64_t{});
    case 4: return f(uint32_t{});
    case 2: return f(uint16_t{});
    default: return f(uint8_t{});
  }
}

// Row o of dst (stride ds bytes) = row o of src (stride ss bytes), `units` V-words per row: 0 FLOP,
// 2 * sizeof(V) bytes per word.
template <class V>
__global__ void copy_blocks_kernel(char* __restrict__ dst, int64_t ds, const char* __restrict__ src, int64_t ss,
                                   int64_t rows, int64_t units) {
  const int64_t n = rows * units;
  for (int64_t t = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; t < n; t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = t / units, u = t % units;
    reinterpret_cast<V*>(dst + r * ds)[u] = reinterpret_cast<const V*>(src + r * ss)[u];
  }
}

// Row r = (o, j) of dst = row (o, ids[j]) of src, `units` V-words per row: 0 FLOP, 2 * sizeof(V) bytes per
// word plus 8 per row for the id.
template <class V>
__global__ void gather_rows_kernel(V* __restrict__ dst, const V* __restrict__ src, const int64_t* __restrict__ ids,
                                   int64_t n, int64_t len, int64_t units, int64_t total) {
  for (int64_t t = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; t < total; t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = t / units, u = t % units;
    const int64_t o = r / len, j = r % len;
    dst[t] = src[(o * n + ids[j]) * units + u];
  }
}

// out[i] = x[base(i) + idx[i] * sd] for every element i of the index's shape (base: the offset in x of i's
// coordinates off `dim`): 0 FLOP, 2 * sizeof(T) + 8 bytes per element.
template <class T>
__global__ void gather_dim_kernel(T* __restrict__ out, const T* __restrict__ x, const int64_t* __restrict__ idx,
                                  Indexer base, int64_t sd, int64_t n) {
  for (int64_t t = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; t < n; t += int64_t{gridDim.x} * blockDim.x)
    out[t] = x[base.offset(t) + idx[t] * sd];
}

// One thread per (p, q) line of the index (pre * post lines): out[base + idx[p, j, q] * sd] += src[p, j, q]
// for j = 0..len-1 in order (out f32, src T widened). 1 FLOP and 16 + sizeof(T) bytes per index element.
template <class T>
__global__ void scatter_add_dim_kernel(float* __restrict__ out, const T* __restrict__ src,
                                       const int64_t* __restrict__ idx, Indexer base, int64_t sd, int64_t pre,
                                       int64_t len, int64_t post) {
  const int64_t lines = pre * post;
  for (int64_t r = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; r < lines; r += int64_t{gridDim.x} * blockDim.x) {
    const int64_t p = r / post, q = r % post;
    const int64_t s0 = p * len * post + q;  // flat index-position of (p, 0, q)
    const int64_t b = base.offset(s0);
    for (int64_t j = 0; j < len; ++j) {
      const int64_t at = s0 + j * post;
      out[b + idx[at] * sd] += to_float(src[at]);
    }
  }
}

// v[i] = i for i < n: the positions the radix sort carries. 8 bytes per element.
__global__ void iota_kernel(int64_t* __restrict__ v, int64_t n) {
  for (int64_t t = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; t < n; t += int64_t{gridDim.x} * blockDim.x)
    v[t] = t;
}

// For sorted ids: start[id] = first sorted position of id, end[id] = one past its last (ids not present keep
// the zeros they were given: an empty segment). 24 bytes read per element, 16 written per distinct id.
__global__ void segment_bounds_kernel(const uint64_t* __restrict__ sorted, int64_t n, int64_t* __restrict__ start,
                                      int64_t* __restrict__ end) {
  for (int64_t t = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; t < n; t += int64_t{gridDim.x} * blockDim.x) {
    const uint64_t key = sorted[t];
    if (t == 0 || sorted[t - 1] != key) start[key] = t;
    if (t == n - 1 || sorted[t + 1] != key) end[key] = t + 1;
  }
}

// One block per output row (o, v): dst[o, v, :] = sum over the segment of v, in sorted (= increasing j) order,
// of src[o, order[k], :]; zero for an empty segment. The sum is f32 in registers, stored once as T. kVec: 4
// columns per vector access (float4 for f32, 8 bytes for bf16). 1 FLOP and sizeof(T) bytes read per element
// of src, sizeof(T) bytes written per element of dst.
template <class T, bool kVec>
__global__ void segment_sum_rows_kernel(T* __restrict__ dst, const T* __restrict__ src,
                                        const int64_t* __restrict__ order, const int64_t* __restrict__ start,
                                        const int64_t* __restrict__ end, int64_t outer, int64_t V, int64_t N,
                                        int64_t C) {
  const int64_t rows = outer * V;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t o = r / V, v = r % V;
    const int64_t b = start[v], e = end[v];
    const T* base = src + o * N * C;
    if constexpr (kVec) {
      T* d = dst + r * C;
      for (int64_t c = threadIdx.x; c < C / 4; c += blockDim.x) {
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (b < e) {
          load_floats<4>(base + order[b] * C + 4 * c, acc);
          for (int64_t k = b + 1; k < e; ++k) {
            float s[4];
            load_floats<4>(base + order[k] * C + 4 * c, s);
            acc[0] += s[0];
            acc[1] += s[1];
            acc[2] += s[2];
            acc[3] += s[3];
          }
        }
        store_floats<4>(d + 4 * c, acc);
      }
    } else {
      T* d = dst + r * C;
      for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
        float acc = 0.0f;
        if (b < e) {
          acc = to_float(base[order[b] * C + c]);
          for (int64_t k = b + 1; k < e; ++k) acc += to_float(base[order[k] * C + c]);
        }
        d[c] = from_float<T>(acc);
      }
    }
  }
}

// pos[0] = min position i with idx[i] outside [0, n) (stays all ones when none). 8 bytes per element.
__global__ void first_bad_kernel(const int64_t* __restrict__ idx, int64_t count, int64_t n,
                                 unsigned long long* __restrict__ pos) {
  for (int64_t t = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; t < count; t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t v = idx[t];
    if (v < 0 || v >= n) atomicMin(pos, static_cast<unsigned long long>(t));
  }
}

// res[1] = idx[res[0]] when res[0] names a position (a single thread).
__global__ void bad_value_kernel(const int64_t* __restrict__ idx, unsigned long long* __restrict__ res) {
  if (res[0] != ~0ull) res[1] = static_cast<unsigned long long>(idx[res[0]]);
}

// The Indexer over `shape` (the index's shape) into a contiguous tensor of `full` (same rank) with the
// stride of `dim` zeroed: offset(i) is the offset of i's coordinates off `dim`.
Indexer base_indexer(const Shape& shape, const Shape& full, int64_t dim) {
  Strides st = contiguous_strides(full);
  st[dim] = 0;
  return make_indexer(shape, st);
}

}  // namespace

void copy_blocks(Device device, void* dst, int64_t dst_stride, const void* src, int64_t src_stride, int64_t rows,
                 int64_t bytes) {
  if (rows <= 0 || bytes <= 0) return;
  DeviceGuard guard(device);
  const cudaStream_t s = stream(device);
  if (rows == 1 || (dst_stride == bytes && src_stride == bytes)) {
    MOON_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(rows * bytes), cudaMemcpyDeviceToDevice, s));
    return;
  }
  const int w = common_width({addr(dst), addr(src), static_cast<uint64_t>(dst_stride),
                              static_cast<uint64_t>(src_stride), static_cast<uint64_t>(bytes)});
  with_width(w, [&](auto tag) {
    using V = decltype(tag);
    const int64_t units = bytes / w;
    copy_blocks_kernel<V><<<blocks_for(rows * units, kThreads), kThreads, 0, s>>>(
        static_cast<char*>(dst), dst_stride, static_cast<const char*>(src), src_stride, rows, units);
    MOON_CUDA_LAUNCH_CHECK("copy_blocks_kernel");
  });
}

void gather_dim(const Tensor& out, const Tensor& x, int64_t dim, const Tensor& idx) {
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceGuard guard(out.device());
  const cudaStream_t s = stream_of(out);
  const Indexer base = base_indexer(idx.shape(), x.shape(), dim);
  const int64_t sd = contiguous_strides(x.shape())[dim];
  const int64_t* ip = cptr<int64_t>(idx);
  with_width(static_cast<int>(dtype_size(x.dtype())), [&](auto tag) {
    using T = decltype(tag);
    gather_dim_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, s>>>(
        static_cast<T*>(out.raw_data()), static_cast<const T*>(x.raw_data()), ip, base, sd, n);
    MOON_CUDA_LAUNCH_CHECK("gather_dim_kernel");
  });
}

void scatter_add_dim(const Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src) {
  const Shape& is = idx.shape();
  int64_t pre = 1, post = 1;
  for (int64_t d = 0; d < static_cast<int64_t>(is.size()); ++d)
    if (d != dim) (d < dim ? pre : post) *= is[d];
  const int64_t len = is[dim];
  if (pre * post * len == 0) return;
  DeviceGuard guard(out.device());
  if (out.dtype() != DType::F32) {  // a bf16 destination: accumulate in an f32 copy, round once at the end
    MOON_CHECK(out.dtype() == DType::BF16, "scatter_add: the CUDA kernel takes f32 or bf16, got ", out.desc());
    Tensor acc = empty(out.shape(), DType::F32, out.device());
    copy_elements(acc, out);
    scatter_add_dim(acc, dim, idx, src);
    Tensor target = out;  // a handle to the same storage
    copy_elements(target, acc);
    return;
  }
  const Indexer base = base_indexer(is, out.shape(), dim);
  const int64_t sd = contiguous_strides(out.shape())[dim];
  visit_float("scatter_add", src, [&](auto tag) {
    using T = decltype(tag);
    scatter_add_dim_kernel<T><<<blocks_for(pre * post, kThreads), kThreads, 0, stream_of(out)>>>(
        ptr<float>(out), cptr<T>(src), cptr<int64_t>(idx), base, sd, pre, len, post);
    MOON_CUDA_LAUNCH_CHECK("scatter_add_dim_kernel");
  });
}

void gather_rows(const Tensor& dst, const Tensor& src, const Tensor& ids, int64_t outer, int64_t n, int64_t len,
                 int64_t row_bytes) {
  if (outer * len * row_bytes <= 0) return;
  DeviceGuard guard(dst.device());
  const cudaStream_t s = stream_of(dst);
  void* d = dst.raw_data();
  const void* sp = src.raw_data();
  const int w = common_width({addr(d), addr(sp), static_cast<uint64_t>(row_bytes)});
  const int64_t* ip = cptr<int64_t>(ids);
  with_width(w, [&](auto tag) {
    using V = decltype(tag);
    const int64_t units = row_bytes / w, total = outer * len * units;
    gather_rows_kernel<V><<<blocks_for(total, kThreads), kThreads, 0, s>>>(
        static_cast<V*>(d), static_cast<const V*>(sp), ip, n, len, units, total);
    MOON_CUDA_LAUNCH_CHECK("gather_rows_kernel");
  });
}

void scatter_rows(const Tensor& dst, const Tensor& src, const Tensor& ids, int64_t outer, int64_t V, int64_t N,
                  int64_t C) {
  if (outer * V * C == 0) return;
  const Device dev = dst.device();
  DeviceGuard guard(dev);
  const cudaStream_t s = stream_of(dst);
  MOON_CHECK(src.dtype() == dst.dtype(), "embedding/index_select backward: src ", src.desc(), " and dst ",
             dst.desc(), " differ in dtype");
  if (N == 0) {  // no id hits any row: all-zero bits are 0.0 in f32 and bf16 alike
    const size_t bytes = static_cast<size_t>(outer * V * C) * dtype_size(dst.dtype());
    MOON_CUDA_CHECK(cudaMemsetAsync(dst.raw_data(), 0, bytes, s));
    return;
  }
  // 1. Stable sort of the positions 0..N-1 by id (ids are in [0, V): only the low bits take part).
  const uint64_t* keys_in = reinterpret_cast<const uint64_t*>(cptr<int64_t>(ids));
  Tensor keys_out = empty({N}, DType::I64, dev), pos_in = empty({N}, DType::I64, dev);
  Tensor order = empty({N}, DType::I64, dev);
  uint64_t* ko = reinterpret_cast<uint64_t*>(ptr<int64_t>(keys_out));
  int64_t* pi = ptr<int64_t>(pos_in);
  int64_t* po = ptr<int64_t>(order);
  iota_kernel<<<blocks_for(N, kThreads), kThreads, 0, s>>>(pi, N);
  MOON_CUDA_LAUNCH_CHECK("iota_kernel");
  int end_bit = 1;
  while (end_bit < 63 && (uint64_t{1} << end_bit) < static_cast<uint64_t>(V)) ++end_bit;
  size_t temp_bytes = 0;
  MOON_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, ko, pi, po, N, 0, end_bit, s));
  Tensor temp = empty({static_cast<int64_t>(temp_bytes > 0 ? temp_bytes : 1)}, DType::U8, dev);
  MOON_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.raw_data(), temp_bytes, keys_in, ko, pi, po, N, 0, end_bit, s));
  // 2. Segment bounds per id.
  Tensor bounds = empty({2 * V}, DType::I64, dev);
  int64_t* start = ptr<int64_t>(bounds);
  int64_t* end = start + V;
  MOON_CUDA_CHECK(cudaMemsetAsync(start, 0, static_cast<size_t>(2 * V) * sizeof(int64_t), s));
  segment_bounds_kernel<<<blocks_for(N, kThreads), kThreads, 0, s>>>(ko, N, start, end);
  MOON_CUDA_LAUNCH_CHECK("segment_bounds_kernel");
  // 3. One block per output row sums its segment in order.
  visit_float("embedding/index_select backward", dst, [&](auto tag) {
    using T = decltype(tag);
    T* dp = ptr<T>(dst);
    const T* sp = cptr<T>(src);
    const bool vec = C % 4 == 0 && aligned(dp, kVecBytes<T>) && aligned(sp, kVecBytes<T>);
    const int64_t cols = vec ? C / 4 : C;
    const int threads = cols >= 256 ? 256 : cols >= 128 ? 128 : cols >= 64 ? 64 : 32;
    const unsigned grid = blocks_for(outer * V, 1);
    if (vec)
      segment_sum_rows_kernel<T, true><<<grid, threads, 0, s>>>(dp, sp, po, start, end, outer, V, N, C);
    else
      segment_sum_rows_kernel<T, false><<<grid, threads, 0, s>>>(dp, sp, po, start, end, outer, V, N, C);
    MOON_CUDA_LAUNCH_CHECK("segment_sum_rows_kernel");
  });
}

int64_t first_out_of_range(const Tensor& idx, int64_t n, int64_t* value) {
  const int64_t count = idx.numel();
  if (count == 0) return -1;
  DeviceGuard guard(idx.device());
  const cudaStream_t s = stream_of(idx);
  Tensor res = empty({2}, DType::I64, idx.device());
  auto* rp = reinterpret_cast<unsigned long long*>(ptr<int64_t>(res));
  MOON_CUDA_CHECK(cudaMemsetAsync(rp, 0xff, 2 * sizeof(unsigned long long), s));
  const int64_t* ip = cptr<int64_t>(idx);
  first_bad_kernel<<<blocks_for(count, kThreads), kThreads, 0, s>>>(ip, count, n, rp);
  MOON_CUDA_LAUNCH_CHECK("first_bad_kernel");
  bad_value_kernel<<<1, 1, 0, s>>>(ip, rp);
  MOON_CUDA_LAUNCH_CHECK("bad_value_kernel");
  unsigned long long host[2] = {0, 0};
  MOON_CUDA_CHECK(cudaMemcpyAsync(host, rp, sizeof(host), cudaMemcpyDeviceToHost, s));
  MOON_CUDA_CHECK(cudaStreamSynchronize(s));
  if (host[0] == ~0ull) return -1;
  *value = static_cast<int64_t>(host[1]);
  return static_cast<int64_t>(host[0]);
}

}  // namespace moon::cuda
