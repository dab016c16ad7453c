// libFuzzer target: .npy headers and payloads.
#include "fuzz/fuzz_common.h"
#include "io/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return moon_fuzz_run([&] { moon::io::parse_npy(data, size, "fuzz.npy"); });
}
