// CPU kernels of the elementwise ops, vectorised with ops/cpu/vec.h (see elementwise_kernels.h).
//
// Every kernel walks its elements kLanes at a time and finishes with one partial vector, so the tail goes
// through the same math as the body (results do not depend on where an element falls). Operands are read
// through a step kind fixed at compile time: contiguous (vector load), broadcast (one value in every lane)
// or strided (lanes gathered one by one).

#include "ops/cpu/elementwise_kernels.h"

#include <cstdint>

#include "ops/cpu/vec.h"

#ifndef MOON_ISA_NS
#error "elementwise_kernels.cpp is compiled once per instruction set: see cmake/MultiIsa.cmake"
#endif

namespace moon::cpu::MOON_ISA_NS {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;   // sqrt(2 / pi)
constexpr float kInvSqrt2 = 0.7071067811865476f;      // 1 / sqrt(2)
constexpr float kInvSqrt2Pi = 0.3989422804014327f;    // 1 / sqrt(2 pi)
constexpr float kGeluCubic = 0.044715f;

// ---------------------------------------------------------------------------------------------------------
// Operand access by step kind

enum Step { kContig, kBcast, kStrided };

Step step_kind(int64_t s) { return s == 1 ? kContig : s == 0 ? kBcast : kStrided; }

// Lanes i .. i+kLanes-1 of p[k * s].
template <int S>
inline vfloat ld(const float* p, int64_t i, int64_t s) {
  if constexpr (S == kContig) {
    return vload(p + i);
  } else if constexpr (S == kBcast) {
    return vset1(*p);
  } else {
    vfloat v;
    for (int j = 0; j < kLanes; ++j) v[j] = p[(i + j) * s];
    return v;
  }
}

// The first cnt (< kLanes) of those lanes, zero in the others; reads nothing past them.
template <int S>
inline vfloat ld_part(const float* p, int64_t i, int64_t s, int cnt) {
  if constexpr (S == kContig) {
    return vload_partial(p + i, cnt);
  } else if constexpr (S == kBcast) {
    return vset1(*p);
  } else {
    vfloat v = vzero();
    for (int j = 0; j < cnt; ++j) v[j] = p[(i + j) * s];
    return v;
  }
}

// y[i] = f(x[i]), contiguous.
template <class F>
inline void map1(const float* x, float* y, int64_t n, F f) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) vstore(y + i, f(vload(x + i)));
  if (i < n) {
    const int r = static_cast<int>(n - i);
    vstore_partial(y + i, f(vload_partial(x + i, r)), r);
  }
}

// y[i] = f(x[i], g[i]), contiguous.
template <class F>
inline void map2(const float* x, const float* g, float* y, int64_t n, F f) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) vstore(y + i, f(vload(x + i), vload(g + i)));
  if (i < n) {
    const int r = static_cast<int>(n - i);
    vstore_partial(y + i, f(vload_partial(x + i, r), vload_partial(g + i, r)), r);
  }
}

// Calls body(va, vb, i, cnt) for each vector of lanes of a[k*sa], b[k*sb] (cnt = kLanes but for the tail).
template <int SA, int SB, class Body>
inline void zip2(const float* a, int64_t sa, const float* b, int64_t sb, int64_t n, Body body) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) body(ld<SA>(a, i, sa), ld<SB>(b, i, sb), i, kLanes);
  if (i < n) {
    const int r = static_cast<int>(n - i);
    body(ld_part<SA>(a, i, sa, r), ld_part<SB>(b, i, sb, r), i, r);
  }
}

// zip2 with the step kinds chosen at run time (nine instantiations).
template <class Body>
inline void zip2_any(const float* a, int64_t sa, const float* b, int64_t sb, int64_t n, Body body) {
  const Step ka = step_kind(sa), kb = step_kind(sb);
#define MOON_ZIP_CASE(A, B) \
  if (ka == A && kb == B) return zip2<A, B>(a, sa, b, sb, n, body);
  MOON_ZIP_CASE(kContig, kContig)
  MOON_ZIP_CASE(kContig, kBcast)
  MOON_ZIP_CASE(kBcast, kContig)
  MOON_ZIP_CASE(kContig, kStrided)
  MOON_ZIP_CASE(kStrided, kContig)
  MOON_ZIP_CASE(kBcast, kBcast)
  MOON_ZIP_CASE(kBcast, kStrided)
  MOON_ZIP_CASE(kStrided, kBcast)
#undef MOON_ZIP_CASE
  return zip2<kStrided, kStrided>(a, sa, b, sb, n, body);
}

