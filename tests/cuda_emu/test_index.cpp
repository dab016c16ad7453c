// The converted ops/cuda/{reduce,topk,index}_cuda.cu entry points on CPU tensors, against straightforward
// references: double where the CUDA order of additions differs from the CPU's, exact (bitwise) where the kernels
// promise an order (max/argmax ties and NaN, scatter_add / embedding backward summed in index order, top-k,
// copies and gathers).
#include <array>
#include <random>
#include <string>
#include <vector>

#include "common.h"
#include "emu/ops/cuda/index_cuda.h"
#include "emu/ops/cuda/reduce_cuda.h"

namespace emutest {
namespace {
using namespace moon;
namespace cuda = moon::cuda_emu;

Random R(12345);
template <class T> T* P(const Tensor& t) { return static_cast<T*>(t.raw_data()); }
// a contiguous tensor with every byte set to `byte` (0xff: f32 NaN, i64 -1)
static Tensor garbage(const Shape& s, DType d = DType::F32, int byte = 0xff) {
  Tensor t = empty(s, d);
  std::memset(t.raw_data(), byte, size_t(t.numel()) * dtype_size(d));
  return t;
}
static bool same(float a, float b) { return (a != a && b != b) || std::memcmp(&a, &b, 4) == 0; }
#define CASE(...) (std::string(__func__) + " " + fmt(__VA_ARGS__))
static Tensor data(const Shape& s, int mode) {
  Tensor t = empty(s);
  float* p = P<float>(t);
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = R.sample(mode);
  return t;
}

// ---------------- sum_middle
void test_sum(int64_t outer, int64_t len, int64_t inner) {
  ++checks;
  Tensor src = data({outer * len * inner}, 0), out = garbage({outer * inner});
  cuda::sum_middle(src, out, outer, len, inner);
  const float* x = P<float>(src); const float* y = P<float>(out);
  double worst = 0;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < inner; ++j) {
      double s = 0, a = 0;
      for (int64_t k = 0; k < len; ++k) { s += x[(o * len + k) * inner + j]; a += std::fabs(x[(o * len + k) * inner + j]); }
      const double e = std::fabs(y[o * inner + j] - s) / (a * 1e-6 + 1e-30);
      if (!(e <= 1)) { fail(CASE("outer=%ld len=%ld inner=%ld at (%ld,%ld): %g vs %g", outer, len, inner, o, j, y[o * inner + j], s)); return; }
      worst = std::max(worst, e);
    }
}

// ---------------- max_middle and backward
void test_max(int64_t outer, int64_t len, int64_t inner, int mode) {
  ++checks;
  Tensor src = data({outer * len * inner}, mode), v = garbage({outer * inner}), ix = garbage({outer * inner}, DType::I64, 0x7e);
  cuda::max_middle(src, v, ix, outer, len, inner);
  const float* x = P<float>(src);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < inner; ++j) {
      float bv = x[o * len * inner + j]; int64_t bi = 0;
      for (int64_t k = 1; k < len; ++k) {
        const float a = x[(o * len + k) * inner + j];
        if (a > bv || (a != a && bv == bv)) bv = a, bi = k;
      }
      if (!same(P<float>(v)[o * inner + j], bv) || P<int64_t>(ix)[o * inner + j] != bi) {
        fail(CASE("outer=%ld len=%ld inner=%ld mode=%d at (%ld,%ld): got %g@%ld want %g@%ld", outer, len, inner, mode, o, j,
                  P<float>(v)[o * inner + j], P<int64_t>(ix)[o * inner + j], bv, bi));
        return;
      }
    }
  Tensor g = data({outer * inner}, 0), dx = garbage({outer * len * inner});
  cuda::max_middle_backward(g, ix, dx, outer, len, inner);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t k = 0; k < len; ++k)
      for (int64_t j = 0; j < inner; ++j) {
        const float want = P<int64_t>(ix)[o * inner + j] == k ? P<float>(g)[o * inner + j] : 0.0f;
        if (!same(P<float>(dx)[(o * len + k) * inner + j], want)) { fail(CASE("backward outer=%ld len=%ld inner=%ld", outer, len, inner)); return; }
      }
}

