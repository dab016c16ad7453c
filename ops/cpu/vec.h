// SIMD vector layer and vectorised float math for the hand-written CPU kernels.
//
// This header is included by multi-ISA kernel sources (cmake/MultiIsa.cmake): each such source is compiled
// three times with MOON_ISA_NS set to avx512, avx2 or generic and the matching -m flags, so everything here
// lives in namespace moon::cpu::MOON_ISA_NS and the three copies never clash at link time. The vector
// width follows the flags the copy is compiled with: 16 float lanes (AVX-512), 8 (AVX2) or 4 (SSE2).
//
// vfloat and vint are GCC vector-extension types, so kernels write plain arithmetic (a * b + c, a < b,
// v[i]) and only reach for the helpers below where an operation has no operator. Comparisons on vfloat
// give a vint mask with -1 (all ones) in true lanes and 0 in false lanes; vselect consumes such masks.
//
// The math functions (vexp, vlog, vtanh, vsigmoid, verf) use classic range reduction plus a minimax
// polynomial. Coefficients were fitted with a Remez exchange in 40-digit arithmetic and rounded to float;
// each comment gives the weighted max error of the polynomial alone. Measured accuracy is checked by
// ops/cpu/vec_check.cpp (tests/test_vec.cpp): max relative error vs double is 0.8e-7 (exp, log), 1.4e-7
// (tanh), 2e-7 (sigmoid) and 2.1e-7 (erf), i.e. within 1-2 float ulps.
//
// Note for kernel authors: the three copies of a kernel must not share out-of-line code compiled with
// different flags. Functions here are inline and namespaced, which is safe; inline functions or templates
// from other namespaces (std::) used in a kernel source may be emitted out of line (e.g. at -O0) with
// AVX-512 instructions and then picked by the linker for the generic copy too.
#pragma once

#ifndef MOON_ISA_NS
#error "ops/cpu/vec.h must be included from a multi-ISA source: define MOON_ISA_NS (avx512, avx2, generic)"
#endif

// GCC 12 reports false "uninitialized" warnings from inside its AVX-512 intrinsics (their _mm512_undefined_*
// placeholders); those warnings point into the intrinsic headers, so silence them there only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>
#include <cstring>

namespace moon::cpu::MOON_ISA_NS {

// ---------------------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------------------

#if defined(__AVX512F__)
inline constexpr int kLanes = 16;
#elif defined(__AVX2__)
inline constexpr int kLanes = 8;
#else
inline constexpr int kLanes = 4;
#endif

using vfloat = float __attribute__((vector_size(kLanes * sizeof(float))));
using vint = int32_t __attribute__((vector_size(kLanes * sizeof(int32_t))));
using vuint = uint32_t __attribute__((vector_size(kLanes * sizeof(uint32_t))));

// The matching intrinsic register types; GCC converts between same-sized vector types with a plain cast.
#if defined(__AVX512F__)
using native_ps = __m512;
using native_si = __m512i;
#elif defined(__AVX2__)
using native_ps = __m256;
using native_si = __m256i;
#else
using native_ps = __m128;
using native_si = __m128i;
#endif

// Reinterpret the bits of a vector as another lane type (no conversion of values).
inline vint as_vint(vfloat v) { return (vint)v; }
inline vuint as_vuint(vfloat v) { return (vuint)v; }
inline vfloat as_vfloat(vint v) { return (vfloat)v; }
inline vfloat as_vfloat(vuint v) { return (vfloat)v; }

// ---------------------------------------------------------------------------------------------------------
// Construction, loads and stores
// ---------------------------------------------------------------------------------------------------------

// All lanes set to x (a broadcast).
inline vfloat vset1(float x) {
#if defined(__AVX512F__)
  return (vfloat)_mm512_set1_ps(x);
#elif defined(__AVX2__)
  return (vfloat)_mm256_set1_ps(x);
#else
  return (vfloat)_mm_set1_ps(x);
#endif
}
// All lanes zero.
inline vfloat vzero() { return vfloat{}; }
// All lanes set to integer k.
inline vint vset1i(int32_t k) { return vint{} + k; }
// Lane indices 0, 1, ..., kLanes-1 (a constant after optimisation).
inline vint vlane_index() {
  vint r;
  for (int i = 0; i < kLanes; ++i) r[i] = i;
  return r;
}

// Unaligned load of kLanes floats (memcpy compiles to a single unaligned vector load).
inline vfloat vload(const float* p) {
  vfloat v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
// Unaligned store of kLanes floats.
inline void vstore(float* p, vfloat v) { std::memcpy(p, &v, sizeof v); }

// Loads the first n (0..kLanes) floats at p, zero in the other lanes; never touches memory past p + n.
// AVX-512 and AVX2 use masked loads (masked-off lanes cannot fault); SSE2 has none, so it copies lane by lane.
inline vfloat vload_partial(const float* p, int n) {
#if defined(__AVX512F__)
  return (vfloat)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
#elif defined(__AVX2__)
  return (vfloat)_mm256_maskload_ps(p, (__m256i)(vlane_index() < n));
#else
  vfloat v = vzero();
  for (int i = 0; i < n; ++i) v[i] = p[i];
  return v;
#endif
}

// Stores the first n (0..kLanes) lanes of v to p; memory from p + n on is left untouched.
inline void vstore_partial(float* p, vfloat v, int n) {
#if defined(__AVX512F__)
  _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), (__m512)v);
#elif defined(__AVX2__)
  _mm256_maskstore_ps(p, (__m256i)(vlane_index() < n), (__m256)v);
#else
  for (int i = 0; i < n; ++i) p[i] = v[i];
#endif
}

