// bf16 paths of the converted ops/cuda/{elementwise,dropout}_cuda.cu entry points on CPU tensors. Each case
// runs an entry point on bf16 tensors (8-byte aligned, so the 4-bf16 vector path runs, and 2 or 4 bytes off
// it, so the scalar path runs; odd sizes for the tails; broadcast and strided views) and checks
//   (a) bit for bit against the same entry point run on the f32-widened inputs, rounded to bf16 (the kernels
//       compute in f32 and round once at the store, so the arithmetic is the same), and
//   (b) against the CPU op on the same bf16 tensors: bit for bit where the CPU does the same f32 arithmetic
//       (binary, comparisons, where, in-place scale / axpy, dropout), within a bf16 ulp or two for the unary
//       maps (the CPU's polynomial expf / tanhf / erff differ from libm in the last f32 bits, which can move
//       a rounding).
// Entry: test_bf16_elementwise(only) (declared in common.h), suites bf16_unary bf16_binary bf16_compare
// bf16_where bf16_inplace bf16_dropout; "bf16_elementwise" or "bf16" runs them all.
#include <functional>
#include <random>
#include <vector>

#include "common.h"
#include "emu/ops/cuda/elementwise_cuda.h"
#include "ops/cpu/elementwise_kernels.h"
#include "ops/elementwise.h"
#include "ops/norm.h"
#include "runtime/autograd.h"
#include "runtime/dtype.h"
#include "runtime/tensor.h"

