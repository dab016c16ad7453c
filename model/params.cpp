// ParamStore and the compute-dtype linear.
#include "model/params.h"

#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "runtime/autograd.h"
#include "runtime/error.h"
#include "runtime/rng.h"

namespace moon::model {

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

Tensor ParamStore::add(const std::string& name, Tensor value) {
  MOON_CHECK(!contains(name), "ParamStore: parameter ", name, " is registered twice");
  value.set_name(name);
  value.set_requires_grad(true);
  index_[name] = params_.size();
  params_.emplace_back(name, value);
  return value;
}

Tensor ParamStore::normal(const std::string& name, const Shape& shape, double stddev) {
  Generator gen(seed_ ^ fnv1a64(name));
  Tensor t = randn(shape, gen);
  if (stddev != 1.0) {
    NoGradGuard no_grad;
    mul_(t, stddev);
  }
  return add(name, t);
}

Tensor ParamStore::constant(const std::string& name, const Shape& shape, double value) {
  return add(name, full(shape, value));
}

const Tensor& ParamStore::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail("model: no parameter named ", name);
  return params_[it->second].second;
}

int64_t ParamStore::count() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p.second.numel();
  return n;
}

void ParamStore::assign(const std::string& name, const Tensor& value, const std::string& origin) {
  auto it = index_.find(name);
  if (it == index_.end()) fail(origin, ": tensor ", name, " is not a parameter of this model");
  Tensor& p = params_[it->second].second;
  if (value.shape() != p.shape())
    fail(origin, ": tensor ", name, " has shape ", value.shape_str(), " but the model (config) expects ",
         p.shape_str(), "; check that the config matches the checkpoint");
  NoGradGuard no_grad;
  p.copy_(value);
}

void ParamStore::zero_grad() {
  for (auto& p : params_) p.second.zero_grad();
}

Tensor dense(const Tensor& x, const Tensor& w, const Tensor& b, const Compute& compute) {
  // bf16 compute: bf16 GEMM operands, f32 accumulation and an f32 result; the rest of the model keeps f32
  // activations.
  if (compute.dtype == DType::BF16) return linear(x.to(DType::BF16), w.to(DType::BF16), b, DType::F32);
  return linear(x, w, b);
}

Tensor dense_gelu(const Tensor& x, const Tensor& w, const Tensor& b, GeluApprox approx, const Compute& compute) {
  if (!compute.fuse_epilogues || needs_grad({&x, &w, &b})) return gelu(dense(x, w, b, compute), approx);
  if (compute.dtype == DType::BF16) return linear_gelu(x.to(DType::BF16), w.to(DType::BF16), b, approx, DType::F32);
  return linear_gelu(x, w, b, approx);
}

}  // namespace moon::model