// ---------------------------------------------------------------------------------------------------------
// Lane-wise arithmetic that has no operator
// ---------------------------------------------------------------------------------------------------------

// a * b + c, rounded once (a real FMA instruction) on AVX2/AVX-512; SSE2 rounds the product and the sum.
inline vfloat vfma(vfloat a, vfloat b, vfloat c) {
#if defined(__AVX512F__)
  return (vfloat)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__)
  return (vfloat)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}

// Lane-wise max / min with x86 semantics (written as the ternary, which GCC compiles to maxps / minps): if
// either lane is NaN the lane of b is returned. So vmax(x, 0) turns NaN into 0 while vmax(vzero(), x) keeps
// the NaN of x; put the value to propagate second.
inline vfloat vmax(vfloat a, vfloat b) { return a > b ? a : b; }
inline vfloat vmin(vfloat a, vfloat b) { return a < b ? a : b; }

// |a|: clears the sign bit.
inline vfloat vabs(vfloat a) { return as_vfloat(as_vint(a) & 0x7fffffff); }

// Copies the sign of s onto a, which must be non-negative (a's own sign bit is ORed in, not cleared).
inline vfloat vcopysign(vfloat a, vfloat s) {
  return as_vfloat(as_vint(a) | (as_vint(s) & vset1i(int32_t(0x80000000u))));
}

// mask lane != 0 ? a : b. Masks come from comparisons (a < b gives -1 / 0 per lane).
inline vfloat vselect(vint mask, vfloat a, vfloat b) { return mask != 0 ? a : b; }

// Square root (correctly rounded, the hardware instruction).
inline vfloat vsqrt(vfloat a) {
#if defined(__AVX512F__)
  return (vfloat)_mm512_sqrt_ps((__m512)a);
#elif defined(__AVX2__)
  return (vfloat)_mm256_sqrt_ps((__m256)a);
#else
  return (vfloat)_mm_sqrt_ps((__m128)a);
#endif
}

// ---------------------------------------------------------------------------------------------------------
// Horizontal reductions: fold the halves of the register onto each other down to one lane.
// ---------------------------------------------------------------------------------------------------------

namespace detail {
inline float hsum4(__m128 v) {
  v = _mm_add_ps(v, _mm_movehl_ps(v, v));                       // lanes 0+2, 1+3
  v = _mm_add_ss(v, _mm_shuffle_ps(v, v, _MM_SHUFFLE(1, 1, 1, 1)));  // (0+2) + (1+3)
  return _mm_cvtss_f32(v);
}
inline float hmax4(__m128 v) {
  v = _mm_max_ps(v, _mm_movehl_ps(v, v));
  v = _mm_max_ss(v, _mm_shuffle_ps(v, v, _MM_SHUFFLE(1, 1, 1, 1)));
  return _mm_cvtss_f32(v);
}
}  // namespace detail

