// The moon subcommands: one file each in cli/, dispatched by cli/main.cpp.
#pragma once

#include <string>
#include <vector>

namespace moon::cli {

using Args = std::vector<std::string>;  // arguments after the subcommand name

int cmd_ops(const Args& args);       // prints the op registry
int cmd_selftest(const Args& args);  // runs every op's checks and prints a table
int cmd_version(const Args& args);   // build information

// Small helpers for flags: --name value and --flag.
bool has_flag(const Args& args, const std::string& flag);
std::string flag_value(const Args& args, const std::string& flag, const std::string& fallback);

}  // namespace moon::cli
