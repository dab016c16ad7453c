// cuBLASLt, emulated on the host for ops/cuda/matmul_cuda.cu (included by cuda_emu_shim.h).
//
// The descriptors record their attributes (checking each attribute's byte size, as the library does).
// cublasLtMatmulAlgoGetHeuristic and cublasLtMatmul check that the description is consistent the way the
// library would refuse it, and a description error is an emulator error (a bug in our driver, not a
// refusal):
//   * op(A) is (m x k), op(B) is (k x n), C and D are (m x n), with m, n from D's layout and k from op(A);
//   * every leading dimension >= its layout's rows; batch counts equal; A and B of one type; C, D f32;
//     compute type 32F; a bias epilogue has an f32 bias (and a pointer to it when the product runs);
//   * the alignments promised in the preference hold for the pointers and the batch strides.
// cublasLtMatmul then computes D = gelu?(alpha op(A) op(B) + beta C (+ bias[row])) in double (GELU in its tanh
// form, as the library's) from the
// column-major layouts and stores f32. `lt_refuse` makes the heuristic turn calls down, so the driver's
// fallbacks (split batches, dense copies) run: 0 accept all, 1 refuse batched calls, 2 refuse batched calls
// and any operand whose leading dimension is not its row count.
#pragma once

namespace moon::cuda_emu {

enum cublasStatus_t { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7, CUBLAS_STATUS_NOT_SUPPORTED = 15 };
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16BF = 14 };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F = 68 };
enum cublasLtEpilogue_t {
  CUBLASLT_EPILOGUE_DEFAULT = 1,
  CUBLASLT_EPILOGUE_BIAS = 4,
  CUBLASLT_EPILOGUE_GELU = 32,
  CUBLASLT_EPILOGUE_GELU_BIAS = 36
};
enum cublasLtMatmulDescAttributes_t {
  CUBLASLT_MATMUL_DESC_TRANSA,
  CUBLASLT_MATMUL_DESC_TRANSB,
  CUBLASLT_MATMUL_DESC_EPILOGUE,
  CUBLASLT_MATMUL_DESC_BIAS_POINTER,
  CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE
};
enum cublasLtMatrixLayoutAttribute_t { CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET };
enum cublasLtMatmulPreferenceAttributes_t {
  CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES
};

struct LtDesc {
  int32_t compute = 0, scale = 0, transa = CUBLAS_OP_N, transb = CUBLAS_OP_N, bias_type = -1;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
};
struct LtLayout {
  int32_t type = 0;
  uint64_t rows = 0, cols = 0;
  int64_t ld = 0;
  int32_t batch = 1;
  int64_t stride = 0;  // elements
};
struct LtPref {
  uint64_t workspace = 0;
  uint32_t align[4] = {1, 1, 1, 1};  // A, B, C, D
};
using cublasLtHandle_t = void*;
using cublasLtMatmulDesc_t = LtDesc*;
using cublasLtMatrixLayout_t = LtLayout*;
using cublasLtMatmulPreference_t = LtPref*;
struct cublasLtMatmulAlgo_t {
  uint64_t data[8];
};
struct cublasLtMatmulHeuristicResult_t {
  cublasLtMatmulAlgo_t algo;
  size_t workspaceSize;
  cublasStatus_t state;
  float wavesCount;
  int reserved[4];
};

namespace emu {
inline int lt_refuse = 0;
inline long lt_calls = 0, lt_refusals = 0;
}  // namespace emu