// ---------------- cumsum
void test_cumsum(int64_t outer, int64_t len, int64_t inner, bool reverse) {
  ++checks;
  Tensor src = data({outer * len * inner}, 0), out = garbage({outer * len * inner});
  cuda::cumsum_middle(src, out, outer, len, inner, reverse);
  const float* x = P<float>(src); const float* y = P<float>(out);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < inner; ++j) {
      double s = 0, a = 0;
      for (int64_t st = 0; st < len; ++st) {
        const int64_t k = reverse ? len - 1 - st : st, at = (o * len + k) * inner + j;
        s += x[at]; a += std::fabs(x[at]);
        if (!(std::fabs(y[at] - s) <= 1e-6 * a + 1e-30)) {
          fail(CASE("outer=%ld len=%ld inner=%ld rev=%d at (%ld,%ld,%ld): %g vs %g", outer, len, inner, int(reverse), o, k, j, y[at], s));
          return;
        }
      }
    }
}

// ---------------- l2 normalize rows and backward
void test_l2(int64_t R, int64_t D, int64_t pad, int64_t off, int zero_rows) {
  ++checks;
  const float eps = 1e-6f;
  Tensor xb = data({R, D + pad}, 0);
  for (int64_t i = 0; i < R; i += 3) if (zero_rows) for (int64_t d = 0; d < D + pad; ++d) P<float>(xb)[i * (D + pad) + d] = 0;
  Tensor x = pad < 0 ? make_view(xb, {R, D}, {0, 1}, 0) : xb.narrow(1, off, D);
  if (pad < 0) pad = 0;
  Tensor y = garbage({R, D}), norm = garbage({R});
  cuda::l2_normalize_rows(x, eps, y, norm);
  const int64_t xs = x.stride(0);
  const float* xp = P<float>(x);
  for (int64_t i = 0; i < R; ++i) {
    double s = 0;
    for (int64_t d = 0; d < D; ++d) s += double(xp[i * xs + d]) * xp[i * xs + d];
    const double n = std::sqrt(s);
    if (!(std::fabs(P<float>(norm)[i] - n) <= 1e-6 * n + 1e-30)) { fail(CASE("norm R=%ld D=%ld pad=%ld off=%ld row %ld: %g vs %g", R, D, pad, off, i, P<float>(norm)[i], n)); return; }
    const double inv = 1.0 / std::max(n, double(eps));
    for (int64_t d = 0; d < D; ++d)
      if (!(std::fabs(P<float>(y)[i * D + d] - xp[i * xs + d] * inv) <= 1e-6 * std::fabs(xp[i * xs + d] * inv) + 1e-30)) {
        fail(CASE("y R=%ld D=%ld pad=%ld off=%ld at (%ld,%ld)", R, D, pad, off, i, d)); return; }
  }
  Tensor gb = data({R, D + pad}, 0);
  Tensor g = x.stride(0) == 0 ? make_view(gb, {R, D}, {0, 1}, 0) : gb.narrow(1, off, D), dx = garbage({R, D});
  cuda::l2_normalize_rows_backward(g, y, norm, eps, dx);
  const int64_t gs = g.stride(0);
  const float* gp = P<float>(g); const float* yp = P<float>(y);
  for (int64_t i = 0; i < R; ++i) {
    const float n = P<float>(norm)[i];
    const bool cl = !(n > eps);
    double dot = 0, mag = 0;
    if (!cl) for (int64_t d = 0; d < D; ++d) { dot += double(gp[i * gs + d]) * yp[i * D + d]; mag += std::fabs(gp[i * gs + d] * yp[i * D + d]); }
    const double inv = 1.0 / (cl ? eps : n);
    for (int64_t d = 0; d < D; ++d) {
      const double want = (gp[i * gs + d] - yp[i * D + d] * dot) * inv;
      const double tol = 1e-6 * (std::fabs(gp[i * gs + d]) + std::fabs(yp[i * D + d]) * mag) * inv + 1e-30;
      if (!(std::fabs(P<float>(dx)[i * D + d] - want) <= tol)) {
        fail(CASE("dx R=%ld D=%ld pad=%ld off=%ld at (%ld,%ld): %g vs %g", R, D, pad, off, i, d, P<float>(dx)[i * D + d], want)); return; }
    }
  }
}

