#include "runtime/cuda/cuda_check.h"

#include <cstdlib>
#include <cstring>

#include "runtime/cuda/context.h"
#include "runtime/error.h"

namespace moon::cuda {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error so that the caller may recover
  fail("CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ") in ", call, " at ", file, ":", line,
       err == cudaErrorMemoryAllocation ? "; the GPU is out of memory: reduce the batch size or sequence length" : "");
}

void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line) {
  fail("cuBLAS error ", cublasGetStatusName(status), " (", cublasGetStatusString(status), ") in ", call, " at ",
       file, ":", line);
}

namespace {
bool sync_after_launch() {
#ifndef NDEBUG
  return true;
#else
  static const bool on = [] {
    const char* v = std::getenv("MOON_CUDA_SYNC");
    return v && std::strcmp(v, "0") != 0 && *v;
  }();
  return on;
#endif
}
}  // namespace

void check_launch(const char* kernel, const char* file, int line) {
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess && sync_after_launch()) {
    int dev = 0;
    cudaGetDevice(&dev);
    err = cudaStreamSynchronize(stream(cuda_device(dev)));
  }
  if (err != cudaSuccess)
    fail("CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ") in kernel ", kernel, " launched at ",
         file, ":", line);
}

}  // namespace moon::cuda
