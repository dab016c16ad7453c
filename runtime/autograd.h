// Define-by-run autograd: every differentiable op that sees an input requiring grad records a Node holding
// what its backward needs. backward() walks the nodes in reverse topological order and accumulates into
// the leaves' .grad.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace moon {

// Where the gradient of one forward input flows: input number `input_nr` of node `fn`.
struct Edge {
  std::shared_ptr<Node> fn;
  int input_nr = 0;
};

struct OutputMeta {  // enough to build a zero gradient for an output that received none
  Shape shape;
  DType dtype = DType::F32;
  Device device;
};

struct Node {
  virtual ~Node() = default;
  // Gradients with respect to each forward input (undefined where the input needs none), given the
  // gradients of each forward output (zero-filled where an output received none).
  virtual std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs) = 0;
  virtual void release() {}  // free saved tensors once the graph is consumed

  std::string name;                 // the op's name, used in error messages
  std::vector<Edge> next;           // one per forward input
  std::vector<OutputMeta> outputs;  // one per forward output
  std::vector<std::weak_ptr<TensorImpl>> retained;  // per output: a non-leaf that asked for retain_grad()
  bool released = false;
};

// A tensor kept for backward. It remembers its version, so an in-place write between forward and backward
// is caught, with the name of the op that saved it.
class SavedTensor {
 public:
  SavedTensor() = default;
  SavedTensor(const Tensor& t, const char* op);
  const Tensor& get() const;  // throws moon::Error if the tensor was modified in place since it was saved
  bool defined() const { return tensor_.defined(); }
  void reset() { tensor_ = Tensor(); }

 private:
  Tensor tensor_;  // a history-free alias of the saved tensor (no reference cycle through grad_fn)
  uint64_t version_ = 0;
  const char* op_ = "";
};

// The usual node: backward is a function; saved tensors live in its captures and are freed by release().
struct FunctionNode final : Node {
  std::function<std::vector<Tensor>(const std::vector<Tensor>&)> backward;
  std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs) override;
  void release() override { backward = nullptr; }
};

// ---- grad mode
bool grad_enabled();
void set_grad_enabled(bool on);
class NoGradGuard {  // turns recording off for its scope (inference, rollouts, optimizer steps)
 public:
  NoGradGuard() : prev_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// True if grad mode is on and any of the inputs requires grad: then the op must record a node.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Records a FunctionNode for an op: links it to the inputs' history and marks the outputs as its results.
// `backward` maps output gradients to input gradients (one per input; undefined for those that need none).
void record_op(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
               std::function<std::vector<Tensor>(const std::vector<Tensor>&)> backward);

// Runs backward from `roots` with the given gradients (autograd engine).
void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph);

// Refuses an in-place write into a leaf that requires grad while grad mode is on (it would be lost).
void check_inplace_allowed(const Tensor& t, const char* op);

}  // namespace moon
