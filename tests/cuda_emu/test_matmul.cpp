// The CUDA GEMM driver (ops/cuda/matmul_cuda.cu) over the emulated cuBLASLt (cublaslt_emu.h), against the CPU
// GEMM (oneDNN, cpu::gemm) on the same buffers: every operand layout (row-major, transposed, no unit stride,
// batch interleaved in rows), broadcast batches (stride 0), bias, accumulate, bf16, K = 0, batch strides
// cuBLASLt cannot take, and outputs it cannot describe; each under the three refusal modes of the emulated
// heuristic, so the fallbacks (split batches, dense copies) run too. Elements of C outside the output view
// must stay untouched.
#include <random>
#include <vector>

#include "common.h"
#include "emu/ops/cuda/matmul_cuda.h"

namespace emutest {

namespace {

using moon::cpu::GemmArgs;
using moon::cpu::GemmDType;

enum class Lay { Row, Trans, General, Interleaved };
const char* lay_name(Lay l) {
  switch (l) {
    case Lay::Row: return "row";
    case Lay::Trans: return "trans";
    case Lay::General: return "general";
    case Lay::Interleaved: return "interleaved";
  }
  return "?";
}

struct Layout {
  int64_t s[3] = {0, 0, 0};
  size_t size = 1;
};
// Strides of a (batch, R, C) operand in layout `lay` (stride 0 over the batch when broadcast).
Layout make_layout(int64_t batch, int64_t R, int64_t C, Lay lay, bool broadcast, int64_t pad) {
  Layout l;
  const int64_t nb = broadcast ? 1 : batch;
  switch (lay) {
    case Lay::Row: l.s[2] = 1, l.s[1] = C + pad, l.s[0] = R * l.s[1]; break;
    case Lay::Trans: l.s[1] = 1, l.s[2] = R + pad, l.s[0] = C * l.s[2]; break;
    case Lay::General: l.s[2] = 2, l.s[1] = 2 * C + pad, l.s[0] = R * l.s[1]; break;
    case Lay::Interleaved: l.s[2] = 1, l.s[0] = C + pad, l.s[1] = nb * (C + pad); break;
  }
  if (broadcast) l.s[0] = 0;
  const int64_t last = (nb - 1) * l.s[0] + (R - 1) * l.s[1] + (C - 1) * l.s[2];
  l.size = static_cast<size_t>(std::max<int64_t>(last + 1, 1));
  return l;
}

struct Problem {
  int64_t batch = 1, M = 1, N = 1, K = 1, pad = 0;
  GemmDType dtype = GemmDType::F32;
  Lay la = Lay::Row, lb = Lay::Row, lc = Lay::Row;
  bool a_bcast = false, b_bcast = false, accumulate = false, bias = false;
  bool c_reduced = false;  // C's batch stride 0: the batch's products summed into one matrix (accumulating)
  bool gelu = false;       // the GELU (tanh) epilogue
  std::string str() const {
    char b[256];
    std::snprintf(b, sizeof b, "b%ld M%ld N%ld K%ld %s A:%s%s B:%s%s C:%s%s%s%s%s pad%ld", long(batch), long(M), long(N),
                  long(K), dtype == GemmDType::BF16 ? "bf16" : "f32", lay_name(la), a_bcast ? "(bcast)" : "",
                  lay_name(lb), b_bcast ? "(bcast)" : "", lay_name(lc), c_reduced ? "(reduced)" : "",
                  accumulate ? " acc" : "", bias ? " bias" : "", gelu ? " gelu" : "", long(pad));
    return b;
  }
};

uint16_t to_bf16(float f) { return moon::f32_to_bf16(f); }

void check_problem(const Problem& p, uint32_t seed, int refuse) {
  const Layout la = make_layout(p.batch, p.M, p.K, p.la, p.a_bcast, p.pad);
  const Layout lb = make_layout(p.batch, p.K, p.N, p.lb, p.b_bcast, p.pad);
  Layout lc = make_layout(p.batch, p.M, p.N, p.lc, p.c_reduced, p.pad);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  // Operands at an odd element offset inside their buffers: pointers not 16-byte aligned.
  const size_t off = (seed % 3 == 0) ? 1 : 0;
  std::vector<float> af(la.size + off), bf(lb.size + off), c(lc.size + off), bias(size_t(p.N));
  std::vector<uint16_t> ah(af.size()), bh(bf.size());
  for (auto& x : af) x = U(rng);
  for (auto& x : bf) x = U(rng);
  for (auto& x : c) x = U(rng);
  for (auto& x : bias) x = U(rng);
  for (size_t i = 0; i < af.size(); ++i) ah[i] = to_bf16(af[i]);
  for (size_t i = 0; i < bf.size(); ++i) bh[i] = to_bf16(bf[i]);
  std::vector<float> c_cpu = c, c_gpu = c;

  GemmArgs g;
  g.batch = p.batch, g.M = p.M, g.N = p.N, g.K = p.K, g.in_dtype = p.dtype;
  const bool bf16 = p.dtype == GemmDType::BF16;
  g.A = bf16 ? static_cast<const void*>(ah.data() + off) : af.data() + off;
  g.B = bf16 ? static_cast<const void*>(bh.data() + off) : bf.data() + off;
  std::copy(la.s, la.s + 3, g.a_stride);
  std::copy(lb.s, lb.s + 3, g.b_stride);
  std::copy(lc.s, lc.s + 3, g.c_stride);
  g.bias = p.bias ? bias.data() : nullptr;
  g.accumulate = p.accumulate;
  g.epilogue = p.gelu ? moon::cpu::GemmEpilogue::GeluTanh : moon::cpu::GemmEpilogue::None;

  GemmArgs cpu_args = g;
  cpu_args.C = c_cpu.data() + off;
  GemmArgs gpu_args = g;
  gpu_args.C = c_gpu.data() + off;
  const std::string ctx = p.str() + " refuse" + std::to_string(refuse);
  guarded(ctx.c_str(), [&] {
    if (p.c_reduced) {  // the N-d driver's reduced batch: accumulate one product at a time, as ops/matmul.cpp does
      for (int64_t b = 0; b < p.batch; ++b) {
        GemmArgs one_cpu = cpu_args, one_gpu = gpu_args;
        one_cpu.batch = one_gpu.batch = 1;
        const int64_t es = bf16 ? 2 : 4;
        for (GemmArgs* a : {&one_cpu, &one_gpu}) {
          a->A = static_cast<const char*>(g.A) + b * la.s[0] * es;
          a->B = static_cast<const char*>(g.B) + b * lb.s[0] * es;
          a->accumulate = p.accumulate || b > 0;
        }
        moon::cpu::gemm(one_cpu);
        moon::cuda_emu::gemm(one_gpu, moon::kCPU);
      }
    } else {
      moon::cpu::gemm(cpu_args);
      moon::cuda_emu::gemm(gpu_args, moon::kCPU);
    }
    // |a|, |b| <= 1: f32 accumulation error grows like sqrt(K) (and with the summed batch).
    const double tol = 2e-5 * (std::sqrt(double(p.K * (p.c_reduced ? p.batch : 1))) + 1.0);
    cmp("gemm", c_gpu.data(), c_cpu.data(), int64_t(c.size()), 0.0, tol, ctx.c_str());
  });
}

}  // namespace

void test_matmul(const std::string& only) {
  if (!only.empty() && only != "matmul") return;
  namespace emu = moon::cuda_emu::emu;
  uint32_t seed = 1;
  const long calls0 = emu::lt_calls;
  for (int refuse : {0, 1, 2}) {
    emu::lt_refuse = refuse;
    const long refusals0 = emu::lt_refusals;
    for (GemmDType dt : {GemmDType::F32, GemmDType::BF16})
      for (Lay la : {Lay::Row, Lay::Trans, Lay::General, Lay::Interleaved})
        for (Lay lb : {Lay::Row, Lay::Trans, Lay::General})
          for (Lay lc : {Lay::Row, Lay::Trans, Lay::Interleaved}) {
            Problem p;
            p.dtype = dt, p.la = la, p.lb = lb, p.lc = lc;
            p.batch = 1 + seed % 3, p.M = 1 + (seed * 7) % 9, p.N = 1 + (seed * 5) % 8, p.K = 1 + (seed * 3) % 11;
            p.pad = seed % 2;
            p.bias = seed % 2 == 1;
            p.accumulate = seed % 4 == 2;
            p.a_bcast = seed % 5 == 1;
            p.b_bcast = !p.a_bcast && seed % 5 == 3;
            p.gelu = !p.accumulate && seed % 3 == 0;
            check_problem(p, seed++, refuse);
          }
    // Edge cases: K = 0 (C = bias or unchanged), vectors (M or N = 1), a summed batch, wide K.
    for (GemmDType dt : {GemmDType::F32, GemmDType::BF16}) {
      Problem p;
      p.dtype = dt;
      p.K = 0, p.M = 3, p.N = 5, p.batch = 2, p.bias = true;
      check_problem(p, seed++, refuse);
      p.gelu = true;
      check_problem(p, seed++, refuse);
      p.gelu = false, p.bias = false, p.accumulate = true;
      check_problem(p, seed++, refuse);
      p = Problem{};
      p.dtype = dt, p.M = 1, p.N = 7, p.K = 5, p.lb = Lay::Trans, p.bias = true;
      check_problem(p, seed++, refuse);
      p = Problem{};
      p.dtype = dt, p.M = 6, p.N = 1, p.K = 4, p.la = Lay::Trans, p.lc = Lay::Trans;
      check_problem(p, seed++, refuse);
      p = Problem{};
      p.dtype = dt, p.batch = 3, p.M = 4, p.N = 5, p.K = 6, p.c_reduced = true, p.lb = Lay::Interleaved;
      check_problem(p, seed++, refuse);
      p = Problem{};
      p.dtype = dt, p.batch = 2, p.M = 5, p.N = 3, p.K = 300, p.b_bcast = true, p.bias = true;
      check_problem(p, seed++, refuse);
      p.gelu = true, p.lc = Lay::Trans;  // GELU without a bias on a column-major output (the N-form)
      p.bias = false;
      check_problem(p, seed++, refuse);
    }
    if (refuse > 0 && emu::lt_refusals == refusals0) fail("matmul: refusal mode " + std::to_string(refuse) + " never refused");
  }
  emu::lt_refuse = 0;
  if (emu::lt_calls == calls0) fail("matmul: cublasLtMatmul was never called");
  // The erf GELU has no cuBLASLt epilogue: refused with a message (the op layer applies gelu() instead).
  ++checks;
  try {
    float a = 1, b = 1, c = 0;
    GemmArgs g;
    g.M = g.N = g.K = 1, g.A = &a, g.B = &b, g.C = &c;
    g.a_stride[1] = g.a_stride[2] = g.b_stride[1] = g.b_stride[2] = g.c_stride[1] = g.c_stride[2] = 1;
    g.epilogue = moon::cpu::GemmEpilogue::GeluErf;
    moon::cuda_emu::gemm(g, moon::kCPU);
    fail("matmul: an erf-GELU epilogue was accepted");
  } catch (const moon::Error& e) {
    if (std::string(e.what()).find("erf-GELU") == std::string::npos) fail(std::string("matmul: unexpected error: ") + e.what());
  }
  done("matmul");
}

}  // namespace emutest
