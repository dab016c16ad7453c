// Multi-tensor AdamW: the step's tensors are listed in a small table uploaded to the device (through the
// pinned staging path of Tensor::to), each cut into chunks of kChunk elements; one launch covers every
// chunk of every tensor, a block per chunk (grid-stride over chunks). Each element is updated with
// explicitly rounded operations in the CPU loop's order, so the result is bitwise the CPU's.
#include "ops/cuda/adamw_cuda.h"

#include <cstring>

#include "runtime/cuda/kernel_util.cuh"

namespace moon::cuda {

namespace {

constexpr int64_t kChunk = 8192;  // elements per block-chunk (a multiple of 4)
constexpr int kThreads = 256;

// One tensor in the device table. first_chunk: the index of its first chunk in the launch.
struct Entry {
  float* p;
  const float* g;
  float* m;
  float* v;
  int64_t n;
  int64_t first_chunk;
  float keep;
  int32_t vec;  // all four buffers 16-byte aligned: float4 loads
};

// The CPU loop's update of one element, every operation rounded on its own (no contraction).
__device__ __forceinline__ void update(float& p, float g, float& m, float& v, float keep, const AdamWScalars& s) {
  const float mj = __fadd_rn(__fmul_rn(s.beta1, m), __fmul_rn(s.one_minus_beta1, g));
  const float vj = __fadd_rn(__fmul_rn(s.beta2, v), __fmul_rn(__fmul_rn(s.one_minus_beta2, g), g));
  m = mj;
  v = vj;
  const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(vj), s.inv_sqrt_c2), s.eps);
  p = __fsub_rn(__fmul_rn(p, keep), __fdiv_rn(__fmul_rn(s.step_size, mj), denom));
}

// AdamW over all chunks of all tensors. Per element: 12 FLOP (sqrt, div included), 28 bytes (p, m, v read
// and written, g read).
__global__ void adamw_kernel(const Entry* __restrict__ entries, int count, int64_t total_chunks, AdamWScalars s) {
  for (int64_t chunk = blockIdx.x; chunk < total_chunks; chunk += gridDim.x) {
    // The tensor owning this chunk: the last entry whose first_chunk <= chunk (entries are in chunk order).
    int lo = 0, hi = count - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (entries[mid].first_chunk <= chunk) lo = mid;
      else hi = mid - 1;
    }
    const Entry e = entries[lo];
    const int64_t begin = (chunk - e.first_chunk) * kChunk;
    const int64_t end = begin + kChunk < e.n ? begin + kChunk : e.n;
    int64_t tail = begin;
    if (e.vec) {
      const int64_t groups = (end - begin) / 4;
      for (int64_t q = threadIdx.x; q < groups; q += blockDim.x) {
        const int64_t i = begin + 4 * q;
        float4 p = *reinterpret_cast<const float4*>(e.p + i);
        const float4 g = *reinterpret_cast<const float4*>(e.g + i);
        float4 m = *reinterpret_cast<const float4*>(e.m + i);
        float4 v = *reinterpret_cast<const float4*>(e.v + i);
        update(p.x, g.x, m.x, v.x, e.keep, s);
        update(p.y, g.y, m.y, v.y, e.keep, s);
        update(p.z, g.z, m.z, v.z, e.keep, s);
        update(p.w, g.w, m.w, v.w, e.keep, s);
        *reinterpret_cast<float4*>(e.p + i) = p;
        *reinterpret_cast<float4*>(e.m + i) = m;
        *reinterpret_cast<float4*>(e.v + i) = v;
      }
      tail = begin + 4 * groups;
    }
    for (int64_t i = tail + threadIdx.x; i < end; i += blockDim.x) {
      float p = e.p[i], m = e.m[i], v = e.v[i];
      update(p, e.g[i], m, v, e.keep, s);
      e.p[i] = p;
      e.m[i] = m;
      e.v[i] = v;
    }
  }
}

}  // namespace

void adamw_step(const std::vector<AdamWTensor>& tensors, const AdamWScalars& s, Device device) {
  std::vector<Entry> entries;
  entries.reserve(tensors.size());
  int64_t chunks = 0;
  for (const AdamWTensor& t : tensors) {
    if (t.numel == 0) continue;
    const bool vec = aligned(t.param, 16) && aligned(t.grad, 16) && aligned(t.m, 16) && aligned(t.v, 16);
    entries.push_back(Entry{t.param, t.grad, t.m, t.v, t.numel, chunks, t.keep, vec ? 1 : 0});
    chunks += (t.numel + kChunk - 1) / kChunk;
  }
  if (entries.empty()) return;
  MOON_CHECK(entries.size() < (size_t{1} << 31), "AdamW: too many parameter tensors in one step");
  DeviceGuard guard(device);
  // The table: built on the host, uploaded with one staged copy (ordered on the stream before the kernel).
  const int64_t bytes = static_cast<int64_t>(entries.size() * sizeof(Entry));
  Tensor host = empty({bytes}, DType::U8, kCPU);
  std::memcpy(host.raw_data(), entries.data(), static_cast<size_t>(bytes));
  const Tensor table = host.to(device);
  adamw_kernel<<<blocks_for(chunks, 1), kThreads, 0, stream(device)>>>(
      static_cast<const Entry*>(table.raw_data()), static_cast<int>(entries.size()), chunks, s);
  MOON_CUDA_LAUNCH_CHECK("adamw_kernel");
}

}  // namespace moon::cuda
