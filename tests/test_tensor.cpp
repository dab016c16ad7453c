// Tensor basics: views, copies, dtypes, factories, RNG, allocator, errors.
#include <doctest/doctest.h>

#include <cstring>

#include <cmath>

#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "runtime/allocator.h"
#include "runtime/autograd.h"
#include "runtime/rng.h"

using namespace moon;

TEST_SUITE("runtime") {

TEST_CASE("views share storage and index correctly") {
  Tensor a = arange(0, 24).reshape({2, 3, 4});
  CHECK(a.is_contiguous());
  Tensor p = a.permute({2, 0, 1});  // (4, 2, 3)
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK_FALSE(p.is_contiguous());
  CHECK(p.impl()->storage == a.impl()->storage);
  // p[i][j][k] = a[j][k][i] = j*12 + k*4 + i
  std::vector<float> v = p.to_vector<float>();
  CHECK(v[1 * 6 + 1 * 3 + 2] == 1 * 12 + 2 * 4 + 1);
  Tensor s = a.slice(2, 1, 3);  // (2, 3, 2)
  CHECK(s.to_vector<float>() == std::vector<float>{1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22});
  CHECK(a.select(1, 2).to_vector<float>() == std::vector<float>{8, 9, 10, 11, 20, 21, 22, 23});
  Tensor e = from_vector({1, 2, 3}, {3, 1}).expand({2, 3, 4});
  CHECK(e.stride(2) == 0);
  CHECK(e.contiguous().to_vector<float>()[5] == 2.0f);
  CHECK(a.unsqueeze(1).shape() == Shape{2, 1, 3, 4});
  CHECK(a.unsqueeze(1).squeeze(1).shape() == Shape{2, 3, 4});
  CHECK(a.view({6, -1}).shape() == Shape{6, 4});
  CHECK(a.transpose(0, 2).reshape({-1}).numel() == 24);  // needs a copy
  CHECK(a.transpose(1, 2).flatten(0, 1).shape() == Shape{8, 3});
}

TEST_CASE("view refuses incompatible strides, reshape copies") {
  Tensor a = arange(0, 6).reshape({2, 3}).transpose(0, 1);
  CHECK_THROWS_AS(a.view({6}), Error);
  CHECK(a.reshape({6}).to_vector<float>() == std::vector<float>{0, 3, 1, 4, 2, 5});
}

TEST_CASE("dtype conversions round trip") {
  Tensor a = from_vector({1.0f, -2.5f, 3.14159f, 65504.0f, 1e-6f}, {5});
  CHECK(a.to(DType::BF16).to(DType::F32).to_vector<float>()[2] == doctest::Approx(3.140625));
  CHECK(a.to(DType::F16).to(DType::F32).to_vector<float>()[3] == 65504.0f);
  CHECK(std::fabs(a.to(DType::F16).to(DType::F32).to_vector<float>()[4] - 1e-6f) < 3e-8f);
  CHECK(a.to(DType::I64).to_vector<int64_t>() == std::vector<int64_t>{1, -2, 3, 65504, 0});
  CHECK(f32_to_bf16(1.00390625f) == f32_to_bf16(1.0f));  // tie rounds to even
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  CHECK(f16_to_f32(f32_to_f16(1e9f)) == INFINITY);
  for (int h = 0; h < 0x7c00; h += 7) CHECK(f32_to_f16(f16_to_f32(static_cast<uint16_t>(h))) == h);
}

TEST_CASE("contiguous f32 <-> bf16 conversion (the parallel fast path) equals the scalar rule bit for bit") {
  // 100,003 f32 bit patterns: every class (NaN with payloads, inf, ties, subnormals, huge) from a hash walk,
  // more than one parallel chunk so the chunk seams are crossed
  const int64_t n = 100003;
  std::vector<uint32_t> bits(n);
  uint32_t x = 12345;
  for (int64_t i = 0; i < n; ++i) x = x * 1664525u + 1013904223u, bits[i] = x;
  bits[0] = 0x7fc00001u, bits[1] = 0xff800000u, bits[2] = 0x3f808000u, bits[3] = 0x3f818000u, bits[4] = 0x00000001u;
  Tensor f = empty({n}, DType::F32);
  std::memcpy(f.raw_data(), bits.data(), bits.size() * 4);
  Tensor h = f.to(DType::BF16);  // (n) bf16
  const uint16_t* hp = static_cast<const uint16_t*>(h.raw_data());
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    float v;
    std::memcpy(&v, &bits[i], 4);
    bad += hp[i] != f32_to_bf16(v);
  }
  CHECK(bad == 0);
  Tensor back = h.to(DType::F32);
  const float* bp = back.data<float>();
  for (int64_t i = 0; i < n; i += 997) {
    const float want = bf16_to_f32(hp[i]);
    CHECK(std::memcmp(&bp[i], &want, 4) == 0);
  }
}

