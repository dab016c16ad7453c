// `moon selftest`: runs the op-test harness over the registry and prints one row per op.
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "ops/cpu/isa.h"
#include "ops/device_parity.h"
#include "ops/harness.h"
#include "runtime/device.h"

namespace moon::cli {

namespace {

// One row per op (or just `only`) with the worst nmse over the sizes of `check(op, n)`; returns the exit code.
template <class Check>
int parity_table(const std::string& only, const std::vector<int64_t>& sizes, Check&& check) {
  std::printf("%-26s %-7s %10s %10s  %s\n", "op", "result", "fwd nmse", "grad nmse", "case / first failure");
  int passed = 0, failed = 0;
  for (const OpInfo& op : op_registry()) {
    if (!only.empty() && op.name != only) continue;
    ParityResult worst;
    bool ok = true;
    for (int64_t n : sizes) {
      ParityResult r = check(op, n);
      if (r.skipped) {  // every op takes f32 and bf16: a refusal is a failure
        r.ok = false;
        r.message = r.message.empty() ? "skipped" : r.message;
      }
      if (!r.ok && ok) worst = r;
      ok = ok && r.ok;
      if (ok) {
        worst.desc = r.desc;
        worst.fwd_nmse = std::max(worst.fwd_nmse, r.fwd_nmse);
        worst.grad_nmse = std::max(worst.grad_nmse, r.grad_nmse);
      }
    }
    std::printf("%-26s %-7s %10.2e %10.2e  %s\n", op.name.c_str(), ok ? "ok" : "FAIL", worst.fwd_nmse, worst.grad_nmse,
                ok ? worst.desc.c_str() : (worst.desc + ": " + worst.message).c_str());
    (ok ? passed : failed)++;
  }
  std::printf("\n%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

// Every op (or `only`) on CUDA against the CPU.
int selftest_cuda(const std::string& only, const std::vector<int64_t>& sizes, uint64_t seed, DType dtype) {
  MOON_CHECK(cuda_available(), "selftest --device cuda: no CUDA device ",
#ifdef MOON_CUDA
             "on this machine"
#else
             "support in this build (configure with -DMOON_CUDA=ON)"
#endif
  );
  std::printf("moon selftest: %s against the CPU, %s, seed %llu\n\n", cuda_device_name(0).c_str(), dtype_name(dtype),
              static_cast<unsigned long long>(seed));
  ParityOptions opt;
  opt.dtype = dtype;
  return parity_table(only, sizes, [&](const OpInfo& op, int64_t n) {
    return check_op_parity(op, n, seed + static_cast<uint64_t>(n), cuda_device(), opt);
  });
}

// Every op (or `only`) on the CPU with bf16 inputs against the same values in f32.
int selftest_cpu_bf16(const std::string& only, const std::vector<int64_t>& sizes, uint64_t seed) {
  std::printf("moon selftest: bf16 on the CPU against the same values in f32, seed %llu\n\n",
              static_cast<unsigned long long>(seed));
  return parity_table(only, sizes, [&](const OpInfo& op, int64_t n) {
    return check_bf16_consistency(op, n, seed + static_cast<uint64_t>(n));
  });
}

}  // namespace

MOON_COMMAND(selftest, 80, "run every op's checks (forward, strided, gradient) and print a table")(const Args& args) {
  if (has_flag(args, "--help")) {
    std::printf(
        "usage: moon selftest [--op NAME] [--sizes 1,3,17] [--seed S] [--device cpu|cuda] [--dtype f32|bf16]\n"
        "  For every registered op (or just NAME): forward vs a double-precision reference with poisoned\n"
        "  outputs, the same on strided inputs, and gradients vs central finite differences.\n"
        "  --device cuda: instead, every op on the GPU against the CPU from the same random inputs, forward\n"
        "  and backward, by normalised mean squared error (docs/cuda.md); --dtype bf16 feeds bf16 inputs.\n"
        "  --dtype bf16 on the CPU: every op with bf16 inputs against the same values in f32 (bf16 outputs,\n"
        "  gradients in their input's dtype, nmse <= 1e-4).\n");
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
  const std::string device = flag_value(args, "--device", "cpu");
  MOON_CHECK(device == "cpu" || device == "cuda", "--device must be cpu or cuda, got '", device, "'");
  const DType dtype = dtype_from_name(flag_value(args, "--dtype", "f32"));
  MOON_CHECK(dtype == DType::F32 || dtype == DType::BF16, "--dtype must be f32 or bf16, got ", dtype_name(dtype));
  if (device == "cuda") return selftest_cuda(only, sizes, seed, dtype);
  if (dtype == DType::BF16) return selftest_cpu_bf16(only, sizes, seed);
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
  for (int i = 0; i < cuda_device_count(); ++i) std::printf("    cuda:%d  %s\n", i, cuda_device_name(i).c_str());
#else
  std::printf("  CUDA: not built (configure with -DMOON_CUDA=ON)\n");
#endif
  return 0;
}

}  // namespace moon::cli