// ---------------- copy_blocks
void test_copy_blocks(int64_t rows, int64_t bytes, int64_t ds, int64_t ss, int64_t doff, int64_t soff) {
  ++checks;
  std::vector<uint8_t> src(size_t(soff + rows * ss + bytes + 16)), dst(size_t(doff + rows * ds + bytes + 16));
  alignas(16) static uint8_t sbuf[1 << 20], dbuf[1 << 20];
  for (auto& b : src) b = uint8_t(R.irand(0, 255));
  for (auto& b : dst) b = uint8_t(R.irand(0, 255));
  std::memcpy(sbuf, src.data(), src.size()); std::memcpy(dbuf, dst.data(), dst.size());
  for (int64_t o = 0; o < rows; ++o) std::memcpy(dst.data() + doff + o * ds, src.data() + soff + o * ss, size_t(bytes));
  cuda::copy_blocks(kCPU, dbuf + doff, ds, sbuf + soff, ss, rows, bytes);
  if (std::memcmp(dst.data(), dbuf, dst.size())) fail(CASE("rows=%ld bytes=%ld ds=%ld ss=%ld doff=%ld soff=%ld", rows, bytes, ds, ss, doff, soff));
}

// ---------------- gather_dim / scatter_add_dim (random shapes)
static Shape rand_shape(int rank, int64_t maxs) { Shape s; for (int i = 0; i < rank; ++i) s.push_back(R.irand(1, maxs)); return s; }

// offset in a contiguous tensor of shape `full` of the multi-index `c`
static int64_t off_of(const std::vector<int64_t>& c, const Shape& full) { int64_t o = 0; for (size_t d = 0; d < c.size(); ++d) o = o * full[d] + c[d]; return o; }
static std::vector<int64_t> coords(int64_t i, const Shape& s) { std::vector<int64_t> c(s.size()); for (int d = int(s.size()) - 1; d >= 0; --d) { c[d] = i % s[d]; i /= s[d]; } return c; }
void test_gather_scatter(int rank, DType dt, int64_t maxs) {
  ++checks;
  Shape xs = rand_shape(rank, maxs);
  const int64_t dim = R.irand(0, rank - 1);
  Shape is = xs;
  for (int d = 0; d < rank; ++d) is[d] = d == dim ? R.irand(1, maxs + 2) : R.irand(1, xs[d]);
  const size_t es = dtype_size(dt);
  Tensor x = empty(xs, dt);
  for (int64_t i = 0; i < x.numel() * int64_t(es); ++i) P<uint8_t>(x)[i] = uint8_t(R.irand(0, 255));
  Tensor idx = empty(is, DType::I64);
  for (int64_t i = 0; i < idx.numel(); ++i) P<int64_t>(idx)[i] = R.irand(0, xs[dim] - 1);
  Tensor out = garbage(is, dt, 0xcd);
  cuda::gather_dim(out, x, dim, idx);
  for (int64_t i = 0; i < idx.numel(); ++i) {
    auto c = coords(i, is); c[dim] = P<int64_t>(idx)[i];
    if (std::memcmp(P<uint8_t>(out) + i * es, P<uint8_t>(x) + off_of(c, xs) * es, es)) {
      fail(CASE("gather rank=%d dim=%ld es=%zu at %ld", rank, dim, es, i)); break; }
  }
  // scatter_add into an f32 tensor of x's shape
  Tensor o = data(xs, 0), src = data(is, 0);
  std::vector<float> ref(P<float>(o), P<float>(o) + o.numel());
  for (int64_t i = 0; i < idx.numel(); ++i) { auto c = coords(i, is); c[dim] = P<int64_t>(idx)[i]; ref[off_of(c, xs)] += P<float>(src)[i]; }
  cuda::scatter_add_dim(o, dim, idx, src);
  for (int64_t i = 0; i < o.numel(); ++i)
    if (!same(P<float>(o)[i], ref[i])) { fail(CASE("scatter_add rank=%d dim=%ld at %ld: %g vs %g", rank, dim, i, P<float>(o)[i], ref[i])); break; }
}

