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

Storage::~Storage() {
  if (data) allocator_for(device).deallocate(data, nbytes);
}

}  // namespace moon
