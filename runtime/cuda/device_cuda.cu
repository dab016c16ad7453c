// CUDA device discovery and synchronisation.
#include <cuda_runtime.h>

#include "runtime/cuda/context.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/device.h"

namespace moon {

// Number of usable CUDA devices; 0 when the driver or a device is missing (never an error).
int cuda_device_count() {
  static const int n = [] {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky error so later calls are unaffected
      return 0;
    }
    return count;
  }();
  return n;
}

void cuda_synchronize(Device device) {
  cuda::DeviceGuard guard(device);
  MOON_CUDA_CHECK(cudaStreamSynchronize(cuda::stream(device)));
}

std::string cuda_device_name(int index) {
  if (index < 0 || index >= cuda_device_count()) return "none";
  return cuda::properties(cuda_device(index)).name;
}

}  // namespace moon
