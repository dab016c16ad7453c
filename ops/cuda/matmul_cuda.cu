// CUDA GEMM through cuBLASLt (see ops/cuda/matmul_cuda.h).
//
// cuBLASLt is column-major. The row-major product C (M,N) = A (M,K) B (K,N) is issued either as
//   T-form: C^T (N,M) = B^T (N,K) A^T (K,M)   when C's rows are unit-stride (the usual case; bias allowed:
//           cuBLASLt's bias epilogue adds a vector along D's rows, which are C's columns), or
//   N-form: C (M,N) = A (M,K) B (K,N)         when C's columns are unit-stride (column-major output).
// Each operand, seen as a column-major (r x c) matrix with element (a, b) at a*s0 + b*s1, is described as
// "op N" when s0 == 1 (ld = s1) or "op T" of its (c x r) transpose when s1 == 1 (ld = s0); otherwise it is
// packed into a dense temporary first. Batches use the strided-batch layout attributes (stride 0 for a
// broadcast operand), at most 65535 per call. Descriptors and the chosen algorithm are cached per shape.
#include "ops/cuda/matmul_cuda.h"

#include <array>
#include <cstring>
#include <map>
#include <mutex>

#include "runtime/cuda/kernel_util.cuh"

namespace moon::cuda {

namespace {

using cpu::GemmArgs;
using cpu::GemmDType;
using cpu::GemmEpilogue;

constexpr int64_t kMaxBatchPerCall = 65535;

// ---- small kernels: packing, output staging, K == 0

// dst[bi, a, b] (dense col-major (r x c) per batch) = src[bi*sb + a*s0 + b*s1]. 0 FLOP, 2*sizeof(T) bytes
// per element.
template <class T>
__global__ void pack_kernel(T* __restrict__ dst, const T* __restrict__ src, int64_t batch, int64_t r, int64_t c,
                            int64_t sb, int64_t s0, int64_t s1) {
  const int64_t n = batch * r * c;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t a = e % r, rest = e / r;
    const int64_t b = rest % c, bi = rest / c;
    dst[e] = src[bi * sb + a * s0 + b * s1];
  }
}

// dst[bi, i, j] = src[bi, i, j] between two strided (batch, M, N) f32 views. 0 FLOP, 8 bytes per element.
__global__ void copy3d_kernel(float* dst, int64_t d0, int64_t d1, int64_t d2, const float* src, int64_t s0,
                              int64_t s1, int64_t s2, int64_t batch, int64_t M, int64_t N) {
  const int64_t n = batch * M * N;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = e % N, rest = e / N;
    const int64_t i = rest % M, bi = rest / M;
    dst[bi * d0 + i * d1 + j * d2] = src[bi * s0 + i * s1 + j * s2];
  }
}

// C[bi, i, j] = gelu_tanh?(bias ? bias[j] : 0) (a product with K == 0). 0 FLOP (~10 with gelu), 4-8 bytes per
// element.
__global__ void fill_bias_kernel(float* c, int64_t c0, int64_t c1, int64_t c2, const float* bias, bool gelu,
                                 int64_t batch, int64_t M, int64_t N) {
  const int64_t n = batch * M * N;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = e % N, rest = e / N;
    const int64_t i = rest % M, bi = rest / M;
    const float v = bias ? bias[j] : 0.0f;
    c[bi * c0 + i * c1 + j * c2] =
        gelu ? 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v))) : v;
  }
}

constexpr int kThreads = 256;

// ---- operand descriptions

