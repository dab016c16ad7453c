#include "ops/cpu/isa.h"

#include <cstdlib>
#include <string>

#include "runtime/error.h"

namespace moon::cpu {

namespace {

bool supported(Isa isa) {
  switch (isa) {
    case Isa::AVX512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
    case Isa::AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::Generic: return true;
  }
  return false;
}

Isa detect() {
  if (const char* env = std::getenv("MOON_ISA")) {
    const std::string want = env;
    for (Isa isa : {Isa::AVX512, Isa::AVX2, Isa::Generic})
      if (want == isa_name(isa)) {
        MOON_CHECK(supported(isa), "MOON_ISA=", want, " but this CPU does not support it");
        return isa;
      }
    fail("MOON_ISA=", want, " is not one of avx512, avx2, generic");
  }
  if (supported(Isa::AVX512)) return Isa::AVX512;
  if (supported(Isa::AVX2)) return Isa::AVX2;
  return Isa::Generic;
}

Isa& current() {
  static Isa isa = detect();
  return isa;
}

}  // namespace

Isa cpu_isa() { return current(); }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::AVX512: return "avx512";
    case Isa::AVX2: return "avx2";
    case Isa::Generic: return "generic";
  }
  return "?";
}

void set_cpu_isa(Isa isa) {
  MOON_CHECK(supported(isa), "set_cpu_isa: this CPU does not support ", isa_name(isa));
  current() = isa;
}

}  // namespace moon::cpu
