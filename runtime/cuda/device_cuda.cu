// CUDA device discovery. The CUDA backend (allocator, streams, kernels) builds on this.
#include <cuda_runtime.h>

#include "runtime/device.h"

namespace moon {

// Number of usable CUDA devices; 0 when the driver or a device is missing (never an error).
int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls are unaffected
    return 0;
  }
  return n;
}

}  // namespace moon
