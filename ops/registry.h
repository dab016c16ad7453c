// The op registry: every op with its name, family, arity, devices, whether it has a backward, and a
// generator of valid random invocations with a double-precision reference. The test harness
// (ops/harness.h), `moon ops` and `moon selftest` walk it, so a registered op is tested for free.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace moon {

// A dense row-major array of doubles: the currency of reference implementations.
struct RefTensor {
  Shape shape;
  std::vector<double> data;
  int64_t numel() const { return static_cast<int64_t>(data.size()); }
};

// One random, valid invocation of an op, with its reference.
struct OpCase {
  std::string desc;                        // parameters, e.g. "dim=1 keepdim"
  std::vector<Tensor> inputs;              // CPU tensors; floating inputs may be differentiated
  std::function<std::vector<Tensor>(const std::vector<Tensor>&)> run;                  // calls the op
  std::function<std::vector<RefTensor>(const std::vector<RefTensor>&)> reference;      // same, in double
  std::vector<int> grad_inputs;            // inputs whose gradients are checked (empty: none)
  double fwd_tol = 2e-5;                   // |ours - ref| <= tol * (1 + |ref|), per element
  double grad_tol = 2e-3;                  // same, for gradients against central differences
  double fd_step = 1e-5;                   // finite-difference step (in double, on the reference)
  bool noncontiguous_ok = true;            // the harness may feed strided views of the inputs
};

// What a case generator gets: a seeded generator and a size to use for the "free" dimensions.
struct CaseGen {
  Generator& gen;
  int64_t n;  // one of 1, 3, 17, 127 (ops pick smaller sizes for expensive dimensions)

  Tensor normal(const Shape& shape, double stddev = 1.0);
  Tensor uniform(const Shape& shape, double lo, double hi);
  // Uniform with |x| >= gap: keeps inputs away from kinks (relu, abs, clamp) for finite differences.
  Tensor away_from_zero(const Shape& shape, double gap = 0.1, double hi = 2.0);
  Tensor integers(const Shape& shape, int64_t lo, int64_t hi, DType dtype = DType::I64);
  Tensor mask(const Shape& shape, double p_keep);  // u8 0/1
  int64_t pick(int64_t lo, int64_t hi);             // uniform integer in [lo, hi]
  int64_t small() { return std::min<int64_t>(n, 17); }  // n capped for quadratic ops
};

struct OpInfo {
  std::string name;
  std::string family;
  int arity = 1;
  bool has_backward = true;
  std::vector<DeviceType> devices = {DeviceType::CPU};
  std::function<OpCase(CaseGen&)> make_case;
  bool f32_outputs = false;  // floating outputs stay f32 for bf16 inputs (losses); else they take the input dtype
};

// The devices every op runs on: the CPU, and CUDA in a build with the CUDA backend (the `cuda` test suite
// checks each op there against the CPU).
std::vector<DeviceType> op_devices();

// An entry with a backward, on op_devices().
OpInfo op_entry(std::string name, std::string family, int arity, std::function<OpCase(CaseGen&)> make_case);

const std::vector<OpInfo>& op_registry();
const OpInfo* find_op(const std::string& name);  // nullptr if unknown

// Each op family registers its ops here (called once, in this order, by op_registry()).
void register_view_ops(std::vector<OpInfo>& r);
void register_elementwise_ops(std::vector<OpInfo>& r);
void register_reduce_ops(std::vector<OpInfo>& r);
void register_norm_ops(std::vector<OpInfo>& r);
void register_index_ops(std::vector<OpInfo>& r);
void register_matmul_ops(std::vector<OpInfo>& r);
void register_attention_ops(std::vector<OpInfo>& r);
void register_loss_ops(std::vector<OpInfo>& r);

// ---- reference helpers (double precision, row-major)
RefTensor to_ref(const Tensor& t);
Tensor from_ref(const RefTensor& r, DType dtype = DType::F32);
int64_t ref_offset(const Shape& shape, const std::vector<int64_t>& index);
// out = f(a, b) with numpy broadcasting.
RefTensor ref_binary(const RefTensor& a, const RefTensor& b, const std::function<double(double, double)>& f);
RefTensor ref_unary(const RefTensor& a, const std::function<double(double)>& f);
// Calls f(outer, inner) for a reduction over `dim`: the tensor viewed as (outer, size(dim), inner).
struct DimSplit {
  int64_t outer, size, inner;
};
DimSplit ref_split(const Shape& shape, int64_t dim);

}  // namespace moon
