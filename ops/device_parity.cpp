#include "ops/device_parity.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "runtime/allocator.h"
#include "runtime/autograd.h"

namespace moon {

namespace {

// Poisoned, guarded device memory for the scope of one op call.
struct CheckedMemory {
  CheckedMemory() {
    set_poison_allocations(true);
    set_device_guards(true);
    take_guard_report();
  }
  ~CheckedMemory() {
    set_poison_allocations(false);
    set_device_guards(false);
  }
};

// The case's inputs in the run's dtype: floating inputs converted to bf16 for a bf16 run.
std::vector<Tensor> inputs_in(const OpCase& c, DType dtype) {
  std::vector<Tensor> out;
  for (const Tensor& t : c.inputs) out.push_back(dtype != DType::F32 && is_floating(t.dtype()) ? t.to(dtype) : t);
  return out;
}

// Runs the case on `device` with gradient inputs marked; returns outputs (moved to the CPU) and input grads.
struct Run {
  std::vector<Tensor> outs;   // CPU copies
  std::vector<Tensor> grads;  // per grad_inputs entry, CPU copies (undefined when no gradient arrived)
};
Run run_case(const OpCase& c, const std::vector<Tensor>& cpu_inputs, Device device, bool gradients, uint64_t seed,
             std::string& guard_report) {
  std::vector<Tensor> inputs;
  for (const Tensor& t : cpu_inputs) inputs.push_back(device.is_cpu() ? t.clone() : t.to(device));
  const bool grad = gradients && !c.grad_inputs.empty();
  for (int i : c.grad_inputs)
    if (grad && is_floating(inputs[i].dtype())) inputs[i].set_requires_grad(true);
  Run r;
  std::vector<Tensor> outs;
  {
    CheckedMemory checked;
    outs = c.run(inputs);
    for (const Tensor& o : outs) r.outs.push_back(o.to(kCPU));
    if (grad) {
      std::vector<Tensor> roots, projections;
      Generator g(seed ^ 0x5eedu);
      for (const Tensor& o : outs) {
        if (!is_floating(o.dtype()) || !o.requires_grad()) continue;
        roots.push_back(o);
        projections.push_back(randn(o.shape(), g, o.dtype(), o.device()));
      }
      if (!roots.empty()) run_backward(roots, projections, false);
      for (int i : c.grad_inputs) {
        const Tensor gi = inputs[i].requires_grad() ? inputs[i].grad() : Tensor();
        r.grads.push_back(gi.defined() ? gi.to(kCPU) : Tensor());
      }
    }
    outs.clear();
    inputs.clear();
  }
  guard_report = take_guard_report();
  return r;
}

}  // namespace

double normalised_mse(const Tensor& ours, const Tensor& ref, std::string* where_out) {
  std::string unused;
  std::string& where = where_out ? *where_out : unused;
  if (ours.shape() != ref.shape() || ours.dtype() != ref.dtype()) {
    where = "shape/dtype " + ours.desc() + " but the CPU gives " + ref.desc();
    return INFINITY;
  }
  const std::vector<double> a = ours.to_vector<double>(), b = ref.to_vector<double>();
  if (!is_floating(ref.dtype())) {
    for (size_t i = 0; i < a.size(); ++i)
      if (a[i] != b[i]) {
        std::ostringstream os;
        os << "[" << i << "] = " << a[i] << ", CPU " << b[i];
        where = os.str();
        return INFINITY;
      }
    return 0;
  }
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(b[i]) != std::isnan(a[i]) || (std::isinf(b[i]) && a[i] != b[i])) {
      std::ostringstream os;
      os << "[" << i << "] = " << a[i] << ", CPU " << b[i];
      where = os.str();
      return INFINITY;
    }
    if (!std::isfinite(b[i])) continue;
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  if (!std::isfinite(num)) {
    where = "non-finite difference";
    return INFINITY;
  }
  return num / std::max(den, 1e-30);
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  const Tensor x = a.to(kCPU).contiguous(), y = b.to(kCPU).contiguous();
  if (x.shape() != y.shape() || x.dtype() != y.dtype()) return false;
  return std::memcmp(x.raw_data(), y.raw_data(), static_cast<size_t>(x.numel()) * dtype_size(x.dtype())) == 0;
}

