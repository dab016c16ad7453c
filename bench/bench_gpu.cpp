// GPU benchmarks (CUDA builds; registered only when a CUDA device is present). Each names a ceiling or
// peer measured in the same iterations, back to back:
//   gpu_matmul_{f32,bf16}/MxKxN   moon::matmul on device tensors vs a direct cublasGemmEx on the same buffers
//                                 (same compute type: f32 accumulate), 2*M*N*K flops
//   gpu_memcpy/N                  cudaMemcpyAsync device to device: the bandwidth ceiling (read + write bytes)
//   gpu_<op>_{fwd,bwd}/RxC[_bf16] memory-bound ops vs a device-to-device copy of the same byte count:
//                                 forward reads x and writes y (2*R*C*E bytes, E = 4 for f32, 2 for bf16),
//                                 backward reads x|y and dy and writes dx (3*R*C*E bytes); weights and
//                                 statistics are left out
//   gpu_attention_{fwd,bwd}[_causal]/BxHxTxD[_bf16]   moon's flash attention vs the two GEMMs it fuses
//                                 (S = Q K^T, O = S V through cublasGemmStridedBatchedEx, no softmax), 4*B*H*T^2*D
//                                 flops forward (halved when causal; the GEMM ceiling always counts the full
//                                 amount), 2.5x that backward
// A timed call is a batch of kReps launches followed by one synchronisation, so launch latency overlaps as it
// does in a real step. PyTorch on the same shapes: scripts/bench_torch_gpu.py; both together:
// scripts/bench_gpu_report.py (bench/README.md, "GPU").
#ifdef MOON_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "bench/bench_common.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/loss.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "runtime/autograd.h"
#include "runtime/tensor.h"