// Sum of all lanes (pairwise tree order, so not bit-identical to a sequential scalar sum).
inline float hsum(vfloat v) {
#if defined(__AVX512F__)
  __m256 h = _mm256_add_ps(_mm512_castps512_ps256((__m512)v),
                           _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd((__m512)v), 1)));
  return detail::hsum4(_mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
#elif defined(__AVX2__)
  __m256 h = (__m256)v;
  return detail::hsum4(_mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
#else
  return detail::hsum4((__m128)v);
#endif
}

// Max of all lanes (NaN lanes may or may not win, as with vmax).
inline float hmax(vfloat v) {
#if defined(__AVX512F__)
  __m256 h = _mm256_max_ps(_mm512_castps512_ps256((__m512)v),
                           _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd((__m512)v), 1)));
  return detail::hmax4(_mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
#elif defined(__AVX2__)
  __m256 h = (__m256)v;
  return detail::hmax4(_mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
#else
  return detail::hmax4((__m128)v);
#endif
}

// ---------------------------------------------------------------------------------------------------------
// bf16 <-> f32. A bf16 is the top 16 bits of a float32 (same sign and 8-bit exponent, 7 mantissa bits).
// ---------------------------------------------------------------------------------------------------------

// kLanes bf16 -> f32: widen each 16-bit value to 32 bits and shift it into the high half (exact).
inline vfloat vload_bf16(const uint16_t* p) {
#if defined(__AVX512F__)
  __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p));
  return (vfloat)_mm512_slli_epi32(w, 16);
#elif defined(__AVX2__)
  __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
  return (vfloat)_mm256_slli_epi32(w, 16);
#else
  // Interleaving zeros below each 16-bit value puts it straight into the high half of a 32-bit lane.
  return (vfloat)_mm_unpacklo_epi16(_mm_setzero_si128(), _mm_loadl_epi64((const __m128i*)p));
#endif
}

namespace detail {
// f32 bits -> bf16 bits (in the low 16 bits of each lane), rounding to nearest, ties to even: add 0x7fff
// plus the lowest kept bit, then truncate. NaN is handled apart (rounding could carry it into infinity):
// it keeps its top bits with the quiet bit set.
inline vuint bf16_round_bits(vfloat v) {
  vuint b = as_vuint(v);
  vuint rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
  vuint quiet_nan = (b >> 16) | 0x0040u;
  return (v != v) ? quiet_nan : rounded;
}
}  // namespace detail

// kLanes f32 -> bf16 with round-to-nearest-even (NaN stays NaN, overflow rounds to infinity).
inline void vstore_bf16(uint16_t* p, vfloat v) {
  vuint h = detail::bf16_round_bits(v);
#if defined(__AVX512F__)
  _mm256_storeu_si256((__m256i*)p, _mm512_cvtepi32_epi16((__m512i)h));  // vpmovdw: keep the low 16 bits
#elif defined(__AVX2__)
  // packus works within each 128-bit half: [h0..h3 h0..h3 | h4..h7 h4..h7]; gather qwords 0 and 2.
  __m256i packed = _mm256_packus_epi32((__m256i)h, (__m256i)h);
  _mm_storeu_si128((__m128i*)p, _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08)));
#else
  // SSE2 only has the signed pack: sign-extend the 16-bit values first so the saturation never triggers.
  __m128i s = _mm_srai_epi32(_mm_slli_epi32((__m128i)h, 16), 16);
  _mm_storel_epi64((__m128i*)p, _mm_packs_epi32(s, s));
#endif
}

// First n (0..kLanes) bf16 values -> f32, zero in the other lanes; reads nothing past p + n.
inline vfloat vload_bf16_partial(const uint16_t* p, int n) {
#if defined(__AVX512F__)
  __m256i h = _mm256_maskz_loadu_epi16((__mmask16)((1u << n) - 1u), p);
  return (vfloat)_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
#else
  uint16_t tmp[kLanes] = {};
  for (int i = 0; i < n; ++i) tmp[i] = p[i];
  return vload_bf16(tmp);
#endif
}

// Stores the first n (0..kLanes) lanes of v as bf16; writes nothing from p + n on.
inline void vstore_bf16_partial(uint16_t* p, vfloat v, int n) {
#if defined(__AVX512F__)
  __m256i h = _mm512_cvtepi32_epi16((__m512i)detail::bf16_round_bits(v));
  _mm256_mask_storeu_epi16(p, (__mmask16)((1u << n) - 1u), h);
#else
  uint16_t tmp[kLanes];
  vstore_bf16(tmp, v);
  for (int i = 0; i < n; ++i) p[i] = tmp[i];
#endif
}

