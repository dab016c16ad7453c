// CUDA kernels of the elementwise op family: unary maps and their fused backward, in-place scale, broadcasting
// binary maps and their backward, comparisons, in-place axpy, where and its backward (declarations and
// contracts in ops/cuda/elementwise_cuda.h). The math follows ops/cpu/elementwise_kernels.cpp formula by
// formula (same derivative conventions, kinks, ties and NaN handling); libdevice's accurate expf / logf /
// tanhf / erff / powf stand in for the CPU's polynomial fits.
//
// Storage: every floating tensor of one call is f32 or bf16 (T = float or __nv_bfloat16, picked with
// visit_float). Kernels load to f32, compute exactly what the f32 kernel computes, and round once on store
// (runtime/cuda/kernel_util.cuh), so a bf16 result is the f32 kernel's result on the widened inputs rounded
// to bf16, bit for bit, and agrees with the CPU, which runs bf16 tensors through its f32 kernels the same way.
// where and its backward select widened values and round them back: exact, except that a signalling bf16
// NaN comes back quiet (as on the CPU).
//
// Every op has two paths, both grid-stride loops with 64-bit indices:
//   * flat: every operand is contiguous with the output's shape or a single broadcast value (stride 0).
//     When all contiguous pointers are aligned for a 4-element vector (kVecBytes<T>: a float4 for f32, one
//     8-byte access of 4 bf16) the body moves groups of 4 (one broadcast value is loaded once and
//     splatted), and a scalar loop finishes the last n % 4 elements;
//   * strided: operands walked through cuda::merge_dims indexers (outputs are contiguous, so the output
//     index is the linear one; the in-place ops write through their destination's own indexer).
// No reductions and no atomics: every output element is written by exactly one thread, so results are
// deterministic.
#include <type_traits>

#include "ops/cuda/elementwise_cuda.h"
#include "runtime/cuda/kernel_util.cuh"

namespace moon::cuda {

using cpu::BinaryOp;
using cpu::CompareOp;
using cpu::UnaryOp;

namespace {

constexpr int kThreads = 256;

// ---------------------------------------------------------------------------------------------------------
// Host helpers

// How an (expanded) operand can be walked as one flat run: 1 = dense row-major, 0 = one broadcast value,
// -1 = neither (strided path). Same rule as elementwise::flat_step.
int flat_step(const Tensor& t) {
  if (t.is_contiguous()) return 1;
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.size(d) != 1 && t.stride(d) != 0) return -1;
  return 0;
}

// A flat operand may take the vector path: broadcast (no alignment needed) or aligned for `bytes`.
bool vec_ok(const void* p, int64_t step, int bytes) { return step == 0 || aligned(p, bytes); }

// Threads needed for a flat kernel doing n4 groups of 4 and then elements 4*n4 .. n-1 one by one.
int64_t flat_work(int64_t n, int64_t n4) { return n4 + (n - 4 * n4); }

// Throws unless the defined tensor t has ref's dtype (the op layer guarantees it; a kernel reading the
// wrong storage type would return garbage, so say so instead).
void check_dtype(const char* op, const Tensor& ref, const Tensor& t) {
  MOON_CHECK(!t.defined() || t.dtype() == ref.dtype(), op, ": ", t.desc(), " must have the dtype of ", ref.desc());
}

// The device pointer of a possibly undefined tensor (null when undefined).
template <class T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? ptr<T>(t) : nullptr;
}

// ---------------------------------------------------------------------------------------------------------
// Device helpers

__device__ __forceinline__ int64_t thread_index() { return blockIdx.x * int64_t{blockDim.x} + threadIdx.x; }
__device__ __forceinline__ int64_t thread_count() { return int64_t{gridDim.x} * blockDim.x; }

// Elements 4*i4 .. 4*i4+3 of p[k * step] as floats, step 1 (p aligned to kVecBytes<T>) or 0 (one broadcast
// value).
template <class T>
__device__ __forceinline__ void load4(const T* p, int64_t i4, int64_t step, float (&v)[4]) {
  if (step != 0) return load_floats<4>(p + 4 * i4, v);
  const float s = to_float(*p);
  v[0] = s, v[1] = s, v[2] = s, v[3] = s;
}
// The same for u8 conditions (p 4-byte aligned when step is 1).
__device__ __forceinline__ uchar4 load4(const uint8_t* p, int64_t i4, int64_t step) {
  if (step != 0) return reinterpret_cast<const uchar4*>(p)[i4];
  const uint8_t v = *p;
  return make_uchar4(v, v, v, v);
}
// v into elements 4*i4 .. 4*i4+3 of p (aligned to kVecBytes<T>), rounded to T.
template <class T>
__device__ __forceinline__ void store4(T* p, int64_t i4, const float (&v)[4]) {
  store_floats<4>(p + 4 * i4, v);
}

// ---------------------------------------------------------------------------------------------------------
// Unary math (ops/cpu/elementwise_kernels.cpp: unary_f, unary_df, vpow)

__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fc00000); }

// 1 / (1 + e^-x) computed from e = e^-|x| (no overflow), e * s for x < 0; NaN gives NaN.
__device__ __forceinline__ float sigmoid_f(float x) {
  const float e = expf(-fabsf(x));
  const float s = 1.0f / (1.0f + e);
  return x >= 0.0f ? s : e * s;
}

