// The CUDA caching allocator: one per device, device blocks kept in per-size-class free lists.
//
// Every kernel runs on the device's one stream (runtime/cuda/context.h), so a block freed by one op can be
// handed to the next op at once: the stream orders the old reader before the new writer. After the first
// step of a loop with fixed shapes every request is served from the lists and cudaMalloc is not called
// (stats().system_allocs stops growing; tests/test_cuda.cpp checks it).
#include <mutex>
#include <string>
#include <unordered_set>

#include "runtime/allocator.h"
#include "runtime/caching_allocator.h"
#include "runtime/cuda/context.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/error.h"

namespace moon {

namespace {

class CudaCachingAllocator final : public CachingAllocator {
 public:
  void set_device(int index) { device_ = cuda_device(index); }

  void* allocate(size_t nbytes) override {
    if (nbytes == 0) return nullptr;
    const bool guarded = device_guards();
    const size_t size = allocator_size_class(guarded ? nbytes + kGuardBytes : nbytes);
    std::lock_guard<std::mutex> lock(mu_);
    void* ptr = take_cached_locked(size);
    const bool from_system = !ptr;
    if (from_system) {
      cuda::DeviceGuard guard(device_);
      cudaError_t err = cudaMalloc(&ptr, size);
      if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        release_cached_locked();  // give the cache back and retry once
        err = cudaMalloc(&ptr, size);
      }
      if (err != cudaSuccess) {
        cudaGetLastError();
        fail("allocator: out of GPU memory on ", device_.str(), " allocating ", nbytes, " bytes (", stats_.current_bytes,
             " bytes in use, ", cudaGetErrorString(err), "); reduce the batch size or sequence length");
      }
    }
    count_handout_locked(size, from_system);
    if (poison_allocations() || guarded) {
      cuda::DeviceGuard guard(device_);
      const cudaStream_t s = cuda::stream(device_);
      if (poison_allocations()) MOON_CUDA_CHECK(cudaMemsetAsync(ptr, 0xff, nbytes, s));
      if (guarded) {
        MOON_CUDA_CHECK(cudaMemsetAsync(static_cast<char*>(ptr) + nbytes, kGuardByte, kGuardBytes, s));
        guarded_.insert(ptr);
      }
    }
    return ptr;
  }

  void deallocate(void* ptr, size_t nbytes) override {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    const bool guarded = guarded_.erase(ptr) > 0;
    if (guarded) check_guard(ptr, nbytes);
    put_cached_locked(ptr, allocator_size_class(guarded ? nbytes + kGuardBytes : nbytes));
  }

 private:
  static constexpr unsigned char kGuardByte = 0xA5;

  // Reads back the guard bytes after a block's requested end (waits for the stream) and reports a change.
  // Called from Storage's destructor: it reports failures instead of throwing.
  void check_guard(void* ptr, size_t nbytes) noexcept {
    int previous = -1;
    cudaGetDevice(&previous);
    cudaSetDevice(device_.index);
    unsigned char bytes[kGuardBytes];
    cudaError_t err = cudaMemcpyAsync(bytes, static_cast<char*>(ptr) + nbytes, kGuardBytes, cudaMemcpyDeviceToHost,
                                      cuda::stream(device_));
    if (err == cudaSuccess) err = cudaStreamSynchronize(cuda::stream(device_));
    if (previous >= 0) cudaSetDevice(previous);
    if (err != cudaSuccess) {
      cudaGetLastError();
      report_guard_violation(std::string("could not read the guard bytes of a ") + std::to_string(nbytes) +
                             "-byte buffer on " + device_.str() + ": " + cudaGetErrorString(err));
      return;
    }
    for (size_t i = 0; i < kGuardBytes; ++i)
      if (bytes[i] != kGuardByte) {
        report_guard_violation("a kernel wrote past the end of a " + std::to_string(nbytes) + "-byte buffer on " +
                               device_.str() + " (guard byte " + std::to_string(i) + " changed)");
        return;
      }
  }

  // Cached blocks may still be used by queued kernels: wait for the stream before they are freed.
  void prepare_release_locked() override {
    cuda::DeviceGuard guard(device_);
    MOON_CUDA_CHECK(cudaStreamSynchronize(cuda::stream(device_)));
  }
  void system_free(void* ptr) override {
    cuda::DeviceGuard guard(device_);
    MOON_CUDA_CHECK(cudaFree(ptr));
  }

  Device device_;
  std::unordered_set<void*> guarded_;  // live blocks that carry guard bytes
};

}  // namespace

// The allocator of CUDA device `index` (runtime/allocator_cpu.cpp's allocator_for calls it). Blocks still
// cached at exit are left to the driver, which frees them with the context.
Allocator& cuda_caching_allocator(int index) {
  constexpr int kMaxDevices = 16;
  MOON_CHECK(index >= 0 && index < kMaxDevices && index < cuda_device_count(), "allocator: no CUDA device ", index,
             " (this machine has ", cuda_device_count(), ")");
  static CudaCachingAllocator* allocators = [] {
    auto* a = new CudaCachingAllocator[kMaxDevices];  // never destroyed: the CUDA runtime may be gone at exit
    for (int i = 0; i < kMaxDevices; ++i) a[i].set_device(i);
    return a;
  }();
  return allocators[index];
}

}  // namespace moon
