// `moon selftest`: runs the op-test harness over the registry and prints one row per op.
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "ops/cpu/isa.h"
#include "ops/harness.h"
#include "runtime/device.h"

namespace moon::cli {

MOON_COMMAND(selftest, 80, "run every op's checks (forward, strided, gradient) and print a table")(const Args& args) {
  if (has_flag(args, "--help")) {
    std::printf(
        "usage: moon selftest [--op NAME] [--sizes 1,3,17] [--seed S]\n"
        "  For every registered op (or just NAME): forward vs a double-precision reference with poisoned\n"
        "  outputs, the same on strided inputs, and gradients vs central finite differences.\n");
    return 0;
  }
  const std::string only = flag_value(args, "--op", "");
  const uint64_t seed = unsigned_flag(args, "--seed", 1, 0, UINT64_MAX);
  std::vector<int64_t> sizes;
  {
    const std::string s = flag_value(args, "--sizes", "1,3,17");
    size_t pos = 0;
    while (pos < s.size()) {
      const size_t comma = s.find(',', pos);
      sizes.push_back(std::stoll(s.substr(pos, comma - pos)));
      pos = comma == std::string::npos ? s.size() : comma + 1;
    }
  }
  std::printf("moon selftest: CPU kernels use %s\n\n", cpu::isa_name(cpu::cpu_isa()));
  std::printf("%-22s %-6s %10s %10s %10s  %s\n", "op", "result", "fwd err", "strided", "grad err", "case / first failure");
  int passed = 0, failed = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (const OpInfo& op : op_registry()) {
    if (!only.empty() && op.name != only) continue;
    OpCheckResult worst;
    bool ok = true;
    for (int64_t n : sizes) {
      OpCheckResult r = check_op(op, n, seed);
      if (!r.ok && ok) worst = r;
      ok = ok && r.ok;
      if (ok) {
        worst.desc = r.desc;
        worst.fwd_err = std::max(worst.fwd_err, r.fwd_err);
        worst.strided_err = std::max(worst.strided_err, r.strided_err);
        worst.grad_err = std::max(worst.grad_err, r.grad_err);
        worst.grad_checked = worst.grad_checked || r.grad_checked;
      }
    }
    char grad[32];
    if (worst.grad_checked) std::snprintf(grad, sizeof grad, "%10.2e", worst.grad_err);
    else std::snprintf(grad, sizeof grad, "%10s", "-");
    std::printf("%-22s %-6s %10.2e %10.2e %s  %s\n", op.name.c_str(), ok ? "ok" : "FAIL", worst.fwd_err,
                worst.strided_err, grad, ok ? worst.desc.c_str() : (worst.desc + ": " + worst.message).c_str());
    (ok ? passed : failed)++;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\n%d passed, %d failed (%.1f s)\n", passed, failed, secs);
  return failed == 0 ? 0 : 1;
}

MOON_COMMAND(version, 99, "print the build configuration (ISA, CUDA, oneDNN)")(const Args&) {
  std::printf("moon 0.1\n  CPU ISA: %s\n", cpu::isa_name(cpu::cpu_isa()));
#ifdef MOON_CUDA
  std::printf("  CUDA: built in, %d device(s)\n", cuda_device_count());
#else
  std::printf("  CUDA: not built (configure with -DMOON_CUDA=ON)\n");
#endif
  return 0;
}

}  // namespace moon::cli