// A column-major (r x c) operand with element (a, b) at a*s0 + b*s1, as cuBLASLt sees it.
struct Operand {
  bool ok = false;
  cublasOperation_t op = CUBLAS_OP_N;
  int64_t rows = 0, cols = 0, ld = 0;  // the stored matrix (before op)
};
Operand describe(int64_t r, int64_t c, int64_t s0, int64_t s1) {
  Operand o;
  if ((s0 == 1 || r == 1) && (c == 1 || s1 >= r)) {
    o.ok = true, o.op = CUBLAS_OP_N, o.rows = r, o.cols = c, o.ld = c == 1 ? r : s1;
  } else if ((s1 == 1 || c == 1) && (r == 1 || s0 >= c)) {
    o.ok = true, o.op = CUBLAS_OP_T, o.rows = c, o.cols = r, o.ld = r == 1 ? c : s0;
  }
  return o;
}
// The output must be "op N" (cuBLASLt's D is never transposed).
Operand describe_out(int64_t r, int64_t c, int64_t s0, int64_t s1) {
  Operand o;
  if ((s0 == 1 || r == 1) && (c == 1 || s1 >= r)) o.ok = true, o.op = CUBLAS_OP_N, o.rows = r, o.cols = c,
                                                   o.ld = c == 1 ? r : s1;
  return o;
}

// Largest power of two <= 256 dividing the address and (over batches) the batch stride in bytes.
uint32_t alignment(const void* p, int64_t batch_stride_bytes, int64_t batch) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (batch > 1) a |= static_cast<uintptr_t>(batch_stride_bytes);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al >>= 1;
  return al;
}

// ---- the descriptor / algorithm cache

using Key = std::array<int64_t, 24>;

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

struct PlanCache {
  std::mutex mu;
  std::map<Key, Plan> plans;
  void clear() {
    for (auto& [k, p] : plans) {
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.c);
      cublasLtMatmulDescDestroy(p.desc);
    }
    plans.clear();
  }
};
PlanCache& plan_cache() {
  static PlanCache* cache = new PlanCache;  // never destroyed: handles go with the context at exit
  return *cache;
}
constexpr size_t kMaxPlans = 2048;

cublasLtMatrixLayout_t make_layout(cudaDataType_t type, const Operand& o, int64_t batch, int64_t batch_stride) {
  cublasLtMatrixLayout_t l = nullptr;
  MOON_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, static_cast<uint64_t>(o.rows), static_cast<uint64_t>(o.cols),
                                               o.ld));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    MOON_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    MOON_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &batch_stride,
                                                       sizeof(batch_stride)));
  }
  return l;
}

// One cuBLASLt call: D (m x n) = gelu?(op(P) (m x k) op(Q) (k x n) (+ beta D) (+ bias along D's rows)),
// batch <= 65535.
struct LtCall {
  bool bf16 = false;
  Operand p, q, d;
  int64_t m = 0, n = 0, k = 0, batch = 1;
  int64_t sp = 0, sq = 0, sd = 0;  // batch strides in elements
  const void* P = nullptr;
  const void* Q = nullptr;
  float* D = nullptr;
  const float* bias = nullptr;
  bool accumulate = false;
  bool gelu = false;  // cuBLASLt's GELU epilogue (the tanh form) after the bias
};

