// Indexing and shape-combining ops (ops/index.h): error messages, the deterministic embedding backward,
// split/concat round trips, and topk routing details. The registry walk checks values and gradients.
#include <doctest/doctest.h>

#include "tests/test_util.h"
#include <omp.h>

#include <cmath>
#include <cstring>
#include <string>

#include "ops/index.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"
#include "runtime/rng.h"

using namespace moon;
using moon::test::contains;
using moon::test::error_of;

namespace {

Tensor ids_i64(const std::vector<int64_t>& v, const Shape& s) { return from_vector(v, s, DType::I64); }

}  // namespace

TEST_SUITE("ops") {

TEST_CASE("index ops: out-of-range indices name the value, its position and the valid range") {
  Tensor w = zeros({5, 3});
  std::string m = error_of([&] { embedding(w, ids_i64({0, 1, 2, 7}, {2, 2})); });
  CHECK(contains(m, "embedding"));
  CHECK(contains(m, "id 7"));
  CHECK(contains(m, "[1, 1]"));
  CHECK(contains(m, "0..4"));
  m = error_of([&] { embedding(w, from_vector(std::vector<int32_t>{-1}, {1}, DType::I32)); });
  CHECK(contains(m, "id -1"));
  m = error_of([&] { embedding(w, zeros({2})); });
  CHECK(contains(m, "integer tensor"));

  Tensor x = zeros({2, 4});
  m = error_of([&] { index_select(x, 1, ids_i64({0, 4}, {2})); });
  CHECK(contains(m, "index_select"));
  CHECK(contains(m, "index 4"));
  CHECK(contains(m, "[1]"));
  CHECK(contains(m, "0..3"));
  m = error_of([&] { gather(x, 0, ids_i64({0, 1, 2, 0}, {1, 4})); });
  CHECK(contains(m, "gather"));
  CHECK(contains(m, "index 2"));
  CHECK(contains(m, "[0, 2]"));
  CHECK(contains(m, "0..1"));
  m = error_of([&] { gather(x, 0, ids_i64({0, 1, 1, 0, 0}, {1, 5})); });
  CHECK(contains(m, "larger than the input"));
  m = error_of([&] { scatter_add(x, 1, ids_i64({9}, {1, 1}), ones({1, 1})); });
  CHECK(contains(m, "scatter_add"));
  CHECK(contains(m, "index 9"));
  CHECK(contains(m, "0..3"));
  m = error_of([&] { scatter_add(x, 1, ids_i64({1}, {1, 1}), ones({1, 2})); });
  CHECK(contains(m, "must have the shape of index"));
  m = error_of([&] { topk(x, 5, 1); });
  CHECK(contains(m, "topk"));
  CHECK(contains(m, "k = 5"));
  CHECK(contains(m, "0..4"));
}

TEST_CASE("concat, stack and split: shape mismatches name the shapes") {
  std::string m = error_of([] { concat({zeros({2, 3}), zeros({3, 4})}, 1); });
  CHECK(contains(m, "concat"));
  CHECK(contains(m, "(3, 4)"));
  CHECK(contains(m, "(2, 3)"));
  CHECK(contains(m, "dimension 1"));
  m = error_of([] { concat({zeros({2, 3}), zeros({2, 3}, DType::I64)}, 0); });
  CHECK(contains(m, "dtype"));
  m = error_of([] { concat({}, 0); });
  CHECK(contains(m, "at least one"));
  m = error_of([] { stack({zeros({2, 3}), zeros({2, 4})}, 0); });
  CHECK(contains(m, "stack"));
  CHECK(contains(m, "(2, 4)"));
  m = error_of([] { split(zeros({5, 2}), {2, 2}, 0); });
  CHECK(contains(m, "split"));
  CHECK(contains(m, "sum to 4"));
  CHECK(contains(m, "size 5"));
  m = error_of([] { chunk(zeros({5, 2}), 2, 0); });
  CHECK(contains(m, "chunk"));
}

TEST_CASE("embedding backward with repeated ids is correct and bitwise deterministic across thread counts") {
  const int64_t V = 64, C = 96, N = 4096;  // large enough for the parallel path
  Generator gen(7);
  Tensor w = randn({V, C}, gen);
  Tensor ids = randint({N / 64, 64}, gen, 0, V / 2);  // only half the rows hit: unhit rows must be zero
  Tensor gout = randn({N / 64, 64, C}, gen);
  auto run = [&](int threads) {
    const int prev = omp_get_max_threads();
    omp_set_num_threads(threads);
    Tensor wl = w.clone().set_requires_grad();
    Tensor out = embedding(wl, ids);
    out.backward(gout);
    omp_set_num_threads(prev);
    return wl.grad().to_vector<float>();
  };
  const std::vector<float> g2a = run(2), g2b = run(2), g1 = run(1);
  REQUIRE(g2a.size() == static_cast<size_t>(V * C));
  CHECK(std::memcmp(g2a.data(), g2b.data(), g2a.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(g2a.data(), g1.data(), g2a.size() * sizeof(float)) == 0);
  // reference: a serial scatter-add in position order (the same summation order, so bitwise equal)
  std::vector<float> ref(static_cast<size_t>(V * C), 0.0f);
  const std::vector<int64_t> iv = ids.to_vector<int64_t>();
  const std::vector<float> gv = gout.to_vector<float>();
  for (int64_t j = 0; j < N; ++j)
    for (int64_t c = 0; c < C; ++c) ref[iv[j] * C + c] += gv[j * C + c];
  CHECK(std::memcmp(g2a.data(), ref.data(), ref.size() * sizeof(float)) == 0);
  // forward rows are copies of the table
  Tensor out = embedding(w, ids);
  CHECK(out.shape() == Shape{N / 64, 64, C});
  const std::vector<float> ov = out.to_vector<float>(), wv = w.to_vector<float>();
  CHECK(std::memcmp(ov.data() + 5 * C, wv.data() + iv[5] * C, C * sizeof(float)) == 0);
}

TEST_CASE("split then concat round-trips, and chunk/stack agree with it") {
  Generator gen(3);
  Tensor x = randn({4, 7, 3}, gen);
  std::vector<Tensor> parts = split(x, {2, 0, 5}, 1);
  REQUIRE(parts.size() == 3);
  CHECK(parts[0].shape() == Shape{4, 2, 3});
  CHECK(parts[1].shape() == Shape{4, 0, 3});
  CHECK(parts[2].shape() == Shape{4, 5, 3});
  CHECK(concat(parts, 1).to_vector<float>() == x.to_vector<float>());
  CHECK(concat(chunk(x, 2, 0), 0).to_vector<float>() == x.to_vector<float>());
  // on a strided (transposed) input, along the last dimension
  Tensor xt = x.transpose(0, 2);  // (3, 7, 4)
  std::vector<Tensor> pt = split(xt, {1, 3}, -1);
  CHECK(concat(pt, -1).to_vector<float>() == xt.contiguous().to_vector<float>());
  // stack(select(i)) rebuilds the tensor
  std::vector<Tensor> rows;
  for (int64_t i = 0; i < 7; ++i) rows.push_back(x.select(1, i));
  CHECK(stack(rows, 1).to_vector<float>() == x.to_vector<float>());
  // an integer tensor concatenates too
  Tensor a = ids_i64({1, 2}, {2}), b = ids_i64({3}, {1});
  CHECK(concat({a, b}, 0).to_vector<int64_t>() == std::vector<int64_t>{1, 2, 3});
  // gradients: split's unused pieces contribute zeros
  Tensor xl = x.clone().set_requires_grad();
  std::vector<Tensor> ps = split(xl, {3, 4}, 1);
  sum(ps[1]).backward();
  const std::vector<float> gx = xl.grad().to_vector<float>();
  CHECK(gx[0] == 0.0f);                 // [0, 0, 0] is in piece 0
  CHECK(gx[3 * 3] == 1.0f);             // [0, 3, 0] is in piece 1
}

TEST_CASE("topk for routing: sorted, i64 indices, ties keep the lower position, NaN is largest") {
  Tensor x = from_vector({0.5f, 2.0f, -1.0f, 2.0f, 0.1f, 3.0f}, {2, 3});
  TopKResult t = topk(x, 2, 1);
  CHECK(t.indices.dtype() == DType::I64);
  CHECK(t.values.to_vector<float>() == std::vector<float>{2.0f, 0.5f, 3.0f, 2.0f});
  CHECK(t.indices.to_vector<int64_t>() == std::vector<int64_t>{1, 0, 2, 0});
  TopKResult s = topk(x, 1, 0, /*largest=*/false);
  CHECK(s.values.to_vector<float>() == std::vector<float>{0.5f, 0.1f, -1.0f});
  Tensor tie = from_vector({1.0f, 1.0f, 1.0f}, {3});
  CHECK(topk(tie, 2).indices.to_vector<int64_t>() == std::vector<int64_t>{0, 1});
  Tensor withnan = from_vector({1.0f, NAN, 2.0f}, {3});
  CHECK(topk(withnan, 1).indices.to_vector<int64_t>() == std::vector<int64_t>{1});
  // backward: gradient lands on the chosen positions only
  Tensor xl = x.clone().set_requires_grad();
  sum(topk(xl, 1, 1).values).backward();
  CHECK(xl.grad().to_vector<float>() == std::vector<float>{0, 1, 0, 0, 0, 1});
}

}  // TEST_SUITE