// Stores the first cnt lanes of v at p (contiguous).
inline void st(float* p, vfloat v, int cnt) {
  if (cnt == kLanes)
    vstore(p, v);
  else
    vstore_partial(p, v, cnt);
}

// ---------------------------------------------------------------------------------------------------------
// Scalar-parameter math

inline bool is_integer(float p) { return __builtin_floorf(p) == p; }
inline bool is_odd_integer(float p) { return is_integer(p) && __builtin_fmodf(p, 2.0f) != 0.0f; }

// x^p like std::pow for finite p: exact shortcuts for common exponents, else e^(p ln|x|) with the sign of
// a negative base for an integer p (NaN for a non-integer p), and 0^p = 0 / inf from ln 0 = -inf.
inline vfloat vpow(vfloat x, float p) {
  if (p == 0.0f) return vset1(1.0f);
  if (p == 1.0f) return x;
  if (p == 2.0f) return x * x;
  if (p == 3.0f) return x * x * x;
  if (p == -1.0f) return 1.0f / x;
  if (p == 0.5f) return vsqrt(x);
  if (p == -0.5f) return 1.0f / vsqrt(x);
  const vfloat r = vexp(vset1(p) * vlog(vabs(x)));
  if (is_odd_integer(p)) return vselect(x < 0.0f, -r, r);
  if (is_integer(p)) return r;
  return vselect(x < 0.0f, vset1(__builtin_nanf("")), r);
}

// ---------------------------------------------------------------------------------------------------------
// Unary forward and backward, one vector at a time

// f(x) for the op.
template <UnaryOp Op>
inline vfloat unary_f(vfloat x, float p0, float p1) {
  if constexpr (Op == UnaryOp::Neg) return -x;
  if constexpr (Op == UnaryOp::Exp) return vexp(x);
  if constexpr (Op == UnaryOp::Log) return vlog(x);
  if constexpr (Op == UnaryOp::Sqrt) return vsqrt(x);
  if constexpr (Op == UnaryOp::Rsqrt) return 1.0f / vsqrt(x);
  if constexpr (Op == UnaryOp::Abs) return vabs(x);
  if constexpr (Op == UnaryOp::Square) return x * x;
  if constexpr (Op == UnaryOp::Tanh) return vtanh(x);
  if constexpr (Op == UnaryOp::Sigmoid) return vsigmoid(x);
  if constexpr (Op == UnaryOp::Relu) return vmax(vzero(), x);  // NaN stays NaN
  if constexpr (Op == UnaryOp::GeluErf) return 0.5f * x * (1.0f + verf(x * kInvSqrt2));
  if constexpr (Op == UnaryOp::GeluTanh) {
    const vfloat u = kSqrt2OverPi * vfma(kGeluCubic * x * x, x, x);
    return 0.5f * x * (1.0f + vtanh(u));
  }
  if constexpr (Op == UnaryOp::Silu) return x * vsigmoid(x);
  if constexpr (Op == UnaryOp::Clamp) return vmin(vset1(p1), vmax(vset1(p0), x));
  if constexpr (Op == UnaryOp::AddScalar) return x + p0;
  if constexpr (Op == UnaryOp::Scale) return x * p0;
  if constexpr (Op == UnaryOp::Pow) return vpow(x, p0);
  return x;
}

