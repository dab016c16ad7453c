// Small helpers shared by the test suites.
#pragma once

#include <unistd.h>

#include <filesystem>
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

// A fresh folder under the system's temporary folder (unique per process and per instance), removed with
// everything in it when the test ends.
struct TempDir {
  std::string path;
  explicit TempDir(const std::string& name = "test") {
    static int counter = 0;
    path = (std::filesystem::temp_directory_path() /
            ("moon-" + name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++)))
               .string();
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path + "/" + name; }
  std::string operator/(const std::string& name) const { return file(name); }
};

}  // namespace moon::test
