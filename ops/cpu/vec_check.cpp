// Self-checks of the SIMD layer (ops/cpu/vec.h); compiled once per instruction set (see vec_check.h).
//
// Accuracy is measured against the double-precision C library: each math function is evaluated over an
// evenly spaced grid and over a grid evenly spaced in float bit patterns (which reaches every binade), in
// segments of ragged length so that every tail size 1..kLanes-1 goes through vload_partial/vstore_partial.
//
// Only C library functions and code from this namespace are used here: an inline function from std::
// compiled with AVX-512 flags could be emitted out of line and shared with the generic copy by the linker.
#include "ops/cpu/vec_check.h"

#include <math.h>
#include <string.h>

#include "ops/cpu/vec.h"

#if defined(__unix__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace moon::cpu::MOON_ISA_NS {
namespace {

// out[i] = f(in[i]): whole vectors, then one partial vector for the last n % kLanes elements.
template <class F>
void map_f32(F f, const float* in, float* out, int n) {
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) vstore(out + i, f(vload(in + i)));
  if (i < n) vstore_partial(out + i, f(vload_partial(in + i, n - i)), n - i);
}

template <class F>
void dispatch(VecFn fn, F&& body) {
  switch (fn) {
    case VecFn::Exp: return body([](vfloat x) { return vexp(x); });
    case VecFn::Log: return body([](vfloat x) { return vlog(x); });
    case VecFn::Tanh: return body([](vfloat x) { return vtanh(x); });
    case VecFn::Sigmoid: return body([](vfloat x) { return vsigmoid(x); });
    case VecFn::Erf: return body([](vfloat x) { return verf(x); });
  }
}

double reference(VecFn fn, double x) {
  switch (fn) {
    case VecFn::Exp: return exp(x);
    case VecFn::Log: return log(x);
    case VecFn::Tanh: return tanh(x);
    case VecFn::Sigmoid: return 1.0 / (1.0 + exp(-x));
    case VecFn::Erf: return erf(x);
  }
  return 0;
}

uint32_t bits_of(float f) {
  uint32_t b;
  memcpy(&b, &f, 4);
  return b;
}
float float_of(uint32_t b) {
  float f;
  memcpy(&f, &b, 4);
  return f;
}
// Floats in increasing order map to increasing integers (-0 and +0 both to 0).
int64_t order_key(float f) {
  uint32_t b = bits_of(f);
  return (b & 0x80000000u) ? -int64_t(b & 0x7fffffffu) : int64_t(b);
}
float from_order_key(int64_t k) { return k >= 0 ? float_of(uint32_t(k)) : float_of(uint32_t(-k) | 0x80000000u); }

// A heap array that needs nothing from std::.
struct Buffer {
  explicit Buffer(int n) : f(new float[n]), g(new float[n]), n(n) {}
  ~Buffer() {
    delete[] f;
    delete[] g;
  }
  float* f;
  float* g;
  int n;
};

constexpr int kGrid = 1 << 20;  // points per grid (two grids per function)

// Max relative error of fn over `kGrid` points evenly spaced in [lo, hi] and as many evenly spaced in bit
// patterns. Points whose exact result is not a normal float (0, denormal, overflow) are skipped.
FnError sweep(VecFn fn, float lo, float hi) {
  Buffer buf(2 * kGrid);
  float* in = buf.f;
  float* out = buf.g;
  for (int i = 0; i < kGrid; ++i) in[i] = float(lo + (double(hi) - lo) * i / (kGrid - 1));
  const int64_t k0 = order_key(lo), k1 = order_key(hi);
  for (int i = 0; i < kGrid; ++i) in[kGrid + i] = from_order_key(k0 + (k1 - k0) * i / (kGrid - 1));

  // Ragged segments: lengths 1, 2, ..., 2 * kLanes + 1, repeated, so every tail length occurs.
  dispatch(fn, [&](auto f) {
    int seg = 1;
    for (int i = 0; i < 2 * kGrid; i += seg, seg = seg % (2 * kLanes + 1) + 1) {
      int len = seg < 2 * kGrid - i ? seg : 2 * kGrid - i;
      map_f32(f, in + i, out + i, len);
    }
  });

  FnError e;
  for (int i = 0; i < 2 * kGrid; ++i) {
    const double ref = reference(fn, in[i]);
    if (!(fabs(ref) >= 1.17549435e-38 && fabs(ref) <= 3.40282347e38)) continue;
    double rel = fabs(double(out[i]) - ref) / fabs(ref);
    if (!(rel == rel)) rel = 1e300;  // NaN output where a number was expected
    if (rel > e.max_rel) e = {rel, in[i]};
  }
  return e;
}

