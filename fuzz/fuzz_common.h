// Shared by the libFuzzer targets in fuzz/: each target feeds the fuzzer's bytes to one parser and accepts
// exactly two outcomes, a parsed value or a moon::Error. Anything else (a crash, a sanitizer report, any
// other exception escaping) is a bug that libFuzzer reports. Built only with -DMOON_FUZZ=ON under clang;
// scripts/fuzz.sh builds and runs them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "runtime/error.h"

// Runs f, swallowing the one expected failure type.
template <class F>
int moon_fuzz_run(F&& f) {
  try {
    f();
  } catch (const moon::Error&) {
  }
  return 0;
}

inline std::string_view moon_fuzz_text(const uint8_t* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}
