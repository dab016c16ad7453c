// The doctest runner for every suite (one binary; ctest runs it once per suite, see cmake/Tests.cmake).
//
// With MOON_TESTS_NEED_CUDA=1 in the environment (the ctest entry of the `cuda` suite), a machine without a
// CUDA device prints "skipped: no CUDA device" and exits with 77, which ctest reports as a skipped test in
// its summary rather than as a pass.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "runtime/device.h"

int main(int argc, char** argv) {
  const char* need_cuda = std::getenv("MOON_TESTS_NEED_CUDA");
  if (need_cuda && std::strcmp(need_cuda, "1") == 0 && !moon::cuda_available()) {
    std::printf("skipped: no CUDA device (%s)\n",
#ifdef MOON_CUDA
                "this build has the CUDA backend, but the machine has no usable GPU"
#else
                "this build has no CUDA backend"
#endif
    );
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