// x^p for finite p like the CPU's vpow: exact shortcuts for common exponents, else |x|^p with the sign of a
// negative base for an odd integer p and NaN for a negative base and a non-integer p.
__device__ __forceinline__ float pow_f(float x, float p) {
  if (p == 0.0f) return 1.0f;
  if (p == 1.0f) return x;
  if (p == 2.0f) return x * x;
  if (p == 3.0f) return x * x * x;
  if (p == -1.0f) return 1.0f / x;
  if (p == 0.5f) return sqrtf(x);
  if (p == -0.5f) return 1.0f / sqrtf(x);
  const float r = powf(fabsf(x), p);
  const bool integer = floorf(p) == p;
  if (integer && fmodf(p, 2.0f) != 0.0f) return x < 0.0f ? -r : r;
  if (integer) return r;
  return x < 0.0f ? quiet_nan() : r;
}

// f(x) for the op.
template <UnaryOp Op>
__device__ __forceinline__ float unary_f(float x, float p0, float p1) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;  // sqrt(2 / pi)
  constexpr float kInvSqrt2 = 0.7071067811865476f;     // 1 / sqrt(2)
  constexpr float kGeluCubic = 0.044715f;
  if constexpr (Op == UnaryOp::Neg) {
    return -x;
  } else if constexpr (Op == UnaryOp::Exp) {
    return expf(x);
  } else if constexpr (Op == UnaryOp::Log) {
    return logf(x);
  } else if constexpr (Op == UnaryOp::Sqrt) {
    return sqrtf(x);
  } else if constexpr (Op == UnaryOp::Rsqrt) {
    return 1.0f / sqrtf(x);
  } else if constexpr (Op == UnaryOp::Abs) {
    return fabsf(x);
  } else if constexpr (Op == UnaryOp::Square) {
    return x * x;
  } else if constexpr (Op == UnaryOp::Tanh) {
    return tanhf(x);
  } else if constexpr (Op == UnaryOp::Sigmoid) {
    return sigmoid_f(x);
  } else if constexpr (Op == UnaryOp::Relu) {
    return 0.0f > x ? 0.0f : x;  // NaN stays NaN
  } else if constexpr (Op == UnaryOp::GeluErf) {
    return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
  } else if constexpr (Op == UnaryOp::GeluTanh) {
    const float u = kSqrt2OverPi * fmaf(kGeluCubic * x * x, x, x);
    return 0.5f * x * (1.0f + tanhf(u));
  } else if constexpr (Op == UnaryOp::Silu) {
    return x * sigmoid_f(x);
  } else if constexpr (Op == UnaryOp::Clamp) {
    const float lo = p0 > x ? p0 : x;  // NaN stays NaN, as the CPU's vmin(p1, vmax(p0, x))
    return p1 < lo ? p1 : lo;
  } else if constexpr (Op == UnaryOp::AddScalar) {
    return x + p0;
  } else if constexpr (Op == UnaryOp::Scale) {
    return x * p0;
  } else {
    static_assert(Op == UnaryOp::Pow, "unhandled unary op");
    return pow_f(x, p0);
  }
}

// g * f'(.) for the op; v is x or the forward output y as cpu::unary_backward_needs says (g itself for the
// ops that read neither).
template <UnaryOp Op>
__device__ __forceinline__ float unary_df(float v, float g, float p0, float p1) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  constexpr float kInvSqrt2 = 0.7071067811865476f;
  constexpr float kInvSqrt2Pi = 0.3989422804014327f;  // 1 / sqrt(2 pi)
  constexpr float kGeluCubic = 0.044715f;
  if constexpr (Op == UnaryOp::Neg) {
    return -g;
  } else if constexpr (Op == UnaryOp::Exp) {  // v = y
    return g * v;
  } else if constexpr (Op == UnaryOp::Log) {  // v = x
    return g / v;
  } else if constexpr (Op == UnaryOp::Sqrt) {  // v = y
    return 0.5f * g / v;
  } else if constexpr (Op == UnaryOp::Rsqrt) {  // v = y
    return -0.5f * g * v * v * v;
  } else if constexpr (Op == UnaryOp::Abs) {  // sign(x), 0 at 0 (and for NaN)
    const float sg = v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f);
    return g * sg;
  } else if constexpr (Op == UnaryOp::Square) {
    return 2.0f * g * v;
  } else if constexpr (Op == UnaryOp::Tanh) {  // v = y
    return g * (1.0f - v * v);
  } else if constexpr (Op == UnaryOp::Sigmoid) {  // v = y
    return g * v * (1.0f - v);
  } else if constexpr (Op == UnaryOp::Relu) {  // 0 at the kink
    return v > 0.0f ? g : 0.0f;
  } else if constexpr (Op == UnaryOp::GeluErf) {  // Phi(x) + x phi(x)
    const float cdf = 0.5f * (1.0f + erff(v * kInvSqrt2));
    const float pdf = kInvSqrt2Pi * expf(-0.5f * v * v);
    return g * fmaf(v, pdf, cdf);
  } else if constexpr (Op == UnaryOp::GeluTanh) {  // 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 c x^2)
    const float x2 = v * v;
    const float t = tanhf(kSqrt2OverPi * fmaf(kGeluCubic * x2, v, v));
    const float du = kSqrt2OverPi * fmaf(3.0f * kGeluCubic, x2, 1.0f);
    return g * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
  } else if constexpr (Op == UnaryOp::Silu) {  // s (1 + x (1 - s))
    const float s = sigmoid_f(v);
    return g * s * fmaf(v, 1.0f - s, 1.0f);
  } else if constexpr (Op == UnaryOp::Clamp) {  // 1 inside [p0, p1], bounds included
    return (v >= p0 && v <= p1) ? g : 0.0f;
  } else if constexpr (Op == UnaryOp::AddScalar) {
    return g;
  } else if constexpr (Op == UnaryOp::Scale) {
    return g * p0;
  } else {
    static_assert(Op == UnaryOp::Pow, "unhandled unary op");
    return g * p0 * pow_f(v, p0 - 1.0f);
  }
}

