// Tests of the SIMD layer ops/cpu/vec.h through its per-ISA self-checks (ops/cpu/vec_check.h): accuracy of
// the math functions, partial loads/stores, reductions, bf16 conversion, and exact special values, for
// every instruction-set copy this CPU can run.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "ops/cpu/vec_check.h"

namespace {

using moon::cpu::VecAccuracy;
using moon::cpu::VecFn;

TEST_SUITE_BEGIN("kernels");

struct Variant {
  std::string name;
  bool supported;
  int lanes;
  VecAccuracy (*accuracy)();
  void (*eval)(VecFn, const float*, float*, int);
  void (*to_bf16)(const float*, uint16_t*, int);
  void (*from_bf16)(const uint16_t*, float*, int);
};

std::vector<Variant> variants() {
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  namespace c = moon::cpu;
  return {
      {"avx512", avx512, 16, c::avx512::vec_accuracy, c::avx512::vec_eval, c::avx512::vec_to_bf16,
       c::avx512::vec_from_bf16},
      {"avx2", avx2, 8, c::avx2::vec_accuracy, c::avx2::vec_eval, c::avx2::vec_to_bf16, c::avx2::vec_from_bf16},
      {"generic", true, 4, c::generic::vec_accuracy, c::generic::vec_eval, c::generic::vec_to_bf16,
       c::generic::vec_from_bf16},
  };
}

// fn(x) through one variant, via a 1-element call (a partial vector) and inside a full 40-element call.
float eval1(const Variant& v, VecFn fn, float x) {
  float out1 = 0;
  v.eval(fn, &x, &out1, 1);
  std::vector<float> in(40, 0.5f), out(40);
  in[17] = x;
  v.eval(fn, in.data(), out.data(), 40);
  const float out2 = out[17];
  CHECK(std::memcmp(&out1, &out2, 4) == 0);  // same bits whether it went through a tail or a full vector
  return out1;
}

uint16_t to_bf16(const Variant& v, float x) {
  uint16_t h = 0;
  v.to_bf16(&x, &h, 1);
  return h;
}

uint32_t bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

}  // namespace

TEST_CASE("vec: accuracy of the vectorised math functions") {
  for (const Variant& v : variants()) {
    if (!v.supported) continue;
    CAPTURE(v.name);
    const VecAccuracy a = v.accuracy();
    INFO(v.name, ": lanes ", a.lanes, "  max rel err exp ", a.exp.max_rel, " log ", a.log.max_rel, " tanh ",
            a.tanh.max_rel, " sigmoid ", a.sigmoid.max_rel, " erf ", a.erf.max_rel);
    CHECK(a.lanes == v.lanes);
    CHECK_MESSAGE(a.exp.max_rel <= 4e-7, "worst x = ", a.exp.worst_x);
    CHECK_MESSAGE(a.log.max_rel <= 4e-7, "worst x = ", a.log.worst_x);
    CHECK_MESSAGE(a.tanh.max_rel <= 4e-7, "worst x = ", a.tanh.worst_x);
    CHECK_MESSAGE(a.sigmoid.max_rel <= 4e-7, "worst x = ", a.sigmoid.worst_x);
    CHECK_MESSAGE(a.erf.max_rel <= 4e-7, "worst x = ", a.erf.worst_x);
    CHECK(a.basic_ok);
    CHECK(a.partial_ok);
    CHECK(a.bf16_ok);
  }
}