namespace emutest {

namespace {
using namespace moon;
namespace G = moon::cpu::generic;
namespace cuda = moon::cuda_emu;
using cpu::BinaryOp;
using cpu::CompareOp;
using cpu::UnaryOp;
std::mt19937 brng(11);

const uint16_t* B(const Tensor& t) { return static_cast<const uint16_t*>(t.raw_data()); }
uint16_t* Bw(const Tensor& t) { return static_cast<uint16_t*>(t.raw_data()); }

// A NaN-filled bf16 tensor starting `mis` elements (2 bytes each) past an 8-byte boundary.
Tensor bbuf(const Shape& s, int mis = 0) { return nan_tensor(s, DType::BF16, mis); }
// A NaN-filled f32 tensor (16-byte aligned).
Tensor fbuf(const Shape& s) { return nan_tensor(s); }
// Random bf16 values N(0, scale^2) (|x| + lo when lo > 0), in a bbuf.
Tensor brnd(const Shape& s, int mis = 0, float scale = 1.f, float lo = 0.f) {
  Tensor t = bbuf(s, mis);
  std::normal_distribution<float> N(0.f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = N(brng);
    Bw(t)[i] = f32_to_bf16(lo > 0.f ? std::fabs(v) + lo : v);
  }
  return t;
}
Tensor widen(const Tensor& t) { return t.to(DType::F32).contiguous(); }

// (a): the bf16 result must be the f32 result rounded, bit for bit.
void same_as_rounded(const char* what, const Tensor& got_bf16, const Tensor& f32_result, const char* ctx) {
  ++checks;
  const Tensor g = got_bf16.contiguous();
  const Tensor r = f32_result.contiguous();
  for (int64_t i = 0; i < g.numel(); ++i) {
    const uint16_t want = f32_to_bf16(F(r)[i]);
    if (B(g)[i] != want) {
      char m[512];
      std::snprintf(m, sizeof m, "%s [%s]: at %ld got %.9g (0x%04x), rounded f32 %.9g (0x%04x)", what, ctx, long(i),
                    bf16_to_f32(B(g)[i]), B(g)[i], bf16_to_f32(want), want);
      fail(m);
      return;
    }
  }
}
// (b) bitwise: two bf16 tensors of one shape hold the same bits.
void same_bits(const char* what, const Tensor& a, const Tensor& b, const char* ctx) {
  ++checks;
  const Tensor x = a.contiguous(), y = b.contiguous();
  if (x.numel() != y.numel() || x.dtype() != DType::BF16 || y.dtype() != DType::BF16) {
    fail(std::string(what) + " [" + ctx + "]: shape/dtype " + x.desc() + " vs " + y.desc());
    return;
  }
  for (int64_t i = 0; i < x.numel(); ++i)
    if (B(x)[i] != B(y)[i]) {
      char m[512];
      std::snprintf(m, sizeof m, "%s [%s]: not bitwise equal at %ld: %.9g vs %.9g", what, ctx, long(i),
                    bf16_to_f32(B(x)[i]), bf16_to_f32(B(y)[i]));
      fail(m);
      return;
    }
}
// (b) with a tolerance, on the widened values.
void close_bf16(const char* what, const Tensor& a, const Tensor& b, double rel, double abs_, const char* ctx) {
  const Tensor x = widen(a), y = widen(b);
  cmp(what, F(x), F(y), x.numel(), rel, abs_, ctx);
}

// The public op of a unary kernel op with the emulator test's parameters.
Tensor unary_op_of(UnaryOp op, float p0, float p1, const Tensor& x) {
  switch (op) {
    case UnaryOp::Neg: return neg(x);
    case UnaryOp::Exp: return exp(x);
    case UnaryOp::Log: return log(x);
    case UnaryOp::Sqrt: return sqrt(x);
    case UnaryOp::Rsqrt: return rsqrt(x);
    case UnaryOp::Abs: return abs(x);
    case UnaryOp::Square: return square(x);
    case UnaryOp::Tanh: return tanh(x);
    case UnaryOp::Sigmoid: return sigmoid(x);
    case UnaryOp::Relu: return relu(x);
    case UnaryOp::GeluErf: return gelu(x);
    case UnaryOp::GeluTanh: return gelu(x, GeluApprox::Tanh);
    case UnaryOp::Silu: return silu(x);
    case UnaryOp::Clamp: return clamp(x, p0, p1);
    case UnaryOp::AddScalar: return add_scalar(x, p0);
    case UnaryOp::Scale: return scale(x, p0);
    case UnaryOp::Pow: return pow(x, p0);
  }
  return Tensor();
}

Tensor binary_op_of(BinaryOp op, const Tensor& a, const Tensor& b) {
  switch (op) {
    case BinaryOp::Add: return add(a, b);
    case BinaryOp::Sub: return sub(a, b);
    case BinaryOp::Mul: return mul(a, b);
    case BinaryOp::Div: return div(a, b);
    case BinaryOp::Max: return maximum(a, b);
    case BinaryOp::Min: return minimum(a, b);
  }
  return Tensor();
}

void test_unary() {
  for (int o = 0; o <= int(UnaryOp::Pow); ++o)
    for (int mis : {0, 1, 2}) {
      const UnaryOp op = UnaryOp(o);
      // 1.5 is exact in bf16, so the CPU op (which takes a double) sees the kernel's p0.
      const float p0 = op == UnaryOp::Clamp ? -0.5f : (op == UnaryOp::Pow ? 2.5f : 1.5f), p1 = 0.75f;
      const int64_t n = 1031;
      const bool positive = op == UnaryOp::Log || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt || op == UnaryOp::Pow;
      Tensor x = brnd({n}, mis, 1.5f, positive ? 0.1f : 0.f);
      Bw(x)[3] = f32_to_bf16(0.f);
      if (op == UnaryOp::Clamp) Bw(x)[4] = f32_to_bf16(-0.5f), Bw(x)[5] = f32_to_bf16(0.75f);
      char ctx[48];
      std::snprintf(ctx, sizeof ctx, "op %d mis %d", o, mis);
      // forward: bf16 kernel vs the f32 kernel on the widened input, and vs the CPU op
      Tensor y = bbuf({n}, mis), yf = fbuf({n});
      cuda::unary_forward(op, p0, p1, x, y);
      cuda::unary_forward(op, p0, p1, widen(x), yf);
      same_as_rounded("bf16 unary fwd", y, yf, ctx);
      Tensor ycpu;
      {
        NoGradGuard ng;
        ycpu = unary_op_of(op, p0, p1, x);
      }
      if (ycpu.dtype() != DType::BF16) {
        ++checks;
        fail(std::string("bf16 unary cpu op dtype ") + ycpu.desc());
      }
      close_bf16("bf16 unary fwd vs cpu", y, ycpu, 8e-3, 1e-6, ctx);
      // backward, reading x or the bf16 forward output y as the op needs
      const auto needs = cpu::unary_backward_needs(op);
      Tensor g = brnd({n}, mis), dx = bbuf({n}, mis), dxf = fbuf({n});
      cuda::unary_backward(op, p0, p1, needs.x ? x : Tensor(), needs.y ? y : Tensor(), g, dx);
      cuda::unary_backward(op, p0, p1, needs.x ? widen(x) : Tensor(), needs.y ? widen(y) : Tensor(), widen(g), dxf);
      same_as_rounded("bf16 unary bwd", dx, dxf, ctx);
      // the CPU's f32 backward kernel on the same widened values, rounded once
      Tensor dr = fbuf({n});
      const Tensor xw = widen(x), yw = widen(y), gw = widen(g);
      G::unary_backward(op, p0, p1, F(xw), needs.y ? F(yw) : nullptr, F(gw), F(dr), n);
      close_bf16("bf16 unary bwd vs cpu", dx, dr.to(DType::BF16), 8e-3, 1e-5, ctx);
    }
  // in place (x is y)
  {
    const int64_t n = 1027;
    Tensor x = brnd({n}), xf = widen(x), ref = fbuf({n});
    cuda::unary_forward(UnaryOp::Scale, 3.f, 0.f, xf, ref);
    cuda::unary_forward(UnaryOp::Scale, 3.f, 0.f, x, x);
    same_as_rounded("bf16 unary in place", x, ref, "");
  }
}

void test_binary() {
  for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min}) {
    char ctx[32];
    std::snprintf(ctx, sizeof ctx, "op %d", int(op));
    // strided: a (3,1,5) expanded to (3,4,5), b a transposed (5,4) view
    Tensor a0 = brnd({3, 1, 5}), b0 = brnd({5, 4});
    Bw(a0)[2] = f32_to_bf16(NaN);
    Bw(b0)[0] = B(a0)[0];  // a tie
    const Tensor bt = b0.transpose(0, 1).unsqueeze(0);  // (1, 4, 5)
    Tensor a = a0.expand({3, 4, 5}), b = bt.expand({3, 4, 5});
    Tensor out = bbuf({3, 4, 5}), outf = fbuf({3, 4, 5});
    cuda::binary_forward(op, out, a, b);
    cuda::binary_forward(op, outf, widen(a0).expand({3, 4, 5}), widen(b0).transpose(0, 1).unsqueeze(0).expand({3, 4, 5}));
    same_as_rounded("bf16 binary strided", out, outf, ctx);
    {
      NoGradGuard ng;
      same_bits("bf16 binary strided vs cpu", out, binary_op_of(op, a0, bt), ctx);
    }
    if (op != BinaryOp::Add && op != BinaryOp::Sub) {
      Tensor g = brnd({3, 4, 5}), ga = bbuf({3, 4, 5}), gb = bbuf({3, 4, 5}), gaf = fbuf({3, 4, 5}),
             gbf = fbuf({3, 4, 5});
      cuda::binary_backward(op, g, a, b, ga, gb);
      cuda::binary_backward(op, widen(g), widen(a0).expand({3, 4, 5}),
                            widen(b0).transpose(0, 1).unsqueeze(0).expand({3, 4, 5}), gaf, gbf);
      same_as_rounded("bf16 binary backward strided ga", ga, gaf, ctx);
      same_as_rounded("bf16 binary backward strided gb", gb, gbf, ctx);
    }
    // flat: contiguous a, broadcast scalar b, n = 4k + 3, aligned and not; and both contiguous
    for (int mis : {0, 1, 2})
      for (bool scalar_b : {true, false}) {
        const int64_t n = 1027;
        char c2[48];
        std::snprintf(c2, sizeof c2, "op %d mis %d scalar %d", int(op), mis, scalar_b);
        Tensor fa = brnd({n}, mis), fb0 = scalar_b ? brnd({1}) : brnd({n}, mis == 1 ? 0 : 1);
        if (op == BinaryOp::Div && !scalar_b) Bw(fb0)[7] = f32_to_bf16(0.f);
        Bw(fa)[5] = B(fb0)[0];
        Tensor fb = scalar_b ? fb0.expand({n}) : fb0;
        Tensor o = bbuf({n}, mis), of = fbuf({n});
        cuda::binary_forward(op, o, fa, fb);
        cuda::binary_forward(op, of, widen(fa), scalar_b ? widen(fb0).expand({n}) : widen(fb0));
        same_as_rounded("bf16 binary flat", o, of, c2);
        {
          NoGradGuard ng;
          same_bits("bf16 binary flat vs cpu", o, binary_op_of(op, fa, scalar_b ? fb0.view({}) : fb0), c2);
        }
        if (op == BinaryOp::Add || op == BinaryOp::Sub) continue;
        Tensor g = brnd({n}, mis), ga = bbuf({n}, mis), gb = bbuf({n}), gaf = fbuf({n}), gbf = fbuf({n});
        cuda::binary_backward(op, g, fa, fb, ga, gb);
        cuda::binary_backward(op, widen(g), widen(fa), scalar_b ? widen(fb0).expand({n}) : widen(fb0), gaf, gbf);
        same_as_rounded("bf16 binary backward flat ga", ga, gaf, c2);
        same_as_rounded("bf16 binary backward flat gb", gb, gbf, c2);
        // and the CPU's f32 backward kernel on the widened values (same arithmetic), rounded
        Tensor ra = fbuf({n}), rb = fbuf({n});
        const Tensor gw = widen(g), aw = widen(fa), bw = widen(fb0);
        G::binary_backward_row(op, F(gw), F(aw), 1, F(bw), scalar_b ? 0 : 1, F(ra), F(rb), n);
        same_as_rounded("bf16 binary backward flat ga vs cpu", ga, ra, c2);
        same_as_rounded("bf16 binary backward flat gb vs cpu", gb, rb, c2);
        Tensor gb_only = bbuf({n});
        cuda::binary_backward(op, g, fa, fb, Tensor(), gb_only);
        same_bits("bf16 binary backward gb only", gb_only, gb, c2);
      }
  }
}

