// dropout with a Philox mask (reproducible from the generator's (seed, offset); the backward regenerates the
// same mask instead of storing it).
#include "ops/cuda/elementwise_cuda.h"
#include "ops/float_storage.h"
#include "ops/norm.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

float dropout_uniform(uint64_t seed, uint64_t offset, int64_t i) {
  const auto r = philox4x32(offset + static_cast<uint64_t>(i) / 4, seed);
  return u32_to_unit_float(r[static_cast<size_t>(i % 4)]);
}

namespace {

// out[i] = in[i] * scale where dropout_uniform(seed, offset, i) >= p, else 0 (in, out contiguous, same numel).
// bf16: the same mask, the product taken in f32 on the widened input and rounded once into out.
void dropout_cpu(const Tensor& in_t, const Tensor& out_t, uint64_t seed, uint64_t offset, float p, float scale) {
  const Tensor in = f32_input(in_t);
  const F32Output outo(out_t);
  const float* x = in.data<float>();
  float* y = outo.data<float>();
  const int64_t n = out_t.numel(), groups = (n + 3) / 4;
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t gi = 0; gi < groups; ++gi) {  // one Philox call gives the uniforms of 4 consecutive elements
    const auto r = philox4x32(offset + static_cast<uint64_t>(gi), seed);
    const int64_t base = gi * 4;
    for (int64_t l = 0; l < 4 && base + l < n; ++l)
      y[base + l] = u32_to_unit_float(r[static_cast<size_t>(l)]) >= p ? x[base + l] * scale : 0.0f;
  }
  outo.commit();
}

using DropoutFn = void (*)(const Tensor&, const Tensor&, uint64_t, uint64_t, float, float);
KernelTable<DropoutFn> g_dropout{"dropout", {dropout_cpu, MOON_CUDA_KERNEL(cuda::dropout_forward)}};

// Applies the mask of (seed, offset) to t, into a fresh tensor of t's dtype.
Tensor apply_mask(const Tensor& t, uint64_t seed, uint64_t offset, float p, float scale) {
  Tensor out = empty(t.shape(), t.dtype(), t.device());
  NoGradGuard ng;
  g_dropout.get(t.device())(t.contiguous(), out, seed, offset, p, scale);
  return out;
}

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  check_float_storage("dropout", x, "tensor");
  MOON_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability p = ", p, " must be in [0, 1] (input ", x.desc(), ")");
  if (!training || p == 0.0) return x;  // identity; draws nothing from gen
  const uint64_t seed = gen.seed(), offset = gen.reserve(static_cast<uint64_t>(x.numel()));
  const float pf = static_cast<float>(p), scale = p < 1.0 ? static_cast<float>(1.0 / (1.0 - p)) : 0.0f;
  Tensor out = apply_mask(x, seed, offset, pf, scale);
  if (needs_grad({&x}))
    record_op("dropout", {x}, {out}, [seed, offset, pf, scale](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{apply_mask(g[0], seed, offset, pf, scale)};  // the same mask and scale, x's dtype
    });
  return out;
}

Tensor dropout(const Tensor& x, double p, bool training) { return dropout(x, p, training, default_generator()); }

}  // namespace moon
