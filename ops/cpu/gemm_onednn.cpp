// Batched strided CPU matmul C[b] = op(A)[b] @ op(B)[b] (+C) (+bias) on cached oneDNN matmul primitives.
//
// Flow of gemm():
//   1. validate; trivial cases (no output elements, K = 0) are handled here without oneDNN;
//   2. canonicalise strides of size-1 dimensions (they never move the address), so equal problems share
//      one cache entry and oneDNN sees dense strides where possible;
//   3. choose the output layout: a unit inner stride is used in place; a unit *row* stride (column-major
//      C) is computed as C^T = B^T A^T in place; anything else goes through a dense temporary;
//   4. inputs with a unit inner stride (either one) are described to oneDNN as they are; the rest are
//      packed (the only input copy);
//   5. a broadcast B with row-stacked A and C folds the batch into M (one big GEMM instead of many);
//   6. batches run natively (3-D descriptors, dim 1 = broadcast) when oneDNN can describe all strides,
//      otherwise as a loop of 2-D primitives with moved pointers;
//   7. the primitive is looked up in / added to an LRU cache, executed with a per-thread scratchpad.
#include "ops/cpu/gemm_onednn.h"

#include <cmath>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <dnnl.hpp>

#include "runtime/error.h"

namespace moon::cpu {
namespace {

using dnnl::memory;
using dt = memory::data_type;

constexpr size_t kCacheCapacity = 256;

const char* dtype_name(GemmDType t) { return t == GemmDType::F32 ? "f32" : "bf16"; }

std::string shape_str(const GemmArgs& a) {
  auto s3 = [](const int64_t* s) {
    return "[" + std::to_string(s[0]) + "," + std::to_string(s[1]) + "," + std::to_string(s[2]) + "]";
  };
  return "batch=" + std::to_string(a.batch) + " M=" + std::to_string(a.M) + " N=" + std::to_string(a.N) +
         " K=" + std::to_string(a.K) + " dtype=" + dtype_name(a.in_dtype) + " a_stride=" + s3(a.a_stride) +
         " b_stride=" + s3(a.b_stride) + " c_stride=" + s3(a.c_stride);
}

[[noreturn]] void gemm_fail(const GemmArgs& a, const std::string& what) {
  throw moon::Error("matmul: " + what + " (" + shape_str(a) + ")");
}

// ---- global oneDNN objects ----------------------------------------------------------------------------

struct Runtime {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
};

Runtime& runtime() {
  static Runtime r;  // thread-safe lazy init; one CPU engine and one stream for the whole process
  return r;
}

// ---- primitive cache ----------------------------------------------------------------------------------

// Everything that determines the primitive: descriptor dims/strides of A, B, C, dtype, bias, accumulate,
// epilogue.
struct Key {
  std::array<int64_t, 23> v{};
  bool operator==(const Key& o) const { return v == o.v; }
};

struct KeyHash {
  size_t operator()(const Key& k) const {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int64_t x : k.v) {
      h ^= static_cast<uint64_t>(x) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
      h *= 0x100000001b3ull;
    }
    return static_cast<size_t>(h);
  }
};

// Memory objects and the argument map of one execution; reused (only data handles change) so a cached
// call allocates nothing.
struct ExecCtx {
  memory a, b, c, bias, scratch;
  std::unordered_map<int, memory> args;
};

struct Entry {
  dnnl::matmul prim;
  memory::desc a_md, b_md, c_md, bias_md, scratch_md;
  size_t scratch_bytes = 0;
  bool has_bias = false;

  // Pool of execution contexts: one per concurrent caller at most.
  std::unique_ptr<ExecCtx> acquire() const {
    {
      std::lock_guard<std::mutex> lock(pool_mu);
      if (!pool.empty()) {
        std::unique_ptr<ExecCtx> x = std::move(pool.back());
        pool.pop_back();
        return x;
      }
    }
    auto x = std::make_unique<ExecCtx>();
    const dnnl::engine& eng = runtime().eng;
    x->a = memory(a_md, eng, nullptr);
    x->b = memory(b_md, eng, nullptr);
    x->c = memory(c_md, eng, nullptr);
    x->args = {{DNNL_ARG_SRC, x->a}, {DNNL_ARG_WEIGHTS, x->b}, {DNNL_ARG_DST, x->c}};
    if (has_bias) {
      x->bias = memory(bias_md, eng, nullptr);
      x->args.emplace(DNNL_ARG_BIAS, x->bias);
    }
    if (scratch_bytes) {
      x->scratch = memory(scratch_md, eng, nullptr);
      x->args.emplace(DNNL_ARG_SCRATCHPAD, x->scratch);
    }
    return x;
  }
  void release(std::unique_ptr<ExecCtx> x) const {
    std::lock_guard<std::mutex> lock(pool_mu);
    pool.push_back(std::move(x));
  }

