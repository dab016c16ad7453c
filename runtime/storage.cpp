#include "runtime/storage.h"

#include "runtime/allocator.h"

namespace moon {

std::shared_ptr<Storage> Storage::allocate(size_t nbytes, Device device) {
  auto s = std::make_shared<Storage>();
  s->data = allocator_for(device).allocate(nbytes);
  s->nbytes = nbytes;
  s->device = device;
  return s;
}

std::shared_ptr<Storage> Storage::wrap(void* data, size_t nbytes, Device device, std::shared_ptr<void> owner) {
  auto s = std::make_shared<Storage>();
  s->data = data;
  s->nbytes = nbytes;
  s->device = device;
  s->owner = std::move(owner);
  return s;
}

Storage::~Storage() {
  if (data && !owner) allocator_for(device).deallocate(data, nbytes);
}

}  // namespace moon