// ---------------------------------------------------------------------------------------------------------
// Transcendental functions
// ---------------------------------------------------------------------------------------------------------

namespace detail {
// ln 2 split in two (Cody-Waite): kLn2Hi has only 16 significant bits, so n * kLn2Hi is exact for |n| < 256
// and x - n * ln2 keeps full precision.
inline constexpr float kLn2Hi = 0.693145751953125f;  // 0x3f317200
inline constexpr float kLn2Lo = 1.428606765330187e-6f;
inline constexpr float kLog2e = 1.44269502162933349609f;
// Adding 1.5 * 2^23 to a float |y| < 2^22 pushes its fraction out of the mantissa, so the sum is y rounded
// to the nearest integer (ties to even); the integer also sits in the low mantissa bits of the sum.
inline constexpr float kRoundMagic = 12582912.0f;
inline constexpr int32_t kRoundMagicBits = 0x4b400000;

// 2^k for integer lanes k in [-126, 127]: build the float's exponent field directly.
inline vfloat pow2i(vint k) { return as_vfloat((vuint)(k + 127) << 23); }

// Polynomial evaluation c[0] + c[1] x + ... by Horner's rule, one FMA per coefficient.
template <int N>
inline vfloat poly(vfloat x, const float (&c)[N]) {
  vfloat p = vset1(c[N - 1]);
#pragma GCC unroll 16
  for (int i = N - 2; i >= 0; --i) p = vfma(p, x, vset1(c[i]));
  return p;
}
}  // namespace detail

// e^x. Range reduction x = n ln2 + r with n = round(x / ln2), |r| <= ln2/2 (Cody-Waite two-part ln2);
// e^r = 1 + r + r^2 P(r) with P a degree-4 minimax fit (rel. error 3.3e-9); the result is scaled by 2^n
// as 2^(n/2) * 2^(n - n/2) so n = -126..128 never overflows the exponent field. Results below FLT_MIN
// (x < -87.33654) are exactly 0 and results above FLT_MAX (x > 88.72283) are +inf; NaN gives NaN.
inline vfloat vexp(vfloat x) {
  using namespace detail;
  static constexpr float kP[] = {4.999999404e-01f, 1.666651517e-01f, 4.166845605e-02f, 8.369418792e-03f,
                                 1.381314476e-03f};
  const vfloat t = vfma(x, vset1(kLog2e), vset1(kRoundMagic));  // kRoundMagic + round(x * log2 e)
  const vfloat n = t - kRoundMagic;
  vfloat r = vfma(n, vset1(-kLn2Hi), x);  // exact
  r = vfma(n, vset1(-kLn2Lo), r);
  const vfloat er = vfma(r * r, detail::poly(r, kP), r) + 1.0f;  // e^r
  // Out-of-range lanes compute garbage here; the selects below replace them.
  const vint ni = (vint)(as_vuint(t) - uint32_t(kRoundMagicBits));  // n as an integer
  const vint n1 = ni >> 1;
  vfloat y = er * pow2i(n1) * pow2i(ni - n1);
  y = vselect(x > 88.72283172607422f, vset1(__builtin_inff()), y);
  y = vselect(x < -87.33654022216797f, vzero(), y);
  return y;
}