template <UnaryOp Op>
struct UnaryFwd {
  float p0, p1;
  __device__ __forceinline__ float operator()(float x) const { return unary_f<Op>(x, p0, p1); }
};
template <UnaryOp Op>
struct UnaryGrad {  // (v, g) -> g f'
  float p0, p1;
  __device__ __forceinline__ float operator()(float v, float g) const { return unary_df<Op>(v, g, p0, p1); }
};
template <UnaryOp Op>
struct UnaryGradOfG {  // g -> g f' for the ops whose derivative reads neither x nor y
  float p0, p1;
  __device__ __forceinline__ float operator()(float g) const { return unary_df<Op>(g, g, p0, p1); }
};
struct ScaleBy {
  float s;
  __device__ __forceinline__ float operator()(float y) const { return y * s; }
};

// ---------------------------------------------------------------------------------------------------------
// Binary math (binary_f, binary_backward_t)

template <BinaryOp Op>
struct BinaryFwd {
  __device__ __forceinline__ float operator()(float a, float b) const {
    if constexpr (Op == BinaryOp::Add) {
      return a + b;
    } else if constexpr (Op == BinaryOp::Sub) {
      return a - b;
    } else if constexpr (Op == BinaryOp::Mul) {
      return a * b;
    } else if constexpr (Op == BinaryOp::Div) {
      return a / b;
    } else if constexpr (Op == BinaryOp::Max) {  // NaN in either propagates (b's through the ternary)
      return a != a ? a : (a > b ? a : b);
    } else {
      static_assert(Op == BinaryOp::Min, "unhandled binary op");
      return a != a ? a : (a < b ? a : b);
    }
  }
};

// (g * d/da, g * d/db) of the op at (a, b).
template <BinaryOp Op>
struct BinaryGrad {
  __device__ __forceinline__ float2 operator()(float g, float a, float b) const {
    if constexpr (Op == BinaryOp::Add) {
      return make_float2(g, g);
    } else if constexpr (Op == BinaryOp::Sub) {
      return make_float2(g, -g);
    } else if constexpr (Op == BinaryOp::Mul) {
      return make_float2(g * b, g * a);
    } else if constexpr (Op == BinaryOp::Div) {
      const float da = g / b;  // 1 / b
      return make_float2(da, -(da * a) / b);  // -a / b^2
    } else {
      static_assert(Op == BinaryOp::Max || Op == BinaryOp::Min, "unhandled binary op");
      // g goes to the larger operand (Min: the smaller), half to each on a tie, all to b when either is NaN.
      const bool a_wins = Op == BinaryOp::Max ? a > b : a < b;
      const float da = a_wins ? g : (a == b ? 0.5f * g : 0.0f);
      return make_float2(da, g - da);
    }
  }
};

// y + alpha * x, fused like the CPU's contiguous path.
struct Axpy {
  float alpha;
  __device__ __forceinline__ float operator()(float y, float x) const { return fmaf(alpha, x, y); }
};

template <class T, CompareOp Op>
__device__ __forceinline__ uint8_t compare_f(T u, T v) {
  if constexpr (Op == CompareOp::Eq) return static_cast<uint8_t>(u == v);
  else if constexpr (Op == CompareOp::Gt) return static_cast<uint8_t>(u > v);
  else return static_cast<uint8_t>(u < v);
}


// u (cmp) v for one element pair: bf16 compared as its (exact) f32 widening, other types as they are.
template <class T, CompareOp Op>
__device__ __forceinline__ uint8_t compare_elem(T u, T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return compare_f<float, Op>(to_float(u), to_float(v));
  else return compare_f<T, Op>(u, v);
}

// ---------------------------------------------------------------------------------------------------------
// Kernels (T: the storage type of the floating operands, float or __nv_bfloat16; byte counts are for f32,
// half the floating traffic for bf16)

// y[i] = f(x[i]), x and y contiguous (may be the same buffer); vectors of 4 for the first n4 groups:
// FLOPs of f and 8 B per element.
template <class T, class F>
__global__ void map1_kernel(const T* x, T* y, int64_t n, int64_t n4, F f) {
  const int64_t start = thread_index(), step = thread_count();
  for (int64_t i = start; i < n4; i += step) {
    float v[4];
    load4(x, i, 1, v);
    v[0] = f(v[0]), v[1] = f(v[1]), v[2] = f(v[2]), v[3] = f(v[3]);
    store4(y, i, v);
  }
  for (int64_t i = 4 * n4 + start; i < n; i += step) y[i] = from_float<T>(f(to_float(x[i])));
}

