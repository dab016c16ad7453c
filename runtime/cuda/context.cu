#include "runtime/cuda/context.h"

#include <mutex>

#include "runtime/cuda/cuda_check.h"
#include "runtime/error.h"

namespace moon::cuda {

namespace {

constexpr int kMaxDevices = 16;
constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // cuBLASLt: enough for its split-K and Hopper kernels

struct DeviceState {
  std::once_flag once;
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
  cudaDeviceProp props{};
};

DeviceState& state(Device device) {
  static DeviceState states[kMaxDevices];
  MOON_CHECK(device.is_cuda(), "cuda: ", device.str(), " is not a CUDA device");
  const int n = cuda_device_count();
  MOON_CHECK(device.index >= 0 && device.index < n && device.index < kMaxDevices, "cuda: no device ", device.str(),
             " (this machine has ", n, " CUDA device", n == 1 ? "" : "s", ")");
  DeviceState& s = states[device.index];
  std::call_once(s.once, [&] {
    DeviceGuard guard(device);
    MOON_CUDA_CHECK(cudaGetDeviceProperties(&s.props, device.index));
    MOON_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
    MOON_CUBLAS_CHECK(cublasLtCreate(&s.lt));
    MOON_CUDA_CHECK(cudaMalloc(&s.workspace, kWorkspaceBytes));
  });
  return s;
}

}  // namespace

DeviceGuard::DeviceGuard(Device device) {
  MOON_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device.index) MOON_CUDA_CHECK(cudaSetDevice(device.index));
}

DeviceGuard::~DeviceGuard() {
  int now = -1;
  if (cudaGetDevice(&now) == cudaSuccess && now != previous_ && previous_ >= 0) cudaSetDevice(previous_);
}

cudaStream_t stream(Device device) { return state(device).stream; }
cublasLtHandle_t cublaslt(Device device) { return state(device).lt; }
void* cublaslt_workspace(Device device, size_t* bytes) {
  *bytes = kWorkspaceBytes;
  return state(device).workspace;
}
const cudaDeviceProp& properties(Device device) { return state(device).props; }

}  // namespace moon::cuda