namespace moon::bench {
namespace {

constexpr int kReps = 10;

// f() kReps times, then wait for the device.
template <class F>
void batch(F&& f) {
  for (int i = 0; i < kReps; ++i) f();
  cuda_synchronize();
}

cublasHandle_t cublas() {
  static cublasHandle_t h = [] {
    cublasHandle_t x;
    cublasCreate(&x);
    cublasSetMathMode(x, CUBLAS_DEFAULT_MATH);  // no TF32 for f32: the same arithmetic as ours
    return x;
  }();
  return h;
}

// A device-to-device copy of `bytes` (read `bytes`, write `bytes`).
struct DeviceCopy {
  Tensor src, dst;
  explicit DeviceCopy(int64_t bytes)
      : src(empty({bytes / 4}, DType::F32, cuda_device())), dst(empty({bytes / 4}, DType::F32, cuda_device())) {}
  void copy() { cudaMemcpyAsync(dst.raw_data(), src.raw_data(), src.numel() * 4, cudaMemcpyDeviceToDevice); }
};

// Row-major C (M, N) = A (M, K) B (K, N) through cuBLAS (column-major: C^T = B^T A^T).
void cublas_gemm(const Tensor& a, const Tensor& b, const Tensor& c, int64_t M, int64_t K, int64_t N, int64_t batch = 1,
                 bool b_transposed = false) {
  const float one = 1.0f, zero = 0.0f;
  const cudaDataType_t in = a.dtype() == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
  const cudaDataType_t out = c.dtype() == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
  cublasGemmStridedBatchedEx(cublas(), b_transposed ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(N),
                             static_cast<int>(M), static_cast<int>(K), &one, b.raw_data(), in,
                             static_cast<int>(b_transposed ? K : N), K * N, a.raw_data(), in, static_cast<int>(K),
                             M * K, &zero, c.raw_data(), out, static_cast<int>(N), M * N,
                             static_cast<int>(batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

void bm_matmul(benchmark::State& state, DType dt, int64_t M, int64_t K, int64_t N) {
  const Tensor a = randn({M, K}, DType::F32, cuda_device()).to(dt);  // (M, K)
  const Tensor b = randn({K, N}, DType::F32, cuda_device()).to(dt);  // (K, N)
  const Tensor c = empty({M, N}, DType::F32, cuda_device());         // (M, N) the peer's output
  NoGradGuard ng;
  Tensor y;
  run_paired(
      state, kReps * 2.0 * M * N * K, "GFLOP", [&] { batch([&] { cublas_gemm(a, b, c, M, K, N); }); },
      [&] { batch([&] { y = matmul(a, b); }); }, [] {});
}

void bm_memcpy(benchmark::State& state, int64_t bytes) {
  DeviceCopy dc(bytes);
  run_single(state, kReps * 2.0 * bytes, "GB", [&] { batch([&] { dc.copy(); }); });
}

enum class Op { Add, Gelu, Softmax, LayerNorm, RmsNorm, CrossEntropy };
const char* op_name(Op op) {
  switch (op) {
    case Op::Add: return "add";
    case Op::Gelu: return "gelu";
    case Op::Softmax: return "softmax";
    case Op::LayerNorm: return "layer_norm";
    case Op::RmsNorm: return "rms_norm";
    case Op::CrossEntropy: return "cross_entropy";
  }
  return "?";
}

void bm_membound(benchmark::State& state, Op op, int64_t rows, int64_t C, bool backward, DType dt) {
  const Device dev = cuda_device();
  Tensor x = randn({rows, C}, DType::F32, dev).to(dt);    // (rows, C)
  Tensor x2 = randn({rows, C}, DType::F32, dev).to(dt);   // (rows, C) second operand of add
  Tensor w = randn({C}, DType::F32, dev).to(dt), b = randn({C}, DType::F32, dev).to(dt);  // (C)
  Generator g(3);
  Tensor targets = randint({rows}, g, 0, C, DType::I64, dev);  // (rows)
  const int64_t n = rows * C;
  // add reads two operands; cross_entropy writes one value per row forward
  const double esize = static_cast<double>(dtype_size(dt));
  const double fwd_bytes = (op == Op::Add ? 3.0 : op == Op::CrossEntropy ? 1.0 : 2.0) * n * esize;
  const double bytes = backward ? (op == Op::CrossEntropy ? 2.0 : 3.0) * n * esize : fwd_bytes;
  DeviceCopy dc(static_cast<int64_t>(bytes / 2));
  auto forward = [&] {
    switch (op) {
      case Op::Add: return add(x, x2);
      case Op::Gelu: return gelu(x);
      case Op::Softmax: return softmax(x, -1);
      case Op::LayerNorm: return layer_norm(x, w, b);
      case Op::RmsNorm: return rms_norm(x, w);
      case Op::CrossEntropy: return cross_entropy(x, targets);
    }
    return Tensor();
  };
  if (!backward) {
    NoGradGuard ng;
    Tensor y;
    run_paired(
        state, kReps * bytes, "GB", [&] { batch([&] { dc.copy(); }); }, [&] { batch([&] { y = forward(); }); }, [] {});
    return;
  }
  x.set_requires_grad();
  if (op == Op::LayerNorm || op == Op::RmsNorm) w.set_requires_grad();
  if (op == Op::LayerNorm) b.set_requires_grad();
  Tensor y = forward();  // graph kept across iterations
  Tensor dy = op == Op::CrossEntropy ? ones({}, DType::F32, dev) : randn({rows, C}, DType::F32, dev).to(dt);
  run_paired(
      state, kReps * bytes, "GB", [&] { batch([&] { dc.copy(); }); },
      [&] {
        batch([&] {
          x.zero_grad();
          w.zero_grad();
          b.zero_grad();
          y.backward(dy, /*retain_graph=*/true);
        });
      },
      [] {});
}

void bm_attention(benchmark::State& state, int64_t B, int64_t H, int64_t T, int64_t D, bool causal, bool backward,
                  DType dt) {
  const Device dev = cuda_device();
  Tensor q = randn({B, H, T, D}, DType::F32, dev).to(dt), k = randn({B, H, T, D}, DType::F32, dev).to(dt),
         v = randn({B, H, T, D}, DType::F32, dev).to(dt);                // (B, H, T, D)
  Tensor s = empty({B * H, T, T}, dt, dev);                               // ceiling: scores
  Tensor o = empty({B * H, T, D}, dt, dev);                               // ceiling: output
  const double full = 4.0 * B * H * T * T * D;
  const double ours_work = (causal ? 0.5 : 1.0) * full * (backward ? 2.5 : 1.0);
  const double peer_work = full;
  AttentionOptions opt;
  opt.causal = causal;
  auto ceiling = [&] {
    batch([&] {
      cublas_gemm(q, k, s, T, D, T, B * H, /*b_transposed=*/true);
      cublas_gemm(s, v, o, T, T, D, B * H);
    });
  };
  if (!backward) {
    NoGradGuard ng;
    Tensor y;
    run_paired(
        state, kReps * ours_work, kReps * peer_work, "GFLOP", ceiling,
        [&] { batch([&] { y = scaled_dot_product_attention(q, k, v, opt); }); }, [] {});
    return;
  }
  q.set_requires_grad(), k.set_requires_grad(), v.set_requires_grad();
  Tensor y = scaled_dot_product_attention(q, k, v, opt);
  Tensor dy = randn({B, H, T, D}, DType::F32, dev).to(dt);
  run_paired(
      state, kReps * ours_work, kReps * peer_work, "GFLOP", ceiling,
      [&] {
        batch([&] {
          q.zero_grad(), k.zero_grad(), v.zero_grad();
          y.backward(dy, /*retain_graph=*/true);
        });
      },
      [] {});
}

std::string dims(std::initializer_list<int64_t> d) {
  std::string s;
  for (int64_t x : d) s += (s.empty() ? "" : "x") + std::to_string(x);
  return s;
}

const int kRegistered = [] {
  if (!cuda_available()) return 0;
  auto reg = [](const std::string& name, auto&&... args) {
    benchmark::RegisterBenchmark(name.c_str(), args...)->UseManualTime()->Unit(benchmark::kMicrosecond);
  };
  for (auto [m, k, n] : {std::tuple<int64_t, int64_t, int64_t>{4096, 4096, 4096}, {8192, 8192, 8192}, {4096, 896, 4864}}) {
    reg("gpu_matmul_f32/" + dims({m, k, n}), bm_matmul, DType::F32, m, k, n);
    reg("gpu_matmul_bf16/" + dims({m, k, n}), bm_matmul, DType::BF16, m, k, n);
  }
  for (int64_t mb : {64, 512}) reg("gpu_memcpy/" + std::to_string(mb) + "MiB", bm_memcpy, mb << 20);
  for (DType dt : {DType::F32, DType::BF16}) {
    const std::string tag = dt == DType::BF16 ? "_bf16" : "";
    for (bool backward : {false, true})
      for (Op op : {Op::Add, Op::Gelu, Op::Softmax, Op::LayerNorm, Op::RmsNorm, Op::CrossEntropy})
        for (auto [r, c] : {std::pair<int64_t, int64_t>{16384, 896}, {4096, 4864}, {8192, 32768}}) {
          if (op == Op::CrossEntropy ? c < 4864 : c > 4864) continue;  // CE on vocabulary-wide rows only
          reg(std::string("gpu_") + op_name(op) + (backward ? "_bwd/" : "_fwd/") + dims({r, c}) + tag, bm_membound, op,
              r, c, backward, dt);
        }
    for (bool backward : {false, true})
      for (bool causal : {false, true})
        for (auto [T, D] : {std::pair<int64_t, int64_t>{1024, 64}, {4096, 64}, {1024, 128}, {4096, 128}}) {
          const int64_t B = 4, H = D == 64 ? 16 : 8;
          reg(std::string("gpu_attention_") + (backward ? "bwd" : "fwd") + (causal ? "_causal/" : "/") +
                  dims({B, H, T, D}) + tag,
              bm_attention, B, H, T, D, causal, backward, dt);
        }
  }
  return 0;
}();

}  // namespace
}  // namespace moon::bench
#endif  // MOON_CUDA