void test_compare() {
  for (CompareOp op : {CompareOp::Eq, CompareOp::Gt, CompareOp::Lt})
    for (int mis : {0, 1}) {
      char ctx[32];
      std::snprintf(ctx, sizeof ctx, "op %d mis %d", int(op), mis);
      const int64_t n = 1027;
      Tensor a = brnd({n}, mis), b0 = brnd({1});
      Bw(a)[9] = B(b0)[0];
      Bw(a)[10] = f32_to_bf16(NaN);
      Tensor out = full({n}, 7, DType::U8), outf = full({n}, 7, DType::U8);
      cuda::compare_forward(op, out, a, b0.expand({n}));
      cuda::compare_forward(op, outf, widen(a), widen(b0).expand({n}));
      Tensor cpu_out;
      {
        NoGradGuard ng;
        cpu_out = op == CompareOp::Eq ? eq(a, b0.view({})) : op == CompareOp::Gt ? gt(a, b0.view({})) : lt(a, b0.view({}));
      }
      ++checks;
      if (std::memcmp(out.raw_data(), outf.raw_data(), n) != 0) fail(std::string("bf16 compare flat vs f32 ") + ctx);
      ++checks;
      if (cpu_out.dtype() != DType::U8 || std::memcmp(out.raw_data(), cpu_out.raw_data(), n) != 0)
        fail(std::string("bf16 compare flat vs cpu ") + ctx);
      // both contiguous (vector path on both operands when aligned)
      Tensor c = brnd({n}, mis);
      for (int64_t i = 0; i < n; i += 3) Bw(c)[i] = B(a)[i];
      Tensor o2 = full({n}, 7, DType::U8), o2f = full({n}, 7, DType::U8);
      cuda::compare_forward(op, o2, a, c);
      cuda::compare_forward(op, o2f, widen(a), widen(c));
      ++checks;
      if (std::memcmp(o2.raw_data(), o2f.raw_data(), n) != 0) fail(std::string("bf16 compare dense vs f32 ") + ctx);
    }
  // strided: a (3, 4) transposed, b a broadcast row
  {
    Tensor a0 = brnd({3, 4}), b0 = brnd({3});
    for (int i = 0; i < 3; ++i) Bw(a0)[i * 4 + i] = B(b0)[i];
    Tensor a = a0.transpose(0, 1), b = b0.expand({4, 3});
    for (CompareOp op : {CompareOp::Eq, CompareOp::Gt, CompareOp::Lt}) {
      Tensor o = full({4, 3}, 7, DType::U8);
      cuda::compare_forward(op, o, a, b);
      const uint8_t* po = static_cast<const uint8_t*>(o.raw_data());
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 3; ++j) {
          const float u = bf16_to_f32(B(a0)[j * 4 + i]), v = bf16_to_f32(B(b0)[j]);
          const uint8_t r = op == CompareOp::Eq ? u == v : op == CompareOp::Gt ? u > v : u < v;
          ++checks;
          if (po[i * 3 + j] != r) fail("bf16 compare strided op " + std::to_string(int(op)));
        }
    }
  }
}

