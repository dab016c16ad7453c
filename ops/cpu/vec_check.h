// Self-checks of the SIMD layer (ops/cpu/vec.h), one copy per instruction set.
//
// ops/cpu/vec_check.cpp is a multi-ISA source, so each function below exists as moon::cpu::avx512::,
// moon::cpu::avx2:: and moon::cpu::generic::. Only call a variant the CPU supports (see ops/cpu/isa.h).
// This header deliberately does not include vec.h, so ordinary (non-ISA) code such as tests can use it.
#pragma once

#include <cstdint>

namespace moon::cpu {

// Largest relative error of one vectorised function against the same function in double precision, and
// the input where it occurred.
struct FnError {
  double max_rel = 0;
  float worst_x = 0;
};

struct VecAccuracy {
  int lanes = 0;  // kLanes of this copy: 16, 8 or 4
  FnError exp, log, tanh, sigmoid, erf;
  bool partial_ok = false;  // vload_partial / vstore_partial (and bf16 variants) respect n, incl. page ends
  bool basic_ok = false;    // vfma, vmax, vmin, vabs, vselect, vsqrt, hsum, hmax agree with scalar code
  bool bf16_ok = false;     // bf16 widening is exact, narrowing is round-to-nearest-even, NaN stays NaN
};

enum class VecFn { Exp, Log, Tanh, Sigmoid, Erf };

#define MOON_VEC_CHECK_DECLS                                                                         \
  /* Sweeps every math function over dense grids (with ragged tails) and checks the helpers. */     \
  VecAccuracy vec_accuracy();                                                                        \
  /* out[i] = fn(in[i]) for i < n, through full vectors plus a vload_partial/vstore_partial tail. */ \
  void vec_eval(VecFn fn, const float* in, float* out, int n);                                       \
  /* f32 -> bf16 (vstore_bf16) and bf16 -> f32 (vload_bf16), n values, with partial tails. */        \
  void vec_to_bf16(const float* in, uint16_t* out, int n);                                           \
  void vec_from_bf16(const uint16_t* in, float* out, int n);

namespace avx512 { MOON_VEC_CHECK_DECLS }
namespace avx2 { MOON_VEC_CHECK_DECLS }
namespace generic { MOON_VEC_CHECK_DECLS }

#undef MOON_VEC_CHECK_DECLS

}  // namespace moon::cpu