// g * f'(.) for the op; `v` is x or the forward output y, as unary_backward_needs says.
template <UnaryOp Op>
inline vfloat unary_df(vfloat v, vfloat g, float p0, float p1) {
  if constexpr (Op == UnaryOp::Neg) return -g;
  if constexpr (Op == UnaryOp::Exp) return g * v;                                  // v = y
  if constexpr (Op == UnaryOp::Log) return g / v;                                  // v = x
  if constexpr (Op == UnaryOp::Sqrt) return 0.5f * g / v;                          // v = y
  if constexpr (Op == UnaryOp::Rsqrt) return -0.5f * g * v * v * v;                // v = y
  if constexpr (Op == UnaryOp::Abs) {                                              // sign(x), 0 at 0
    const vfloat sg = vselect(v > 0.0f, vset1(1.0f), vselect(v < 0.0f, vset1(-1.0f), vzero()));
    return g * sg;
  }
  if constexpr (Op == UnaryOp::Square) return 2.0f * g * v;
  if constexpr (Op == UnaryOp::Tanh) return g * (1.0f - v * v);                    // v = y
  if constexpr (Op == UnaryOp::Sigmoid) return g * v * (1.0f - v);                 // v = y
  if constexpr (Op == UnaryOp::Relu) return vselect(v > 0.0f, g, vzero());
  if constexpr (Op == UnaryOp::GeluErf) {  // Phi(x) + x phi(x)
    const vfloat cdf = 0.5f * (1.0f + verf(v * kInvSqrt2));
    const vfloat pdf = kInvSqrt2Pi * vexp(-0.5f * v * v);
    return g * vfma(v, pdf, cdf);
  }
  if constexpr (Op == UnaryOp::GeluTanh) {  // 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 c x^2)
    const vfloat x2 = v * v;
    const vfloat t = vtanh(kSqrt2OverPi * vfma(kGeluCubic * x2, v, v));
    const vfloat du = kSqrt2OverPi * vfma(vset1(3.0f * kGeluCubic), x2, vset1(1.0f));
    return g * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
  }
  if constexpr (Op == UnaryOp::Silu) {  // s (1 + x (1 - s))
    const vfloat s = vsigmoid(v);
    return g * s * vfma(v, 1.0f - s, vset1(1.0f));
  }
  if constexpr (Op == UnaryOp::Clamp) return vselect((v >= p0) & (v <= p1), g, vzero());
  if constexpr (Op == UnaryOp::AddScalar) return g;
  if constexpr (Op == UnaryOp::Scale) return g * p0;
  if constexpr (Op == UnaryOp::Pow) return g * p0 * vpow(v, p0 - 1.0f);
  return g;
}

template <UnaryOp Op>
void unary_forward_t(float p0, float p1, const float* x, float* y, int64_t n) {
  map1(x, y, n, [p0, p1](vfloat v) { return unary_f<Op>(v, p0, p1); });
}

template <UnaryOp Op>
void unary_backward_t(float p0, float p1, const float* v, const float* g, float* dx, int64_t n) {
  if constexpr (Op == UnaryOp::Neg || Op == UnaryOp::AddScalar || Op == UnaryOp::Scale) {
    map1(g, dx, n, [p0, p1](vfloat gv) { return unary_df<Op>(gv, gv, p0, p1); });
  } else {
    map2(v, g, dx, n, [p0, p1](vfloat vv, vfloat gv) { return unary_df<Op>(vv, gv, p0, p1); });
  }
}

