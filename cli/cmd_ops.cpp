// `moon ops`: the op registry as a table.
#include <cstdio>

#include "cli/commands.h"
#include "ops/registry.h"

namespace moon::cli {

MOON_COMMAND(ops, 90, "list the op registry: op, family, devices, backward")(const Args& args) {
  if (has_flag(args, "--help")) {
    std::printf("usage: moon ops\n  Lists every registered op with its family, arity, devices and whether it has a backward.\n");
    return 0;
  }
  std::printf("%-22s %-12s %5s  %-10s %s\n", "op", "family", "arity", "devices", "backward");
  int with_backward = 0;
  for (const OpInfo& op : op_registry()) {
    std::string devices;
    for (DeviceType d : op.devices) devices += std::string(devices.empty() ? "" : ",") + (d == DeviceType::CPU ? "cpu" : "cuda");
    std::printf("%-22s %-12s %5d  %-10s %s\n", op.name.c_str(), op.family.c_str(), op.arity, devices.c_str(),
                op.has_backward ? "yes" : "no");
    with_backward += op.has_backward;
  }
  std::printf("\n%zu ops, %d with backward\n", op_registry().size(), with_backward);
  return 0;
}

}  // namespace moon::cli
