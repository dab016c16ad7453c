// Small helpers shared by the test suites.
#pragma once

#include <functional>
#include <string>

#include "runtime/error.h"

namespace moon::test {

// The message of the moon::Error that f throws, or "" if it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace moon::test
