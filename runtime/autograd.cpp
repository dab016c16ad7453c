// The autograd engine: node recording, saved-tensor version checks, and the reverse topological walk.
#include "runtime/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "ops/elementwise.h"

namespace moon {

namespace {

thread_local bool t_grad_enabled = true;

// Accumulates the gradient of a leaf into its .grad.
struct AccumulateGrad final : Node {
  std::weak_ptr<TensorImpl> leaf;

  std::vector<Tensor> apply(const std::vector<Tensor>& grads) override {
    auto impl = leaf.lock();
    if (!impl || !grads[0].defined()) return {};
    Tensor g = grads[0];
    Tensor target(impl);
    MOON_CHECK(g.shape() == target.shape(), "autograd: gradient ", g.desc(), " for leaf ", target.desc(),
               " has the wrong shape");
    if (g.dtype() != target.dtype()) g = g.to(target.dtype());
    if (!impl->grad) {
      // Take the buffer when nobody else holds it; otherwise keep a private copy.
      const bool exclusive = g.impl_ptr().use_count() <= 2 && g.impl()->storage.use_count() == 1 && g.is_contiguous();
      impl->grad = exclusive ? g.impl_ptr() : g.clone().impl_ptr();
    } else {
      impl->grad = add(Tensor(impl->grad), g).impl_ptr();
    }
    return {};
  }
};

Edge edge_for(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  TensorImpl* impl = t.impl();
  if (impl->grad_fn) return {impl->grad_fn, impl->output_nr};
  auto acc = impl->grad_accumulator.lock();
  if (!acc) {
    auto node = std::make_shared<AccumulateGrad>();
    node->name = "accumulate_grad";
    node->leaf = t.impl_ptr();
    node->outputs.push_back({t.shape(), t.dtype(), t.device()});
    node->retained.resize(1);
    impl->grad_accumulator = node;
    acc = node;
  }
  return {acc, 0};
}

Tensor sum_grads(const Tensor& a, const Tensor& b) { return a.defined() ? add(a, b) : b; }

}  // namespace

bool grad_enabled() { return t_grad_enabled; }
void set_grad_enabled(bool on) { t_grad_enabled = on; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

SavedTensor::SavedTensor(const Tensor& t, const char* op) : op_(op) {
  if (!t.defined()) return;
  tensor_ = t.detach();
  version_ = t.version();
}

const Tensor& SavedTensor::get() const {
  if (tensor_.defined() && tensor_.version() != version_)
    fail("autograd: tensor ", tensor_.desc(), " saved by '", op_, "' for backward was modified by an in-place op",
         " (version ", version_, " -> ", tensor_.version(), "); use an out-of-place op or clone() it before writing");
  return tensor_;
}

std::vector<Tensor> FunctionNode::apply(const std::vector<Tensor>& grad_outputs) {
  MOON_CHECK(backward, "autograd: backward through '", name,
             "' a second time, but its saved tensors were already freed; pass retain_graph=true to the first backward()");
  return backward(grad_outputs);
}

void record_op(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
               std::function<std::vector<Tensor>(const std::vector<Tensor>&)> backward) {
  auto node = std::make_shared<FunctionNode>();
  node->name = name;
  node->backward = std::move(backward);
  node->next.reserve(inputs.size());
  for (const Tensor& in : inputs) node->next.push_back(edge_for(in));
  node->retained.resize(outputs.size());
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& out = outputs[i];
    node->outputs.push_back({out.shape(), out.dtype(), out.device()});
    if (!is_floating(out.dtype())) continue;  // indices etc. carry no gradient
    TensorImpl* impl = out.impl();
    impl->requires_grad = true;
    impl->grad_fn = node;
    impl->output_nr = static_cast<int>(i);
  }
}

void check_inplace_allowed(const Tensor& t, const char* op) {
  if (!grad_enabled() || !t.requires_grad()) return;
  if (t.is_leaf())
    fail(op, ": in-place write into leaf ", t.desc(),
         " that requires grad; do it under NoGradGuard (as an optimizer does) or write into a clone()");
  fail(op, ": in-place write into ", t.desc(), ", which is part of an autograd graph (made by '",
       t.grad_fn()->name, "'); use the out-of-place op instead");
}

void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph) {
  // 1. Collect the graph reachable from the roots and count, for each node, the edges that feed it.
  std::unordered_map<Node*, int> pending;
  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  std::vector<std::shared_ptr<Node>> stack, ready;
  std::unordered_set<Node*> seen;
  for (size_t r = 0; r < roots.size(); ++r) {
    Edge e = edge_for(roots[r]);
    MOON_CHECK(e.fn, "backward: tensor ", roots[r].desc(), " does not require grad");
    auto& buf = buffers[e.fn.get()];
    buf.resize(e.fn->outputs.size());
    buf[e.input_nr] = sum_grads(buf[e.input_nr], grads[r]);
    if (seen.insert(e.fn.get()).second) stack.push_back(e.fn);
  }
  std::vector<std::shared_ptr<Node>> roots_nodes = stack;
  while (!stack.empty()) {
    auto node = std::move(stack.back());
    stack.pop_back();
    for (const Edge& e : node->next) {
      if (!e.fn) continue;
      ++pending[e.fn.get()];
      if (seen.insert(e.fn.get()).second) stack.push_back(e.fn);
    }
  }
  for (auto& n : roots_nodes)
    if (pending[n.get()] == 0) ready.push_back(n);

  // 2. Run nodes once all their gradient contributions have arrived.
  NoGradGuard no_grad;
  while (!ready.empty()) {
    auto node = std::move(ready.back());
    ready.pop_back();
    std::vector<Tensor> grad_out = std::move(buffers[node.get()]);
    buffers.erase(node.get());
    grad_out.resize(node->outputs.size());
    for (size_t k = 0; k < grad_out.size(); ++k) {
      const OutputMeta& m = node->outputs[k];
      if (!grad_out[k].defined() && is_floating(m.dtype)) grad_out[k] = zeros(m.shape, m.dtype, m.device);
      if (auto kept = node->retained[k].lock())
        kept->grad = kept->grad ? add(Tensor(kept->grad), grad_out[k]).impl_ptr() : grad_out[k].clone().impl_ptr();
    }
    std::vector<Tensor> grad_in = node->apply(grad_out);
    grad_out.clear();
    if (!retain_graph) {
      node->release();
      node->released = true;
    }
    MOON_CHECK(grad_in.size() == node->next.size() || node->next.empty(), "autograd: backward of '", node->name,
               "' returned ", grad_in.size(), " gradients for ", node->next.size(), " inputs");
    for (size_t i = 0; i < node->next.size(); ++i) {
      const Edge& e = node->next[i];
      if (!e.fn) continue;
      if (grad_in[i].defined()) {
        const OutputMeta& want = e.fn->outputs[e.input_nr];
        MOON_CHECK(grad_in[i].shape() == want.shape, "autograd: backward of '", node->name, "' returned a gradient ",
                   grad_in[i].desc(), " for input ", i, ", whose shape is ", shape_str(want.shape));
        auto& buf = buffers[e.fn.get()];
        buf.resize(e.fn->outputs.size());
        buf[e.input_nr] = sum_grads(buf[e.input_nr], grad_in[i]);
      }
      if (--pending[e.fn.get()] == 0) ready.push_back(e.fn);
    }
  }
}

}  // namespace moon
