// cross_entropy: fused log-softmax + smoothed NLL, mean over non-ignored rows (see ops/loss.h).
// Logits f32 or bf16: the loss and the saved softmax are f32, the logits' gradient takes the logits' dtype
// (bf16 is computed in f32 and rounded once).
#include <cmath>

#include "ops/cpu/isa.h"
#include "ops/cpu/loss_kernels.h"
#include "ops/cuda/loss_cuda.h"
#include "ops/float_storage.h"
#include "ops/loss.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

// loss (0-d) = sum of row losses / count; probs (N, C) dense, or undefined when no gradient is needed.
void cross_entropy_cpu(const Tensor& logits, const Tensor& targets, const CeParams& p, const Tensor& loss,
                       const Tensor& probs, int64_t count) {
  const int64_t N = logits.size(0), C = logits.size(1);
  const Tensor xf = f32_input(logits);  // a contiguous copy when bf16: use its row stride
  const double total = MOON_ISA_SELECT(cross_entropy_rows)(
      xf.data<float>(), N, C, xf.stride(0), targets.data<int64_t>(), targets.stride(0), p.ignore_index,
      p.smoothing, probs.defined() ? probs.data<float>() : nullptr);
  loss.data<float>()[0] = count > 0 ? static_cast<float>(total / static_cast<double>(count)) : 0.0f;
}

// dx (N, C) = (probs - smoothed onehot) * scale on kept rows, 0 on ignored rows.
void cross_entropy_backward_cpu(const Tensor& probs, const Tensor& targets, const CeParams& p, float scale,
                                const Tensor& dx) {
  const F32Output dxo(dx);
  MOON_ISA_SELECT(cross_entropy_backward_rows)(probs.data<float>(), targets.data<int64_t>(), targets.stride(0),
                                               probs.size(0), probs.size(1), p.ignore_index, p.smoothing, scale,
                                               dxo.data<float>());
  dxo.commit();
}

using CeFn = void (*)(const Tensor&, const Tensor&, const CeParams&, const Tensor&, const Tensor&, int64_t);
using CeBackFn = void (*)(const Tensor&, const Tensor&, const CeParams&, float, const Tensor&);
KernelTable<CeFn> g_ce{"cross_entropy", {cross_entropy_cpu, MOON_CUDA_KERNEL(cuda::cross_entropy)}};
KernelTable<CeBackFn> g_ce_back{"cross_entropy backward",
                               {cross_entropy_backward_cpu, MOON_CUDA_KERNEL(cuda::cross_entropy_backward)}};

}  // namespace

Tensor cross_entropy(const Tensor& logits_in, const Tensor& targets, int64_t ignore_index, double label_smoothing) {
  MOON_CHECK(logits_in.defined() && targets.defined(), "cross_entropy: an argument is an undefined tensor");
  check_float_storage("cross_entropy", logits_in, "logits");
  MOON_CHECK(logits_in.dim() == 2, "cross_entropy: logits ", logits_in.desc(),
             " must be (N, C); flatten (B, T, C) logits with .reshape({-1, C})");
  MOON_CHECK(targets.dtype() == DType::I64 && targets.dim() == 1 && targets.size(0) == logits_in.size(0),
             "cross_entropy: targets ", targets.desc(), " must be i64 (N) with N = ", logits_in.size(0),
             " (logits ", logits_in.desc(), ")");
  MOON_CHECK(targets.device() == logits_in.device(), "cross_entropy: logits ", logits_in.desc(), " and targets ",
             targets.desc(), " are on different devices");
  MOON_CHECK(logits_in.size(1) >= 1, "cross_entropy: logits ", logits_in.desc(), " have no classes");
  MOON_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, "cross_entropy: label_smoothing ", label_smoothing,
             " must be in [0, 1]");
  const int64_t N = logits_in.size(0), C = logits_in.size(1);
  // The kernel reads rows with a unit column stride.
  Tensor logits = logits_in;
  if (C > 1 && logits.stride(1) != 1) {
    NoGradGuard ng;
    logits = logits_in.contiguous();
  }
  // Validate targets and count the kept rows (a cheap scalar pass on the CPU; device targets are copied).
  int64_t count = 0;
  {
    const Tensor host = targets.device().is_cpu() ? targets : targets.to(kCPU);
    const int64_t* t = host.data<int64_t>();
    for (int64_t i = 0; i < N; ++i) {
      const int64_t v = t[i * host.stride(0)];
      if (v == ignore_index) continue;
      MOON_CHECK(v >= 0 && v < C, "cross_entropy: targets[", i, "] = ", v, " is outside [0, ", C, ") for logits ",
                 logits_in.desc(), " (and is not ignore_index = ", ignore_index, ")");
      ++count;
    }
  }
  const CeParams p{ignore_index, static_cast<float>(label_smoothing)};
  const bool grad = needs_grad({&logits_in});
  Tensor loss = empty({}, DType::F32, logits.device());
  Tensor probs = grad && count > 0 ? empty({N, C}, DType::F32, logits.device()) : Tensor();  // (N, C) softmax
  g_ce.get(logits.device())(logits, targets, p, loss, probs, count);

  if (grad) {
    // Targets are saved by value-version too: an in-place edit of them before backward is caught.
    SavedTensor st(targets, "cross_entropy");
    const Device dev = logits.device();
    const DType dt = logits.dtype();
    record_op("cross_entropy", {logits_in}, {loss}, [probs, st, p, count, N, C, dev, dt](const std::vector<Tensor>& g) {
      if (count == 0) return std::vector<Tensor>{zeros({N, C}, dt, dev)};
      const float scale = static_cast<float>(g[0].item() / static_cast<double>(count));
      Tensor dx = empty({N, C}, dt, probs.device());  // the logits' dtype
      g_ce_back.get(probs.device())(probs, st.get(), p, scale, dx);
      return std::vector<Tensor>{dx};
    });
  }
  return loss;
}

}  // namespace moon
