// libFuzzer target: a safetensors file, header validation and then reading every tensor it lists.
#include <vector>

#include "fuzz/fuzz_common.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return moon_fuzz_run([&] {
    auto file = moon::io::SafetensorsFile::open_from_memory(std::vector<uint8_t>(data, data + size), "fuzz.safetensors");
    for (const std::string& name : file->names()) moon_fuzz_run([&] { file->tensor(name); });
  });
}
