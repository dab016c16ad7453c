// The moon subcommands: one file each in cli/. Each file registers its command with MOON_COMMAND, so a new
// subcommand is one new file and cli/main.cpp never changes.
//
//   MOON_COMMAND(tokenize, 40, "encode stdin into token ids (or --decode them)") (const Args& args) {...}
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace moon::cli {

using Args = std::vector<std::string>;  // arguments after the subcommand name
using CommandFn = int (*)(const Args&);

struct Command {
  const char* name;
  CommandFn run;
  const char* help;  // one line for `moon help`
  int order;         // position in `moon help` (smaller first)
};

// Adds a command at static-initialisation time; returns true so that it can initialise a static.
bool register_command(const char* name, CommandFn run, const char* help, int order);
std::vector<Command> commands();  // sorted by order, then name

// Small helpers for flags: --name value and --flag.
bool has_flag(const Args& args, const std::string& flag);
std::string flag_value(const Args& args, const std::string& flag, const std::string& fallback);
// An integer flag in [lo, hi] (decimal digits only), or `fallback` when the flag is absent. Fails naming the
// flag and the range when the value is not such an integer.
uint64_t unsigned_flag(const Args& args, const std::string& flag, uint64_t fallback, uint64_t lo, uint64_t hi);
// A finite decimal number flag in [lo, hi] (unbounded by default), or `fallback` when the flag is absent. Fails
// naming the flag (and the range, when there is one) when the value is not such a number.
double number_flag(const Args& args, const std::string& flag, double fallback, double lo = -HUGE_VAL,
                   double hi = HUGE_VAL);
// Positional arguments: those that are neither flags nor the values of the flags named in `valued`.
std::vector<std::string> positionals(const Args& args, const std::vector<std::string>& valued);
// Fails with a message naming the command if an argument starting with "--" is not in `known`.
void check_flags(const char* command, const Args& args, const std::vector<std::string>& known);

}  // namespace moon::cli

#define MOON_COMMAND_CAT2(a, b) a##b
#define MOON_COMMAND_CAT(a, b) MOON_COMMAND_CAT2(a, b)
// Defines `int cmd_<name>(const Args&)` and registers it as `moon <name>`.
#define MOON_COMMAND(name, order, help)                                                                 \
  static int cmd_##name(const ::moon::cli::Args&);                                                      \
  static const bool MOON_COMMAND_CAT(moon_registered_, name) =                                           \
      ::moon::cli::register_command(#name, cmd_##name, help, order);                                    \
  static int cmd_##name
