// Host emulation of the CUDA features moon's kernels use, for the converted copies that
// scripts/cuda_emu.py writes (namespace moon::cuda_emu). Everything lives in moon::cuda_emu, so none of it
// can clash with the CUDA runtime or with the real kernels linked into the same binary.
//
//   * Each CUDA thread is a ucontext fiber with its own small stack (mmap'd, guard page below); blocks run one
//     after another, the threads of a block cooperatively.
//   * __syncthreads and warp shuffles are barriers. Threads of a block waiting at different __syncthreads,
//     lanes of a warp at different shuffles, or a round where every live thread waits at a barrier that can
//     no longer open (a barrier in a divergent branch, an early return before a barrier) are reported.
//   * Scheduling is shuffled: per block either every live thread once per round in a fresh random order, or
//     warps in a random priority order where the first runnable warp always runs (fast warps race ahead as
//     far as the barriers allow): both expose a missing barrier as a wrong result.
//   * Static and dynamic shared memory is refilled with a garbage byte (default 0xff: NaN) at each block.
//   * Launch geometry is checked against the hardware limits (block <= 1024 threads, block.z <= 64,
//     grid.y/z <= 65535, static shared <= 48 KiB, dynamic shared above 48 KiB only after
//     cudaFuncSetAttribute and never above the H100's opt-in limit).
//   * Streams are no-ops (everything runs in issue order), memcpy/memset are host copies, CUB's radix sort
//     is a stable sort on the key bits.
// Any emulator error ends the launch and throws emu::Error from the launch (on the caller's stack).
#pragma once

#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "runtime/device.h"
#include "runtime/tensor.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)

namespace moon::cuda_emu {

// ---- types and built-in variables
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};
inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
constexpr int warpSize = 32;

struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(4) uchar4 { unsigned char x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline float2 make_float2(float a, float b) { return {a, b}; }
inline uchar4 make_uchar4(unsigned char a, unsigned char b, unsigned char c, unsigned char d) {
  return {a, b, c, d};
}

struct __nv_bfloat16 {
  uint16_t bits;
};
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.bits; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16{u}; }
inline float __bfloat162float(__nv_bfloat16 b) { return std::bit_cast<float>(uint32_t(b.bits) << 16); }

// ---- intrinsics (host float arithmetic is IEEE round-to-nearest; the emulated code is built without FMA
// contraction, so a*b+c is two roundings as with __fmul_rn/__fadd_rn)
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __int_as_float(int i) { return std::bit_cast<float>(i); }
inline int __float_as_int(float f) { return std::bit_cast<int>(f); }
inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
inline unsigned __float_as_uint(float f) { return std::bit_cast<unsigned>(f); }
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
using std::max;
using std::min;

// ---- runtime API
struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaMemcpyKind {
  cudaMemcpyHostToHost,
  cudaMemcpyHostToDevice,
  cudaMemcpyDeviceToHost,
  cudaMemcpyDeviceToDevice,
  cudaMemcpyDefault
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize, cudaFuncAttributePreferredSharedMemoryCarveout };
struct cudaDeviceProp {  // an H100 SXM
  int multiProcessorCount = 132;
  size_t sharedMemPerBlock = 48 * 1024;
  size_t sharedMemPerBlockOptin = 232448;
  int maxThreadsPerBlock = 1024;
  int warpSize = 32;
  int major = 9, minor = 0;
};