// y[i] = f(u[i], v[i]), all contiguous; vectors of 4 for the first n4 groups: FLOPs of f and 12 B per element.
template <class T, class F>
__global__ void map2_kernel(const T* __restrict__ u, const T* __restrict__ v, T* __restrict__ y, int64_t n,
                            int64_t n4, F f) {
  const int64_t start = thread_index(), step = thread_count();
  for (int64_t i = start; i < n4; i += step) {
    float a[4], b[4], r[4];
    load4(u, i, 1, a);
    load4(v, i, 1, b);
    r[0] = f(a[0], b[0]), r[1] = f(a[1], b[1]), r[2] = f(a[2], b[2]), r[3] = f(a[3], b[3]);
    store4(y, i, r);
  }
  for (int64_t i = 4 * n4 + start; i < n; i += step) y[i] = from_float<T>(f(to_float(u[i]), to_float(v[i])));
}

// out[i] = f(a[i*sa], b[i*sb]) with sa, sb in {0, 1}, out contiguous (may be a, as for axpy): FLOPs of f,
// 4 B out + 4 B per contiguous operand per element.
template <class T, class F>
__global__ void zip_flat_kernel(const T* a, int64_t sa, const T* b, int64_t sb, T* out, int64_t n, int64_t n4, F f) {
  const int64_t start = thread_index(), step = thread_count();
  for (int64_t i = start; i < n4; i += step) {
    float x[4], y[4], r[4];
    load4(a, i, sa, x);
    load4(b, i, sb, y);
    r[0] = f(x[0], y[0]), r[1] = f(x[1], y[1]), r[2] = f(x[2], y[2]), r[3] = f(x[3], y[3]);
    store4(out, i, r);
  }
  for (int64_t i = 4 * n4 + start; i < n; i += step) out[i] = from_float<T>(f(to_float(a[i * sa]), to_float(b[i * sb])));
}

// out[i] = f(a[ia(i)], b[ib(i)]), out contiguous: FLOPs of f, 12 B per element (+ index math).
template <class T, class F>
__global__ void zip_strided_kernel(const T* a, Indexer ia, const T* b, Indexer ib, T* out, int64_t n, F f) {
  for (int64_t i = thread_index(); i < n; i += thread_count())
    out[i] = from_float<T>(f(to_float(a[ia.offset(i)]), to_float(b[ib.offset(i)])));
}

// (ga[i], gb[i]) = f(g[i], a[i*sa], b[i*sb]) with sa, sb in {0, 1}; g, ga, gb contiguous, ga or gb null when
// not wanted: 1-4 FLOPs, up to 20 B per element.
template <class T, class F>
__global__ void zip_grad_flat_kernel(const T* __restrict__ g, const T* a, int64_t sa, const T* b, int64_t sb,
                                     T* __restrict__ ga, T* __restrict__ gb, int64_t n, int64_t n4, F f) {
  const int64_t start = thread_index(), step = thread_count();
  for (int64_t i = start; i < n4; i += step) {
    float vg[4], x[4], y[4];
    load4(g, i, 1, vg);
    load4(a, i, sa, x);
    load4(b, i, sb, y);
    const float2 r0 = f(vg[0], x[0], y[0]), r1 = f(vg[1], x[1], y[1]), r2 = f(vg[2], x[2], y[2]),
                 r3 = f(vg[3], x[3], y[3]);
    if (ga) store4(ga, i, {r0.x, r1.x, r2.x, r3.x});
    if (gb) store4(gb, i, {r0.y, r1.y, r2.y, r3.y});
  }
  for (int64_t i = 4 * n4 + start; i < n; i += step) {
    const float2 r = f(to_float(g[i]), to_float(a[i * sa]), to_float(b[i * sb]));
    if (ga) ga[i] = from_float<T>(r.x);
    if (gb) gb[i] = from_float<T>(r.y);
  }
}

// The same with a and b walked through indexers: 1-4 FLOPs, up to 20 B per element (+ index math).
template <class T, class F>
__global__ void zip_grad_strided_kernel(const T* __restrict__ g, const T* a, Indexer ia, const T* b, Indexer ib,
                                        T* __restrict__ ga, T* __restrict__ gb, int64_t n, F f) {
  for (int64_t i = thread_index(); i < n; i += thread_count()) {
    const float2 r = f(to_float(g[i]), to_float(a[ia.offset(i)]), to_float(b[ib.offset(i)]));
    if (ga) ga[i] = from_float<T>(r.x);
    if (gb) gb[i] = from_float<T>(r.y);
  }
}

// out[i] = a[i*sa] (cmp) b[i*sb] as u8, sa, sb in {0, 1}; vector loads / uchar4 stores for f32 and bf16 (n4
// is 0 for the integer types): 1 comparison, 2 sizeof(T) + 1 B per element at most.
template <class T, CompareOp Op>
__global__ void compare_flat_kernel(const T* a, int64_t sa, const T* b, int64_t sb, uint8_t* __restrict__ out,
                                    int64_t n, int64_t n4) {
  const int64_t start = thread_index(), step = thread_count();
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16>) {
    for (int64_t i = start; i < n4; i += step) {
      float x[4], y[4];
      load4(a, i, sa, x);
      load4(b, i, sb, y);
      reinterpret_cast<uchar4*>(out)[i] = make_uchar4(compare_f<float, Op>(x[0], y[0]), compare_f<float, Op>(x[1], y[1]),
                                                      compare_f<float, Op>(x[2], y[2]), compare_f<float, Op>(x[3], y[3]));
    }
  }
  for (int64_t i = 4 * n4 + start; i < n; i += step)
    out[i] = compare_elem<T, Op>(a[i * sa], b[i * sb]);
}