// vset1, vfma, vmax, vmin, vabs, vselect, vsqrt, hsum, hmax against scalar code on pseudo-random data.
bool check_basic() {
  uint32_t seed = 12345;
  auto rnd = [&] {
    seed = seed * 1664525u + 1013904223u;
    return float(int32_t(seed >> 8) - (1 << 23)) / float(1 << 20);  // roughly uniform in [-8, 8)
  };
  bool ok = true;
  for (int rep = 0; rep < 1000; ++rep) {
    float a[kLanes], b[kLanes], c[kLanes];
    for (int i = 0; i < kLanes; ++i) a[i] = rnd(), b[i] = rnd(), c[i] = rnd();
    const vfloat va = vload(a), vb = vload(b), vc = vload(c);
    const vfloat fma = vfma(va, vb, vc), mx = vmax(va, vb), mn = vmin(va, vb), ab = vabs(va);
    const vfloat sel = vselect(va < vb, va, vb), sq = vsqrt(vabs(va)), k = vset1(c[0]);
    double sum = 0, sum_abs = 0;
    float maxv = a[0];
    for (int i = 0; i < kLanes; ++i) {
      const double exact = double(a[i]) * b[i] + c[i];
      ok &= fabs(double(fma[i]) - exact) <= 1e-6 * (fabs(double(a[i]) * b[i]) + fabs(double(c[i])));
      ok &= mx[i] == (a[i] > b[i] ? a[i] : b[i]) && mn[i] == (a[i] < b[i] ? a[i] : b[i]);
      ok &= ab[i] == fabsf(a[i]) && sel[i] == (a[i] < b[i] ? a[i] : b[i]) && k[i] == c[0];
      ok &= sq[i] == sqrtf(fabsf(a[i]));
      sum += a[i];
      sum_abs += fabs(double(a[i]));
      if (a[i] > maxv) maxv = a[i];
    }
    ok &= fabs(hsum(va) - sum) <= 1e-6 * sum_abs;
    ok &= hmax(va) == maxv;
  }
  return ok;
}

// Partial loads/stores touch only the first n elements. On Unix the data ends exactly at an inaccessible
// page, so a read or write past p + n would crash rather than pass silently.
bool check_partial() {
  bool ok = true;
#if defined(__unix__)
  const long page = sysconf(_SC_PAGESIZE);
  char* mem = (char*)mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED || mprotect(mem + page, page, PROT_NONE) != 0) return false;
  char* end = mem + page;
#else
  static char mem[4096];
  char* end = mem + sizeof mem;
#endif
  for (int n = 0; n <= kLanes; ++n) {
    float* p = (float*)end - n;
    for (int i = 0; i < n; ++i) p[i] = float(i + 1);
    vfloat v = vload_partial(p, n);
    for (int i = 0; i < kLanes; ++i) ok &= v[i] == (i < n ? float(i + 1) : 0.0f);
    vstore_partial(p, v * 2.0f, n);
    for (int i = 0; i < n; ++i) ok &= p[i] == float(2 * (i + 1));

    uint16_t* h = (uint16_t*)end - n;
    for (int i = 0; i < n; ++i) h[i] = uint16_t(bits_of(float(i + 1)) >> 16);
    v = vload_bf16_partial(h, n);
    for (int i = 0; i < kLanes; ++i) ok &= v[i] == (i < n ? float(i + 1) : 0.0f);
    vstore_bf16_partial(h, v * 2.0f, n);
    for (int i = 0; i < n; ++i) ok &= h[i] == uint16_t(bits_of(float(2 * (i + 1))) >> 16);

    // Nothing is written past n (sentinels after the stored lanes survive).
    float f[2 * kLanes];
    uint16_t g[2 * kLanes];
    for (int i = 0; i < 2 * kLanes; ++i) f[i] = -7.0f, g[i] = 0xdead;
    vstore_partial(f, vset1(3.0f), n);
    vstore_bf16_partial(g, vset1(3.0f), n);
    for (int i = 0; i < 2 * kLanes; ++i) {
      ok &= f[i] == (i < n ? 3.0f : -7.0f);
      ok &= g[i] == (i < n ? uint16_t(0x4040) : uint16_t(0xdead));
    }
  }