void test_where() {
  const int64_t n = 1030;
  std::vector<uint8_t> cv(n);
  for (int64_t i = 0; i < n; ++i) cv[i] = (i * 5) % 3 == 0;
  Tensor c = from_vector<uint8_t>(cv, {n}, DType::U8);
  for (int mis : {0, 1, 2}) {
    const char* ctx = mis == 0 ? "aligned" : mis == 1 ? "2 bytes off" : "4 bytes off";
    Tensor a = brnd({n}, mis), b = brnd({n}), out = bbuf({n}, mis), outf = fbuf({n});
    cuda::where_forward(out, c, a, b);
    cuda::where_forward(outf, c, widen(a), widen(b));
    same_as_rounded("bf16 where flat", out, outf, ctx);
    {
      NoGradGuard ng;
      same_bits("bf16 where flat vs cpu", out, where(c, a, b), ctx);
    }
    // a broadcast scalar b (masked_fill's shape)
    Tensor fill = full({}, -3.5, DType::BF16), o2 = bbuf({n}, mis);
    cuda::where_forward(o2, c, fill.expand({n}), a);
    {
      NoGradGuard ng;
      same_bits("bf16 where scalar vs masked_fill", o2, masked_fill(a, c, -3.5), ctx);
    }
    Tensor g = brnd({n}, mis), ga = bbuf({n}, mis), gb = bbuf({n}, mis), gaf = fbuf({n}), gbf = fbuf({n});
    cuda::where_backward(c, g, ga, gb);
    cuda::where_backward(c, widen(g), gaf, gbf);
    same_as_rounded("bf16 where grad a", ga, gaf, ctx);
    same_as_rounded("bf16 where grad b", gb, gbf, ctx);
  }
  // strided: cond (4, 1) expanded to (4, 6), a (6, 4) transposed, b scalar
  Tensor c2 = from_vector<uint8_t>(std::vector<uint8_t>{1, 0, 0, 1}, {4, 1}, DType::U8).expand({4, 6});
  Tensor a0 = brnd({6, 4}), b0 = brnd({1});
  Tensor out = bbuf({4, 6});
  cuda::where_forward(out, c2, a0.transpose(0, 1), b0.expand({4, 6}));
  ++checks;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 6; ++j) {
      const uint16_t r = (i == 0 || i == 3) ? B(a0)[j * 4 + i] : B(b0)[0];
      if (B(out)[i * 6 + j] != r) {
        fail("bf16 where strided");
        i = 4;
        break;
      }
    }
  Tensor g = brnd({4, 6}), ga = bbuf({4, 6}), gaf = fbuf({4, 6});
  cuda::where_backward(c2, g, ga, Tensor());
  cuda::where_backward(c2, widen(g), gaf, Tensor());
  same_as_rounded("bf16 where grad strided", ga, gaf, "");
}