// Copies an attribute of exactly `size` bytes, else INVALID_VALUE (the library checks the size too).
template <class T>
inline cublasStatus_t lt_set(T& field, const void* buf, size_t size) {
  if (size != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(&field, buf, sizeof(T));
  return CUBLAS_STATUS_SUCCESS;
}

inline cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t compute, cudaDataType_t scale) {
  *d = new LtDesc;
  (*d)->compute = compute;
  (*d)->scale = scale;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  delete d;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a,
                                                     const void* buf, size_t size) {
  switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return lt_set(d->transa, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSB: return lt_set(d->transb, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return lt_set(d->epilogue, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return lt_set(d->bias, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return lt_set(d->bias_type, buf, size);
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}
inline cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType_t type, uint64_t rows,
                                                 uint64_t cols, int64_t ld) {
  *l = new LtLayout;
  (*l)->type = type, (*l)->rows = rows, (*l)->cols = cols, (*l)->ld = ld;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  delete l;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t a,
                                                       const void* buf, size_t size) {
  switch (a) {
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: return lt_set(l->batch, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: return lt_set(l->stride, buf, size);
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}
inline cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  *p = new LtPref;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                           cublasLtMatmulPreferenceAttributes_t a, const void* buf,
                                                           size_t size) {
  switch (a) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: return lt_set(p->workspace, buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: return lt_set(p->align[0], buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: return lt_set(p->align[1], buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: return lt_set(p->align[2], buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: return lt_set(p->align[3], buf, size);
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

// Throws an emulator error naming the inconsistency of a matmul description; returns (m, n, k).
struct LtShape {
  int64_t m, n, k;
};
// (The bias pointer may be set after the heuristic: it is checked when the product runs.)
inline LtShape lt_check(const LtDesc& d, const LtLayout& a, const LtLayout& b, const LtLayout& c, const LtLayout& dl,
                        bool running) {
  auto bad = [](const std::string& what) { throw emu::Error("cuBLASLt description: " + what); };
  if (d.compute != CUBLAS_COMPUTE_32F || d.scale != CUDA_R_32F) bad("compute/scale type is not 32F");
  if (a.type != b.type) bad("A and B differ in type");
  if (a.type != CUDA_R_32F && a.type != CUDA_R_16BF) bad("A/B type is neither f32 nor bf16");
  if (c.type != CUDA_R_32F || dl.type != CUDA_R_32F) bad("C/D are not f32");
  const int64_t m = int64_t(dl.rows), n = int64_t(dl.cols);
  const int64_t am = int64_t(d.transa == CUBLAS_OP_N ? a.rows : a.cols), k = int64_t(d.transa == CUBLAS_OP_N ? a.cols : a.rows);
  const int64_t bk = int64_t(d.transb == CUBLAS_OP_N ? b.rows : b.cols), bn = int64_t(d.transb == CUBLAS_OP_N ? b.cols : b.rows);
  if (am != m || bn != n || bk != k)
    bad("op(A) is " + std::to_string(am) + "x" + std::to_string(k) + ", op(B) " + std::to_string(bk) + "x" +
        std::to_string(bn) + ", D " + std::to_string(m) + "x" + std::to_string(n));
  if (int64_t(c.rows) != m || int64_t(c.cols) != n) bad("C and D differ in shape");
  for (const LtLayout* l : {&a, &b, &c, &dl})
    if (l->ld < std::max<int64_t>(1, int64_t(l->rows))) bad("a leading dimension is below its row count");
  if (a.batch != dl.batch || b.batch != dl.batch || c.batch != dl.batch || dl.batch < 1) bad("batch counts differ");
  if (d.epilogue == CUBLASLT_EPILOGUE_BIAS || d.epilogue == CUBLASLT_EPILOGUE_GELU_BIAS) {
    if (running && !d.bias) bad("bias epilogue without a bias pointer");
    if (d.bias_type != CUDA_R_32F) bad("bias is not f32");
  } else if (d.epilogue != CUBLASLT_EPILOGUE_DEFAULT && d.epilogue != CUBLASLT_EPILOGUE_GELU) {
    bad("unknown epilogue");
  }
  return {m, n, k};
}

inline cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                                     cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                                     cublasLtMatrixLayout_t dl, cublasLtMatmulPreference_t pref,
                                                     int requested, cublasLtMatmulHeuristicResult_t* results,
                                                     int* found) {
  lt_check(*d, *a, *b, *c, *dl, false);
  const bool batched = dl->batch > 1;
  const bool strided = a->ld != int64_t(a->rows) || b->ld != int64_t(b->rows) || dl->ld != int64_t(dl->rows);
  if ((emu::lt_refuse >= 1 && batched) || (emu::lt_refuse >= 2 && strided)) {
    ++emu::lt_refusals;
    *found = 0;
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
  std::memset(&results[0], 0, sizeof(results[0]));
  for (int i = 0; i < 4; ++i) results[0].algo.data[i] = pref->align[i];  // the algorithm relies on them
  *found = 1;
  return CUBLAS_STATUS_SUCCESS;
}

inline cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void* alpha, const void* A,
                                     cublasLtMatrixLayout_t al, const void* B, cublasLtMatrixLayout_t bl,
                                     const void* beta, const void* C, cublasLtMatrixLayout_t cl, void* D,
                                     cublasLtMatrixLayout_t dl, const cublasLtMatmulAlgo_t* algo, void*, size_t,
                                     cudaStream_t) {
  const LtShape s = lt_check(*d, *al, *bl, *cl, *dl, true);
  ++emu::lt_calls;
  const bool bf16 = al->type == CUDA_R_16BF;
  const int64_t esize = bf16 ? 2 : 4;
  // The alignments the algorithm was chosen for must hold for every batch's pointer.
  const void* ptrs[4] = {A, B, C, D};
  const int64_t strides[4] = {al->stride * esize, bl->stride * esize, cl->stride * 4, dl->stride * 4};
  for (int i = 0; i < 4; ++i) {
    uintptr_t bits = reinterpret_cast<uintptr_t>(ptrs[i]);
    if (dl->batch > 1) bits |= uintptr_t(strides[i]);
    if (algo->data[i] > 1 && bits % algo->data[i] != 0)
      throw emu::Error("cuBLASLt: operand " + std::to_string(i) + " is less aligned than the preference promised");
  }
  auto load = [&](const void* p, int64_t i) -> double {
    if (!bf16) return static_cast<const float*>(p)[i];
    const uint32_t u = uint32_t(static_cast<const uint16_t*>(p)[i]) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  const float a = *static_cast<const float*>(alpha), bt = *static_cast<const float*>(beta);
  const bool with_bias = d->epilogue == CUBLASLT_EPILOGUE_BIAS || d->epilogue == CUBLASLT_EPILOGUE_GELU_BIAS;
  const bool gelu = d->epilogue == CUBLASLT_EPILOGUE_GELU || d->epilogue == CUBLASLT_EPILOGUE_GELU_BIAS;
  const float* bias = with_bias ? static_cast<const float*>(d->bias) : nullptr;
  std::vector<float> out(size_t(s.m * s.n));
  for (int64_t bi = 0; bi < dl->batch; ++bi) {
    const int64_t oa = bi * al->stride, ob = bi * bl->stride;
    const float* Cb = static_cast<const float*>(C) + bi * cl->stride;
    float* Db = static_cast<float*>(D) + bi * dl->stride;
    for (int64_t j = 0; j < s.n; ++j)
      for (int64_t i = 0; i < s.m; ++i) {
        double acc = 0;
        for (int64_t k = 0; k < s.k; ++k) {
          const int64_t ia = d->transa == CUBLAS_OP_N ? i + k * al->ld : k + i * al->ld;
          const int64_t ib = d->transb == CUBLAS_OP_N ? k + j * bl->ld : j + k * bl->ld;
          acc += load(A, oa + ia) * load(B, ob + ib);
        }
        double v = double(a) * acc;
        if (bt != 0.0f) v += double(bt) * Cb[i + j * cl->ld];
        if (bias) v += bias[i];
        if (gelu) v = 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
        out[size_t(i + j * s.m)] = float(v);
      }
    for (int64_t j = 0; j < s.n; ++j)
      for (int64_t i = 0; i < s.m; ++i) Db[i + j * dl->ld] = out[size_t(i + j * s.m)];
  }
  return CUBLAS_STATUS_SUCCESS;
}

// runtime/cuda/context.h
inline cublasLtHandle_t cublaslt(Device) { return nullptr; }
inline void* cublaslt_workspace(Device, size_t* bytes) {
  static std::vector<char> ws(1 << 20);
  *bytes = ws.size();
  return ws.data();
}

}  // namespace moon::cuda_emu

#define MOON_CUBLAS_CHECK(call)                                                                        \
  do {                                                                                                 \
    if ((call) != ::moon::cuda_emu::CUBLAS_STATUS_SUCCESS)                                             \
      throw ::moon::cuda_emu::emu::Error(std::string("emulated cuBLAS call failed: ") + #call);       \
  } while (0)
