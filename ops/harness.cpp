#include "ops/harness.h"

#include <cmath>
#include <sstream>

#include "runtime/allocator.h"
#include "runtime/autograd.h"
#include "runtime/copy.h"

namespace moon {

namespace {

// Element error scaled by the reference magnitude; infinities must match exactly.
double scaled_error(double ours, double ref) {
  if (std::isnan(ref)) return std::isnan(ours) ? 0.0 : INFINITY;
  if (std::isinf(ref)) return ours == ref ? 0.0 : INFINITY;
  if (!std::isfinite(ours)) return INFINITY;
  return std::fabs(ours - ref) / (1.0 + std::fabs(ref));
}

struct Poison {
  Poison() { set_poison_allocations(true); }
  ~Poison() { set_poison_allocations(false); }
};

// Compares ours to a reference; returns the worst scaled error, and describes the first bad element.
double compare(const Tensor& ours, const RefTensor& ref, double tol, const std::string& what, std::string& msg) {
  if (ours.shape() != ref.shape) {
    if (msg.empty()) msg = what + ": shape " + ours.shape_str() + " but reference " + shape_str(ref.shape);
    return INFINITY;
  }
  const std::vector<double> v = ours.to_vector<double>();
  double worst = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    const double e = is_floating(ours.dtype()) ? scaled_error(v[i], ref.data[i]) : (v[i] == ref.data[i] ? 0 : INFINITY);
    if (e > tol && msg.empty()) {
      std::ostringstream os;
      os << what << "[" << i << "] = " << v[i] << ", reference " << ref.data[i];
      msg = os.str();
    }
    worst = std::max(worst, e);
  }
  return worst;
}

// sum_k <ref_k(inputs), proj_k> over floating outputs, in double.
double projected_reference(const OpCase& c, const std::vector<RefTensor>& inputs, const std::vector<RefTensor>& proj) {
  const std::vector<RefTensor> outs = c.reference(inputs);
  double total = 0;
  for (size_t k = 0; k < outs.size(); ++k) {
    if (proj[k].data.empty()) continue;
    for (size_t i = 0; i < outs[k].data.size(); ++i) total += outs[k].data[i] * proj[k].data[i];
  }
  return total;
}

void check_gradients(const OpCase& c, CaseGen& cg, const HarnessOptions& opt, OpCheckResult& res) {
  std::vector<Tensor> inputs;
  for (const Tensor& t : c.inputs) inputs.push_back(t.clone());
  for (int i : c.grad_inputs) inputs[i].set_requires_grad(true);
  std::vector<Tensor> outs = c.run(inputs);

  // Random projection R_k of each floating output: backward(R) gives d<out, R>/d input.
  std::vector<Tensor> roots, projections;
  std::vector<RefTensor> proj_ref(outs.size());
  for (size_t k = 0; k < outs.size(); ++k) {
    if (!is_floating(outs[k].dtype()) || !outs[k].requires_grad()) continue;
    Tensor r = cg.normal(outs[k].shape());
    roots.push_back(outs[k]);
    projections.push_back(r);
    proj_ref[k] = to_ref(r);
  }
  if (roots.empty()) {
    res.ok = false;
    res.message = "no output requires grad, although inputs do";
    return;
  }
  run_backward(roots, projections, false);
  res.grad_checked = true;

  std::vector<RefTensor> ref_inputs;
  for (const Tensor& t : c.inputs) ref_inputs.push_back(to_ref(t));
  for (int i : c.grad_inputs) {
    Tensor g = inputs[i].grad();
    if (!g.defined()) {
      // No gradient arrived: correct only if the true gradient is zero everywhere we probe.
      g = zeros(inputs[i].shape());
    }
    const std::vector<double> analytic = g.to_vector<double>();
    for (double a : analytic)
      if (!std::isfinite(a)) {
        res.ok = false;
        if (res.message.empty()) res.message = "gradient of input " + std::to_string(i) + " has a non-finite element";
        res.grad_err = INFINITY;
        break;
      }
    const int64_t numel = ref_inputs[i].numel();
    const int64_t probes = std::min<int64_t>(numel, opt.max_fd_elements);
    for (int64_t p = 0; p < probes; ++p) {
      const int64_t j = probes == numel ? p : cg.pick(0, numel - 1);
      std::vector<RefTensor> plus = ref_inputs, minus = ref_inputs;
      plus[i].data[j] += c.fd_step;
      minus[i].data[j] -= c.fd_step;
      const double numeric =
          (projected_reference(c, plus, proj_ref) - projected_reference(c, minus, proj_ref)) / (2 * c.fd_step);
      const double e = scaled_error(analytic[j], numeric);
      res.grad_err = std::max(res.grad_err, e);
      if (e > c.grad_tol) {
        res.ok = false;
        if (res.message.empty()) {
          std::ostringstream os;
          os << "d/d input" << i << "[" << j << "] = " << analytic[j] << ", finite difference " << numeric;
          res.message = os.str();
        }
      }
    }
  }
}

}  // namespace

Tensor make_noncontiguous(const Tensor& t) {
  if (t.dim() == 0 || t.numel() == 0) return t;
  Shape padded = t.shape();
  padded.back() += 1;
  Tensor big = empty(padded, t.dtype());
  fill_elements(big, 7.0);
  Tensor view = make_view(big, t.shape(), big.strides(), 0);
  copy_elements(view, t);
  return view;
}

OpCheckResult check_op(const OpInfo& op, int64_t n, uint64_t seed, const HarnessOptions& opt) {
  OpCheckResult res;
  res.op = op.name;
  res.n = n;
  Generator gen(seed);
  CaseGen cg{gen, n};
  try {
    OpCase c = op.make_case(cg);
    res.desc = c.desc;
    std::vector<RefTensor> ref_inputs;
    for (const Tensor& t : c.inputs) ref_inputs.push_back(to_ref(t));
    const std::vector<RefTensor> ref = c.reference(ref_inputs);

    std::vector<Tensor> outs;
    {
      Poison poison;
      NoGradGuard ng;
      outs = c.run(c.inputs);
    }
    if (outs.size() != ref.size()) {
      res.ok = false;
      res.message = "op returned " + std::to_string(outs.size()) + " outputs, reference " + std::to_string(ref.size());
      return res;
    }
    for (size_t k = 0; k < outs.size(); ++k)
      res.fwd_err = std::max(res.fwd_err, compare(outs[k], ref[k], c.fwd_tol, "output" + std::to_string(k), res.message));
    if (res.fwd_err > c.fwd_tol) res.ok = false;

    if (opt.noncontiguous && c.noncontiguous_ok) {
      std::vector<Tensor> strided;
      for (const Tensor& t : c.inputs) strided.push_back(make_noncontiguous(t));
      std::vector<Tensor> outs2;
      {
        Poison poison;
        NoGradGuard ng;
        outs2 = c.run(strided);
      }
      for (size_t k = 0; k < outs2.size(); ++k)
        res.strided_err = std::max(res.strided_err, compare(outs2[k], to_ref(outs[k]), c.fwd_tol,
                                                            "strided-input output" + std::to_string(k), res.message));
      if (res.strided_err > c.fwd_tol) res.ok = false;
    }

    if (opt.gradients && op.has_backward && !c.grad_inputs.empty()) check_gradients(c, cg, opt, res);
  } catch (const std::exception& e) {
    res.ok = false;
    res.message = std::string("threw: ") + e.what();
  }
  return res;
}

}  // namespace moon