namespace emu {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Settings (the harness may change them) and counters.
inline int fill_byte = 0xff;   // shared-memory garbage pattern
inline int policy = -1;        // 0 shuffled rounds, 1 warp priority, -1 random per block
inline int64_t grid_cap = 0;   // > 0: blocks_for() caps every grid at this many blocks
inline long launches = 0, blocks_run = 0, threads_run = 0;
inline size_t opted_in_smem = 0;  // from cudaFuncSetAttribute, consumed by the next launch

inline bool host_tensor_ok(const Device& d) { return d.is_cpu() || d.is_cuda(); }
inline int64_t cap_grid(int64_t cap) { return grid_cap > 0 ? std::min(cap, grid_cap) : cap; }

constexpr size_t kStackBytes = 128 * 1024;  // per fiber, plus a guard page
constexpr size_t kStaticSharedMax = 48 * 1024;

struct Bar {
  int count = 0, gen = 0;
  const void* site = nullptr;
};
struct Fiber {
  ucontext_t ctx;
  bool done = false;
  uint3 tid{0, 0, 0};
  const Bar* bar = nullptr;  // waiting at this barrier
  int gen = 0;
};

struct State {
  ucontext_t sched;
  std::vector<Fiber> fibers;
  std::vector<char*> stacks;
  int cur = 0;
  unsigned nthreads = 0;
  long progress = 0;
  std::function<void()> body;
  Bar block_bar;
  Bar warp_bar[32];
  uint64_t warp_buf[32][32];
  std::string error;  // set by a fiber: the launch stops and throws
  unsigned long block_serial = 0;
  std::map<const void*, unsigned long> shared_seen;
  size_t shared_bytes = 0;
  std::vector<char> dyn;
  size_t dyn_bytes = 0;
  unsigned seed = 12345;
  bool in_launch = false;
};
inline State& st() {
  static State s;
  return s;
}

inline unsigned next_rand() {
  State& s = st();
  s.seed = s.seed * 1103515245u + 12345u;
  return s.seed >> 8;
}

inline std::string where() {
  char b[160];
  std::snprintf(b, sizeof b, " (block %u,%u,%u thread %u,%u,%u of %ux%ux%u)", blockIdx.x, blockIdx.y, blockIdx.z,
                threadIdx.x, threadIdx.y, threadIdx.z, blockDim.x, blockDim.y, blockDim.z);
  return b;
}

// An error inside a kernel: recorded, and the fiber parks for good; the scheduler throws.
inline void fail(const std::string& what) {
  State& s = st();
  if (!s.in_launch) throw Error(what);
  if (s.error.empty()) s.error = what + where();
  for (;;) swapcontext(&s.fibers[s.cur].ctx, &s.sched);
}

inline void yield() {
  State& s = st();
  swapcontext(&s.fibers[s.cur].ctx, &s.sched);
  if (!s.error.empty()) fail(s.error);
}

// Arrive at barrier b of n threads from `site`; returns once all n have arrived.
inline void wait(Bar& b, int n, const void* site, const char* kind) {
  State& s = st();
  ++s.progress;
  if (b.count == 0) {
    b.site = site;
  } else if (b.site != site) {
    fail(std::string("threads wait at different ") + kind + " calls (divergent barrier)");
  }
  const int g = b.gen;
  if (++b.count == n) {
    b.count = 0;
    ++b.gen;
    return;
  }
  Fiber& f = s.fibers[s.cur];
  f.bar = &b;
  f.gen = g;
  while (b.gen == g) yield();
  s.fibers[s.cur].bar = nullptr;
}

inline int flat_tid() { return int(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)); }

inline void entry() {
  State& s = st();
  s.body();
  s.fibers[s.cur].done = true;
  ++s.progress;
}

inline char* stack(unsigned t) {
  State& s = st();
  while (s.stacks.size() <= t) {
    const size_t page = 4096;
    void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw Error("emulator: cannot map a fiber stack");
    mprotect(p, page, PROT_NONE);  // overflow faults instead of corrupting a neighbour
    s.stacks.push_back(static_cast<char*>(p) + page);
  }
  return s.stacks[t];
}