  mutable std::mutex pool_mu;
  mutable std::vector<std::unique_ptr<ExecCtx>> pool;
};

class PrimitiveCache {
 public:
  template <class Make>
  std::shared_ptr<const Entry> get(const Key& key, Make&& make) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = map_.find(key);
      if (it != map_.end()) {
        lru_.splice(lru_.begin(), lru_, it->second);
        ++hits_;
        return it->second->second;
      }
      ++misses_;
    }
    // Build outside the lock: primitive creation (JIT) can take a while.
    std::shared_ptr<const Entry> made = make();
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it != map_.end()) return it->second->second;  // another thread built it meanwhile
    lru_.emplace_front(key, made);
    map_.emplace(key, lru_.begin());
    while (lru_.size() > kCacheCapacity) {
      map_.erase(lru_.back().first);
      lru_.pop_back();
    }
    return made;
  }

  GemmCacheStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {hits_, misses_, lru_.size()};
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    map_.clear();
    lru_.clear();
    hits_ = misses_ = 0;
  }

 private:
  using List = std::list<std::pair<Key, std::shared_ptr<const Entry>>>;
  std::mutex mu_;
  List lru_;
  std::unordered_map<Key, List::iterator, KeyHash> map_;
  size_t hits_ = 0, misses_ = 0;
};

PrimitiveCache& cache() {
  runtime();  // constructed first so it is destroyed after the cached primitives that use it
  static PrimitiveCache c;
  return c;
}

// Per-thread user scratchpad: primitives can then run concurrently from several threads.
void* scratchpad(size_t bytes) {
  struct Buf {
    void* p = nullptr;
    size_t n = 0;
    ~Buf() { std::free(p); }
  };
  thread_local Buf buf;
  if (bytes > buf.n) {
    std::free(buf.p);
    size_t n = (bytes + 4095) / 4096 * 4096;
    buf.p = std::aligned_alloc(4096, n);  // page-aligned, like oneDNN's own scratchpad
    if (!buf.p) throw moon::Error("matmul: could not allocate " + std::to_string(n) + " bytes of scratchpad");
    buf.n = n;
  }
  return buf.p;
}

// ---- layout helpers -----------------------------------------------------------------------------------

// Strides of a size-1 dimension never move the address: give them the values of a dense layout.
void canon_matrix(int64_t R, int64_t Cc, int64_t& sr, int64_t& sc) {
  if (R == 1 && Cc == 1) {
    sr = 1;
    sc = 1;
  } else if (R == 1) {
    sr = (sc == 1) ? Cc : 1;  // row vector: row-major, or column-major with leading dimension sc
  } else if (Cc == 1) {
    sc = (sr == 1) ? R : 1;
  }
}

// A (R x Cc) matrix oneDNN can read in place: one unit stride, the other at least the extent it steps over.
bool direct_ok(int64_t R, int64_t Cc, int64_t sr, int64_t sc) {
  return (sc == 1 && sr >= Cc) || (sr == 1 && sc >= R);
}

// The layout check oneDNN applies to strided descriptors: positive strides that, sorted, never overlap.
bool onednn_layout_ok(int n, const int64_t* dims, const int64_t* strides) {
  std::array<std::pair<int64_t, int64_t>, 3> ds{};  // (stride, dim)
  int m = 0;
  for (int i = 0; i < n; ++i) {
    if (dims[i] == 1) continue;
    if (strides[i] <= 0) return false;
    ds[m++] = {strides[i], dims[i]};
  }
  for (int i = 1; i < m; ++i)  // insertion sort of at most 3 entries
    for (int j = i; j > 0 && ds[j] < ds[j - 1]; --j) std::swap(ds[j], ds[j - 1]);
  for (int i = 1; i < m; ++i)
    if (ds[i].first < ds[i - 1].first * ds[i - 1].second) return false;
  return true;
}

// Dense stride for a size-1 batch dimension laid over a (R x Cc) matrix with strides (sr, sc).
int64_t batch_stride_for_dim1(int64_t R, int64_t Cc, int64_t sr, int64_t sc) {
  return std::max(R * sr, Cc * sc);
}

