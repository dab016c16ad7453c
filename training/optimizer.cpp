// AdamW, warm-up + cosine schedule, gradient clipping.
#include "training/optimizer.h"

#include <cmath>

#include "ops/elementwise.h"
#include "runtime/autograd.h"
#include "runtime/error.h"

namespace moon::training {

bool decays(const Tensor& param) { return param.dim() >= 2; }

AdamW::AdamW(NamedParams params, AdamWOptions options) : params_(std::move(params)), options_(options) {
  for (const auto& [name, p] : params_) {
    MOON_CHECK(p.dtype() == DType::F32 && p.device().is_cpu() && p.is_contiguous(), "AdamW: parameter ", name,
               " must be a contiguous f32 CPU tensor, got ", p.desc());
    m_.push_back(zeros(p.shape()));
    v_.push_back(zeros(p.shape()));
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
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i].second;
    Tensor g = p.grad();
    if (!g.defined()) continue;
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