inline void run_block(unsigned threads) {
  State& s = st();
  std::vector<Fiber>& fs = s.fibers;
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = fs[t];
    f.done = false;
    f.bar = nullptr;
    f.tid = uint3{t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = stack(t);
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = &s.sched;
    makecontext(&f.ctx, entry, 0);
  }
  auto resume = [&](unsigned t) {
    s.cur = int(t);
    threadIdx = fs[t].tid;
    swapcontext(&s.sched, &fs[t].ctx);
    if (!s.error.empty()) throw Error(s.error);
  };
  const int pol = policy >= 0 ? policy : int((next_rand() >> 4) & 1);
  std::vector<unsigned> order(threads);
  for (unsigned t = 0; t < threads; ++t) order[t] = t;
  if (pol == 1) {
    const unsigned warps = (threads + 31) / 32;
    std::vector<unsigned> wp(warps);
    for (unsigned w = 0; w < warps; ++w) wp[w] = w;
    for (unsigned i = warps; i > 1; --i) std::swap(wp[i - 1], wp[next_rand() % i]);
    order.clear();
    for (unsigned w : wp) {
      const size_t first = order.size();
      for (unsigned t = 32 * w; t < std::min(threads, 32 * w + 32); ++t) order.push_back(t);
      for (size_t i = order.size() - first; i > 1; --i) std::swap(order[first + i - 1], order[first + next_rand() % i]);
    }
    for (;;) {
      bool live = false, ran = false;
      for (unsigned t : order) {
        Fiber& f = fs[t];
        if (f.done) continue;
        live = true;
        if (f.bar && f.bar->gen == f.gen) continue;
        resume(t);
        ran = true;
        break;
      }
      if (!live) break;
      if (!ran) throw Error("deadlock: every live thread waits at a barrier that cannot open" + where());
    }
    return;
  }
  for (bool any = true; any;) {
    any = false;
    const long before = s.progress;
    for (unsigned i = threads; i > 1; --i) std::swap(order[i - 1], order[next_rand() % i]);
    for (unsigned t : order) {
      if (fs[t].done) continue;
      any = true;
      resume(t);
    }
    if (any && s.progress == before)
      throw Error("deadlock: every live thread waits at a barrier that cannot open" + where());
  }
}

// Runs f as every thread of every block of the grid.
inline void launch(dim3 grid, dim3 block, size_t smem, std::function<void()> f) {
  State& s = st();
  ++launches;
  const size_t opted = opted_in_smem;
  opted_in_smem = 0;
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  auto bad = [](const std::string& w) { throw Error("invalid launch: " + w); };
  if (threads == 0 || threads > 1024) bad("block of " + std::to_string(threads) + " threads");
  if (block.z > 64) bad("block.z > 64");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) bad("grid with a zero dimension");
  if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
    bad("grid " + std::to_string(grid.x) + "x" + std::to_string(grid.y) + "x" + std::to_string(grid.z) +
        " over the limits (2^31-1, 65535, 65535)");
  if (smem > cudaDeviceProp{}.sharedMemPerBlockOptin) bad("dynamic shared memory over the device's opt-in limit");
  if (smem > kStaticSharedMax && opted < smem)
    bad("dynamic shared memory above 48 KiB without cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  if (s.in_launch) bad("a launch from inside a kernel");
  gridDim = grid;
  blockDim = block;
  s.body = std::move(f);
  s.nthreads = unsigned(threads);
  s.fibers.resize(std::max<size_t>(s.fibers.size(), threads));
  s.dyn_bytes = smem;
  if (s.dyn.size() < smem + 16) s.dyn.resize(smem + 16);
  s.error.clear();
  s.in_launch = true;
  try {
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          blockIdx = uint3{bx, by, bz};
          ++s.block_serial;
          s.shared_bytes = smem;
          std::memset(s.dyn.data(), fill_byte, s.dyn.size());
          s.block_bar = Bar{};
          for (Bar& w : s.warp_bar) w = Bar{};
          ++blocks_run;
          threads_run += long(threads);
          run_block(unsigned(threads));
        }
  } catch (...) {
    s.in_launch = false;
    s.body = nullptr;
    throw;
  }
  s.in_launch = false;
  s.body = nullptr;
}

struct Launch {
  dim3 grid, block;
  size_t smem;
  Launch(dim3 g, dim3 b, size_t sm = 0, cudaStream_t = nullptr) : grid(g), block(b), smem(sm) {}
  void run(std::function<void()> f) const { launch(grid, block, smem, std::move(f)); }
};