template <class T>
void pack(const T* src, int64_t nb, int64_t R, int64_t Cc, const int64_t* s, T* dst) {
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t r = 0; r < R; ++r) {
      const T* row = src + b * s[0] + r * s[1];
      T* d = dst + (b * R + r) * Cc;
      if (s[2] == 1) {
        std::memcpy(d, row, static_cast<size_t>(Cc) * sizeof(T));
      } else {
        for (int64_t c = 0; c < Cc; ++c) d[c] = row[c * s[2]];
      }
    }
}

// One input operand after layout decisions. Element (b,r,c) at p + (b*s[0] + r*s[1] + c*s[2]) * esz.
struct Operand {
  const char* p = nullptr;
  int64_t s[3] = {0, 0, 0};
  std::unique_ptr<char[]> owned;  // packed copy, when one was needed
};

// Makes the operand readable by oneDNN in place, packing it into a dense row-major temporary if needed.
void prepare_input(Operand& op, int64_t batch, int64_t R, int64_t Cc, size_t esz) {
  canon_matrix(R, Cc, op.s[1], op.s[2]);
  if (direct_ok(R, Cc, op.s[1], op.s[2])) return;
  const int64_t nb = op.s[0] == 0 ? 1 : batch;
  op.owned.reset(new char[static_cast<size_t>(nb * R * Cc) * esz]);
  if (esz == 4)
    pack(reinterpret_cast<const float*>(op.p), nb, R, Cc, op.s, reinterpret_cast<float*>(op.owned.get()));
  else
    pack(reinterpret_cast<const uint16_t*>(op.p), nb, R, Cc, op.s, reinterpret_cast<uint16_t*>(op.owned.get()));
  op.p = op.owned.get();
  op.s[0] = nb == 1 ? 0 : R * Cc;
  op.s[1] = Cc;
  op.s[2] = 1;
}

// The epilogue of one element (used where no primitive runs: K == 0).
float apply_epilogue(GemmEpilogue e, float c) {
  const double x = c;
  switch (e) {
    case GemmEpilogue::None: return c;
    case GemmEpilogue::GeluTanh: return static_cast<float>(0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))));
    case GemmEpilogue::GeluErf: return static_cast<float>(0.5 * x * (1.0 + std::erf(x * 0.7071067811865476)));
  }
  return c;
}

// K == 0: the product is zero, so C = epilogue((accumulate ? C : 0) + bias).
void fill_k0(const GemmArgs& a) {
  for (int64_t b = 0; b < a.batch; ++b)
    for (int64_t i = 0; i < a.M; ++i) {
      float* row = a.C + b * a.c_stride[0] + i * a.c_stride[1];
      for (int64_t j = 0; j < a.N; ++j) {
        float& c = row[j * a.c_stride[2]];
        c = apply_epilogue(a.epilogue, (a.accumulate ? c : 0.0f) + (a.bias ? a.bias[j] : 0.0f));
      }
    }
}

void validate(const GemmArgs& a) {
  if (a.batch < 0 || a.M < 0 || a.N < 0 || a.K < 0)
    gemm_fail(a, "negative size; batch, M, N and K must all be >= 0");
  if (a.in_dtype != GemmDType::F32 && a.in_dtype != GemmDType::BF16)
    gemm_fail(a, "unknown input dtype " + std::to_string(static_cast<int>(a.in_dtype)) + "; use F32 or BF16");
  if (a.epilogue != GemmEpilogue::None && a.accumulate)
    gemm_fail(a, "an epilogue cannot be combined with accumulate; apply the activation after the sum");
  if (a.batch == 0 || a.M == 0 || a.N == 0) return;
  if (!a.C) gemm_fail(a, "output C is null; pass a (batch,M,N) f32 buffer");
  if (a.K > 0 && !a.A) gemm_fail(a, "input A is null; pass a (batch,M,K) buffer");
  if (a.K > 0 && !a.B) gemm_fail(a, "input B is null; pass a (batch,K,N) buffer");
  if (a.batch > 1 && a.c_stride[0] == 0)
    gemm_fail(a, "output batch stride is 0 with batch > 1, so every batch would write the same C; "
            "give C a distinct (M,N) block per batch");
  int64_t cs1 = a.c_stride[1], cs2 = a.c_stride[2];
  canon_matrix(a.M, a.N, cs1, cs2);
  const int64_t dims[2] = {a.M, a.N};
  const int64_t abs_s[2] = {cs1 < 0 ? -cs1 : cs1, cs2 < 0 ? -cs2 : cs2};
  if (!onednn_layout_ok(2, dims, abs_s))
    gemm_fail(a, "output C elements overlap (c_stride[1]=" + std::to_string(a.c_stride[1]) +
                ", c_stride[2]=" + std::to_string(a.c_stride[2]) + "); give C non-overlapping strides, "
                "e.g. c_stride[1] >= N with c_stride[2] = 1");
}