// False when cuBLASLt offers no algorithm for the call (nothing is launched then).
bool run_lt(const LtCall& call, Device device) {
  const int64_t esize = call.bf16 ? 2 : 4;
  const uint32_t al_p = alignment(call.P, call.sp * esize, call.batch);
  const uint32_t al_q = alignment(call.Q, call.sq * esize, call.batch);
  const uint32_t al_d = alignment(call.D, call.sd * 4, call.batch);
  const Key key{call.bf16, call.p.op, call.p.rows, call.p.cols, call.p.ld, call.q.op, call.q.rows, call.q.cols,
                call.q.ld,  call.d.ld, call.m,      call.n,      call.k,    call.batch, call.sp,   call.sq,
                call.sd,    call.bias != nullptr, al_p, al_q, al_d, device.index, call.gelu, 0};
  size_t ws_bytes = 0;
  void* ws = cublaslt_workspace(device, &ws_bytes);
  const cublasLtHandle_t lt = cublaslt(device);
  PlanCache& cache = plan_cache();
  std::lock_guard<std::mutex> lock(cache.mu);
  auto it = cache.plans.find(key);
  if (it == cache.plans.end()) {
    if (cache.plans.size() >= kMaxPlans) cache.clear();
    Plan plan;
    const cudaDataType_t in_type = call.bf16 ? CUDA_R_16BF : CUDA_R_32F;
    MOON_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t opa = call.p.op, opb = call.q.op;
    MOON_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)));
    MOON_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)));
    if (call.bias || call.gelu) {
      const cublasLtEpilogue_t epi = call.gelu ? (call.bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU)
                                               : CUBLASLT_EPILOGUE_BIAS;
      MOON_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    }
    if (call.bias) {
      const int32_t bias_type = CUDA_R_32F;
      MOON_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                                       sizeof(bias_type)));
    }
    plan.a = make_layout(in_type, call.p, call.batch, call.sp);
    plan.b = make_layout(in_type, call.q, call.batch, call.sq);
    plan.c = make_layout(CUDA_R_32F, call.d, call.batch, call.sd);
    cublasLtMatmulPreference_t pref = nullptr;
    MOON_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t max_ws = ws_bytes;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws, sizeof(max_ws));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_p, sizeof(al_p));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_q, sizeof(al_q));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof(al_d));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof(al_d));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(lt, plan.desc, plan.a, plan.b, plan.c, plan.c, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
      cublasLtMatrixLayoutDestroy(plan.a);
      cublasLtMatrixLayoutDestroy(plan.b);
      cublasLtMatrixLayoutDestroy(plan.c);
      cublasLtMatmulDescDestroy(plan.desc);
      return false;
    }
    plan.algo = result.algo;
    it = cache.plans.emplace(key, plan).first;
  }
  const Plan& plan = it->second;
  if (call.bias)
    MOON_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &call.bias,
                                                     sizeof(call.bias)));
  const float alpha = 1.0f, beta = call.accumulate ? 1.0f : 0.0f;
  MOON_CUBLAS_CHECK(cublasLtMatmul(lt, plan.desc, &alpha, call.P, plan.a, call.Q, plan.b, &beta, call.D, plan.c,
                                   call.D, plan.c, &plan.algo, ws, ws_bytes, stream(device)));
  return true;
}

// A dense column-major copy of a (batch, r, c) operand (one matrix when its batch stride is 0).
Tensor pack(const void* src, bool bf16, int64_t batch, int64_t r, int64_t c, int64_t sb, int64_t s0, int64_t s1,
            Device device) {
  const int64_t nb = sb == 0 ? 1 : batch;
  Tensor t = empty({nb, c, r}, bf16 ? DType::BF16 : DType::F32, device);
  const int64_t n = nb * r * c;
  if (n == 0) return t;
  const cudaStream_t s = stream(device);
  if (bf16)
    pack_kernel<uint16_t><<<blocks_for(n, kThreads), kThreads, 0, s>>>(
        static_cast<uint16_t*>(t.raw_data()), static_cast<const uint16_t*>(src), nb, r, c, sb, s0, s1);
  else
    pack_kernel<float><<<blocks_for(n, kThreads), kThreads, 0, s>>>(static_cast<float*>(t.raw_data()),
                                                                    static_cast<const float*>(src), nb, r, c, sb, s0,
                                                                    s1);
  MOON_CUDA_LAUNCH_CHECK("pack_kernel");
  return t;
}

