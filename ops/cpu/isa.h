// Run-time choice of the instruction set for hand-vectorised CPU kernels.
//
// Kernel sources listed with moon_add_isa_sources() (cmake/MultiIsa.cmake) are compiled three times, into
// namespaces moon::cpu::avx512, moon::cpu::avx2 and moon::cpu::generic. cpu_isa() says which copy this
// machine should run: the best one the CPU supports, or the one named by the environment variable
// MOON_ISA (avx512, avx2 or generic), which tests use to exercise every path on one machine.
#pragma once

namespace moon::cpu {

enum class Isa { Generic, AVX2, AVX512 };

Isa cpu_isa();                 // cached after the first call
const char* isa_name(Isa isa); // "avx512", "avx2", "generic"
void set_cpu_isa(Isa isa);     // override (tests); throws moon::Error if the CPU lacks it

// Picks one of three per-ISA values: ISA_SELECT(fn) expands to the avx512, avx2 or generic variant.
#define MOON_ISA_SELECT(qualified_name)                                              \
  (::moon::cpu::cpu_isa() == ::moon::cpu::Isa::AVX512 ? ::moon::cpu::avx512::qualified_name \
   : ::moon::cpu::cpu_isa() == ::moon::cpu::Isa::AVX2 ? ::moon::cpu::avx2::qualified_name   \
                                                       : ::moon::cpu::generic::qualified_name)

}  // namespace moon::cpu
