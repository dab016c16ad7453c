// Storage: one allocation shared by a tensor and all its views, with the version counter that autograd
// uses to catch in-place writes to tensors saved for backward.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "runtime/device.h"

namespace moon {

struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  std::atomic<uint64_t> version{0};  // bumped by every in-place write into this storage

  std::shared_ptr<void> owner;  // set for wrapped memory (e.g. a memory-mapped file): kept alive, never freed here

  static std::shared_ptr<Storage> allocate(size_t nbytes, Device device);
  // Storage over memory someone else owns; `owner` is held until the last view is gone. Writing through it
  // is the caller's business (a read-only mapping must only back tensors that are never written).
  static std::shared_ptr<Storage> wrap(void* data, size_t nbytes, Device device, std::shared_ptr<void> owner);
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();
};

}  // namespace moon