// A __shared__ array: garbage-filled the first time a thread of a new block reaches its declaration.
inline void shared_fill(void* p, size_t n) {
  State& s = st();
  unsigned long& seen = s.shared_seen[p];
  if (seen == s.block_serial) return;
  seen = s.block_serial;
  std::memset(p, fill_byte, n);
  s.shared_bytes += n;
  if (s.shared_bytes - s.dyn_bytes > kStaticSharedMax) fail("static shared memory over 48 KiB");
  if (s.shared_bytes > cudaDeviceProp{}.sharedMemPerBlockOptin) fail("shared memory over the device's limit");
}
template <class T>
T* dynamic_shared() {
  State& s = st();
  if (s.dyn_bytes == 0) fail("extern __shared__ used by a launch without dynamic shared memory");
  return reinterpret_cast<T*>(s.dyn.data());
}

// Warp shuffles: every lane of a full warp must reach the same call (mask 0xffffffff, whole warps).
template <class T>
T shfl(unsigned mask, T v, int kind, int arg, int width, const void* site) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of an unsupported type");
  State& s = st();
  if (mask != 0xffffffffu) fail("shuffle with a partial mask (not emulated)");
  if (width != 32) fail("shuffle with width != 32 (not emulated)");
  const int t = flat_tid(), lane = t % 32, w = t / 32;
  if (s.nthreads % 32) fail("shuffle in a block that is not whole warps");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  s.warp_buf[w][lane] = bits;
  wait(s.warp_bar[w], 32, site, "warp shuffle");
  int src = lane;
  if (kind == 0) src = lane ^ arg;
  if (kind == 1) src = lane - arg >= 0 ? lane - arg : lane;
  if (kind == 2) src = lane + arg < 32 ? lane + arg : lane;
  if (kind == 3) src = arg & 31;
  if (src < 0 || src > 31) src = lane;
  const uint64_t r = s.warp_buf[w][src];
  wait(s.warp_bar[w], 32, site, "warp shuffle");
  T out;
  std::memcpy(&out, &r, sizeof(T));
  return out;
}

}  // namespace emu

inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  // the site: file and line of the call (the same line of two files is told apart by the file pointer)
  emu::wait(emu::st().block_bar, int(emu::st().nthreads),
            reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(file) + uintptr_t(line) * 4096), "__syncthreads");
}
#define MOON_EMU_SITE reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(file) + uintptr_t(line) * 4096)
template <class T>
inline T __shfl_xor_sync(unsigned m, T v, int o, int w = 32, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return emu::shfl(m, v, 0, o, w, MOON_EMU_SITE);
}
template <class T>
inline T __shfl_up_sync(unsigned m, T v, unsigned d, int w = 32, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return emu::shfl(m, v, 1, int(d), w, MOON_EMU_SITE);
}
template <class T>
inline T __shfl_down_sync(unsigned m, T v, unsigned d, int w = 32, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return emu::shfl(m, v, 2, int(d), w, MOON_EMU_SITE);
}
template <class T>
inline T __shfl_sync(unsigned m, T v, int src, int w = 32, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return emu::shfl(m, v, 3, src, w, MOON_EMU_SITE);
}
inline void __syncwarp(unsigned m = 0xffffffffu, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  (void)emu::shfl(m, 0, 0, 0, 32, MOON_EMU_SITE);
}
inline unsigned __ballot_sync(unsigned m, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  const unsigned lane = unsigned(emu::flat_tid() % 32);
  unsigned bits = pred ? 1u << lane : 0u;
  for (int o = 16; o > 0; o >>= 1) bits |= emu::shfl(m, bits, 0, o, 32, MOON_EMU_SITE);
  return bits;
}
inline int __any_sync(unsigned m, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return __ballot_sync(m, pred, file, line) != 0;
}
inline int __all_sync(unsigned m, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return __ballot_sync(m, pred, file, line) == 0xffffffffu;
}
#undef MOON_EMU_SITE

