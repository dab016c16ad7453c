// matmul GFLOP/s: moon::matmul (f32 and bf16 operands; a bf16 product is rounded to a bf16 result) next to a
// direct oneDNN matmul primitive writing f32 on the same shapes, created once outside the timing loop (the
// ceiling moon's GEMM wrapper can reach); and linear_gelu (GELU fused into the GEMM) next to linear + gelu.
#include <dnnl.hpp>

#include <string>
#include <tuple>
#include <vector>

#include "bench/bench_common.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "runtime/autograd.h"
#include "runtime/tensor.h"

namespace moon::bench {
namespace {

struct MMShape {
  int64_t M, K, N;
};

// (M, K) @ (K, N): square sizes, a flat one, and the Qwen2-0.5B projections at 4096 tokens.
const MMShape kShapes[] = {
    {512, 512, 512}, {1024, 1024, 1024}, {2048, 512, 2048}, {4096, 896, 896}, {4096, 896, 4864},
};

// A direct oneDNN matmul C (M,N) f32 = A (M,K) @ B (K,N), row-major plain layouts (as moon's tensors are),
// A and B in f32 or bf16. The primitive and memories are built once; run() only executes.
struct DirectMatmul {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::matmul prim;
  dnnl::memory a, b, c;

  DirectMatmul(const MMShape& s, bool bf16, void* a_data, void* b_data, void* c_data) {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const dt in = bf16 ? dt::bf16 : dt::f32;
    dnnl::memory::desc a_md({s.M, s.K}, in, tag::ab), b_md({s.K, s.N}, in, tag::ab), c_md({s.M, s.N}, dt::f32, tag::ab);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), eng);
    prim = dnnl::matmul(pd);
    a = dnnl::memory(a_md, eng, a_data);
    b = dnnl::memory(b_md, eng, b_data);
    c = dnnl::memory(c_md, eng, c_data);
  }
  void run() {
    prim.execute(strm, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    strm.wait();
  }
};

void bm_matmul(benchmark::State& state, MMShape s, bool bf16) {
  Tensor a = randn({s.M, s.K}), b = randn({s.K, s.N});  // (M, K), (K, N)
  if (bf16) {
    a = a.to(DType::BF16);
    b = b.to(DType::BF16);
  }
  Tensor c_direct = empty({s.M, s.N});  // (M, N)
  DirectMatmul direct(s, bf16, a.raw_data(), b.raw_data(), c_direct.raw_data());
  Tensor c;
  run_paired(
      state, 2.0 * s.M * s.N * s.K, "GFLOP", [&] { direct.run(); },
      [&] {
        c = Tensor();  // drop the previous result first so the allocator can hand its block back
        c = matmul(a, b);
      },
      [] {});
}

// linear_gelu (GELU tanh in the GEMM's epilogue, inference) next to the same product with a separate gelu()
// pass, in the same iterations: the ratio is what the fusion saves. x (R, in), W (out, in), bias (out).
void bm_linear_gelu(benchmark::State& state, int64_t R, int64_t in, int64_t out) {
  const Tensor x = randn({R, in}), w = randn({out, in}), b = randn({out});  // (R, in), (out, in), (out)
  NoGradGuard ng;
  Tensor y;
  run_paired(
      state, 2.0 * R * in * out, "GFLOP",
      [&] {
        y = Tensor();
        y = gelu(linear(x, w, b), GeluApprox::Tanh);
      },
      [&] {
        y = Tensor();
        y = linear_gelu(x, w, b, GeluApprox::Tanh);
      },
      [] {});
}

const int kRegistered = [] {
  // The ViT MLP (SigLIP-base width at 1024 patches) and the Qwen2-0.5B MLP width at 4096 tokens.
  for (auto [r, in, out] : {std::tuple<int64_t, int64_t, int64_t>{1024, 768, 3072}, {4096, 896, 4864}}) {
    const std::string name = "linear_gelu_f32/" + std::to_string(r) + "x" + std::to_string(in) + "x" + std::to_string(out);
    benchmark::RegisterBenchmark(name.c_str(), bm_linear_gelu, r, in, out)->UseManualTime()->Unit(benchmark::kMillisecond);
  }
  for (const MMShape& s : kShapes)
    for (bool bf16 : {false, true}) {
      const std::string name = std::string(bf16 ? "matmul_bf16/" : "matmul_f32/") + std::to_string(s.M) + "x" +
                               std::to_string(s.K) + "x" + std::to_string(s.N);
      benchmark::RegisterBenchmark(name.c_str(), bm_matmul, s, bf16)->UseManualTime()->Unit(benchmark::kMillisecond);
    }
  return 0;
}();

}  // namespace
}  // namespace moon::bench
