// What the CPU and CUDA caching allocators share: per-size-class free lists, the statistics, and the
// Allocator methods that only read or reset them. Each device allocator (runtime/allocator_cpu.cpp,
// runtime/cuda/allocator_cuda.cu) adds how a block comes from the system and goes back to it.
#pragma once

#include <mutex>
#include <unordered_map>
#include <vector>

#include "runtime/allocator.h"

namespace moon {

class CachingAllocator : public Allocator {
 public:
  AllocatorStats stats() const override;
  void reset_peak() override;
  void empty_cache() override;  // every cached block back to the system

 protected:
  // The *_locked methods expect mu_ held.
  void* take_cached_locked(size_t size);                      // a cached block of this size class, or nullptr
  void count_handout_locked(size_t size, bool from_system);   // statistics of a block handed to a caller
  void put_cached_locked(void* ptr, size_t size);             // a caller's block back into its free list
  void release_cached_locked();                               // prepare_release_locked(), then system_free each
  virtual void prepare_release_locked() {}                    // e.g. wait until queued kernels are done
  virtual void system_free(void* ptr) = 0;

  mutable std::mutex mu_;
  AllocatorStats stats_;

 private:
  std::unordered_map<size_t, std::vector<void*>> free_;  // size class -> cached blocks
};

}  // namespace moon