std::shared_ptr<const Entry> make_entry(int nd, const int64_t* ad, const int64_t* as, const int64_t* bd,
                                        const int64_t* bs, const int64_t* cd, const int64_t* cs, dt in_dt,
                                        bool has_bias, bool accumulate, GemmEpilogue epilogue) {
  auto dims = [nd](const int64_t* p) { return memory::dims(p, p + nd); };
  auto e = std::make_shared<Entry>();
  e->a_md = memory::desc(dims(ad), in_dt, dims(as));
  e->b_md = memory::desc(dims(bd), in_dt, dims(bs));
  e->c_md = memory::desc(dims(cd), dt::f32, dims(cs));
  const int64_t n = cd[nd - 1];
  if (has_bias) {
    memory::dims bias_dims(nd, 1), bias_strides(nd, n);
    bias_dims[nd - 1] = n;
    bias_strides[nd - 1] = 1;
    e->bias_md = memory::desc(bias_dims, dt::f32, bias_strides);
  }
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (accumulate || epilogue != GemmEpilogue::None) {
    dnnl::post_ops po;
    if (accumulate) po.append_sum(1.0f);
    if (epilogue == GemmEpilogue::GeluTanh) po.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_tanh, 0.0f, 0.0f);
    if (epilogue == GemmEpilogue::GeluErf) po.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
    attr.set_post_ops(po);
  }
  dnnl::matmul::desc desc = has_bias ? dnnl::matmul::desc(e->a_md, e->b_md, e->bias_md, e->c_md)
                                     : dnnl::matmul::desc(e->a_md, e->b_md, e->c_md);
  dnnl::matmul::primitive_desc pd(desc, attr, runtime().eng);
  e->has_bias = has_bias;
  e->scratch_md = pd.scratchpad_desc();
  e->scratch_bytes = e->scratch_md.get_size();
  e->prim = dnnl::matmul(pd);
  return e;
}

