// The CPU caching allocator: 64-byte aligned blocks kept in per-size-class free lists.
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "runtime/allocator.h"
#include "runtime/caching_allocator.h"
#include "runtime/error.h"

namespace moon {

namespace {

bool g_poison = false;
bool g_guards = false;
std::mutex g_guard_mu;
std::string g_guard_report;

class CpuCachingAllocator final : public CachingAllocator {
 public:
  ~CpuCachingAllocator() override { empty_cache(); }

  void* allocate(size_t nbytes) override {
    if (nbytes == 0) return nullptr;
    const size_t size = allocator_size_class(nbytes);
    void* ptr = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ptr = take_cached_locked(size);
      const bool from_system = !ptr;
      if (from_system) {
        ptr = std::aligned_alloc(64, size);
        if (!ptr) {
          release_cached_locked();  // retry once with the cache given back
          ptr = std::aligned_alloc(64, size);
        }
        MOON_CHECK(ptr, "allocator: out of CPU memory allocating ", nbytes, " bytes (", stats_.current_bytes,
                   " bytes in use); reduce the batch size or sequence length");
      }
      count_handout_locked(size, from_system);
    }
    if (g_poison) std::memset(ptr, 0xff, size);
    return ptr;
  }

  void deallocate(void* ptr, size_t nbytes) override {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    put_cached_locked(ptr, allocator_size_class(nbytes));
  }

 private:
  void system_free(void* ptr) override { std::free(ptr); }
};

Allocator* g_allocators[kNumDeviceTypes] = {nullptr, nullptr};

}  // namespace

#ifdef MOON_CUDA
Allocator& cuda_caching_allocator(int index);  // runtime/cuda/allocator_cuda.cu
#endif

void set_device_guards(bool on) { g_guards = on; }
bool device_guards() { return g_guards; }
void report_guard_violation(const std::string& what) {
  std::lock_guard<std::mutex> lock(g_guard_mu);
  if (g_guard_report.empty()) g_guard_report = what;
}
std::string take_guard_report() {
  std::lock_guard<std::mutex> lock(g_guard_mu);
  std::string r;
  r.swap(g_guard_report);
  return r;
}

size_t allocator_size_class(size_t nbytes) {
  size_t size = (nbytes + 63) & ~size_t{63};
  if (size <= 4096) return size;
  size_t pow2 = 4096;
  while (pow2 * 2 <= size) pow2 *= 2;
  const size_t quarter = pow2 / 4;
  return (size + quarter - 1) / quarter * quarter;
}

Allocator& allocator_for(Device device) {
  if (device.type == DeviceType::CPU) {
    static CpuCachingAllocator cpu;  // constructed on first use, lives until exit
    return cpu;
  }
  Allocator* a = g_allocators[static_cast<int>(device.type)];
#ifdef MOON_CUDA
  if (!a && device.is_cuda()) return cuda_caching_allocator(device.index);
#endif
  MOON_CHECK(a, "allocator: no allocator for device ", device.str(),
             "; this build has no CUDA backend (configure with -DMOON_CUDA=ON on a machine with nvcc)");
  return *a;
}

void register_allocator(DeviceType type, Allocator* allocator) { g_allocators[static_cast<int>(type)] = allocator; }

void set_poison_allocations(bool on) { g_poison = on; }
bool poison_allocations() { return g_poison; }

}  // namespace moon
