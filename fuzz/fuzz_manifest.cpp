// libFuzzer target: one manifest line (JSON parsing, field types, path rules).
#include "fuzz/fuzz_common.h"
#include "io/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return moon_fuzz_run([&] {
    const moon::io::Product p = moon::io::parse_product(moon_fuzz_text(data, size), "fuzz.jsonl", 1);
    moon::io::parse_product(moon::io::to_json_line(p), "roundtrip.jsonl", 1);  // what we write, we read
  });
}
