// Rotary position embedding (Qwen2 / GPT-NeoX "rotate half" layout): forward, backward, CPU kernel.
// x f32 or bf16: the output and dx take its dtype (rotated in f32, rounded once); the cos/sin tables are f32.
#include <cmath>

#include "ops/attention.h"
#include "ops/cuda/norm_cuda.h"
#include "ops/float_storage.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

// cos/sin tables (B*T, D/2), angles in double so large positions keep full float accuracy.
void rope_tables_cpu(const Tensor& positions, int64_t B, int64_t T, int64_t half, double theta, const Tensor& cos_out,
                     const Tensor& sin_out) {
  const std::vector<int64_t> pos = positions.to_vector<int64_t>();
  const bool per_batch = positions.dim() == 2;
  float* cos_t = cos_out.data<float>();
  float* sin_t = sin_out.data<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const double p = static_cast<double>(pos[per_batch ? b * T + t : t]);
      for (int64_t i = 0; i < half; ++i) {
        const double angle = p * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(2 * half));
        cos_t[(b * T + t) * half + i] = static_cast<float>(std::cos(angle));
        sin_t[(b * T + t) * half + i] = static_cast<float>(std::sin(angle));
      }
    }
}

// y = rotate(x, sign * angle) for every (b, h, t) row of D; sign = -1 is the backward (the inverse rotation).
// FLOPs: 6 per pair; bytes: 8 per element.
void rope_cpu(const Tensor& xt, const Tensor& yt, const Tensor& cos_tt, const Tensor& sin_tt, int64_t B, int64_t H,
              int64_t T, int64_t half, float sign) {
  const Tensor xf = f32_input(xt);
  const F32Output yo(yt);
  const float* x = xf.data<float>();
  float* y = yo.data<float>();
  const float* cos_t = cos_tt.data<float>();
  const float* sin_t = sin_tt.data<float>();
  const int64_t D = 2 * half;
#pragma omp parallel for collapse(2) schedule(static) if (B * H * T * D > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const float* xr = x + ((b * H + h) * T + t) * D;
        float* yr = y + ((b * H + h) * T + t) * D;
        const float* c = cos_t + (b * T + t) * half;
        const float* s = sin_t + (b * T + t) * half;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = xr[i], x2 = xr[i + half], sn = sign * s[i];
          yr[i] = x1 * c[i] - x2 * sn;
          yr[i + half] = x2 * c[i] + x1 * sn;
        }
      }
  yo.commit();
}

// Tables: positions (T) or (B, T) i64/i32 -> cos, sin (B*T, half) f32 on the tables' device (positions are
// handed contiguous on that device to the CUDA kernel, as they are to the CPU one).
using RopeTablesFn = void (*)(const Tensor& positions, int64_t B, int64_t T, int64_t half, double theta,
                              const Tensor& cos_t, const Tensor& sin_t);
// Rotation: x, y contiguous (B, H, T, D), both f32 or both bf16; cos_t, sin_t (B*T, half) f32.
using RopeFn = void (*)(const Tensor& x, const Tensor& y, const Tensor& cos_t, const Tensor& sin_t, int64_t B,
                        int64_t H, int64_t T, int64_t half, float sign);
KernelTable<RopeTablesFn> g_rope_tables{"rope", {rope_tables_cpu, MOON_CUDA_KERNEL(cuda::rope_tables)}};
KernelTable<RopeFn> g_rope{"rope", {rope_cpu, MOON_CUDA_KERNEL(cuda::rope)}};

}  // namespace

Tensor rope(const Tensor& x, const Tensor& positions, double theta) {
  MOON_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "rope: expected x of shape (B, H, T, D) with D even, got ", x.desc());
  check_float_storage("rope", x, "tensor");
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), half = x.size(3) / 2;
  MOON_CHECK(positions.dtype() == DType::I64 || positions.dtype() == DType::I32, "rope: positions must be i64 or i32, got ",
             positions.desc());
  MOON_CHECK((positions.dim() == 1 && positions.size(0) == T) ||
                 (positions.dim() == 2 && positions.size(0) == B && positions.size(1) == T),
             "rope: positions ", positions.desc(), " must be (T) or (B, T) = (", B, ", ", T, ") for x ", x.desc());
  const Device dev = x.device();
  const auto tables = g_rope_tables.get(dev);
  const auto rotate = g_rope.get(dev);
  Tensor cos_t = empty({B * T, half}, DType::F32, dev), sin_t = empty({B * T, half}, DType::F32, dev);
  {
    NoGradGuard ng;
    const Tensor pos = dev.is_cpu() ? positions : positions.to(dev).contiguous();
    tables(pos, B, T, half, theta, cos_t, sin_t);
  }
  Tensor xc = x.contiguous();
  Tensor out = empty(x.shape(), x.dtype(), dev);  // (B, H, T, D)
  rotate(xc, out, cos_t, sin_t, B, H, T, half, 1.0f);
  const DType dt = x.dtype();
  if (needs_grad({&x}))
    record_op("rope", {x, positions}, {out}, [cos_t, sin_t, B, H, T, half, dt](const std::vector<Tensor>& g) {
      Tensor gc = (g[0].dtype() == dt ? g[0] : g[0].to(dt)).contiguous();
      Tensor dx = empty(gc.shape(), dt, gc.device());
      g_rope.get(gc.device())(gc, dx, cos_t, sin_t, B, H, T, half, -1.0f);
      return std::vector<Tensor>{dx, Tensor()};
    });
  return out;
}

}  // namespace moon
