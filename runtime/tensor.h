// Tensor: a handle to shared storage with shape, strides, offset, dtype and device, plus autograd state.
//
// Copying a Tensor copies the handle (like a shared_ptr); views share storage. Methods that compute are
// differentiable ops, defined in ops/; the data-movement basics are in runtime/.
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/error.h"
#include "runtime/shape.h"
#include "runtime/storage.h"

namespace moon {

struct Node;
class Generator;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Strides strides;     // in elements
  int64_t offset = 0;  // in elements, into storage
  DType dtype = DType::F32;

  // autograd
  bool requires_grad = false;
  bool retains_grad = false;        // a non-leaf that keeps its .grad (retain_grad())
  std::shared_ptr<TensorImpl> grad;  // accumulated gradient, same shape
  std::shared_ptr<Node> grad_fn;    // the op that produced this tensor (non-leaf), or null
  int output_nr = 0;                // which output of grad_fn this is
  std::weak_ptr<Node> grad_accumulator;  // for leaves: the node that accumulates into .grad
  std::string name;                 // optional, shown in error messages (parameter names)
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

  // ---- metadata
  const Shape& shape() const { return checked().shape; }
  int64_t dim() const { return static_cast<int64_t>(checked().shape.size()); }
  int64_t size(int64_t d) const;
  int64_t numel() const { return shape_numel(checked().shape); }
  const Strides& strides() const { return checked().strides; }
  int64_t stride(int64_t d) const;
  int64_t offset() const { return checked().offset; }
  DType dtype() const { return checked().dtype; }
  Device device() const { return checked().storage->device; }
  bool is_contiguous() const;
  std::string shape_str() const { return moon::shape_str(shape()); }
  std::string desc() const;  // "f32(2, 3)@cpu", used in error messages
  const std::string& name() const { return checked().name; }
  Tensor& set_name(std::string n);

  // ---- data access (CPU tensors)
  void* raw_data() const;  // first element (storage + offset)
  template <class T>
  T* data() const;                           // checks dtype and device
  template <class T>
  std::vector<T> to_vector() const;          // contiguous host copy, converted to T
  double item() const;                       // the single element, as double

  // ---- views: share storage, differentiable
  Tensor view(const Shape& shape) const;     // throws if the strides do not allow it
  Tensor reshape(const Shape& shape) const;  // a view when possible, else a contiguous copy; one -1 allowed
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor mT() const { return transpose(-2, -1); }
  Tensor slice(int64_t dim, int64_t start, int64_t end) const;  // [start, end), negative wraps
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const { return slice(dim, start, start + length); }
  Tensor select(int64_t dim, int64_t index) const;  // removes the dimension
  Tensor expand(const Shape& shape) const;           // -1 keeps a size; new leading dims allowed
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;

  // ---- copies: differentiable
  Tensor contiguous() const;  // itself if already contiguous
  Tensor clone() const;
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  Tensor to(Device device, DType dtype) const;

  // ---- in-place writes: bump the version counter; refused on leaves that require grad (unless no-grad)
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  Tensor& copy_(const Tensor& src);  // broadcasts src to this shape, converts dtype, crosses devices

  // ---- autograd
  bool requires_grad() const { return checked().requires_grad; }
  Tensor& set_requires_grad(bool on = true);
  Tensor grad() const;
  void set_grad(const Tensor& g);
  void zero_grad();  // drops .grad
  // Backpropagates from this tensor. A non-scalar needs `grad` of its shape. The graph is freed after,
  // unless retain_graph.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;
  Tensor detach() const;     // shares storage, no history
  void retain_grad() const;  // a non-leaf keeps .grad after backward
  bool is_leaf() const { return checked().grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return checked().grad_fn; }
  uint64_t version() const { return checked().storage->version.load(); }
  void bump_version() const { checked().storage->version.fetch_add(1); }

  std::string str(int64_t edge_items = 4) const;  // printing, PyTorch-like

 private:
  TensorImpl& checked() const {
    MOON_CHECK(impl_, "tensor: use of an undefined (empty) Tensor");
    return *impl_;
  }
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- raw constructors (runtime/tensor.cpp)
Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = kCPU);
Tensor empty_like(const Tensor& t);
// A new tensor header on existing storage (no copy, no autograd).
Tensor make_view(const Tensor& base, const Shape& shape, const Strides& strides, int64_t offset);

// ---- factories (ops/factory.cpp)
Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = kCPU);
Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = kCPU);
Tensor full(const Shape& shape, double value, DType dtype = DType::F32, Device device = kCPU);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor arange(double start, double end, double step = 1.0, DType dtype = DType::F32, Device device = kCPU);
Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::F32, Device device = kCPU);
Tensor randn(const Shape& shape, DType dtype = DType::F32, Device device = kCPU);  // default generator
Tensor rand(const Shape& shape, Generator& gen, double lo = 0.0, double hi = 1.0, DType dtype = DType::F32,
            Device device = kCPU);
Tensor randint(const Shape& shape, Generator& gen, int64_t lo, int64_t hi, DType dtype = DType::I64,
               Device device = kCPU);  // uniform integers in [lo, hi)
// A tensor holding a copy of host values (T: float, double, int32_t, int64_t, uint8_t, uint16_t as bf16 bits)
template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, DType dtype, Device device = kCPU);
Tensor from_vector(const std::vector<float>& values, const Shape& shape, Device device = kCPU);
Tensor scalar_tensor(double value, DType dtype = DType::F32, Device device = kCPU);

}  // namespace moon