#if defined(__unix__)
  munmap(mem, 2 * page);
#endif
  return ok;
}

// The value of bf16 bits h as a double, with the exponent unbounded (0x7f80 reads as 2^128, not infinity),
// so that round-to-nearest-even can be decided by comparing distances.
double bf16_value(uint32_t h) {
  const int e = (h >> 7) & 0xff;
  const double m = h & 0x7f;
  const double mag = e == 0 ? ldexp(m / 128.0, -126) : ldexp(1.0 + m / 128.0, e - 127);
  return (h & 0x8000) ? -mag : mag;
}

// Reference f32 -> bf16 round-to-nearest-even, by comparing the distances to the two neighbours.
uint16_t bf16_reference(float f) {
  const uint32_t lo = bits_of(f) >> 16, hi = lo + 1;  // truncated and next-larger magnitude
  const double dlo = fabs(double(f) - bf16_value(lo)), dhi = fabs(bf16_value(hi) - double(f));
  if (dlo != dhi) return uint16_t(dlo < dhi ? lo : hi);
  return uint16_t((lo & 1) == 0 ? lo : hi);
}

bool is_nan_bf16(uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0; }

bool check_bf16() {
  bool ok = true;
  constexpr int kN = 1 << 16;
  uint16_t* h = new uint16_t[kN];
  uint16_t* back = new uint16_t[kN];
  float* f = new float[kN];
  // Every bf16 widens exactly, and narrows back to itself (NaNs stay NaN).
  for (int i = 0; i < kN; ++i) h[i] = uint16_t(i);
  vec_from_bf16(h, f, kN);
  vec_to_bf16(f, back, kN);
  for (int i = 0; i < kN; ++i) {
    ok &= bits_of(f[i]) == uint32_t(i) << 16;
    ok &= is_nan_bf16(h[i]) ? is_nan_bf16(back[i]) : back[i] == h[i];
  }
  // Narrowing of floats spread over all bit patterns, plus exact ties and their neighbours.
  uint32_t b = 0x9e3779b9u;
  for (int i = 0; i < kN; ++i) {
    b += 0x00010003u * 977u;
    uint32_t bits = b;
    if (i % 4 == 1) bits = (b & 0xffff0000u) | 0x8000u;  // tie
    if (i % 4 == 2) bits = (b & 0xffff0000u) | 0x7fffu;  // just below a tie
    if (i % 4 == 3) bits = (b & 0xffff0000u) | 0x8001u;  // just above a tie
    f[i] = float_of(bits);
  }
  vec_to_bf16(f, back, kN);
  for (int i = 0; i < kN; ++i)
    ok &= __builtin_isnan(f[i]) ? is_nan_bf16(back[i]) : back[i] == bf16_reference(f[i]);
  delete[] h;
  delete[] back;
  delete[] f;
  return ok;
}

}  // namespace

void vec_eval(VecFn fn, const float* in, float* out, int n) {
  dispatch(fn, [&](auto f) { map_f32(f, in, out, n); });
}

void vec_to_bf16(const float* in, uint16_t* out, int n) {
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) vstore_bf16(out + i, vload(in + i));
  if (i < n) vstore_bf16_partial(out + i, vload_partial(in + i, n - i), n - i);
}

void vec_from_bf16(const uint16_t* in, float* out, int n) {
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) vstore(out + i, vload_bf16(in + i));
  if (i < n) vstore_partial(out + i, vload_bf16_partial(in + i, n - i), n - i);
}

VecAccuracy vec_accuracy() {
  VecAccuracy a;
  a.lanes = kLanes;
  a.exp = sweep(VecFn::Exp, -87.33f, 88.72f);
  FnError log_wide = sweep(VecFn::Log, 1.4e-45f, 3.4e38f);  // every binade, denormals included
  a.log = sweep(VecFn::Log, 0.25f, 4.0f);                   // dense around 1, where log is near 0
  if (log_wide.max_rel > a.log.max_rel) a.log = log_wide;
  a.tanh = sweep(VecFn::Tanh, -10.0f, 10.0f);
  a.sigmoid = sweep(VecFn::Sigmoid, -87.0f, 30.0f);
  a.erf = sweep(VecFn::Erf, -5.0f, 5.0f);
  a.basic_ok = check_basic();
  a.partial_ok = check_partial();
  a.bf16_ok = check_bf16();
  return a;
}

}  // namespace moon::cpu::MOON_ISA_NS
