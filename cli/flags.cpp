// Flag helpers and the command table behind MOON_COMMAND.
#include <algorithm>
#include <charconv>
#include <cmath>

#include "cli/commands.h"
#include "runtime/error.h"

namespace moon::cli {

namespace {
std::vector<Command>& table() {
  static std::vector<Command> t;
  return t;
}
}  // namespace

bool register_command(const char* name, CommandFn run, const char* help, int order) {
  table().push_back({name, run, help, order});
  return true;
}

std::vector<Command> commands() {
  std::vector<Command> sorted = table();
  std::sort(sorted.begin(), sorted.end(), [](const Command& a, const Command& b) {
    return a.order != b.order ? a.order < b.order : std::string(a.name) < b.name;
  });
  return sorted;
}

bool has_flag(const Args& args, const std::string& flag) {
  for (const auto& a : args)
    if (a == flag) return true;
  return false;
}

std::string flag_value(const Args& args, const std::string& flag, const std::string& fallback) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] != flag) continue;
    MOON_CHECK(i + 1 < args.size(), "flag ", flag, " needs a value");
    return args[i + 1];
  }
  return fallback;
}

uint64_t unsigned_flag(const Args& args, const std::string& flag, uint64_t fallback, uint64_t lo, uint64_t hi) {
  if (!has_flag(args, flag)) return fallback;
  const std::string text = flag_value(args, flag, "");
  uint64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  const bool ok = !text.empty() && error == std::errc() && stop == end && value >= lo && value <= hi;
  if (!ok && hi == UINT64_MAX) fail("flag ", flag, " expects an integer >= ", lo, ", got '", text, "'");
  MOON_CHECK(ok, "flag ", flag, " expects an integer in ", lo, "..", hi, ", got '", text, "'");
  return value;
}

double number_flag(const Args& args, const std::string& flag, double fallback, double lo, double hi) {
  if (!has_flag(args, flag)) return fallback;
  const std::string text = flag_value(args, flag, "");
  double value = 0;
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  const bool ok = !text.empty() && error == std::errc() && stop == end && std::isfinite(value) && value >= lo &&
                  value <= hi;
  if (!ok && lo == -HUGE_VAL && hi == HUGE_VAL) fail("flag ", flag, " expects a number, got '", text, "'");
  MOON_CHECK(ok, "flag ", flag, " must be a number in [", lo, ", ", hi, "], got '", text, "'");
  return value;
}

std::vector<std::string> positionals(const Args& args, const std::vector<std::string>& valued) {
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    if (std::find(valued.begin(), valued.end(), args[i]) != valued.end()) {
      ++i;  // skip the flag's value
    } else if (args[i].rfind("--", 0) != 0) {
      out.push_back(args[i]);
    }
  }
  return out;
}

void check_flags(const char* command, const Args& args, const std::vector<std::string>& known) {
  for (const auto& a : args) {
    if (a.rfind("--", 0) != 0) continue;
    MOON_CHECK(std::find(known.begin(), known.end(), a) != known.end(), "unknown option '", a, "' (try `moon ",
               command, " --help`)");
  }
}

}  // namespace moon::cli