// Integer atomics only: a float atomicAdd would make results depend on the order (the backend forbids it).
template <class T>
inline T atomicAdd(T* a, T v) {
  static_assert(std::is_integral_v<T>, "float atomicAdd: results would depend on the order of additions");
  const T o = *a;
  *a = T(o + v);
  return o;
}
template <class T>
inline T atomicMin(T* a, T v) {
  const T o = *a;
  if (v < o) *a = v;
  return o;
}
template <class T>
inline T atomicMax(T* a, T v) {
  const T o = *a;
  if (v > o) *a = v;
  return o;
}
template <class T>
inline T atomicExch(T* a, T v) {
  const T o = *a;
  *a = v;
  return o;
}
template <class T>
inline T atomicCAS(T* a, T cmp, T v) {
  const T o = *a;
  if (o == cmp) *a = v;
  return o;
}

// ---- host API: memcpy and memset in issue order, streams do nothing
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t = nullptr) {
  if (n) std::memmove(d, s, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) {
  if (n) std::memmove(d, s, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy2DAsync(void* d, size_t dp, const void* s, size_t sp, size_t w, size_t h, cudaMemcpyKind,
                                     cudaStream_t = nullptr) {
  for (size_t r = 0; r < h; ++r) std::memmove(static_cast<char*>(d) + r * dp, static_cast<const char*>(s) + r * sp, w);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t = nullptr) {
  if (n) std::memset(d, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated cuda error"; }
template <class K>
inline cudaError_t cudaFuncSetAttribute(K, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (size_t(value) > cudaDeviceProp{}.sharedMemPerBlockOptin) return cudaErrorInvalidValue;
    emu::opted_in_smem = size_t(value);
  }
  return cudaSuccess;
}

// runtime/cuda/context.h
class DeviceGuard {
 public:
  explicit DeviceGuard(Device) {}
};
inline cudaStream_t stream(Device) { return nullptr; }
inline const cudaDeviceProp& properties(Device) {
  static const cudaDeviceProp p;
  return p;
}

// CUB: the radix sort is a stable sort on bits [begin_bit, end_bit) of the keys.
namespace cub {
struct DeviceRadixSort {
  template <class K, class V, class N>
  static cudaError_t SortPairs(void* temp, size_t& bytes, const K* kin, K* kout, const V* vin, V* vout, N n,
                               int begin_bit = 0, int end_bit = int(sizeof(K) * 8), cudaStream_t = nullptr) {
    if (!temp) {
      bytes = 64;
      return cudaSuccess;
    }
    using U = std::make_unsigned_t<K>;
    const U hi = end_bit >= int(sizeof(K) * 8) ? ~U(0) : U((U(1) << end_bit) - 1);
    const U mask = U(hi & ~U((U(1) << begin_bit) - 1));
    std::vector<int64_t> p(static_cast<size_t>(n));
    for (int64_t i = 0; i < int64_t(n); ++i) p[size_t(i)] = i;
    std::stable_sort(p.begin(), p.end(), [&](int64_t a, int64_t b) { return (U(kin[a]) & mask) < (U(kin[b]) & mask); });
    std::vector<K> k2(p.size());
    std::vector<V> v2(p.size());
    for (size_t i = 0; i < p.size(); ++i) {
      k2[i] = kin[p[i]];
      v2[i] = vin[p[i]];
    }
    std::copy(k2.begin(), k2.end(), kout);
    std::copy(v2.begin(), v2.end(), vout);
    return cudaSuccess;
  }
};
}  // namespace cub

}  // namespace moon::cuda_emu

// runtime/cuda/cuda_check.h
#define MOON_CUDA_CHECK(call)                                                                          \
  do {                                                                                                 \
    if ((call) != ::moon::cuda_emu::cudaSuccess)                                                       \
      throw ::moon::cuda_emu::emu::Error(std::string("emulated CUDA call failed: ") + #call);         \
  } while (0)
#define MOON_CUDA_LAUNCH_CHECK(kernel_name) ((void)(kernel_name))

// cuBLASLt (ops/cuda/matmul_cuda.cu)
#include "cublaslt_emu.h"
