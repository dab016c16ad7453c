// Error checks for CUDA, cuBLAS and cuBLASLt calls, and for kernel launches. Each failure is a moon::Error
// that names the call, the file and the line:
//   MOON_CUDA_CHECK(cudaMemcpyAsync(...));
//   MOON_CUBLAS_CHECK(cublasLtMatmul(...));
//   my_kernel<<<grid, block, 0, stream>>>(...); MOON_CUDA_LAUNCH_CHECK("my_kernel");
// A launch check reads cudaGetLastError (cheap, no sync). In debug builds (no NDEBUG), or with the
// environment variable MOON_CUDA_SYNC=1, it also synchronises the stream, so an asynchronous fault is
// reported at the kernel that caused it rather than at a later call.
// CUDA-only header: include it from .cu files only.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace moon::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line);
void check_launch(const char* kernel, const char* file, int line);

}  // namespace moon::cuda

#define MOON_CUDA_CHECK(call)                                                               \
  do {                                                                                      \
    const cudaError_t moon_err_ = (call);                                                   \
    if (moon_err_ != cudaSuccess) ::moon::cuda::throw_cuda_error(moon_err_, #call, __FILE__, __LINE__); \
  } while (0)

#define MOON_CUBLAS_CHECK(call)                                                             \
  do {                                                                                      \
    const cublasStatus_t moon_st_ = (call);                                                 \
    if (moon_st_ != CUBLAS_STATUS_SUCCESS)                                                  \
      ::moon::cuda::throw_cublas_error(moon_st_, #call, __FILE__, __LINE__);                \
  } while (0)

#define MOON_CUDA_LAUNCH_CHECK(kernel_name) ::moon::cuda::check_launch(kernel_name, __FILE__, __LINE__)