void test_inplace() {
  // strided: scale then axpy into a (3, 6) view of a (6, 5) base; the f32 reference rounds after each op, as
  // the bf16 path stores after each
  {
    Tensor base = brnd({6, 5}), xx = brnd({6});
    Tensor v = base.transpose(0, 1).slice(0, 1, 4);
    Tensor ref = widen(base);
    cuda::scale_inplace(ref.transpose(0, 1).slice(0, 1, 4), 2.5);
    ref = ref.to(DType::BF16).to(DType::F32);
    cuda::axpy_inplace(ref.transpose(0, 1).slice(0, 1, 4), widen(xx).expand({3, 6}), 0.5);
    Tensor base2 = base.clone();
    cuda::scale_inplace(v, 2.5);
    cuda::axpy_inplace(v, xx.expand({3, 6}), 0.5);
    same_as_rounded("bf16 scale+axpy strided", base, ref, "");
    // the CPU ops on the same view of a copy
    NoGradGuard ng;
    Tensor v2 = base2.transpose(0, 1).slice(0, 1, 4);
    mul_(v2, 2.5);
    add_(v2, xx, 0.5);
    same_bits("bf16 scale+axpy strided vs cpu", base, base2, "");
  }
  // flat: contiguous y, aligned and not, with a broadcast x and a dense x
  for (int mis : {0, 1, 2}) {
    const int64_t n = 1027;
    Tensor y = brnd({n}, mis), y2 = y.clone(), yf = widen(y);
    Tensor x = brnd({n}, mis == 0 ? 1 : 0);
    cuda::axpy_inplace(y, x, -0.5);
    cuda::axpy_inplace(yf, widen(x), -0.5);
    same_as_rounded("bf16 axpy flat", y, yf, mis ? "mis" : "aligned");
    {
      NoGradGuard ng;
      add_(y2, x, -0.5);
      same_bits("bf16 axpy flat vs cpu", y, y2, mis ? "mis" : "aligned");
    }
    Tensor z = brnd({n}, mis), z2 = z.clone(), zf = widen(z);
    cuda::scale_inplace(z, 0.3);
    cuda::scale_inplace(zf, 0.3);
    same_as_rounded("bf16 scale flat", z, zf, mis ? "mis" : "aligned");
    NoGradGuard ng;
    mul_(z2, 0.3);
    same_bits("bf16 scale flat vs cpu", z, z2, mis ? "mis" : "aligned");
  }
}