// ---------------- gather_rows / scatter_rows
void test_gather_rows(int64_t outer, int64_t n, int64_t len, int64_t row_bytes, int64_t doff, int64_t soff) {
  ++checks;
  Tensor sb = empty({outer * n * row_bytes + soff}, DType::U8), db = garbage({outer * len * row_bytes + doff}, DType::U8, 0xcd);
  for (int64_t i = 0; i < sb.numel(); ++i) P<uint8_t>(sb)[i] = uint8_t(R.irand(0, 255));
  Tensor src = sb.narrow(0, soff, outer * n * row_bytes), dst = db.narrow(0, doff, outer * len * row_bytes);
  Tensor ids = empty({len}, DType::I64);
  for (int64_t j = 0; j < len; ++j) P<int64_t>(ids)[j] = R.irand(0, n - 1);
  cuda::gather_rows(dst, src, ids, outer, n, len, row_bytes);
  for (int64_t r = 0; r < outer * len; ++r) {
    const int64_t o = r / len, j = r % len;
    if (std::memcmp(P<uint8_t>(dst) + r * row_bytes, P<uint8_t>(src) + (o * n + P<int64_t>(ids)[j]) * row_bytes, size_t(row_bytes))) {
      fail(CASE("outer=%ld n=%ld len=%ld rb=%ld doff=%ld soff=%ld row %ld", outer, n, len, row_bytes, doff, soff, r)); return; }
  }
}
void test_scatter_rows(int64_t outer, int64_t V, int64_t N, int64_t C, int64_t doff, int64_t soff, int64_t used) {
  ++checks;
  Tensor sb = data({outer * N * C + soff}, 0), db = garbage({outer * V * C + doff});
  Tensor src = sb.narrow(0, soff, outer * N * C), dst = db.narrow(0, doff, outer * V * C);
  Tensor ids = empty({N}, DType::I64);
  for (int64_t j = 0; j < N; ++j) P<int64_t>(ids)[j] = R.irand(0, std::min(used, V) - 1) * (V > used ? V / used : 1);
  cuda::scatter_rows(dst, src, ids, outer, V, N, C);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t v = 0; v < V; ++v)
      for (int64_t c = 0; c < C; ++c) {
        float acc = 0; bool first = true;
        for (int64_t j = 0; j < N; ++j)
          if (P<int64_t>(ids)[j] == v) { const float s = P<float>(src)[(o * N + j) * C + c]; acc = first ? s : acc + s; first = false; }
        const float got = P<float>(dst)[(o * V + v) * C + c];
        if (!same(got, acc)) { fail(CASE("outer=%ld V=%ld N=%ld C=%ld doff=%ld at (%ld,%ld,%ld): %g vs %g", outer, V, N, C, doff, o, v, c, got, acc)); return; }
      }
}

// ---------------- topk
void test_topk(int64_t outer, int64_t n, int64_t inner, int64_t k, bool largest, int mode) {
  ++checks;
  Tensor x = data({outer, n, inner}, mode), v = garbage({outer, k, inner}), ix = garbage({outer, k, inner}, DType::I64, 0x7e);
  cuda::topk_rows(v, ix, x, outer, n, inner, k, largest);
  auto gt = [](float a, float b) { const bool na = a != a, nb = b != b; if (na || nb) return na && !nb; return a > b; };
  auto lt = [](float a, float b) { const bool na = a != a, nb = b != b; if (na || nb) return !na && nb; return a < b; };
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      std::vector<int64_t> ord(static_cast<size_t>(n));
      for (int64_t t = 0; t < n; ++t) ord[t] = t;
      auto at = [&](int64_t t) { return P<float>(x)[(o * n + t) * inner + i]; };
      std::stable_sort(ord.begin(), ord.end(), [&](int64_t a, int64_t b) { return largest ? gt(at(a), at(b)) : lt(at(a), at(b)); });
      for (int64_t j = 0; j < k; ++j) {
        const float gv = P<float>(v)[(o * k + j) * inner + i]; const int64_t gi = P<int64_t>(ix)[(o * k + j) * inner + i];
        if (gi != ord[j] || !same(gv, at(ord[j]))) {
          fail(CASE("outer=%ld n=%ld inner=%ld k=%ld largest=%d mode=%d at (%ld,%ld,%ld): got %g@%ld want %g@%ld", outer, n, inner, k,
                    int(largest), mode, o, j, i, gv, gi, at(ord[j]), ord[j]));
          return;
        }
      }
    }
}

