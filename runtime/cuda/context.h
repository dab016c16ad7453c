// Per-device CUDA state: the one stream each device runs on, the cuBLASLt handle and its workspace.
// Every kernel of the backend is launched on stream(device), so work on one device runs in issue order and
// the caching allocator may hand a freed block to the next op without waiting. CUDA-only header.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "runtime/device.h"

namespace moon::cuda {

// Makes `device` current for the scope (and restores the previous one).
class DeviceGuard {
 public:
  explicit DeviceGuard(Device device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

cudaStream_t stream(Device device);        // created on first use (non-blocking), lives until exit
cublasLtHandle_t cublaslt(Device device);  // created on first use
void* cublaslt_workspace(Device device, size_t* bytes);  // a fixed workspace for cuBLASLt's algorithms
const cudaDeviceProp& properties(Device device);

}  // namespace moon::cuda
