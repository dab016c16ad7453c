// Copies and fills for CUDA tensors: device-side strided, converting copies; host <-> device transfers
// through two pinned staging buffers, so a pageable host tensor is uploaded without a synchronous
// cudaMemcpy and the GPU keeps working while the host fills the next chunk.
#include "runtime/cuda/copy_cuda.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "runtime/copy.h"
#include "runtime/cuda/kernel_util.cuh"

namespace moon::cuda {

namespace {

// ---- element conversions, matching runtime/copy_cpu.cpp bit for bit on finite values
struct bf16_bits { uint16_t v; };
struct f16_bits { uint16_t v; };

__device__ __forceinline__ float load_f(bf16_bits x) { return __uint_as_float(static_cast<uint32_t>(x.v) << 16); }
__device__ __forceinline__ float load_f(f16_bits x) { return __half2float(__ushort_as_half(x.v)); }

template <class D, class S>
__device__ __forceinline__ D convert(S x) {
  if constexpr (std::is_same_v<D, S>) {
    return x;
  } else if constexpr (std::is_same_v<D, bf16_bits>) {
    if constexpr (std::is_same_v<S, f16_bits>) return bf16_bits{f32_to_bf16_bits(load_f(x))};
    else if constexpr (std::is_same_v<S, float>) return bf16_bits{f32_to_bf16_bits(x)};
    else return bf16_bits{f32_to_bf16_bits(static_cast<float>(static_cast<double>(x)))};
  } else if constexpr (std::is_same_v<D, f16_bits>) {
    float f;
    if constexpr (std::is_same_v<S, float>) f = x;
    else if constexpr (std::is_same_v<S, bf16_bits>) f = load_f(x);
    else f = static_cast<float>(static_cast<double>(x));
    return f16_bits{__half_as_ushort(__float2half_rn(f))};
  } else if constexpr (std::is_same_v<S, bf16_bits> || std::is_same_v<S, f16_bits>) {
    return static_cast<D>(load_f(x));
  } else {
    return static_cast<D>(x);
  }
}

template <class F>
void visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::BF16: return f(bf16_bits{});
    case DType::F16: return f(f16_bits{});
    case DType::I32: return f(int32_t{});
    case DType::I64: return f(int64_t{});
    case DType::U8: return f(uint8_t{});
  }
  fail("copy: unknown dtype");
}

// dst[di(i)] = convert(src[si(i)]) for i < n: 0 FLOP, sizeof(D) + sizeof(S) bytes per element.
template <class D, class S>
__global__ void copy_strided_kernel(D* dst, const S* src, Indexer di, Indexer si, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[di.offset(i)] = convert<D>(src[si.offset(i)]);
}

// dst[i] = convert(src[i]) for contiguous tensors: 0 FLOP, sizeof(D) + sizeof(S) bytes per element.
template <class D, class S>
__global__ void copy_flat_kernel(D* __restrict__ dst, const S* __restrict__ src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = convert<D>(src[i]);
}

// dst[di(i)] = value: 0 FLOP, sizeof(T) bytes per element.
template <class T>
__global__ void fill_kernel(T* dst, Indexer di, int64_t n, T value) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[di.offset(i)] = value;
}

size_t nbytes_of(const Tensor& t) { return static_cast<size_t>(t.numel()) * dtype_size(t.dtype()); }

// Both on the same CUDA device.
void copy_on_device(const Tensor& dst, const Tensor& src) {
  DeviceGuard guard(dst.device());
  const cudaStream_t s = stream_of(dst);
  const int64_t n = dst.numel();
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    MOON_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), nbytes_of(dst), cudaMemcpyDeviceToDevice, s));
    return;
  }
  constexpr int kThreads = 256;
  const bool flat = dst.is_contiguous() && src.is_contiguous();
  const std::vector<Indexer> ix = flat ? std::vector<Indexer>{} : merge_dims(dst.shape(), {&dst.strides(), &src.strides()});
  visit_dtype(dst.dtype(), [&](auto dtag) {
    using D = decltype(dtag);
    visit_dtype(src.dtype(), [&](auto stag) {
      using S = decltype(stag);
      D* d = static_cast<D*>(dst.raw_data());
      const S* sp = static_cast<const S*>(src.raw_data());
      if (flat) {
        copy_flat_kernel<D, S><<<blocks_for(n, kThreads), kThreads, 0, s>>>(d, sp, n);
      } else {
        copy_strided_kernel<D, S><<<blocks_for(n, kThreads), kThreads, 0, s>>>(d, sp, ix[0], ix[1], n);
      }
      MOON_CUDA_LAUNCH_CHECK("copy_kernel");
    });
  });
}

// Two pinned host buffers used in turn: while the GPU copies from (or into) one, the host fills (or drains)
// the other. An event per buffer says when the GPU is done with it.
struct Staging {
  static constexpr size_t kChunk = size_t{8} << 20;
  std::mutex mu;
  void* buf[2] = {nullptr, nullptr};
  cudaEvent_t done[2] = {nullptr, nullptr};

  void init() {
    if (buf[0]) return;
    for (int i = 0; i < 2; ++i) {
      MOON_CUDA_CHECK(cudaHostAlloc(&buf[i], kChunk, cudaHostAllocPortable));
      MOON_CUDA_CHECK(cudaEventCreateWithFlags(&done[i], cudaEventDisableTiming));
    }
  }
};
Staging& staging() {
  static Staging* s = new Staging;  // never destroyed: pinned memory is returned with the context at exit
  return *s;
}

