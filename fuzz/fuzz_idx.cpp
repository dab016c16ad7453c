// libFuzzer target: IDX arrays (magic, dtype, dimensions against the size), raw and through gunzip.
#include "fuzz/fuzz_common.h"
#include "io/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moon_fuzz_run([&] { moon::io::parse_idx(data, size, "fuzz.idx"); });
  return moon_fuzz_run([&] {
    const std::vector<uint8_t> raw = moon::io::gunzip(data, size, "fuzz.idx.gz", size_t(1) << 24);
    moon::io::parse_idx(raw.data(), raw.size(), "fuzz.idx.gz");
  });
}