// out[i] = a[ia(i)] (cmp) b[ib(i)] as u8: 1 comparison, 2 sizeof(T) + 1 B per element (+ index math).
template <class T, CompareOp Op>
__global__ void compare_strided_kernel(const T* a, Indexer ia, const T* b, Indexer ib, uint8_t* __restrict__ out,
                                       int64_t n) {
  for (int64_t i = thread_index(); i < n; i += thread_count())
    out[i] = compare_elem<T, Op>(a[ia.offset(i)], b[ib.offset(i)]);
}

// out[i] = c[i*sc] ? a[i*sa] : b[i*sb] with steps in {0, 1}, out contiguous: 0 FLOP, up to 13 B per element.
template <class T>
__global__ void where_flat_kernel(const uint8_t* c, int64_t sc, const T* a, int64_t sa, const T* b, int64_t sb,
                                  T* __restrict__ out, int64_t n, int64_t n4) {
  const int64_t start = thread_index(), step = thread_count();
  for (int64_t i = start; i < n4; i += step) {
    const uchar4 m = load4(c, i, sc);
    float x[4], y[4];
    load4(a, i, sa, x);
    load4(b, i, sb, y);
    store4(out, i, {m.x ? x[0] : y[0], m.y ? x[1] : y[1], m.z ? x[2] : y[2], m.w ? x[3] : y[3]});
  }
  for (int64_t i = 4 * n4 + start; i < n; i += step)
    out[i] = from_float<T>(c[i * sc] ? to_float(a[i * sa]) : to_float(b[i * sb]));
}

// out[i] = c[ic(i)] ? a[ia(i)] : b[ib(i)], out contiguous: 0 FLOP, 13 B per element (+ index math).
template <class T>
__global__ void where_strided_kernel(const uint8_t* c, Indexer ic, const T* a, Indexer ia, const T* b, Indexer ib,
                                     T* __restrict__ out, int64_t n) {
  for (int64_t i = thread_index(); i < n; i += thread_count())
    out[i] = from_float<T>(c[ic.offset(i)] ? to_float(a[ia.offset(i)]) : to_float(b[ib.offset(i)]));
}

// ga[i] = c[i*sc] ? g[i] : 0, gb[i] = c[i*sc] ? 0 : g[i], sc in {0, 1}; ga or gb null when not wanted:
// 0 FLOP, up to 13 B per element.
template <class T>
__global__ void where_grad_flat_kernel(const uint8_t* c, int64_t sc, const T* __restrict__ g, T* __restrict__ ga,
                                       T* __restrict__ gb, int64_t n, int64_t n4) {
  const int64_t start = thread_index(), step = thread_count();
  for (int64_t i = start; i < n4; i += step) {
    const uchar4 m = load4(c, i, sc);
    float v[4];
    load4(g, i, 1, v);
    if (ga) store4(ga, i, {m.x ? v[0] : 0.0f, m.y ? v[1] : 0.0f, m.z ? v[2] : 0.0f, m.w ? v[3] : 0.0f});
    if (gb) store4(gb, i, {m.x ? 0.0f : v[0], m.y ? 0.0f : v[1], m.z ? 0.0f : v[2], m.w ? 0.0f : v[3]});
  }
  for (int64_t i = 4 * n4 + start; i < n; i += step) {
    const bool m = c[i * sc] != 0;
    const float v = to_float(g[i]);
    if (ga) ga[i] = from_float<T>(m ? v : 0.0f);
    if (gb) gb[i] = from_float<T>(m ? 0.0f : v);
  }
}

// The same with the condition walked through an indexer: 0 FLOP, 13 B per element (+ index math).
template <class T>
__global__ void where_grad_strided_kernel(const uint8_t* c, Indexer ic, const T* __restrict__ g, T* __restrict__ ga,
                                          T* __restrict__ gb, int64_t n) {
  for (int64_t i = thread_index(); i < n; i += thread_count()) {
    const bool m = c[ic.offset(i)] != 0;
    const float v = to_float(g[i]);
    if (ga) ga[i] = from_float<T>(m ? v : 0.0f);
    if (gb) gb[i] = from_float<T>(m ? 0.0f : v);
  }
}

// y[iy(i)] = fma(alpha, x[ix(i)], y[iy(i)]) in place through y's own strides: 2 FLOPs, 12 B per element.
template <class T>
__global__ void axpy_strided_kernel(T* y, Indexer iy, const T* x, Indexer ix, float alpha, int64_t n) {
  for (int64_t i = thread_index(); i < n; i += thread_count()) {
    const int64_t oy = iy.offset(i);
    y[oy] = from_float<T>(fmaf(alpha, to_float(x[ix.offset(i)]), to_float(y[oy])));
  }
}