// run_lt with fallbacks for a configuration cuBLASLt turns down: a batch is split into single matrices, and
// a single matrix is retried on dense, freshly allocated (256-byte aligned) copies of its operands and
// output (the output gathered first when accumulating, scattered back after).
void run_call(const LtCall& call, Device device) {
  if (run_lt(call, device)) return;
  const int64_t esize = call.bf16 ? 2 : 4;
  if (call.batch > 1) {
    LtCall one = call;
    one.batch = 1;
    for (int64_t b = 0; b < call.batch; ++b) {
      one.P = static_cast<const char*>(call.P) + b * call.sp * esize;
      one.Q = static_cast<const char*>(call.Q) + b * call.sq * esize;
      one.D = call.D + b * call.sd;
      run_call(one, device);
    }
    return;
  }
  const cudaStream_t s = stream(device);
  LtCall dense = call;
  const Tensor tp = pack(call.P, call.bf16, 1, call.p.rows, call.p.cols, 0, 1, call.p.ld, device);
  const Tensor tq = pack(call.Q, call.bf16, 1, call.q.rows, call.q.cols, 0, 1, call.q.ld, device);
  const Tensor td = empty({call.n, call.m}, DType::F32, device);  // col-major (m x n), ld = m
  dense.P = tp.raw_data(), dense.p.ld = call.p.rows;
  dense.Q = tq.raw_data(), dense.q.ld = call.q.rows;
  dense.D = static_cast<float*>(td.raw_data()), dense.d.ld = call.m;
  dense.sp = dense.sq = dense.sd = 0;
  const int64_t n = call.m * call.n;
  if (call.accumulate) {
    pack_kernel<float><<<blocks_for(n, kThreads), kThreads, 0, s>>>(dense.D, call.D, 1, call.m, call.n, 0, 1,
                                                                    call.d.ld);
    MOON_CUDA_LAUNCH_CHECK("pack_kernel");
  }
  if (!run_lt(dense, device))
    fail("matmul: cuBLASLt has no algorithm for ", call.bf16 ? "bf16" : "f32", " m=", call.m, " n=", call.n,
         " k=", call.k, " even on dense operands");
  copy3d_kernel<<<blocks_for(n, kThreads), kThreads, 0, s>>>(call.D, 0, 1, call.d.ld, dense.D, 0, 1, call.m, 1,
                                                               call.m, call.n);
  MOON_CUDA_LAUNCH_CHECK("copy3d_kernel");
}

// A GEMM input seen as a column-major (r x c) matrix per batch: element (a, b) of batch bi at
// data + bi*sb + a*s0 + b*s1 (elements); `packed` holds a dense copy when cuBLASLt cannot take the strides.
struct Input {
  const void* data = nullptr;
  int64_t r = 0, c = 0, s0 = 0, s1 = 0, sb = 0;
  Tensor packed;
};

// The operand description of `in`, packing it into a dense column-major copy first (and pointing `in` at the
// copy) when its strides have no unit dimension cuBLASLt can use.
Operand describe_or_pack(Input& in, bool bf16, int64_t batch, Device device) {
  const Operand o = describe(in.r, in.c, in.s0, in.s1);
  if (o.ok) return o;
  in.packed = pack(in.data, bf16, batch, in.r, in.c, in.sb, in.s0, in.s1, device);
  in.data = in.packed.raw_data();
  in.sb = in.sb == 0 ? 0 : in.r * in.c;
  return describe(in.r, in.c, 1, in.r);
}