void run_onednn(const GemmArgs& args) {
  const size_t esz = args.in_dtype == GemmDType::F32 ? 4 : 2;
  int64_t batch = args.batch, M = args.M, N = args.N;
  const int64_t K = args.K;
  const bool single = batch == 1;

  Operand a, b;
  a.p = static_cast<const char*>(args.A);
  b.p = static_cast<const char*>(args.B);
  std::copy(args.a_stride, args.a_stride + 3, a.s);
  std::copy(args.b_stride, args.b_stride + 3, b.s);
  int64_t cs[3] = {args.c_stride[0], args.c_stride[1], args.c_stride[2]};
  float* c = args.C;
  if (single) a.s[0] = b.s[0] = cs[0] = 0;

  // Output layout.
  canon_matrix(M, N, cs[1], cs[2]);
  std::unique_ptr<float[]> c_tmp;
  if (!(cs[2] == 1 && cs[1] >= N)) {
    if (cs[1] == 1 && cs[2] >= M && !args.bias) {
      // Column-major C: compute C^T (N,M) = B^T (N,K) @ A^T (K,M), all in place.
      std::swap(M, N);
      std::swap(a.p, b.p);
      std::swap(a.s, b.s);
      std::swap(a.s[1], a.s[2]);
      std::swap(b.s[1], b.s[2]);
      std::swap(cs[1], cs[2]);
    } else {
      const size_t n = static_cast<size_t>(batch * M * N);
      c_tmp.reset(new float[n]);
      if (args.accumulate)
        for (int64_t bb = 0; bb < batch; ++bb)
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j)
              c_tmp[(bb * M + i) * N + j] = c[bb * cs[0] + i * cs[1] + j * cs[2]];
      c = c_tmp.get();
    }
  }
  const int64_t orig_cs[3] = {cs[0], cs[1], cs[2]};
  if (c_tmp) {
    cs[0] = single ? 0 : M * N;
    cs[1] = N;
    cs[2] = 1;
  }

  // Inputs: in place when one inner stride is 1, else packed.
  prepare_input(a, batch, M, K, esz);
  prepare_input(b, batch, K, N, esz);

  // Broadcast B with A and C stacked row after row over the batch: one (batch*M, K) @ (K, N) GEMM.
  if (batch > 1 && b.s[0] == 0 && a.s[0] != 0 && a.s[0] == M * a.s[1] && cs[0] == M * cs[1] &&
      direct_ok(batch * M, K, a.s[1], a.s[2])) {
    M *= batch;
    batch = 1;
    a.s[0] = cs[0] = 0;
  }

  // Batch mode: native 3-D descriptors when oneDNN can describe every operand, else a loop of 2-D ones.
  bool native3d = false;
  int64_t ad[3] = {1, M, K}, bd[3] = {1, K, N}, cd[3] = {batch, M, N};
  int64_t as[3] = {0, a.s[1], a.s[2]}, bs[3] = {0, b.s[1], b.s[2]}, cst[3] = {0, cs[1], cs[2]};
  if (batch > 1) {
    ad[0] = a.s[0] == 0 ? 1 : batch;
    bd[0] = b.s[0] == 0 ? 1 : batch;
    as[0] = a.s[0] == 0 ? batch_stride_for_dim1(M, K, a.s[1], a.s[2]) : a.s[0];
    bs[0] = b.s[0] == 0 ? batch_stride_for_dim1(K, N, b.s[1], b.s[2]) : b.s[0];
    cst[0] = cs[0];
    native3d = !(ad[0] == 1 && bd[0] == 1) && onednn_layout_ok(3, ad, as) && onednn_layout_ok(3, bd, bs) &&
               onednn_layout_ok(3, cd, cst);
  }
  const int nd = native3d ? 3 : 2;
  const int off = native3d ? 0 : 1;  // 2-D descriptors use the last two entries
  const dt in_dt = args.in_dtype == GemmDType::F32 ? dt::f32 : dt::bf16;
  const bool has_bias = args.bias != nullptr;

  Key key;
  {
    int k = 0;
    key.v[k++] = nd;
    for (int i = off; i < 3; ++i) {
      key.v[k++] = ad[i], key.v[k++] = as[i];
      key.v[k++] = bd[i], key.v[k++] = bs[i];
      key.v[k++] = cd[i], key.v[k++] = cst[i];
    }
    key.v[19] = static_cast<int64_t>(args.in_dtype);
    key.v[20] = has_bias;
    key.v[21] = args.accumulate;
    key.v[22] = static_cast<int64_t>(args.epilogue);
  }
  std::shared_ptr<const Entry> e = cache().get(key, [&] {
    return make_entry(nd, ad + off, as + off, bd + off, bs + off, cd + off, cst + off, in_dt, has_bias,
                      args.accumulate, args.epilogue);
  });

  Runtime& rt = runtime();
  std::unique_ptr<ExecCtx> x = e->acquire();
  x->c.set_data_handle(c);  // set every handle before executing: the context may come from another call
  x->a.set_data_handle(const_cast<char*>(a.p));
  x->b.set_data_handle(const_cast<char*>(b.p));
  if (has_bias) x->bias.set_data_handle(const_cast<float*>(args.bias));
  if (e->scratch_bytes) x->scratch.set_data_handle(scratchpad(e->scratch_bytes));
  if (native3d || batch == 1) {
    e->prim.execute(rt.strm, x->args);
  } else {
    for (int64_t bb = 0; bb < batch; ++bb) {
      x->a.set_data_handle(const_cast<char*>(a.p + static_cast<ptrdiff_t>(bb * a.s[0]) * esz));
      x->b.set_data_handle(const_cast<char*>(b.p + static_cast<ptrdiff_t>(bb * b.s[0]) * esz));
      x->c.set_data_handle(c + bb * cs[0]);
      e->prim.execute(rt.strm, x->args);
    }
  }
  rt.strm.wait();
  e->release(std::move(x));

  if (c_tmp)
    for (int64_t bb = 0; bb < args.batch; ++bb)
      for (int64_t i = 0; i < args.M; ++i)
        for (int64_t j = 0; j < args.N; ++j)
          args.C[bb * orig_cs[0] + i * orig_cs[1] + j * orig_cs[2]] = c_tmp[(bb * args.M + i) * args.N + j];
}

}  // namespace

void gemm(const GemmArgs& args) {
  validate(args);
  if (args.batch == 0 || args.M == 0 || args.N == 0) return;
  if (args.K == 0) {
    fill_k0(args);
    return;
  }
  try {
    run_onednn(args);
  } catch (const dnnl::error& err) {
    gemm_fail(args, std::string("oneDNN failed with status ") + std::to_string(static_cast<int>(err.status)) +
                   " (" + err.what() + "); this layout or dtype is not supported by oneDNN here — "
                   "make the operands contiguous or use f32");
  }
}

GemmCacheStats gemm_cache_stats() { return cache().stats(); }

void gemm_cache_clear() { cache().clear(); }

}  // namespace moon::cpu