// ---------------- first_out_of_range
void test_first_bad(int64_t count, int64_t n, int64_t bad_at, int64_t bad2) {
  ++checks;
  Tensor idx = empty({count}, DType::I64);
  for (int64_t i = 0; i < count; ++i) P<int64_t>(idx)[i] = R.irand(0, n - 1);
  if (bad_at >= 0) P<int64_t>(idx)[bad_at] = bad_at % 2 ? n : n + 3;
  if (bad2 >= 0) P<int64_t>(idx)[bad2] = -1;
  int64_t want_v = 0, want = -1;
  for (int64_t i = 0; i < count; ++i) if (P<int64_t>(idx)[i] < 0 || P<int64_t>(idx)[i] >= n) { want = i; want_v = P<int64_t>(idx)[i]; break; }
  int64_t v = 12345;
  const int64_t got = cuda::first_out_of_range(idx, n, &v);
  if (got != want || (want >= 0 && v != want_v)) fail(CASE("count=%ld n=%ld bad_at=%ld: got %ld (%ld) want %ld (%ld)", count, n, bad_at, got, v, want, want_v));
}

}  // namespace

void test_index_family(const std::string& only) {
  auto on = [&](const char* s) { return only.empty() || only == s; };
  if (on("sum")) {
    for (auto [o, l, i] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {3, 1, 1}, {17, 127, 1}, {1, 0, 1}, {2, 0, 3}, {1, 2048, 1},
           {1, 2049, 1}, {1, 5000, 1}, {3, 3001, 1}, {1100, 40, 1}, {1, 3, 5}, {1, 600, 3}, {2, 1500, 70}, {5, 17, 33},
           {3, 7, 1000}, {1, 513, 1}, {1, 30003, 2}, {4, 1027, 31}, {1, 7000, 300}, {1, 700000, 1}, {2, 70000, 33}})
      guarded("sum", [&] { test_sum(o, l, i); });
    done("sum");
  }
  if (on("max")) {
    for (int mode = 0; mode < 4; ++mode)
      for (auto [o, l, i] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {3, 1, 4}, {17, 127, 1}, {1, 2049, 1}, {1, 5000, 1}, {2, 4099, 1},
             {1100, 9, 1}, {1, 3, 5}, {1, 600, 3}, {2, 1500, 70}, {5, 17, 33}, {3, 7, 100}, {1, 20000, 2}, {1, 300000, 1}})
        guarded("max", [&] { test_max(o, l, i, mode); });
    done("max");
  }
  if (on("cumsum")) {
    for (bool rev : {false, true})
      for (auto [o, l, i] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {3, 3, 1}, {2, 127, 1}, {2, 128, 1}, {5, 129, 1}, {1, 1000, 1},
             {70, 17, 1}, {1, 1, 7}, {2, 17, 3}, {3, 300, 33}, {1, 5, 1000}})
        guarded("cumsum", [&] { test_cumsum(o, l, i, rev); });
    done("cumsum");
  }
  if (on("l2")) {
    for (auto [R, D, pad, off] : std::vector<std::array<int64_t, 4>>{{1, 1, 0, 0}, {3, 17, 0, 0}, {5, 16, 0, 0}, {9, 64, 4, 0}, {9, 64, 4, 1},
           {9, 64, 3, 0}, {17, 127, 2, 1}, {3, 1000, 8, 0}, {2, 2048, 0, 0}, {3, 2048, 5, 1}, {2, 3001, 0, 0}, {4, 4096, 4, 0}, {1, 2052, 0, 0},
           {37, 32, 0, 0}, {5, 32, -1, 0}, {5, 33, -1, 0}, {3, 2048, -1, 0}})
      for (int z : {0, 1}) guarded("l2", [&] { test_l2(R, D, pad, off, z); });
    done("l2");
  }
  if (on("copy")) {
    for (auto c : std::vector<std::array<int64_t, 6>>{{1, 5, 5, 5, 0, 0}, {3, 16, 16, 16, 0, 0}, {3, 16, 48, 32, 0, 0}, {7, 12, 40, 24, 0, 0},
           {5, 8, 24, 16, 8, 0}, {5, 6, 14, 10, 2, 0}, {5, 7, 13, 11, 1, 3}, {4, 1000, 3000, 1000, 16, 0}, {200, 64, 128, 64, 0, 64}, {3, 4, 4, 12, 0, 4}})
      guarded("copy_blocks", [&] { test_copy_blocks(c[0], c[1], c[2], c[3], c[4], c[5]); });
    done("copy_blocks");
  }
  if (on("gather")) {
    for (int rep = 0; rep < 40; ++rep)
      for (DType dt : {DType::F32, DType::I64, DType::U8, DType::BF16})
        guarded("gather", [&] { test_gather_scatter(int(R.irand(1, 4)), dt, rep < 30 ? 5 : 40); });
    done("gather/scatter_add");
  }
  if (on("rows")) {
    for (auto c : std::vector<std::array<int64_t, 6>>{{1, 1, 1, 4, 0, 0}, {1, 5, 9, 12, 0, 0}, {2, 7, 3, 3, 0, 0}, {1, 50, 17, 64, 0, 0},
           {3, 9, 11, 16, 1, 0}, {1, 9, 11, 16, 0, 2}, {2, 9, 11, 48, 8, 8}, {1, 10, 1000, 4096, 0, 0}})
      guarded("gather_rows", [&] { test_gather_rows(c[0], c[1], c[2], c[3], c[4], c[5]); });
    for (auto c : std::vector<std::array<int64_t, 7>>{{1, 1, 1, 1, 0, 0, 1}, {1, 5, 0, 4, 0, 0, 1}, {1, 5, 9, 4, 0, 0, 2}, {1, 7, 20, 3, 0, 0, 3},
           {2, 10, 33, 8, 0, 0, 4}, {2, 10, 33, 8, 1, 0, 4}, {2, 10, 33, 8, 0, 2, 10}, {1, 50, 300, 260, 0, 0, 7}, {1, 3, 5, 1030, 0, 0, 3},
           {1, 1000, 2000, 2, 0, 0, 999}, {3, 17, 40, 127, 0, 0, 5}, {1, 2, 100, 1024, 0, 0, 2}})
      guarded("scatter_rows", [&] { test_scatter_rows(c[0], c[1], c[2], c[3], c[4], c[5], c[6]); });
    done("gather_rows/scatter_rows");
  }
  if (on("topk")) {
    for (int mode = 0; mode < 4; ++mode)
      for (bool lg : {true, false})
        for (auto c : std::vector<std::array<int64_t, 4>>{{1, 1, 1, 1}, {2, 17, 3, 5}, {1, 1000, 1, 16}, {3, 600, 2, 16}, {1, 16, 1, 16},
               {2, 17, 1, 17}, {1, 2048, 1, 100}, {1, 1000, 2, 1000}, {1, 33, 2, 20}, {1, 2100, 1, 17}, {1, 5000, 1, 3}, {2, 40, 1, 40}, {1, 100, 1, 0}})
          if (c[3] > 0 && (c[1] < 1000 || mode % 2 == 1)) guarded("topk", [&] { test_topk(c[0], c[1], c[2], c[3], lg, mode); });
    done("topk");
  }
  if (on("bad")) {
    for (auto c : std::vector<std::array<int64_t, 4>>{{1, 5, -1, -1}, {1, 5, 0, -1}, {1, 5, -1, 0}, {1000, 7, -1, -1}, {1000, 7, 999, 500},
           {1000, 7, 300, 700}, {100000, 50, 77777, 99999}, {5000, 1, 4999, -1}})
      guarded("first_bad", [&] { test_first_bad(c[0], c[1], c[2], c[3]); });
    done("first_out_of_range");
  }
}

}  // namespace emutest
