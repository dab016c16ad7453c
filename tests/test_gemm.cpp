// Tests of the oneDNN GEMM wrapper (ops/cpu/gemm_onednn.*) against a naive double-precision reference:
// f32 and bf16, transposed operands, batch broadcast, accumulate, bias, strided outputs, K = 0, the
// primitive cache and argument errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ops/cpu/gemm_onednn.h"
#include "runtime/error.h"

namespace {

using namespace moon::cpu;

uint16_t to_bf16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float from_bf16(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Layout of one logical (batch, R, C) operand.
enum class Lay {
  Row,         // row-major, optional leading-dimension padding
  Trans,       // column-major (a transposed view): unit row stride
  General,     // no unit stride at all (forces the packing path)
  Interleaved  // batch interleaved inside rows, like heads in a (seq, heads, dim) tensor
};

struct Layout {
  int64_t s[3] = {0, 0, 0};
  size_t size = 1;  // elements spanned
};

Layout make_layout(int64_t batch, int64_t R, int64_t C, Lay lay, bool broadcast, int64_t pad) {
  Layout l;
  const int64_t nb = broadcast ? 1 : batch;
  switch (lay) {
    case Lay::Row: l.s[2] = 1; l.s[1] = C + pad; l.s[0] = R * l.s[1]; break;
    case Lay::Trans: l.s[1] = 1; l.s[2] = R + pad; l.s[0] = C * l.s[2]; break;
    case Lay::General: l.s[2] = 2; l.s[1] = 2 * C + pad; l.s[0] = R * l.s[1]; break;
    case Lay::Interleaved: l.s[2] = 1; l.s[0] = C + pad; l.s[1] = nb * (C + pad); break;
  }
  if (broadcast) l.s[0] = 0;
  const int64_t last = (nb - 1) * l.s[0] + (R - 1) * l.s[1] + (C - 1) * l.s[2];
  l.size = static_cast<size_t>(std::max<int64_t>(last + 1, 1));
  return l;
}

struct Problem {
  int64_t batch = 1, M = 1, N = 1, K = 1;
  GemmDType dtype = GemmDType::F32;
  Lay la = Lay::Row, lb = Lay::Row, lc = Lay::Row;
  bool a_bcast = false, b_bcast = false, accumulate = false, bias = false;
  int64_t pad = 0;
};

// Runs one problem through gemm() and checks it against the reference; also checks that elements of C
// outside the output view are left untouched.
void check_problem(const Problem& p, uint32_t seed = 7) {
  CAPTURE(p.batch); CAPTURE(p.M); CAPTURE(p.N); CAPTURE(p.K);
  CAPTURE(static_cast<int>(p.dtype)); CAPTURE(static_cast<int>(p.la)); CAPTURE(static_cast<int>(p.lb));
  CAPTURE(static_cast<int>(p.lc)); CAPTURE(p.a_bcast); CAPTURE(p.b_bcast); CAPTURE(p.accumulate); CAPTURE(p.bias);
  const Layout la = make_layout(p.batch, p.M, p.K, p.la, p.a_bcast, p.pad);
  const Layout lb = make_layout(p.batch, p.K, p.N, p.lb, p.b_bcast, p.pad);
  const Layout lc = make_layout(p.batch, p.M, p.N, p.lc, false, p.pad);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  std::vector<float> af(la.size), bf(lb.size), c(lc.size), bias(p.N);
  std::vector<uint16_t> ah(la.size), bh(lb.size);
  for (auto& x : af) x = U(rng);
  for (auto& x : bf) x = U(rng);
  for (auto& x : c) x = U(rng);
  for (auto& x : bias) x = U(rng);
  if (p.dtype == GemmDType::BF16) {  // the reference uses the bf16-rounded inputs
    for (size_t i = 0; i < af.size(); ++i) af[i] = from_bf16(ah[i] = to_bf16(af[i]));
    for (size_t i = 0; i < bf.size(); ++i) bf[i] = from_bf16(bh[i] = to_bf16(bf[i]));
  }
  const std::vector<float> c0 = c;

  GemmArgs g;
  g.batch = p.batch; g.M = p.M; g.N = p.N; g.K = p.K; g.in_dtype = p.dtype;
  g.A = p.dtype == GemmDType::F32 ? static_cast<const void*>(af.data()) : ah.data();
  g.B = p.dtype == GemmDType::F32 ? static_cast<const void*>(bf.data()) : bh.data();
  g.C = c.data();
  std::copy(la.s, la.s + 3, g.a_stride);
  std::copy(lb.s, lb.s + 3, g.b_stride);
  std::copy(lc.s, lc.s + 3, g.c_stride);
  g.bias = p.bias ? bias.data() : nullptr;
  g.accumulate = p.accumulate;
  gemm(g);

  // |a|, |b| <= 1: the f32-accumulation error grows like sqrt(K).
  const double tol = 1e-5 * (std::sqrt(static_cast<double>(p.K)) + 1.0);
  std::vector<char> in_view(c.size(), 0);
  double max_err = 0;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t i = 0; i < p.M; ++i)
      for (int64_t j = 0; j < p.N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < p.K; ++k)
          s += static_cast<double>(af[b * la.s[0] + i * la.s[1] + k * la.s[2]]) *
               bf[b * lb.s[0] + k * lb.s[1] + j * lb.s[2]];
        const size_t ci = static_cast<size_t>(b * lc.s[0] + i * lc.s[1] + j * lc.s[2]);
        if (p.accumulate) s += c0[ci];
        if (p.bias) s += bias[j];
        in_view[ci] = 1;
        max_err = std::max(max_err, std::fabs(s - c[ci]));
      }
  CHECK(max_err <= tol);
  size_t clobbered = 0;
  for (size_t i = 0; i < c.size(); ++i) clobbered += !in_view[i] && c[i] != c0[i];
  CHECK(clobbered == 0);
}

