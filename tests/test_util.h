// Small helpers shared by the test suites.
#pragma once

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
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

// A shell-quoted path or argument ('...'; paths with a single quote are not supported).
inline std::string quoted(const std::string& s) { return "'" + s + "'"; }

// A Python script a suite runs (a reference writer, the PyTorch twin).
struct PythonTool {
  std::string python, script;
  std::string command(const std::string& args) const { return quoted(python) + " " + quoted(script) + " " + args; }
  // Runs the script with `args` through the shell; its exit status, or -1 if it did not exit normally.
  int run(const std::string& args) const {
    const int status = std::system(command(args).c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
};

// The interpreter from $python_env (default /usr/bin/python3) and the script from $script_env (default
// `default_script`, relative to the repository root). When a piece is missing: a test failure if
// $script_env is set (ctest asked for the suite), else a warning and nullopt (the caller skips).
// `what` names the suite and the Python modules it needs, e.g. "model_parity ... (with torch and numpy)".
inline std::optional<PythonTool> find_python_tool(const char* python_env, const char* script_env,
                                                  const std::string& default_script, const std::string& suite,
                                                  const std::string& modules) {
  const char* py = std::getenv(python_env);
  const char* script = std::getenv(script_env);
  PythonTool tool{py ? py : "/usr/bin/python3", script ? script : default_script};
  if (std::filesystem::exists(tool.python) && std::filesystem::exists(tool.script)) return tool;
  const std::string hint = suite + ": needs " + tool.python + " (with " + modules + ") and " + tool.script +
                           "; run from the repository root or set " + script_env;
  if (script) FAIL(hint);  // asked for explicitly (ctest): a missing piece is an error
  WARN_MESSAGE(false, hint);
  return std::nullopt;
}

// The `moon` binary of this build (next to moon_tests); fails the test when it was not built.
inline std::string moon_binary() {
  const std::string path = (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "moon").string();
  REQUIRE_MESSAGE(std::filesystem::exists(path), "build the `moon` target too: ", path, " is missing");
  return path;
}

// What a command printed and its exit status (as from `sh -c`; 0 = success).
struct CommandRun {
  int status = -1;
  std::string out, err;
};

// Runs `moon ARGS` (a shell fragment, quote paths with quoted()) in `dir` capturing stdout and stderr.
inline CommandRun run_moon(const TempDir& dir, const std::string& args) {
  const std::string out = dir / "moon_stdout.txt", err = dir / "moon_stderr.txt";
  const std::string cmd = "OMP_NUM_THREADS=2 " + quoted(moon_binary()) + " " + args + " >" + quoted(out) + " 2>" + quoted(err);
  const int raw = std::system(cmd.c_str());
  auto slurp = [](const std::string& path) {
    std::string text;
    if (FILE* f = std::fopen(path.c_str(), "rb")) {
      char buf[4096];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
      std::fclose(f);
    }
    return text;
  };
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw), slurp(out), slurp(err)};
}

}  // namespace moon::test