// Natural log. x = 2^e m with m in [sqrt(1/2), sqrt(2)) (denormals are first scaled by 2^23), then
// log x = e ln2 + log(1 + f), f = m - 1 (exact), log(1 + f) = f - f^2/2 + f^3 P(f) with P a degree-7 minimax
// fit (rel. error 5.8e-9). log(0) = -inf, log(+inf) = +inf, log(negative) = NaN, NaN gives NaN.
inline vfloat vlog(vfloat x) {
  using namespace detail;
  static constexpr float kP[] = {3.333333135e-01f,  -2.500081956e-01f, 2.000122666e-01f, -1.662335694e-01f,
                                 1.420175880e-01f, -1.316018254e-01f, 1.276157349e-01f, -7.634492964e-02f};
  const vint denormal = x < 1.17549435e-38f;  // below FLT_MIN (also 0 and negatives, fixed up at the end)
  const vfloat xs = vselect(denormal, x * 8388608.0f, x);  // * 2^23
  const vint bits = as_vint(xs);
  vint e = ((bits >> 23) & 0xff) - 127 - (denormal & 23);
  vfloat m = as_vfloat((bits & 0x007fffff) | 0x3f800000);  // mantissa in [1, 2)
  const vint big = m > 1.41421356f;                        // move m to [sqrt(1/2), sqrt(2))
  m = vselect(big, m * 0.5f, m);
  e -= big;  // big is -1 where true
  const vfloat f = m - 1.0f;
  const vfloat f2 = f * f;
  const vfloat tail = vfma(f2 * f, detail::poly(f, kP), f2 * -0.5f);  // -f^2/2 + f^3 P(f)
  const vfloat ef = __builtin_convertvector(e, vfloat);
  // Add the small terms first, the exact e * kLn2Hi last.
  vfloat y = vfma(ef, vset1(kLn2Hi), vfma(ef, vset1(kLn2Lo), tail) + f);
  y = vselect(x == __builtin_inff(), x, y);
  y = vselect(x == 0.0f, vset1(-__builtin_inff()), y);
  y = vselect((x < 0.0f) | (x != x), vset1(__builtin_nanf("")), y);
  return y;
}

// tanh x. For |x| < 0.625: x + x^3 P(x^2), P a degree-4 minimax fit (rel. error 7.9e-9). Otherwise
// tanh|x| = 1 - 2 / (e^(2|x|) + 1) (no cancellation there since the result is > 0.55), with the sign of x
// copied back. Saturates to +-1 once e^(2|x|) overflows; NaN gives NaN.
inline vfloat vtanh(vfloat x) {
  static constexpr float kP[] = {-3.333329260e-01f, 1.333154142e-01f, -5.373862386e-02f, 2.061599679e-02f,
                                 -5.664775148e-03f};
  const vfloat ax = vabs(x);
  const vfloat s = x * x;
  const vfloat small = vfma(x * s, detail::poly(s, kP), x);
  const vfloat large = 1.0f - 2.0f / (vexp(ax + ax) + 1.0f);
  return vselect(ax < 0.625f, small, vcopysign(large, x));
}

// Logistic sigmoid 1 / (1 + e^-x). With e = e^-|x| (always in (0, 1], so no overflow): s = 1 / (1 + e) is
// sigmoid(|x|), and sigmoid(x) = e * s for x < 0 (= e^x / (1 + e^x), no cancellation). Exactly 0 below
// x = -87.3 where e^x underflows (the true value is then below FLT_MIN), rounds to 1 for large x; NaN gives NaN.
inline vfloat vsigmoid(vfloat x) {
  const vfloat e = vexp(-vabs(x));
  const vfloat s = 1.0f / (1.0f + e);
  return vselect(x >= 0.0f, s, e * s);
}

// erf x. For |x| < 1.25: x P(x^2), P a degree-6 minimax fit (rel. error 2.3e-8). Otherwise
// erf|x| = 1 - e^(-x^2) Q(|x|), where Q(x) = erfc(x) e^(x^2) is smooth and slowly varying, fitted by a
// degree-8 polynomial in |x| - 2.625 on [1.25, 4] (abs. error of erf 2e-8); beyond 4 erf rounds to 1.
// The sign of x is copied back; NaN gives NaN.
inline vfloat verf(vfloat x) {
  static constexpr float kP[] = {1.128379107e+00f, -3.761247993e-01f, 1.128219366e-01f, -2.680491284e-02f,
                                 5.109990947e-03f, -7.426071097e-04f, 6.202398799e-05f};
  static constexpr float kQ[] = {2.018879652e-01f, -6.846928596e-02f, 2.214640379e-02f,
                                 -6.879477296e-03f, 2.082226099e-03f,  -5.791864241e-04f,
                                 1.368056546e-04f, -5.754119775e-05f, 2.242316441e-05f};
  const vfloat ax = vabs(x);
  const vfloat s = x * x;
  const vfloat small = x * detail::poly(s, kP);
  const vfloat q = detail::poly(vmin(ax, vset1(4.0f)) - 2.625f, kQ);
  const vfloat large = vfma(-vexp(-s), q, vset1(1.0f));
  return vselect(ax < 1.25f, small, vcopysign(large, x));
}

}  // namespace moon::cpu::MOON_ISA_NS