TEST_CASE("vec: special values of the math functions") {
  for (const Variant& v : variants()) {
    if (!v.supported) continue;
    CAPTURE(v.name);
    // exp: exact 0 on underflow (no denormals), inf on overflow, exact at 0.
    CHECK(bits(eval1(v, VecFn::Exp, -100.0f)) == 0u);
    CHECK(bits(eval1(v, VecFn::Exp, -87.34f)) == 0u);
    CHECK(eval1(v, VecFn::Exp, -87.33f) >= std::numeric_limits<float>::min());
    CHECK(eval1(v, VecFn::Exp, -kInf) == 0.0f);
    CHECK(eval1(v, VecFn::Exp, 100.0f) == kInf);
    CHECK(eval1(v, VecFn::Exp, 88.73f) == kInf);
    CHECK(eval1(v, VecFn::Exp, kInf) == kInf);
    CHECK(std::isfinite(eval1(v, VecFn::Exp, 88.72f)));
    CHECK(eval1(v, VecFn::Exp, 0.0f) == 1.0f);
    // log: -inf at 0 (either sign), NaN below 0, inf at inf, exact 0 at 1, denormals handled.
    CHECK(eval1(v, VecFn::Log, 0.0f) == -kInf);
    CHECK(eval1(v, VecFn::Log, -0.0f) == -kInf);
    CHECK(std::isnan(eval1(v, VecFn::Log, -1.0f)));
    CHECK(std::isnan(eval1(v, VecFn::Log, -kInf)));
    CHECK(eval1(v, VecFn::Log, kInf) == kInf);
    CHECK(eval1(v, VecFn::Log, 1.0f) == 0.0f);
    const float tiny = std::numeric_limits<float>::denorm_min();
    CHECK(eval1(v, VecFn::Log, tiny) == doctest::Approx(std::log(double(tiny))).epsilon(1e-6));
    // tanh, sigmoid, erf saturate cleanly.
    CHECK(eval1(v, VecFn::Tanh, 50.0f) == 1.0f);
    CHECK(eval1(v, VecFn::Tanh, -50.0f) == -1.0f);
    CHECK(eval1(v, VecFn::Tanh, kInf) == 1.0f);
    CHECK(eval1(v, VecFn::Tanh, 0.0f) == 0.0f);
    CHECK(eval1(v, VecFn::Sigmoid, 100.0f) == 1.0f);
    CHECK(eval1(v, VecFn::Sigmoid, -100.0f) == 0.0f);
    CHECK(eval1(v, VecFn::Sigmoid, -kInf) == 0.0f);
    CHECK(eval1(v, VecFn::Sigmoid, kInf) == 1.0f);
    CHECK(eval1(v, VecFn::Sigmoid, 0.0f) == 0.5f);
    CHECK(eval1(v, VecFn::Erf, 10.0f) == 1.0f);
    CHECK(eval1(v, VecFn::Erf, -10.0f) == -1.0f);
    CHECK(eval1(v, VecFn::Erf, kInf) == 1.0f);
    CHECK(eval1(v, VecFn::Erf, 0.0f) == 0.0f);
    // NaN in, NaN out, for every function.
    for (VecFn fn : {VecFn::Exp, VecFn::Log, VecFn::Tanh, VecFn::Sigmoid, VecFn::Erf}) {
      CAPTURE(int(fn));
      CHECK(std::isnan(eval1(v, fn, kNaN)));
      CHECK(std::isnan(eval1(v, fn, -kNaN)));
    }
  }
}

TEST_CASE("vec: bf16 conversion") {
  for (const Variant& v : variants()) {
    if (!v.supported) continue;
    CAPTURE(v.name);
    CHECK(to_bf16(v, 1.0f) == 0x3f80);
    CHECK(to_bf16(v, -2.0f) == 0xc000);
    CHECK(to_bf16(v, 1.00390625f) == 0x3f80);    // 1 + 2^-8: tie between 0x3f80 and 0x3f81 -> even
    CHECK(to_bf16(v, 1.01171875f) == 0x3f82);    // 1 + 3 * 2^-8: tie between 0x3f81 and 0x3f82 -> even
    CHECK(to_bf16(v, 1.0039064f) == 0x3f81);     // just above the tie rounds up
    CHECK(to_bf16(v, -1.00390625f) == 0xbf80);
    CHECK(to_bf16(v, kInf) == 0x7f80);
    CHECK(to_bf16(v, -kInf) == 0xff80);
    CHECK(to_bf16(v, std::numeric_limits<float>::max()) == 0x7f80);  // rounds up to inf
    const uint16_t nan = to_bf16(v, kNaN);
    CHECK((nan & 0x7f80) == 0x7f80);
    CHECK((nan & 0x007f) != 0);
    // A signalling NaN whose payload lies only in the dropped bits must not become infinity.
    float snan;
    const uint32_t snan_bits = 0x7f800001u;
    std::memcpy(&snan, &snan_bits, 4);
    CHECK((to_bf16(v, snan) & 0x007f) != 0);

    // Round trip of a ragged array: every value survives, tails included.
    std::vector<uint16_t> h(37), back(37, 0);
    for (int i = 0; i < 37; ++i) h[i] = uint16_t(0x3f00 + 97 * i);
    std::vector<float> f(37);
    v.from_bf16(h.data(), f.data(), 37);
    for (int i = 0; i < 37; ++i) CHECK(bits(f[i]) == uint32_t(h[i]) << 16);
    v.to_bf16(f.data(), back.data(), 37);
    CHECK(back == h);
  }
}

TEST_SUITE_END();