ParityResult check_op_parity(const OpInfo& op, int64_t n, uint64_t seed, Device device, const ParityOptions& opt) {
  ParityResult res;
  res.op = op.name;
  res.n = n;
  res.dtype = opt.dtype;
  const double tol = opt.dtype == DType::F32 ? opt.f32_tol : opt.bf16_tol;
  Generator gen(seed);
  CaseGen cg{gen, n};
  try {
    const OpCase c = op.make_case(cg);
    res.desc = c.desc;
    const std::vector<Tensor> inputs = inputs_in(c, opt.dtype);
    const bool grads = opt.gradients && op.has_backward;
    std::string unused, guard;
    Run ref;
    try {
      ref = run_case(c, inputs, kCPU, grads, seed, unused);
    } catch (const std::exception& e) {
      if (opt.dtype == DType::F32) throw;
      res.skipped = true;  // the CPU refuses this dtype too: nothing to compare
      res.message = std::string("the CPU op does not take ") + dtype_name(opt.dtype) + ": " + e.what();
      return res;
    }
    const Run ours = run_case(c, inputs, device, grads, seed, guard);
    if (!guard.empty()) {
      res.ok = false;
      res.message = guard;
    }
    if (ours.outs.size() != ref.outs.size()) {
      res.ok = false;
      res.message = "the device run returned " + std::to_string(ours.outs.size()) + " outputs, the CPU " +
                    std::to_string(ref.outs.size());
      return res;
    }
    for (size_t k = 0; k < ref.outs.size(); ++k) {
      std::string where;
      const double e = normalised_mse(ours.outs[k], ref.outs[k], &where);
      res.fwd_nmse = std::max(res.fwd_nmse, e);
      if (!(e <= tol) && res.message.empty())
        res.message = "output" + std::to_string(k) + " nmse " + std::to_string(e) + (where.empty() ? "" : " " + where);
    }
    for (size_t k = 0; k < ref.grads.size(); ++k) {
      const Tensor& a = ours.grads[k];
      const Tensor& b = ref.grads[k];
      if (!a.defined() && !b.defined()) continue;
      std::string where;
      const Tensor az = a.defined() ? a : zeros(b.shape(), b.dtype());
      const Tensor bz = b.defined() ? b : zeros(a.shape(), a.dtype());
      const double e = normalised_mse(az, bz, &where);
      res.grad_nmse = std::max(res.grad_nmse, e);
      if (!(e <= tol) && res.message.empty())
        res.message = "gradient of input" + std::to_string(c.grad_inputs[k]) + " nmse " + std::to_string(e) +
                      (where.empty() ? "" : " " + where);
    }
    if (!(res.fwd_nmse <= tol) || !(res.grad_nmse <= tol)) res.ok = false;
  } catch (const std::exception& e) {
    res.ok = false;
    res.message = std::string("threw: ") + e.what();
  }
  return res;
}

ParityResult check_bf16_consistency(const OpInfo& op, int64_t n, uint64_t seed, double tol) {
  ParityResult res;
  res.op = op.name;
  res.n = n;
  res.dtype = DType::BF16;
  Generator gen(seed);
  CaseGen cg{gen, n};
  try {
    const OpCase c = op.make_case(cg);
    res.desc = c.desc;
    const std::vector<Tensor> bf16_inputs = inputs_in(c, DType::BF16);
    std::vector<Tensor> rounded;  // the same values, held in f32
    for (const Tensor& t : bf16_inputs) rounded.push_back(t.dtype() == DType::BF16 ? t.to(DType::F32) : t);
    const bool grads = op.has_backward;
    std::string unused;
    const Run ref = run_case(c, rounded, kCPU, grads, seed, unused);
    const Run ours = run_case(c, bf16_inputs, kCPU, grads, seed, unused);
    auto widened = [](const Tensor& t) { return t.defined() && t.dtype() == DType::BF16 ? t.to(DType::F32) : t; };
    auto compare = [&](const Tensor& a, const Tensor& b, const Tensor& input, const std::string& what, double& worst) {
      if (a.defined() && input.defined() && is_floating(input.dtype()) && a.dtype() != input.dtype() &&
          res.message.empty())
        res.message = what + " is " + a.desc() + " but its input is " + input.desc();
      std::string where;
      const double e = normalised_mse(widened(a), b, &where);
      worst = std::max(worst, e);
      if (!(e <= tol) && res.message.empty())
        res.message = what + " nmse " + std::to_string(e) + (where.empty() ? "" : " " + where);
    };
    if (ours.outs.size() != ref.outs.size()) throw Error("the bf16 run returned a different number of outputs");
    for (size_t k = 0; k < ref.outs.size(); ++k) {
      const bool floating_out = is_floating(ref.outs[k].dtype());
      const bool bf16_in = std::any_of(bf16_inputs.begin(), bf16_inputs.end(),
                                       [](const Tensor& t) { return t.dtype() == DType::BF16; });
      if (floating_out && bf16_in && ours.outs[k].dtype() == DType::F32 && !op.f32_outputs && res.message.empty())
        res.message = "output" + std::to_string(k) + " is f32 for bf16 inputs (expected bf16)";
      compare(ours.outs[k], ref.outs[k], Tensor(), "output" + std::to_string(k), res.fwd_nmse);
    }
    for (size_t k = 0; k < ref.grads.size(); ++k) {
      if (!ours.grads[k].defined() && !ref.grads[k].defined()) continue;
      if (!ours.grads[k].defined() || !ref.grads[k].defined()) {
        if (res.message.empty()) res.message = "gradient of input" + std::to_string(c.grad_inputs[k]) + " missing";
        continue;
      }
      compare(ours.grads[k], ref.grads[k], bf16_inputs[c.grad_inputs[k]],
              "gradient of input" + std::to_string(c.grad_inputs[k]), res.grad_nmse);
    }
    if (!res.message.empty()) res.ok = false;
  } catch (const std::exception& e) {
    res.ok = false;
    res.message = std::string("threw: ") + e.what();
  }
  return res;
}

bool op_backward_is_deterministic(const OpInfo& op, int64_t n, uint64_t seed, Device device, std::string* why) {
  Generator gen(seed);
  CaseGen cg{gen, n};
  const OpCase c = op.make_case(cg);
  std::string g1, g2;
  const Run a = run_case(c, c.inputs, device, op.has_backward, seed, g1);
  const Run b = run_case(c, c.inputs, device, op.has_backward, seed, g2);
  for (size_t k = 0; k < a.outs.size(); ++k)
    if (!bitwise_equal(a.outs[k], b.outs[k])) {
      if (why) *why = "output" + std::to_string(k) + " differs between two runs";
      return false;
    }
  for (size_t k = 0; k < a.grads.size(); ++k)
    if (!bitwise_equal(a.grads[k], b.grads[k])) {
      if (why) *why = "gradient of input" + std::to_string(c.grad_inputs[k]) + " differs between two runs";
      return false;
    }
  return true;
}

}  // namespace moon