TEST_CASE("factories and printing") {
  CHECK(zeros({2, 2}).to_vector<float>() == std::vector<float>{0, 0, 0, 0});
  CHECK(full({3}, 2.5).to_vector<float>() == std::vector<float>{2.5, 2.5, 2.5});
  CHECK(arange(0, 1, 0.25).numel() == 4);
  CHECK(arange(0, 5, 1, DType::I32).to_vector<int32_t>() == std::vector<int32_t>{0, 1, 2, 3, 4});
  const std::string s = arange(0, 6).reshape({2, 3}).str();
  CHECK(s.find("f32(2, 3)") != std::string::npos);
  CHECK(s.find("[[0, 1, 2],") != std::string::npos);
  CHECK(arange(0, 100).str().find("...") != std::string::npos);
}

TEST_CASE("Philox: reproducible, well distributed, order independent") {
  Generator g1(42), g2(42);
  Tensor a = randn({1000}, g1), b = randn({1000}, g2);
  CHECK(a.to_vector<float>() == b.to_vector<float>());
  CHECK(randn({10}, g1).to_vector<float>() != a.slice(0, 0, 10).to_vector<float>());  // the stream advanced
  // A draw is a pure function of (seed, counter): restoring the state replays it.
  Generator g3(42);
  g3.set_state(42, g1.offset());
  Tensor c1 = rand({37}, g1), c2 = rand({37}, g3);
  CHECK(c1.to_vector<float>() == c2.to_vector<float>());
  Generator g(7);
  const auto n = randn({100000}, g).to_vector<float>();
  double m = 0, m2 = 0;
  for (float x : n) m += x, m2 += double(x) * x;
  m /= n.size();
  m2 /= n.size();
  CHECK(std::fabs(m) < 0.02);
  CHECK(std::fabs(m2 - 1.0) < 0.02);
  const auto u = rand({100000}, g, 2.0, 3.0).to_vector<float>();
  for (float x : u) REQUIRE((x >= 2.0f && x < 3.0f));
  // Known-answer test of Philox4x32-10 (counter 0, key 0 gives the published vector 6627e8d5 e169c58d bc57ac4c 9b00dbd8).
  const auto r = philox4x32(0, 0);
  CHECK(r[0] == 0x6627e8d5u);
  CHECK(r[1] == 0xe169c58du);
  CHECK(r[2] == 0xbc57ac4cu);
  CHECK(r[3] == 0x9b00dbd8u);
}

TEST_CASE("caching allocator: 64-byte alignment, stats, reuse") {
  Allocator& a = allocator_for(kCPU);
  const AllocatorStats before = a.stats();
  {
    Tensor t = empty({1000});
    CHECK(reinterpret_cast<uintptr_t>(t.raw_data()) % 64 == 0);
    CHECK(a.stats().current_bytes >= before.current_bytes + 4000);
  }
  CHECK(a.stats().current_bytes == before.current_bytes);
  const uint64_t sys = a.stats().system_allocs;
  for (int i = 0; i < 10; ++i) Tensor t = empty({1000});
  CHECK(a.stats().system_allocs == sys);  // served from the cache
  CHECK(allocator_size_class(1) == 64);
  CHECK(allocator_size_class(5000) == 5120);
  CHECK(a.stats().peak_bytes >= a.stats().current_bytes);
}

TEST_CASE("errors name the op and the shapes") {
  Tensor a = zeros({2, 3}), b = zeros({4, 5});
  try {
    add(a, b);
    FAIL("expected an error");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(m.find("add") != std::string::npos);
    CHECK(m.find("(2, 3)") != std::string::npos);
    CHECK(m.find("(4, 5)") != std::string::npos);
  }
  CHECK_THROWS_AS(a.permute({0, 0}), Error);
  CHECK_THROWS_AS(a.transpose(0, 2), Error);
  CHECK_THROWS_AS(a.select(0, 2), Error);
  CHECK_THROWS_AS(a.expand({3, 3}), Error);
  CHECK_THROWS_AS(a.view({7}), Error);
  CHECK_THROWS_AS(add(a, zeros({2, 3}, DType::I32)), Error);
  CHECK_THROWS_AS(a.to(cuda_device()), Error);  // no CUDA in this build or no device: a clear error
  CHECK_THROWS_AS(Tensor().shape(), Error);
  CHECK_THROWS_AS(zeros({2}, DType::I64).set_requires_grad(), Error);
}

}  // TEST_SUITE
