// moon: one binary for the engine's tools, training and inference. `moon help` lists the subcommands.
#include <cstdio>
#include <exception>
#include <string>

#include "cli/commands.h"
#include "runtime/error.h"

namespace {

using moon::cli::Command;

void usage() {
  std::printf("moon: multimodal product embeddings, from scratch\n\nusage: moon <command> [options]\n\ncommands:\n");
  for (const Command& c : moon::cli::commands()) std::printf("  %-11s %s\n", c.name, c.help);
  std::printf("\n`moon <command> --help` describes a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "help" || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    usage();
    return argc < 2 ? 1 : 0;
  }
  const std::string name = argv[1];
  moon::cli::Args args(argv + 2, argv + argc);
  for (const Command& c : moon::cli::commands()) {
    if (name != c.name) continue;
    try {
      return c.run(args);
    } catch (const moon::Error& e) {
      std::fprintf(stderr, "moon %s: error: %s\n", c.name, e.what());
      return 2;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "moon %s: unexpected error: %s\n", c.name, e.what());
      return 3;
    }
  }
  std::fprintf(stderr, "moon: unknown command '%s'\n\n", name.c_str());
  usage();
  return 1;
}