void test_dropout_bf16() {
  for (int64_t n : {1, 3, 4, 7, 1027, 4096})
    for (int mis : {0, 1, 2}) {
      char ctx[48];
      std::snprintf(ctx, sizeof ctx, "n %ld mis %d", long(n), mis);
      const uint64_t seed = 0x1234567890abcdefull, off = 77;
      const double p = 0.3;
      const float pf = float(p), sc = float(1.0 / (1.0 - p));
      Tensor x = brnd({n}, mis), y = bbuf({n}, mis), yf = fbuf({n});
      cuda::dropout_forward(x, y, seed, off, pf, sc);
      cuda::dropout_forward(widen(x), yf, seed, off, pf, sc);
      same_as_rounded("bf16 dropout", y, yf, ctx);  // the same mask as f32 (zeros where f32 has zeros)
      Generator gen(seed);
      gen.set_state(seed, off);
      NoGradGuard ng;
      same_bits("bf16 dropout vs cpu", y, dropout(x, p, true, gen), ctx);
    }
}

}  // namespace

void test_bf16_elementwise(const std::string& only) {
  auto run = [&](const char* name, void (*f)()) {
    if (!only.empty() && only != name && only != "bf16" && only != "bf16_elementwise") return;
    guarded(name, f);
    done(name);
  };
  run("bf16_unary", test_unary);
  run("bf16_binary", test_binary);
  run("bf16_compare", test_compare);
  run("bf16_where", test_where);
  run("bf16_inplace", test_inplace);
  run("bf16_dropout", test_dropout_bf16);
}

}  // namespace emutest