GemmArgs dense_args(int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C) {
  GemmArgs g;
  g.M = M; g.N = N; g.K = K; g.A = A; g.B = B; g.C = C;
  g.a_stride[1] = K; g.a_stride[2] = 1;
  g.b_stride[1] = N; g.b_stride[2] = 1;
  g.c_stride[1] = N; g.c_stride[2] = 1;
  return g;
}

}  // namespace

TEST_SUITE("kernels") {

TEST_CASE("gemm: sizes x transposes, f32 and bf16") {
  const int64_t sizes[] = {1, 3, 17, 40};
  for (GemmDType dt : {GemmDType::F32, GemmDType::BF16})
    for (int64_t M : sizes)
      for (int64_t N : sizes)
        for (int64_t K : sizes)
          for (int t = 0; t < 4; ++t) {
            Problem p;
            p.M = M; p.N = N; p.K = K; p.dtype = dt;
            p.la = (t & 1) ? Lay::Trans : Lay::Row;
            p.lb = (t & 2) ? Lay::Trans : Lay::Row;
            check_problem(p);
          }
}

TEST_CASE("gemm: batch with broadcast operands, accumulate and bias") {
  for (GemmDType dt : {GemmDType::F32, GemmDType::BF16})
    for (int bc = 0; bc < 4; ++bc)
      for (int f = 0; f < 4; ++f)
        for (int t = 0; t < 4; ++t) {
          Problem p;
          p.batch = 3; p.M = 17; p.N = 9; p.K = 33; p.dtype = dt;
          p.a_bcast = bc & 1; p.b_bcast = bc & 2;
          p.accumulate = f & 1; p.bias = f & 2;
          p.la = (t & 1) ? Lay::Trans : Lay::Row;
          p.lb = (t & 2) ? Lay::Trans : Lay::Row;
          check_problem(p);
        }
}

TEST_CASE("gemm: B broadcast over a row-stacked batch (folded into one GEMM), incl. M = 1") {
  for (int64_t M : {1, 5}) {
    Problem p;
    p.batch = 4; p.M = M; p.N = 19; p.K = 23; p.b_bcast = true; p.bias = true;
    check_problem(p);
    p.dtype = GemmDType::BF16; p.accumulate = true;
    check_problem(p);
  }
}

TEST_CASE("gemm: output views (padded rows, column-major, general strides)") {
  for (Lay lc : {Lay::Row, Lay::Trans, Lay::General, Lay::Interleaved})
    for (int f = 0; f < 4; ++f) {
      Problem p;
      p.batch = 2; p.M = 7; p.N = 11; p.K = 13; p.lc = lc; p.pad = 3;
      p.accumulate = f & 1; p.bias = f & 2;
      check_problem(p);
    }
}

TEST_CASE("gemm: general strided and interleaved inputs") {
  for (Lay la : {Lay::Row, Lay::Trans, Lay::General, Lay::Interleaved})
    for (Lay lb : {Lay::Row, Lay::Trans, Lay::General, Lay::Interleaved})
      for (GemmDType dt : {GemmDType::F32, GemmDType::BF16}) {
        Problem p;
        p.batch = 3; p.M = 6; p.N = 10; p.K = 9; p.la = la; p.lb = lb; p.dtype = dt; p.pad = 1;
        check_problem(p);
      }
}

TEST_CASE("gemm: K = 0 gives zero, bias, or leaves C when accumulating") {
  for (int f = 0; f < 4; ++f) {
    Problem p;
    p.batch = 2; p.M = 3; p.N = 4; p.K = 0; p.pad = 2;
    p.accumulate = f & 1; p.bias = f & 2;
    check_problem(p);
  }
}

TEST_CASE("gemm: GELU epilogues (tanh and erf) after the bias, including K = 0") {
  for (GemmEpilogue e : {GemmEpilogue::GeluTanh, GemmEpilogue::GeluErf})
    for (int64_t K : {0, 1, 7, 64}) {
      const int64_t M = 5, N = 6;
      std::vector<float> A(M * std::max<int64_t>(K, 1)), B(std::max<int64_t>(K, 1) * N), C(M * N), bias(N);
      std::mt19937 rng(3);
      std::uniform_real_distribution<float> U(-2.f, 2.f);
      for (auto* v : {&A, &B, &bias})
        for (float& x : *v) x = U(rng);
      GemmArgs g = dense_args(M, N, K, A.data(), B.data(), C.data());
      g.bias = bias.data();
      g.epilogue = e;
      gemm(g);
      double worst = 0;
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double s = bias[j];
          for (int64_t k = 0; k < K; ++k) s += double(A[i * K + k]) * B[k * N + j];
          const double y = e == GemmEpilogue::GeluErf ? 0.5 * s * (1 + std::erf(s / std::sqrt(2.0)))
                                                      : 0.5 * s * (1 + std::tanh(0.7978845608028654 * (s + 0.044715 * s * s * s)));
          worst = std::max(worst, std::fabs(y - C[i * N + j]) / (1 + std::fabs(y)));
        }
      CAPTURE(K);
      CHECK(worst < 1e-5);
    }
}

