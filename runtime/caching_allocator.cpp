#include "runtime/caching_allocator.h"

namespace moon {

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_bytes = stats_.current_bytes;
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

void* CachingAllocator::take_cached_locked(size_t size) {
  auto it = free_.find(size);
  if (it == free_.end() || it->second.empty()) return nullptr;
  void* ptr = it->second.back();
  it->second.pop_back();
  stats_.cached_bytes -= size;
  return ptr;
}

void CachingAllocator::count_handout_locked(size_t size, bool from_system) {
  if (from_system) ++stats_.system_allocs;
  ++stats_.allocs;
  stats_.current_bytes += size;
  if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
}

void CachingAllocator::put_cached_locked(void* ptr, size_t size) {
  free_[size].push_back(ptr);
  stats_.current_bytes -= size;
  stats_.cached_bytes += size;
}

void CachingAllocator::release_cached_locked() {
  if (stats_.cached_bytes == 0) return;
  prepare_release_locked();
  for (auto& [size, blocks] : free_) {
    for (void* p : blocks) {
      system_free(p);
      ++stats_.system_frees;
    }
    stats_.cached_bytes -= size * blocks.size();
    blocks.clear();
  }
}

}  // namespace moon