// The product for one batch range whose strides are all usable (batch strides >= 0).
void gemm_batched(const GemmArgs& g, Device device) {
  const bool bf16 = g.in_dtype == GemmDType::BF16;
  const int64_t M = g.M, N = g.N, K = g.K, batch = g.batch;
  const cudaStream_t s = stream(device);
  const int64_t sa0 = g.a_stride[0], sam = g.a_stride[1], sak = g.a_stride[2];
  const int64_t sb0 = g.b_stride[0], sbk = g.b_stride[1], sbn = g.b_stride[2];
  const int64_t sc0 = g.c_stride[0], scm = g.c_stride[1], scn = g.c_stride[2];

  // The output: T-form on C, N-form on C (no bias), or a dense row-major staging copy in T-form.
  bool t_form = true;
  Operand d = describe_out(N, M, scn, scm);
  Tensor staged;
  float* D = g.C;
  int64_t sd = sc0;
  if (!d.ok) {
    Operand dn = describe_out(M, N, scm, scn);
    if (dn.ok && !g.bias) {
      t_form = false;
      d = dn;
    } else {
      staged = empty({batch, M, N}, DType::F32, device);
      D = static_cast<float*>(staged.raw_data());
      sd = M * N;
      d = describe_out(N, M, 1, N);
      if (g.accumulate) {
        copy3d_kernel<<<blocks_for(batch * M * N, kThreads), kThreads, 0, s>>>(D, M * N, N, 1, g.C, sc0, scm, scn,
                                                                                 batch, M, N);
        MOON_CUDA_LAUNCH_CHECK("copy3d_kernel");
      }
    }
  }
  // The two inputs, in the chosen form.
  LtCall call;
  call.bf16 = bf16;
  call.d = d;
  call.k = K;
  call.bias = g.bias;
  call.accumulate = g.accumulate;
  call.gelu = g.epilogue == GemmEpilogue::GeluTanh;
  Input p, q;
  if (t_form) {  // P = B^T (N x K), Q = A^T (K x M)
    call.m = N, call.n = M;
    p = Input{g.B, N, K, sbn, sbk, sb0, {}};
    q = Input{g.A, K, M, sak, sam, sa0, {}};
  } else {  // P = A (M x K), Q = B (K x N)
    call.m = M, call.n = N;
    p = Input{g.A, M, K, sam, sak, sa0, {}};
    q = Input{g.B, K, N, sbk, sbn, sb0, {}};
  }
  call.p = describe_or_pack(p, bf16, batch, device);
  call.q = describe_or_pack(q, bf16, batch, device);
  const int64_t esize = bf16 ? 2 : 4;
  for (int64_t b0 = 0; b0 < batch; b0 += kMaxBatchPerCall) {
    call.batch = std::min(kMaxBatchPerCall, batch - b0);
    call.sp = p.sb, call.sq = q.sb, call.sd = sd;
    call.P = static_cast<const char*>(p.data) + b0 * p.sb * esize;
    call.Q = static_cast<const char*>(q.data) + b0 * q.sb * esize;
    call.D = D + b0 * sd;
    run_call(call, device);
  }
  if (staged.defined()) {
    copy3d_kernel<<<blocks_for(batch * M * N, kThreads), kThreads, 0, s>>>(g.C, sc0, scm, scn, D, M * N, N, 1,
                                                                             batch, M, N);
    MOON_CUDA_LAUNCH_CHECK("copy3d_kernel");
  }
}

}  // namespace

void gemm(const GemmArgs& args, Device device) {
  MOON_CHECK(args.batch >= 0 && args.M >= 0 && args.N >= 0 && args.K >= 0, "matmul: negative GEMM sizes");
  MOON_CHECK(args.epilogue != GemmEpilogue::GeluErf,
             "matmul: the CUDA GEMM has no erf-GELU epilogue (cuBLASLt's GELU is the tanh form); apply gelu() "
             "after the product");
  MOON_CHECK(args.epilogue == GemmEpilogue::None || !args.accumulate,
             "matmul: an epilogue cannot be combined with accumulate");
  if (args.batch == 0 || args.M == 0 || args.N == 0) return;
  DeviceGuard guard(device);
  if (args.K == 0) {  // an empty sum: C = bias or 0, or unchanged when accumulating
    if (!args.accumulate) {
      const int64_t n = args.batch * args.M * args.N;
      fill_bias_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream(device)>>>(
          args.C, args.c_stride[0], args.c_stride[1], args.c_stride[2], args.bias,
          args.epilogue == GemmEpilogue::GeluTanh, args.batch, args.M, args.N);
      MOON_CUDA_LAUNCH_CHECK("fill_bias_kernel");
    }
    return;
  }
  if (args.batch > 1 && (args.a_stride[0] < 0 || args.b_stride[0] < 0 || args.c_stride[0] <= 0)) {
    // Batch strides cuBLASLt cannot take: one call per matrix.
    const int64_t esize = args.in_dtype == GemmDType::BF16 ? 2 : 4;
    for (int64_t b = 0; b < args.batch; ++b) {
      GemmArgs one = args;
      one.batch = 1;
      one.A = static_cast<const char*>(args.A) + b * args.a_stride[0] * esize;
      one.B = static_cast<const char*>(args.B) + b * args.b_stride[0] * esize;
      one.C = args.C + b * args.c_stride[0];
      gemm_batched(one, device);
    }
    return;
  }
  gemm_batched(args, device);
}

}  // namespace moon::cuda
