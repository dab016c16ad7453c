// moon::Error: the one exception type of the engine, and the checks that raise it.
//
// Every message names the op, the operands (shapes, dtypes, devices) and says what to do.
//   MOON_CHECK(a.dim() == 2, "matmul: expected a 2-D tensor, got ", a.shape_str());
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace moon {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// Throws moon::Error with the streamed arguments as its message.
template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(detail::concat(args...));
}

}  // namespace moon

#define MOON_CHECK(cond, ...)                   \
  do {                                          \
    if (!(cond)) ::moon::fail(__VA_ARGS__);     \
  } while (0)
