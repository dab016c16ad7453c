// ParamStore: the model's parameters by name (Hugging Face names, docs/model.md), with seeded order-free
// initialisation, and the dtype that matrix products run in.
//
//   ParamStore ps(seed);
//   Tensor w = ps.normal("model.layers.0.mlp.up_proj.weight", {I, C}, 0.02);
//   ps.save_moon / ps.load: see model/checkpoint.h
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ops/elementwise.h"
#include "runtime/tensor.h"

namespace moon::model {

// 64-bit FNV-1a of a name: the per-parameter Philox key is seed ^ fnv1a64(name).
uint64_t fnv1a64(const std::string& s);

class ParamStore {
 public:
  explicit ParamStore(uint64_t seed = 0) : seed_(seed) {}

  // Registers a new f32 leaf parameter (requires_grad, named) and initialises it. A name may be added once.
  Tensor normal(const std::string& name, const Shape& shape, double stddev);
  Tensor constant(const std::string& name, const Shape& shape, double value);  // zeros, ones, ...

  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const Tensor& get(const std::string& name) const;  // throws naming the parameter if absent
  // In registration order.
  const std::vector<std::pair<std::string, Tensor>>& all() const { return params_; }
  int64_t count() const;  // total number of scalars
  uint64_t seed() const { return seed_; }

  // Copies `value` (any dtype, converted to f32) into the parameter; the shapes must match exactly, else an
  // error naming the parameter, both shapes and `origin` (the file it came from).
  void assign(const std::string& name, const Tensor& value, const std::string& origin);
  void zero_grad();

 private:
  Tensor add(const std::string& name, Tensor value);
  uint64_t seed_;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::map<std::string, size_t> index_;
};

// The dtype matrix products run in: F32, or BF16 (operands rounded to bf16, f32 accumulation and result).
struct Compute {
  DType dtype = DType::F32;
  // Inference only (moon embed, moon eval): GELUs run in their GEMM's epilogue. Off by default, so a forward
  // without autograd (gradient caching's first pass) computes bit for bit what the same forward with
  // autograd computes.
  bool fuse_epilogues = false;
};

// linear(x, w, b) in the compute dtype: x (..., in), w (out, in), b (out) or undefined -> (..., out) f32.
Tensor dense(const Tensor& x, const Tensor& w, const Tensor& b, const Compute& compute);
// gelu(dense(x, w, b)): with compute.fuse_epilogues and no autograd the GELU runs in the GEMM's epilogue (one
// pass fewer over the (..., out) activations, see linear_gelu); otherwise exactly dense() then gelu().
Tensor dense_gelu(const Tensor& x, const Tensor& w, const Tensor& b, GeluApprox approx, const Compute& compute);

}  // namespace moon::model