// Calls fn.template operator()<Op>() for the run-time op.
template <class Fn>
inline void with_unary_op(UnaryOp op, Fn&& fn) {
  switch (op) {
    case UnaryOp::Neg: return fn.template operator()<UnaryOp::Neg>();
    case UnaryOp::Exp: return fn.template operator()<UnaryOp::Exp>();
    case UnaryOp::Log: return fn.template operator()<UnaryOp::Log>();
    case UnaryOp::Sqrt: return fn.template operator()<UnaryOp::Sqrt>();
    case UnaryOp::Rsqrt: return fn.template operator()<UnaryOp::Rsqrt>();
    case UnaryOp::Abs: return fn.template operator()<UnaryOp::Abs>();
    case UnaryOp::Square: return fn.template operator()<UnaryOp::Square>();
    case UnaryOp::Tanh: return fn.template operator()<UnaryOp::Tanh>();
    case UnaryOp::Sigmoid: return fn.template operator()<UnaryOp::Sigmoid>();
    case UnaryOp::Relu: return fn.template operator()<UnaryOp::Relu>();
    case UnaryOp::GeluErf: return fn.template operator()<UnaryOp::GeluErf>();
    case UnaryOp::GeluTanh: return fn.template operator()<UnaryOp::GeluTanh>();
    case UnaryOp::Silu: return fn.template operator()<UnaryOp::Silu>();
    case UnaryOp::Clamp: return fn.template operator()<UnaryOp::Clamp>();
    case UnaryOp::AddScalar: return fn.template operator()<UnaryOp::AddScalar>();
    case UnaryOp::Scale: return fn.template operator()<UnaryOp::Scale>();
    case UnaryOp::Pow: return fn.template operator()<UnaryOp::Pow>();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Binary maps

template <BinaryOp Op>
inline vfloat binary_f(vfloat a, vfloat b) {
  if constexpr (Op == BinaryOp::Add) return a + b;
  if constexpr (Op == BinaryOp::Sub) return a - b;
  if constexpr (Op == BinaryOp::Mul) return a * b;
  if constexpr (Op == BinaryOp::Div) return a / b;
  if constexpr (Op == BinaryOp::Max) return vselect(a != a, a, vmax(a, b));  // NaN in either propagates
  if constexpr (Op == BinaryOp::Min) return vselect(a != a, a, vmin(a, b));
  return a;
}

template <BinaryOp Op>
void binary_row_t(const float* a, int64_t sa, const float* b, int64_t sb, float* out, int64_t n) {
  zip2_any(a, sa, b, sb, n, [out](vfloat x, vfloat y, int64_t i, int cnt) { st(out + i, binary_f<Op>(x, y), cnt); });
}

// (d/da, d/db) * g of the op at (a, b).
template <BinaryOp Op>
void binary_backward_t(const float* g, const float* a, int64_t sa, const float* b, int64_t sb, float* ga, float* gb,
                       int64_t n) {
  zip2_any(a, sa, b, sb, n, [=](vfloat x, vfloat y, int64_t i, int cnt) {
    const vfloat gv = cnt == kLanes ? vload(g + i) : vload_partial(g + i, cnt);
    vfloat da, db;
    if constexpr (Op == BinaryOp::Mul) {
      da = gv * y;
      db = gv * x;
    } else if constexpr (Op == BinaryOp::Div) {
      da = gv / y;            // 1 / b
      db = -(da * x) / y;     // -a / b^2
    } else {
      // Max: g goes to the larger operand (Min: the smaller), half to each on a tie.
      const vint a_wins = Op == BinaryOp::Max ? (x > y) : (x < y);
      const vint tie = x == y;
      da = vselect(a_wins, gv, vselect(tie, 0.5f * gv, vzero()));
      db = gv - da;
    }
    if (ga) st(ga + i, da, cnt);
    if (gb) st(gb + i, db, cnt);
  });
}

// Calls fn.template operator()<Op>() for the run-time op.
template <class Fn>
inline void with_binary_op(BinaryOp op, Fn&& fn) {
  switch (op) {
    case BinaryOp::Add: return fn.template operator()<BinaryOp::Add>();
    case BinaryOp::Sub: return fn.template operator()<BinaryOp::Sub>();
    case BinaryOp::Mul: return fn.template operator()<BinaryOp::Mul>();
    case BinaryOp::Div: return fn.template operator()<BinaryOp::Div>();
    case BinaryOp::Max: return fn.template operator()<BinaryOp::Max>();
    case BinaryOp::Min: return fn.template operator()<BinaryOp::Min>();
  }
}

// Stores the first cnt lanes of a comparison mask as u8 0/1.
inline void st_mask(uint8_t* p, vint m, int cnt) {
  for (int j = 0; j < cnt; ++j) p[j] = static_cast<uint8_t>(m[j] & 1);
}

// Lanes i .. i+cnt-1 of the u8 condition c[k * s] as a lane mask (nonzero = true).
inline vint ld_cond(const uint8_t* c, int64_t i, int64_t s, int cnt) {
  vint v = vset1i(0);
  if (s == 1) {
    for (int j = 0; j < cnt; ++j) v[j] = c[i + j];
  } else {
    for (int j = 0; j < cnt; ++j) v[j] = c[(i + j) * s];
  }
  return v != 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Entry points

void unary_forward(UnaryOp op, float p0, float p1, const float* x, float* y, int64_t n) {
  with_unary_op(op, [&]<UnaryOp Op>() { unary_forward_t<Op>(p0, p1, x, y, n); });
}

void unary_backward(UnaryOp op, float p0, float p1, const float* x, const float* y, const float* g, float* dx,
                    int64_t n) {
  const float* v = y ? y : x;  // the op layer passes only what unary_backward_needs(op) names
  with_unary_op(op, [&]<UnaryOp Op>() { unary_backward_t<Op>(p0, p1, v, g, dx, n); });
}

void binary_row(BinaryOp op, const float* a, int64_t sa, const float* b, int64_t sb, float* out, int64_t n) {
  with_binary_op(op, [&]<BinaryOp Op>() { binary_row_t<Op>(a, sa, b, sb, out, n); });
}

void binary_backward_row(BinaryOp op, const float* g, const float* a, int64_t sa, const float* b, int64_t sb,
                         float* ga, float* gb, int64_t n) {
  with_binary_op(op, [&]<BinaryOp Op>() {
    if constexpr (Op == BinaryOp::Add || Op == BinaryOp::Sub) {
      // Not used by the op layer (these backwards are g and -g), but correct all the same.
      for (int64_t i = 0; i < n; ++i) {
        if (ga) ga[i] = g[i];
        if (gb) gb[i] = Op == BinaryOp::Add ? g[i] : -g[i];
      }
    } else {
      binary_backward_t<Op>(g, a, sa, b, sb, ga, gb, n);
    }
  });
}

void compare_row(CompareOp op, const float* a, int64_t sa, const float* b, int64_t sb, uint8_t* out, int64_t n) {
  switch (op) {
    case CompareOp::Eq:
      return zip2_any(a, sa, b, sb, n, [out](vfloat x, vfloat y, int64_t i, int cnt) { st_mask(out + i, x == y, cnt); });
    case CompareOp::Gt:
      return zip2_any(a, sa, b, sb, n, [out](vfloat x, vfloat y, int64_t i, int cnt) { st_mask(out + i, x > y, cnt); });
    case CompareOp::Lt:
      return zip2_any(a, sa, b, sb, n, [out](vfloat x, vfloat y, int64_t i, int cnt) { st_mask(out + i, x < y, cnt); });
  }
}

void where_row(const uint8_t* c, int64_t sc, const float* a, int64_t sa, const float* b, int64_t sb, float* out,
               int64_t n) {
  if (sc == 0) {  // one condition for the whole row: a copy of a or of b
    const float* src = *c ? a : b;
    const int64_t s = *c ? sa : sb;
    return zip2_any(src, s, src, s, n, [out](vfloat x, vfloat, int64_t i, int cnt) { st(out + i, x, cnt); });
  }
  zip2_any(a, sa, b, sb, n, [=](vfloat x, vfloat y, int64_t i, int cnt) {
    st(out + i, vselect(ld_cond(c, i, sc, cnt), x, y), cnt);
  });
}

void where_backward_row(const uint8_t* c, int64_t sc, const float* g, float* ga, float* gb, int64_t n) {
  int64_t i = 0;
  for (; i < n; i += kLanes) {
    const int cnt = n - i < kLanes ? static_cast<int>(n - i) : kLanes;
    const vfloat gv = cnt == kLanes ? vload(g + i) : vload_partial(g + i, cnt);
    const vint m = ld_cond(c, i, sc, cnt);
    if (ga) st(ga + i, vselect(m, gv, vzero()), cnt);
    if (gb) st(gb + i, vselect(m, vzero(), gv), cnt);
  }
}

void axpy_row(float* y, int64_t sy, const float* x, int64_t sx, float alpha, int64_t n) {
  if (sy == 1) {
    const vfloat va = vset1(alpha);
    return zip2_any(y, 1, x, sx, n, [=](vfloat yv, vfloat xv, int64_t i, int cnt) { st(y + i, vfma(va, xv, yv), cnt); });
  }
  for (int64_t i = 0; i < n; ++i) y[i * sy] += alpha * x[i * sx];
}

void scale_row(float* y, int64_t sy, float s, int64_t n) {
  if (sy == 1) return map1(y, y, n, [s](vfloat v) { return v * s; });
  for (int64_t i = 0; i < n; ++i) y[i * sy] *= s;
}

}  // namespace moon::cpu::MOON_ISA_NS
