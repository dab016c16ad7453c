// Caching allocators, one per device type. Freed blocks go back to a per-size free list and are reused,
// so a training loop that repeats the same shapes stops calling the system allocator after its first step.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/device.h"

namespace moon {

struct AllocatorStats {
  size_t current_bytes = 0;   // bytes handed out and not yet freed (rounded to the size class)
  size_t peak_bytes = 0;      // the high-water mark of current_bytes since the last reset_peak()
  size_t cached_bytes = 0;    // bytes held in free lists, ready for reuse
  uint64_t system_allocs = 0; // calls into the system allocator (malloc / cudaMalloc)
  uint64_t system_frees = 0;
  uint64_t allocs = 0;        // allocate() calls served, from cache or from the system
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;  // never returns nullptr for nbytes > 0; throws moon::Error
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void reset_peak() = 0;
  virtual void empty_cache() = 0;  // return every cached block to the system
};

// The allocator of a device type. CPU always exists; CUDA's is registered by the CUDA backend.
Allocator& allocator_for(Device device);
void register_allocator(DeviceType type, Allocator* allocator);

// Size classes: a request is rounded up to 64 bytes, and above 4 KiB to a quarter power of two, so that
// blocks are reusable across nearby sizes while wasting at most 25%.
size_t allocator_size_class(size_t nbytes);

// Test aid: when on, every CPU allocation is filled with 0xFF bytes (NaN for floats, -1 for integers),
// so an op that leaves part of its output unwritten shows it.
void set_poison_allocations(bool on);
bool poison_allocations();  // CUDA allocations are poisoned too (cudaMemset to 0xFF)

// Test aid for device allocators: when on, each new device block carries kGuardBytes of a known pattern
// right after its requested end, and freeing it checks them; an overwritten guard is recorded (the first
// one, with the block's size) and returned by take_guard_report(), which then clears it.
constexpr size_t kGuardBytes = 64;
void set_device_guards(bool on);
bool device_guards();
void report_guard_violation(const std::string& what);  // keeps the first report until taken
std::string take_guard_report();                        // "" when every guard was intact

}  // namespace moon
