#include "runtime/device.h"

namespace moon {

#ifndef MOON_CUDA
int cuda_device_count() { return 0; }
#endif

bool cuda_available() { return cuda_device_count() > 0; }

}  // namespace moon