// y[iy(i)] *= s in place through y's strides: 1 FLOP, 8 B per element.
template <class T>
__global__ void scale_strided_kernel(T* y, Indexer iy, float s, int64_t n) {
  for (int64_t i = thread_index(); i < n; i += thread_count()) {
    const int64_t oy = iy.offset(i);
    y[oy] = from_float<T>(to_float(y[oy]) * s);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Launchers

template <class T, class F>
void launch_map1(const T* x, T* y, int64_t n, F f, cudaStream_t s) {
  const int64_t n4 = aligned(x, kVecBytes<T>) && aligned(y, kVecBytes<T>) ? n / 4 : 0;
  map1_kernel<T, F><<<blocks_for(flat_work(n, n4), kThreads), kThreads, 0, s>>>(x, y, n, n4, f);
  MOON_CUDA_LAUNCH_CHECK("map1_kernel");
}

template <class T, class F>
void launch_map2(const T* u, const T* v, T* y, int64_t n, F f, cudaStream_t s) {
  const int64_t n4 = aligned(u, kVecBytes<T>) && aligned(v, kVecBytes<T>) && aligned(y, kVecBytes<T>) ? n / 4 : 0;
  map2_kernel<T, F><<<blocks_for(flat_work(n, n4), kThreads), kThreads, 0, s>>>(u, v, y, n, n4, f);
  MOON_CUDA_LAUNCH_CHECK("map2_kernel");
}

// out = f(a, b) elementwise; out contiguous with `shape`, a and b expanded to it, all of storage type T.
template <class T, class F>
void launch_zip(const Tensor& out, const Tensor& a, const Tensor& b, F f, cudaStream_t s) {
  const int64_t n = out.numel();
  const T* pa = cptr<T>(a);
  const T* pb = cptr<T>(b);
  T* po = ptr<T>(out);
  const int fa = flat_step(a), fb = flat_step(b);
  if (fa >= 0 && fb >= 0) {
    constexpr int kB = kVecBytes<T>;
    const bool vec = aligned(po, kB) && vec_ok(pa, fa, kB) && vec_ok(pb, fb, kB);
    const int64_t n4 = vec ? n / 4 : 0;
    zip_flat_kernel<T, F><<<blocks_for(flat_work(n, n4), kThreads), kThreads, 0, s>>>(pa, fa, pb, fb, po, n, n4, f);
    MOON_CUDA_LAUNCH_CHECK("zip_flat_kernel");
    return;
  }
  const std::vector<Indexer> ix = merge_dims(out.shape(), {&a.strides(), &b.strides()});
  zip_strided_kernel<T, F><<<blocks_for(n, kThreads), kThreads, 0, s>>>(pa, ix[0], pb, ix[1], po, n, f);
  MOON_CUDA_LAUNCH_CHECK("zip_strided_kernel");
}

template <class T, class F>
void launch_zip_grad(const Tensor& g, const Tensor& a, const Tensor& b, const Tensor& ga, const Tensor& gb, F f,
                     cudaStream_t s) {
  const int64_t n = g.numel();
  const T* pg = cptr<T>(g);
  const T* pa = cptr<T>(a);
  const T* pb = cptr<T>(b);
  T* pga = ptr_or_null<T>(ga);
  T* pgb = ptr_or_null<T>(gb);
  const int fa = flat_step(a), fb = flat_step(b);
  if (fa >= 0 && fb >= 0) {
    constexpr int kB = kVecBytes<T>;
    const bool vec = aligned(pg, kB) && (!pga || aligned(pga, kB)) && (!pgb || aligned(pgb, kB)) &&
                     vec_ok(pa, fa, kB) && vec_ok(pb, fb, kB);
    const int64_t n4 = vec ? n / 4 : 0;
    zip_grad_flat_kernel<T, F>
        <<<blocks_for(flat_work(n, n4), kThreads), kThreads, 0, s>>>(pg, pa, fa, pb, fb, pga, pgb, n, n4, f);
    MOON_CUDA_LAUNCH_CHECK("zip_grad_flat_kernel");
    return;
  }
  const std::vector<Indexer> ix = merge_dims(g.shape(), {&a.strides(), &b.strides()});
  zip_grad_strided_kernel<T, F><<<blocks_for(n, kThreads), kThreads, 0, s>>>(pg, pa, ix[0], pb, ix[1], pga, pgb, n, f);
  MOON_CUDA_LAUNCH_CHECK("zip_grad_strided_kernel");
}

template <class T, CompareOp Op>
void launch_compare(const Tensor& out, const Tensor& a, const Tensor& b, cudaStream_t s) {
  const int64_t n = out.numel();
  const T* pa = cptr<T>(a);
  const T* pb = cptr<T>(b);
  uint8_t* po = ptr<uint8_t>(out);
  const int fa = flat_step(a), fb = flat_step(b);
  if (fa >= 0 && fb >= 0) {
    constexpr bool kFloating = std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16>;
    constexpr int kB = 4 * static_cast<int>(sizeof(T));
    const bool vec = kFloating && aligned(po, 4) && vec_ok(pa, fa, kB) && vec_ok(pb, fb, kB);
    const int64_t n4 = vec ? n / 4 : 0;
    compare_flat_kernel<T, Op><<<blocks_for(flat_work(n, n4), kThreads), kThreads, 0, s>>>(pa, fa, pb, fb, po, n, n4);
    MOON_CUDA_LAUNCH_CHECK("compare_flat_kernel");
    return;
  }
  const std::vector<Indexer> ix = merge_dims(out.shape(), {&a.strides(), &b.strides()});
  compare_strided_kernel<T, Op><<<blocks_for(n, kThreads), kThreads, 0, s>>>(pa, ix[0], pb, ix[1], po, n);
  MOON_CUDA_LAUNCH_CHECK("compare_strided_kernel");
}

template <class T>
void compare_typed(CompareOp op, const Tensor& out, const Tensor& a, const Tensor& b, cudaStream_t s) {
  switch (op) {
    case CompareOp::Eq: return launch_compare<T, CompareOp::Eq>(out, a, b, s);
    case CompareOp::Gt: return launch_compare<T, CompareOp::Gt>(out, a, b, s);
    case CompareOp::Lt: return launch_compare<T, CompareOp::Lt>(out, a, b, s);
  }
  fail("compare: unknown comparison");
}

// Calls fn(std::integral_constant<UnaryOp, op>{}) for the run-time op.
template <class Fn>
void with_unary_op(UnaryOp op, Fn&& fn) {
#define MOON_UNARY_CASE(name) \
  case UnaryOp::name: return fn(std::integral_constant<UnaryOp, UnaryOp::name>{});
  switch (op) {
    MOON_UNARY_CASE(Neg)
    MOON_UNARY_CASE(Exp)
    MOON_UNARY_CASE(Log)
    MOON_UNARY_CASE(Sqrt)
    MOON_UNARY_CASE(Rsqrt)
    MOON_UNARY_CASE(Abs)
    MOON_UNARY_CASE(Square)
    MOON_UNARY_CASE(Tanh)
    MOON_UNARY_CASE(Sigmoid)
    MOON_UNARY_CASE(Relu)
    MOON_UNARY_CASE(GeluErf)
    MOON_UNARY_CASE(GeluTanh)
    MOON_UNARY_CASE(Silu)
    MOON_UNARY_CASE(Clamp)
    MOON_UNARY_CASE(AddScalar)
    MOON_UNARY_CASE(Scale)
    MOON_UNARY_CASE(Pow)
  }
#undef MOON_UNARY_CASE
  fail("unary: unknown op");
}

// Calls fn(std::integral_constant<BinaryOp, op>{}) for the run-time op.
template <class Fn>
void with_binary_op(BinaryOp op, Fn&& fn) {
  switch (op) {
    case BinaryOp::Add: return fn(std::integral_constant<BinaryOp, BinaryOp::Add>{});
    case BinaryOp::Sub: return fn(std::integral_constant<BinaryOp, BinaryOp::Sub>{});
    case BinaryOp::Mul: return fn(std::integral_constant<BinaryOp, BinaryOp::Mul>{});
    case BinaryOp::Div: return fn(std::integral_constant<BinaryOp, BinaryOp::Div>{});
    case BinaryOp::Max: return fn(std::integral_constant<BinaryOp, BinaryOp::Max>{});
    case BinaryOp::Min: return fn(std::integral_constant<BinaryOp, BinaryOp::Min>{});
  }
  fail("binary: unknown op");
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Entry points

void unary_forward(UnaryOp op, float p0, float p1, const Tensor& x, const Tensor& y) {
  const int64_t n = y.numel();
  if (n == 0) return;
  DeviceGuard guard(y.device());
  check_dtype("unary", y, x);
  const cudaStream_t s = stream_of(y);
  visit_float("unary", y, [&](auto storage) {
    using T = decltype(storage);
    const T* px = cptr<T>(x);
    T* py = ptr<T>(y);
    with_unary_op(op, [&](auto tag) {
      constexpr UnaryOp kOp = decltype(tag)::value;
      launch_map1(px, py, n, UnaryFwd<kOp>{p0, p1}, s);
    });
  });
}

void unary_backward(UnaryOp op, float p0, float p1, const Tensor& x, const Tensor& y, const Tensor& g,
                    const Tensor& dx) {
  const int64_t n = dx.numel();
  if (n == 0) return;
  DeviceGuard guard(dx.device());
  check_dtype("unary backward", dx, g);
  check_dtype("unary backward", dx, x);
  check_dtype("unary backward", dx, y);
  const cudaStream_t s = stream_of(dx);
  visit_float("unary backward", dx, [&](auto storage) {
    using T = decltype(storage);
    const T* pg = cptr<T>(g);
    T* pd = ptr<T>(dx);
    with_unary_op(op, [&](auto tag) {
      constexpr UnaryOp kOp = decltype(tag)::value;
      if constexpr (kOp == UnaryOp::Neg || kOp == UnaryOp::AddScalar || kOp == UnaryOp::Scale) {
        launch_map1(pg, pd, n, UnaryGradOfG<kOp>{p0, p1}, s);
      } else {
        const Tensor& v = y.defined() ? y : x;  // the op layer passes only what unary_backward_needs(op) names
        MOON_CHECK(v.defined(), "unary backward: the saved input / output is missing");
        launch_map2(cptr<T>(v), pg, pd, n, UnaryGrad<kOp>{p0, p1}, s);
      }
    });
  });
}

void scale_inplace(const Tensor& a, double s) {
  const int64_t n = a.numel();
  if (n == 0) return;
  DeviceGuard guard(a.device());
  const cudaStream_t st = stream_of(a);
  const float f = static_cast<float>(s);
  visit_float("mul_", a, [&](auto storage) {
    using T = decltype(storage);
    T* p = ptr<T>(a);
    if (a.is_contiguous()) return launch_map1(p, p, n, ScaleBy{f}, st);
    const Indexer iy = make_indexer(a);
    scale_strided_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, st>>>(p, iy, f, n);
    MOON_CUDA_LAUNCH_CHECK("scale_strided_kernel");
  });
}

void binary_forward(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  if (out.numel() == 0) return;
  DeviceGuard guard(out.device());
  check_dtype("binary", out, a);
  check_dtype("binary", out, b);
  const cudaStream_t s = stream_of(out);
  visit_float("binary", out, [&](auto storage) {
    using T = decltype(storage);
    with_binary_op(op, [&](auto tag) { launch_zip<T>(out, a, b, BinaryFwd<decltype(tag)::value>{}, s); });
  });
}

void binary_backward(BinaryOp op, const Tensor& g, const Tensor& a, const Tensor& b, const Tensor& ga,
                     const Tensor& gb) {
  if (g.numel() == 0 || (!ga.defined() && !gb.defined())) return;
  DeviceGuard guard(g.device());
  for (const Tensor* t : {&a, &b, &ga, &gb}) check_dtype("binary backward", g, *t);
  const cudaStream_t s = stream_of(g);
  visit_float("binary backward", g, [&](auto storage) {
    using T = decltype(storage);
    with_binary_op(op, [&](auto tag) { launch_zip_grad<T>(g, a, b, ga, gb, BinaryGrad<decltype(tag)::value>{}, s); });
  });
}

void compare_forward(CompareOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  if (out.numel() == 0) return;
  DeviceGuard guard(out.device());
  check_dtype("compare", a, b);
  const cudaStream_t s = stream_of(out);
  switch (a.dtype()) {
    case DType::F32: return compare_typed<float>(op, out, a, b, s);
    case DType::BF16: return compare_typed<__nv_bfloat16>(op, out, a, b, s);
    case DType::I64: return compare_typed<int64_t>(op, out, a, b, s);
    case DType::I32: return compare_typed<int32_t>(op, out, a, b, s);
    case DType::U8: return compare_typed<uint8_t>(op, out, a, b, s);
    default: break;
  }
  fail("compare: unsupported dtype for ", a.desc());
}

void axpy_inplace(const Tensor& y, const Tensor& x, double alpha) {
  const int64_t n = y.numel();
  if (n == 0) return;
  DeviceGuard guard(y.device());
  check_dtype("add_", y, x);
  const cudaStream_t s = stream_of(y);
  const float al = static_cast<float>(alpha);
  visit_float("add_", y, [&](auto storage) {
    using T = decltype(storage);
    if (y.is_contiguous() && flat_step(x) >= 0) return launch_zip<T>(y, y, x, Axpy{al}, s);  // out = y in place
    const std::vector<Indexer> ix = merge_dims(y.shape(), {&y.strides(), &x.strides()});
    axpy_strided_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, s>>>(ptr<T>(y), ix[0], cptr<T>(x), ix[1], al, n);
    MOON_CUDA_LAUNCH_CHECK("axpy_strided_kernel");
  });
}

void where_forward(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) {
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceGuard guard(out.device());
  check_dtype("where", out, a);
  check_dtype("where", out, b);
  const cudaStream_t s = stream_of(out);
  const uint8_t* pc = cptr<uint8_t>(cond);
  visit_float("where", out, [&](auto storage) {
    using T = decltype(storage);
    const T* pa = cptr<T>(a);
    const T* pb = cptr<T>(b);
    T* po = ptr<T>(out);
    const int fc = flat_step(cond), fa = flat_step(a), fb = flat_step(b);
    if (fc >= 0 && fa >= 0 && fb >= 0) {
      constexpr int kB = kVecBytes<T>;
      const bool vec = aligned(po, kB) && vec_ok(pc, fc, 4) && vec_ok(pa, fa, kB) && vec_ok(pb, fb, kB);
      const int64_t n4 = vec ? n / 4 : 0;
      where_flat_kernel<T>
          <<<blocks_for(flat_work(n, n4), kThreads), kThreads, 0, s>>>(pc, fc, pa, fa, pb, fb, po, n, n4);
      MOON_CUDA_LAUNCH_CHECK("where_flat_kernel");
      return;
    }
    const std::vector<Indexer> ix = merge_dims(out.shape(), {&cond.strides(), &a.strides(), &b.strides()});
    where_strided_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, s>>>(pc, ix[0], pa, ix[1], pb, ix[2], po, n);
    MOON_CUDA_LAUNCH_CHECK("where_strided_kernel");
  });
}

void where_backward(const Tensor& cond, const Tensor& g, const Tensor& ga, const Tensor& gb) {
  const int64_t n = g.numel();
  if (n == 0 || (!ga.defined() && !gb.defined())) return;
  DeviceGuard guard(g.device());
  check_dtype("where backward", g, ga);
  check_dtype("where backward", g, gb);
  const cudaStream_t s = stream_of(g);
  const uint8_t* pc = cptr<uint8_t>(cond);
  visit_float("where backward", g, [&](auto storage) {
    using T = decltype(storage);
    const T* pg = cptr<T>(g);
    T* pga = ptr_or_null<T>(ga);
    T* pgb = ptr_or_null<T>(gb);
    const int fc = flat_step(cond);
    if (fc >= 0) {
      constexpr int kB = kVecBytes<T>;
      const bool vec = aligned(pg, kB) && (!pga || aligned(pga, kB)) && (!pgb || aligned(pgb, kB)) && vec_ok(pc, fc, 4);
      const int64_t n4 = vec ? n / 4 : 0;
      where_grad_flat_kernel<T><<<blocks_for(flat_work(n, n4), kThreads), kThreads, 0, s>>>(pc, fc, pg, pga, pgb, n, n4);
      MOON_CUDA_LAUNCH_CHECK("where_grad_flat_kernel");
      return;
    }
    const Indexer ic = make_indexer(cond);
    where_grad_strided_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, s>>>(pc, ic, pg, pga, pgb, n);
    MOON_CUDA_LAUNCH_CHECK("where_grad_strided_kernel");
  });
}

}  // namespace moon::cuda
