// AdamW, warm-up + cosine schedule, gradient clipping.
#include "training/optimizer.h"

#include <algorithm>
#include <cmath>

#include "ops/cuda/adamw_cuda.h"
#include "ops/elementwise.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"
#include "runtime/error.h"

namespace moon::training {

bool decays(const Tensor& param) { return param.dim() >= 2; }

namespace {

// The device-side update: one multi-tensor launch per device and step (the CPU loop is in AdamW::step).
using AdamWDeviceFn = void (*)(const std::vector<cuda::AdamWTensor>&, const cuda::AdamWScalars&, Device);
KernelTable<AdamWDeviceFn> g_adamw_device{"AdamW step", {nullptr, MOON_CUDA_KERNEL(cuda::adamw_step)}};

}  // namespace

AdamW::AdamW(NamedParams params, AdamWOptions options) : params_(std::move(params)), options_(options) {
  for (const auto& [name, p] : params_) {
    MOON_CHECK(p.dtype() == DType::F32 && p.is_contiguous(), "AdamW: parameter ", name,
               " must be a contiguous f32 tensor, got ", p.desc());
    m_.push_back(zeros(p.shape(), DType::F32, p.device()));
    v_.push_back(zeros(p.shape(), DType::F32, p.device()));
  }
}

void AdamW::step(double lr) {
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double correction1 = 1.0 - std::pow(b1, static_cast<double>(steps_));
  const double correction2 = 1.0 - std::pow(b2, static_cast<double>(steps_));
  const float step_size = static_cast<float>(lr / correction1);
  const float inv_sqrt_c2 = static_cast<float>(1.0 / std::sqrt(correction2));
  const float eps = static_cast<float>(options_.eps);
  const float fb1 = static_cast<float>(b1), fb2 = static_cast<float>(b2);
  // Parameters on a GPU: gathered per device for one multi-tensor launch (same formula, bitwise).
  std::vector<std::pair<Device, std::vector<cuda::AdamWTensor>>> on_device;
  std::vector<Tensor> keep_alive;  // contiguous copies of strided device gradients, until the launch
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i].second;
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (!p.device().is_cpu()) {
      MOON_CHECK(g.dtype() == DType::F32 && g.device() == p.device(), "AdamW: gradient of ", params_[i].first, " is ",
                 g.desc(), ", expected f32 on ", p.device().str());
      if (!g.is_contiguous()) {
        NoGradGuard ng;
        g = g.contiguous();
        keep_alive.push_back(g);
      }
      cuda::AdamWTensor t;
      t.param = static_cast<float*>(p.raw_data());
      t.grad = static_cast<const float*>(g.raw_data());
      t.m = static_cast<float*>(m_[i].raw_data());
      t.v = static_cast<float*>(v_[i].raw_data());
      t.numel = p.numel();
      t.keep = decays(p) ? static_cast<float>(1.0 - lr * options_.weight_decay) : 1.0f;
      auto slot =
          std::find_if(on_device.begin(), on_device.end(), [&](const auto& e) { return e.first == p.device(); });
      if (slot == on_device.end()) slot = on_device.insert(on_device.end(), {p.device(), {}});
      slot->second.push_back(t);
      p.bump_version();
      continue;
    }
    g = g.contiguous();
    MOON_CHECK(g.dtype() == DType::F32, "AdamW: gradient of ", params_[i].first, " is ", g.desc(), ", expected f32");
    const float keep = decays(p) ? static_cast<float>(1.0 - lr * options_.weight_decay) : 1.0f;
    float* pw = static_cast<float*>(p.raw_data());
    const float* gw = g.data<float>();
    float* mw = m_[i].data<float>();
    float* vw = v_[i].data<float>();
    const int64_t n = p.numel();
    // one fused pass per parameter: decay, moments, update
#pragma omp parallel for schedule(static) if (n > (1 << 15))
    for (int64_t j = 0; j < n; ++j) {
      const float gj = gw[j];
      const float mj = fb1 * mw[j] + (1.0f - fb1) * gj;
      const float vj = fb2 * vw[j] + (1.0f - fb2) * gj * gj;
      mw[j] = mj, vw[j] = vj;
      pw[j] = pw[j] * keep - step_size * mj / (std::sqrt(vj) * inv_sqrt_c2 + eps);
    }
    p.bump_version();
  }
  if (!on_device.empty()) {
    const cuda::AdamWScalars s{step_size, inv_sqrt_c2, eps, fb1, 1.0f - fb1, fb2, 1.0f - fb2};
    for (const auto& [device, tensors] : on_device) g_adamw_device.get(device)(tensors, s, device);
  }
}

NamedParams AdamW::state() const {
  NamedParams out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("adamw.m." + params_[i].first, m_[i]);
    out.emplace_back("adamw.v." + params_[i].first, v_[i]);
  }
  return out;
}

void AdamW::load_state(const NamedParams& tensors, int64_t steps, const std::string& origin) {
  auto find = [&](const std::string& name, const Tensor& like) -> const Tensor& {
    for (const auto& [n, t] : tensors)
      if (n == name) {
        if (t.shape() != like.shape())
          fail(origin, ": optimizer state ", name, " has shape ", t.shape_str(), ", the parameter has ", like.shape_str());
        return t;
      }
    fail(origin, ": optimizer state ", name, " is missing");
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& m = find("adamw.m." + params_[i].first, m_[i]);
    const Tensor& v = find("adamw.v." + params_[i].first, v_[i]);
    m_[i].copy_(m), v_[i].copy_(v);
  }
  MOON_CHECK(steps >= 0, origin, ": optimizer step count ", steps, " is negative");
  steps_ = steps;
}

double warmup_cosine(int64_t step, int64_t warmup, int64_t total, double peak, double floor) {
  if (warmup > 0 && step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (step >= total || total <= warmup) return floor;
  const double progress = static_cast<double>(step - warmup) / static_cast<double>(total - warmup);
  return floor + 0.5 * (peak - floor) * (1.0 + std::cos(M_PI * progress));
}

double clip_grad_norm(const NamedParams& params, double max_norm) {
  double sum = 0.0;
  for (const auto& [name, p] : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    for (float x : g.to_vector<float>()) sum += static_cast<double>(x) * x;
  }
  const double norm = std::sqrt(sum);
  if (!std::isfinite(norm) || norm <= max_norm) return norm;
  const double factor = max_norm / (norm + 1e-6);
  NoGradGuard no_grad;
  for (const auto& [name, p] : params) {
    Tensor g = p.grad();
    if (g.defined()) mul_(g, factor);
  }
  return norm;
}

}  // namespace moon::training
