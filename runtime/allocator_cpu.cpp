// The CPU caching allocator: 64-byte aligned blocks kept in per-size-class free lists.
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "runtime/allocator.h"
#include "runtime/error.h"

namespace moon {

namespace {

bool g_poison = false;
bool g_guards = false;
std::mutex g_guard_mu;
std::string g_guard_report;

class CpuCachingAllocator final : public Allocator {
 public:
  ~CpuCachingAllocator() override { empty_cache(); }

  void* allocate(size_t nbytes) override {
    if (nbytes == 0) return nullptr;
    const size_t size = allocator_size_class(nbytes);
    void* ptr = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        ptr = it->second.back();
        it->second.pop_back();
        stats_.cached_bytes -= size;
      }
      if (!ptr) {
        ptr = std::aligned_alloc(64, size);
        if (!ptr) {
          release_cached_locked();  // retry once with the cache given back
          ptr = std::aligned_alloc(64, size);
        }
        MOON_CHECK(ptr, "allocator: out of CPU memory allocating ", nbytes, " bytes (", stats_.current_bytes,
                   " bytes in use); reduce the batch size or sequence length");
        ++stats_.system_allocs;
      }
      ++stats_.allocs;
      stats_.current_bytes += size;
      if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
    }
    if (g_poison) std::memset(ptr, 0xff, size);
    return ptr;
  }

  void deallocate(void* ptr, size_t nbytes) override {
    if (!ptr) return;
    const size_t size = allocator_size_class(nbytes);
    std::lock_guard<std::mutex> lock(mu_);
    free_[size].push_back(ptr);
    stats_.current_bytes -= size;
    stats_.cached_bytes += size;
  }

  AllocatorStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  void reset_peak() override {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_bytes = stats_.current_bytes;
  }

  void empty_cache() override {
    std::lock_guard<std::mutex> lock(mu_);
    release_cached_locked();
  }

 private:
  void release_cached_locked() {
    for (auto& [size, blocks] : free_) {
      for (void* p : blocks) {
        std::free(p);
        ++stats_.system_frees;
      }
      stats_.cached_bytes -= size * blocks.size();
      blocks.clear();
    }
  }

  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // size class -> cached blocks
  AllocatorStats stats_;
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
