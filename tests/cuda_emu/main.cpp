// moon_cuda_emu: runs the CUDA kernels of ops/cuda/ (converted to host C++ by scripts/cuda_emu.py) on the CPU
// under the fiber emulator of cuda_emu_shim.h and compares them with the CPU kernels. See README.md.
//   moon_cuda_emu [suite]      suites: emulator softmax norms ce rope adamw elementwise dropout extra
//                              sum max cumsum l2 copy gather rows topk bad attention matmul, and the bf16 suites
//                              bf16_elementwise bf16_norm bf16_attention bf16_index (default: all)
//   EMU_POLICY=0|1             scheduler: shuffled rounds / warp priority (default: random per block)
//   EMU_FILL=0xNN              shared-memory garbage byte (default 0xff: NaN)
//   EMU_CAP=n                  cap every blocks_for() grid at n blocks (exercises grid-stride loops)
//   EMU_SEED=n                 scheduler seed
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common.h"

int main(int argc, char** argv) {
  namespace emu = moon::cuda_emu::emu;
  const std::string only = argc > 1 ? argv[1] : "";
  if (const char* e = std::getenv("EMU_POLICY")) emu::policy = std::atoi(e);
  if (const char* e = std::getenv("EMU_FILL")) emu::fill_byte = int(std::strtol(e, nullptr, 0));
  if (const char* e = std::getenv("EMU_CAP")) emu::grid_cap = std::atoll(e);
  if (const char* e = std::getenv("EMU_SEED")) emu::st().seed = unsigned(std::strtoul(e, nullptr, 0));
  const auto t0 = std::chrono::steady_clock::now();
  emutest::lap();
  if (only.empty() || only == "emulator") emutest::test_emulator();
  emutest::test_norm_family(only);
  emutest::test_index_family(only);
  emutest::test_attention(only);
  emutest::test_matmul(only);
  for (auto* bf16_suite : {emutest::test_bf16_elementwise, emutest::test_bf16_norm, emutest::test_bf16_attention,
                           emutest::test_bf16_index})
    if (bf16_suite) bf16_suite(only);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (emutest::checks == 0) {
    std::printf("cuda_emu: FAILED: no checks ran (unknown suite '%s'?)\n", only.c_str());
    return 1;
  }
  std::printf("cuda_emu: %s: %d checks, %d failures (%ld launches, %ld blocks, %ld emulated threads, %.1f s)\n",
              emutest::failures ? "FAILED" : "PASSED", emutest::checks, emutest::failures, emu::launches, emu::blocks_run,
              emu::threads_run, s);
  return emutest::failures ? 1 : 0;
}