// Contiguous host bytes -> contiguous device bytes.
void upload(void* dev, const void* host, size_t bytes, Device device) {
  DeviceGuard guard(device);
  const cudaStream_t s = stream(device);
  Staging& st = staging();
  std::lock_guard<std::mutex> lock(st.mu);
  st.init();
  int b = 0;
  for (size_t off = 0; off < bytes; off += Staging::kChunk, b ^= 1) {
    const size_t len = std::min(Staging::kChunk, bytes - off);
    MOON_CUDA_CHECK(cudaEventSynchronize(st.done[b]));  // the GPU has finished reading this buffer
    std::memcpy(st.buf[b], static_cast<const char*>(host) + off, len);
    MOON_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dev) + off, st.buf[b], len, cudaMemcpyHostToDevice, s));
    MOON_CUDA_CHECK(cudaEventRecord(st.done[b], s));
  }
}

// Contiguous device bytes -> contiguous host bytes (returns when the host copy is complete).
void download(void* host, const void* dev, size_t bytes, Device device) {
  DeviceGuard guard(device);
  const cudaStream_t s = stream(device);
  Staging& st = staging();
  std::lock_guard<std::mutex> lock(st.mu);
  st.init();
  size_t pending_off[2] = {0, 0}, pending_len[2] = {0, 0};
  auto drain = [&](int b) {
    if (pending_len[b] == 0) return;
    MOON_CUDA_CHECK(cudaEventSynchronize(st.done[b]));
    std::memcpy(static_cast<char*>(host) + pending_off[b], st.buf[b], pending_len[b]);
    pending_len[b] = 0;
  };
  int b = 0;
  for (size_t off = 0; off < bytes; off += Staging::kChunk, b ^= 1) {
    drain(b);  // the buffer's previous chunk reaches the host before the buffer is reused
    const size_t len = std::min(Staging::kChunk, bytes - off);
    MOON_CUDA_CHECK(cudaMemcpyAsync(st.buf[b], static_cast<const char*>(dev) + off, len, cudaMemcpyDeviceToHost, s));
    MOON_CUDA_CHECK(cudaEventRecord(st.done[b], s));
    pending_off[b] = off;
    pending_len[b] = len;
  }
  drain(0);
  drain(1);
}

}  // namespace

void copy_elements(const Tensor& dst, const Tensor& src) {
  if (dst.numel() == 0) return;
  const Device dd = dst.device(), sd = src.device();
  if (dd == sd) return copy_on_device(dst, src);
  if (dd.is_cuda() && sd.is_cuda()) {
    // Between two GPUs: a contiguous copy of src in dst's dtype on its own device, then a peer copy.
    Tensor staged = empty(src.shape(), dst.dtype(), sd);
    copy_on_device(staged, src);
    Tensor landed = dst.is_contiguous() ? dst : empty(dst.shape(), dst.dtype(), dd);
    cuda_synchronize(sd);
    DeviceGuard guard(dd);
    MOON_CUDA_CHECK(cudaMemcpyPeerAsync(landed.raw_data(), dd.index, staged.raw_data(), sd.index, nbytes_of(landed),
                                        stream(dd)));
    if (!landed.same(dst)) copy_on_device(dst, landed);
    cuda_synchronize(dd);  // `staged` is freed on return
    return;
  }
  if (dd.is_cuda()) {
    // Host -> device: contiguous host bytes in dst's dtype, uploaded, then placed in dst's layout on the GPU.
    Tensor host = src;
    if (!src.is_contiguous() || src.dtype() != dst.dtype()) {
      host = empty(src.shape(), dst.dtype(), kCPU);
      moon::copy_elements(host, src);
    }
    Tensor landed = dst.is_contiguous() ? dst : empty(dst.shape(), dst.dtype(), dd);
    upload(landed.raw_data(), host.raw_data(), nbytes_of(landed), dd);
    if (!landed.same(dst)) copy_on_device(dst, landed);
    return;
  }
  // Device -> host: made contiguous (src's dtype) on the GPU, downloaded, then converted on the host.
  Tensor dev = src;
  if (!src.is_contiguous()) {
    dev = empty(src.shape(), src.dtype(), sd);
    copy_on_device(dev, src);
  }
  Tensor host = dst.is_contiguous() && dst.dtype() == src.dtype() ? dst : empty(src.shape(), src.dtype(), kCPU);
  download(host.raw_data(), dev.raw_data(), nbytes_of(host), sd);
  if (!host.same(dst)) moon::copy_elements(dst, host);
}

void fill_elements(const Tensor& dst, double value) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  DeviceGuard guard(dst.device());
  const Indexer di = make_indexer(dst);
  constexpr int kThreads = 256;
  const cudaStream_t s = stream_of(dst);
  visit_dtype(dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T v;
    if constexpr (std::is_same_v<T, bf16_bits>) v = bf16_bits{f32_to_bf16(static_cast<float>(value))};
    else if constexpr (std::is_same_v<T, f16_bits>) v = f16_bits{f32_to_f16(static_cast<float>(value))};
    else v = static_cast<T>(value);
    fill_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, s>>>(static_cast<T*>(dst.raw_data()), di, n, v);
    MOON_CUDA_LAUNCH_CHECK("fill_kernel");
  });
}

}  // namespace moon::cuda
