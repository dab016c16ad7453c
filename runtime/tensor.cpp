// Tensor metadata, raw construction, data access, autograd accessors and printing.
#include "runtime/tensor.h"

#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>

#include "runtime/autograd.h"
#include "runtime/copy.h"

namespace moon {

int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[wrap_dim(d, dim(), "stride")]; }

bool Tensor::is_contiguous() const {
  const auto& t = checked();
  int64_t expected = 1;
  for (int64_t i = static_cast<int64_t>(t.shape.size()) - 1; i >= 0; --i) {
    if (t.shape[i] == 1) continue;
    if (t.strides[i] != expected) return false;
    expected *= t.shape[i];
  }
  return true;
}

std::string Tensor::desc() const {
  if (!impl_) return "undefined";
  std::string s = std::string(dtype_name(dtype())) + shape_str() + "@" + device().str();
  if (!impl_->name.empty()) s = "'" + impl_->name + "' " + s;
  return s;
}

Tensor& Tensor::set_name(std::string n) {
  checked().name = std::move(n);
  return *this;
}

void* Tensor::raw_data() const {
  const auto& t = checked();
  return static_cast<char*>(t.storage->data) + t.offset * static_cast<int64_t>(dtype_size(t.dtype));
}

template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::F32;
  else if constexpr (std::is_same_v<T, int32_t>) return DType::I32;
  else if constexpr (std::is_same_v<T, int64_t>) return DType::I64;
  else if constexpr (std::is_same_v<T, uint8_t>) return DType::U8;
  else return DType::BF16;  // uint16_t: bf16 bits (f16 is read through to_vector<float>)
}

template <class T>
T* Tensor::data() const {
  MOON_CHECK(device().is_cpu(), "data(): tensor ", desc(), " is not on the CPU; call .to(kCPU) first");
  MOON_CHECK(dtype() == dtype_of<T>() || (std::is_same_v<T, uint16_t> && dtype() == DType::F16),
             "data(): tensor ", desc(), " is not of the requested element type ", dtype_name(dtype_of<T>()));
  return static_cast<T*>(raw_data());
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor host = device().is_cpu() ? *this : to(kCPU);
  if (host.dtype() != dtype_of<T>() || !host.is_contiguous()) {
    NoGradGuard ng;
    Tensor c = empty(host.shape(), dtype_of<T>(), kCPU);
    copy_elements(c, host);
    host = c;
  }
  std::vector<T> out(static_cast<size_t>(host.numel()));
  if (!out.empty()) std::memcpy(out.data(), host.raw_data(), out.size() * sizeof(T));
  return out;
}

#define MOON_INSTANTIATE(T)                      \
  template T* Tensor::data<T>() const;            \
  template std::vector<T> Tensor::to_vector<T>() const;
MOON_INSTANTIATE(float)
MOON_INSTANTIATE(int32_t)
MOON_INSTANTIATE(int64_t)
MOON_INSTANTIATE(uint8_t)
MOON_INSTANTIATE(uint16_t)
#undef MOON_INSTANTIATE

template <>
std::vector<double> Tensor::to_vector<double>() const {
  const auto f = to_vector<float>();
  return std::vector<double>(f.begin(), f.end());
}

double Tensor::item() const {
  MOON_CHECK(numel() == 1, "item(): tensor ", desc(), " has ", numel(), " elements, expected exactly one");
  Tensor host = device().is_cpu() ? *this : to(kCPU);
  return element_as_double(host, 0);
}

Tensor empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) MOON_CHECK(d >= 0, "empty: negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = Storage::allocate(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.dtype(), t.device()); }

Tensor make_view(const Tensor& base, const Shape& shape, const Strides& strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.impl()->storage;
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

// ---- autograd accessors

Tensor& Tensor::set_requires_grad(bool on) {
  auto& t = checked();
  MOON_CHECK(!on || is_floating(t.dtype), "set_requires_grad: tensor ", desc(),
             " has an integer dtype; only floating-point tensors can require gradients");
  MOON_CHECK(t.grad_fn == nullptr, "set_requires_grad: tensor ", desc(),
             " is the result of an op (not a leaf); call detach() first to make a new leaf");
  t.requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return Tensor(checked().grad); }

void Tensor::set_grad(const Tensor& g) {
  MOON_CHECK(!g.defined() || g.shape() == shape(), "set_grad: gradient ", g.desc(), " does not match tensor ", desc());
  checked().grad = g.impl_ptr();
}

void Tensor::zero_grad() { checked().grad.reset(); }

Tensor Tensor::detach() const {
  return make_view(*this, shape(), strides(), offset()).set_name(name());
}

void Tensor::retain_grad() const {
  auto& t = checked();
  MOON_CHECK(t.requires_grad, "retain_grad: tensor ", desc(), " does not require grad");
  if (!t.grad_fn) return;  // leaves always keep their gradient
  t.retains_grad = true;
  t.grad_fn->retained[t.output_nr] = impl_;
}

void Tensor::backward(const Tensor& grad, bool retain_graph) const {
  MOON_CHECK(requires_grad(), "backward: tensor ", desc(),
             " does not require grad (no input of its computation had requires_grad set, or it ran under NoGradGuard)");
  Tensor g = grad;
  if (!g.defined()) {
    MOON_CHECK(numel() == 1, "backward: tensor ", desc(),
               " is not a scalar; pass a gradient of the same shape: t.backward(grad)");
    g = ones(shape(), dtype(), device());
  }
  MOON_CHECK(g.shape() == shape(), "backward: gradient ", g.desc(), " does not match tensor ", desc());
  run_backward({*this}, {g}, retain_graph);
}

// ---- printing

namespace {
void print_rec(std::ostringstream& os, const Tensor& t, int64_t d, int64_t& flat_base, std::vector<int64_t>& idx,
               int64_t edge) {
  const int64_t n = t.size(d);
  os << "[";
  for (int64_t i = 0; i < n; ++i) {
    if (n > 2 * edge && i == edge) {
      os << "..., ";
      i = n - edge - 1;
      continue;
    }
    idx[d] = i;
    if (d + 1 == t.dim()) {
      int64_t lin = 0;
      for (int64_t k = 0; k < t.dim(); ++k) lin = lin * t.size(k) + idx[k];
      const double v = element_as_double(t, lin);
      if (is_floating(t.dtype())) os << std::setprecision(5) << std::defaultfloat << v;
      else os << static_cast<int64_t>(v);
    } else {
      print_rec(os, t, d + 1, flat_base, idx, edge);
    }
    if (i + 1 < n) os << (d + 1 == t.dim() ? ", " : ",\n ");
  }
  os << "]";
}
}  // namespace

std::string Tensor::str(int64_t edge_items) const {
  if (!impl_) return "Tensor(undefined)";
  Tensor host = device().is_cpu() ? *this : to(kCPU);
  std::ostringstream os;
  os << "Tensor(" << dtype_name(dtype()) << shape_str() << "@" << device().str();
  if (requires_grad()) os << ", requires_grad";
  os << ")\n";
  if (dim() == 0) {
    os << element_as_double(host, 0);
  } else if (numel() == 0) {
    os << "[]";
  } else {
    std::vector<int64_t> idx(dim(), 0);
    int64_t base = 0;
    print_rec(os, host, 0, base, idx, edge_items);
  }
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace moon