TEST_CASE("gemm: empty problems do nothing") {
  float c = 42.f;
  GemmArgs g;
  g.M = 0; g.N = 1; g.K = 3; g.C = &c;  // A, B may be null when there is no work
  gemm(g);
  g.M = 1; g.N = 1; g.batch = 0;
  gemm(g);
  CHECK(c == 42.f);
}

TEST_CASE("gemm: negative and overlapping batch strides run correctly") {
  const int64_t batch = 3, M = 4, N = 2, K = 3;
  std::vector<float> A(64), B(K * N), C(batch * M * N);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  for (auto& x : A) x = U(rng);
  for (auto& x : B) x = U(rng);
  // a_stride[0] = 3: batches are overlapping windows; then reversed batches with a negative stride.
  for (int64_t a0 : {int64_t{3}, -M * K}) {
    CAPTURE(a0);
    const float* a_base = a0 < 0 ? A.data() + (batch - 1) * M * K : A.data();
    GemmArgs g = dense_args(M, N, K, a_base, B.data(), C.data());
    g.batch = batch;
    g.a_stride[0] = a0;
    g.c_stride[0] = M * N;
    gemm(g);
    double err = 0;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (int64_t k = 0; k < K; ++k) s += static_cast<double>(a_base[b * a0 + i * K + k]) * B[k * N + j];
          err = std::max(err, std::fabs(s - C[b * M * N + i * N + j]));
        }
    CHECK(err < 1e-5);
  }
}

TEST_CASE("gemm: repeated problems hit the primitive cache; the cache is bounded") {
  gemm_cache_clear();
  std::vector<float> A(64 * 64, 0.5f), B(64 * 64, 0.25f), C(64 * 64);
  GemmArgs g = dense_args(8, 8, 8, A.data(), B.data(), C.data());
  gemm(g);
  GemmCacheStats s = gemm_cache_stats();
  CHECK(s.misses == 1);
  CHECK(s.hits == 0);
  gemm(g);
  gemm(g);
  s = gemm_cache_stats();
  CHECK(s.misses == 1);
  CHECK(s.hits == 2);
  CHECK(s.entries == 1);
  CHECK(C[0] == doctest::Approx(8 * 0.5 * 0.25));
  // A different layout is a different primitive.
  g.b_stride[1] = 1; g.b_stride[2] = 8;
  gemm(g);
  CHECK(gemm_cache_stats().misses == 2);
  for (int64_t k = 1; k <= 300; ++k) {
    GemmArgs v = dense_args(1, 1, k, A.data(), B.data(), C.data());
    gemm(v);
  }
  CHECK(gemm_cache_stats().entries <= 256);
  gemm_cache_clear();
  CHECK(gemm_cache_stats().entries == 0);
}

TEST_CASE("gemm: bad arguments throw moon::Error") {
  std::vector<float> A(16), B(16), C(16);
  const GemmArgs ok = dense_args(2, 2, 2, A.data(), B.data(), C.data());
  GemmArgs g = ok;
  g.M = -1;
  CHECK_THROWS_AS(gemm(g), moon::Error);
  g = ok; g.C = nullptr;
  CHECK_THROWS_AS(gemm(g), moon::Error);
  g = ok; g.A = nullptr;
  CHECK_THROWS_AS(gemm(g), moon::Error);
  g = ok; g.B = nullptr;
  CHECK_THROWS_AS(gemm(g), moon::Error);
  g = ok; g.batch = 2; g.c_stride[0] = 0;  // every batch writing the same C
  CHECK_THROWS_AS(gemm(g), moon::Error);
  g = ok; g.c_stride[1] = 1;  // rows overlapping
  CHECK_THROWS_AS(gemm(g), moon::Error);
  g = ok; g.accumulate = true; g.epilogue = GemmEpilogue::GeluTanh;  // an activation of a partial sum
  try {
    gemm(g);
    FAIL("an epilogue with accumulate was accepted");
  } catch (const moon::Error& e) {
    CHECK(std::string(e.what()).find("epilogue cannot be combined with accumulate") != std::string::npos);
  }
  g = ok; g.c_stride[1] = 1;
  try {
    gemm(g);
  } catch (const moon::Error& e) {
    CHECK(std::string(e.what()).find("matmul") != std::string::npos);
  }
}

}  // TEST_SUITE
