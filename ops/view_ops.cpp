// Differentiable views (view, reshape, permute, transpose, slice, select, expand, squeeze, unsqueeze) and
// copies (contiguous, clone, to, copy_, fill_). Views share storage; their backward maps the gradient back.
#include <numeric>
#include <optional>

#include "ops/reduce.h"
#include "runtime/autograd.h"
#include "runtime/copy.h"

namespace moon {

namespace {

// Strides that let `shape` view the memory of (old_shape, old_strides) without a copy, if any exist:
// dimensions are grouped into runs that are contiguous with each other, and each run must map onto
// whole new dimensions.
std::optional<Strides> view_strides(const Shape& old_shape, const Strides& old_strides, const Shape& shape) {
  if (shape_numel(shape) == 0 || old_shape.empty()) return contiguous_strides(shape);
  Strides out(shape.size(), 1);
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t run_stride = old_strides.back();  // stride of the innermost element of the current run
  int64_t run_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(old_shape.size()) - 1; d >= 0; --d) {
    run_numel *= old_shape[d];
    const bool run_ends = d == 0 || (old_shape[d - 1] != 1 && old_strides[d - 1] != run_numel * run_stride);
    if (!run_ends) continue;
    while (view_d >= 0 && (view_numel < run_numel || shape[view_d] == 1)) {
      out[view_d] = view_numel * run_stride;
      view_numel *= shape[view_d];
      --view_d;
    }
    if (view_numel != run_numel) return std::nullopt;
    if (d > 0) {
      run_stride = old_strides[d - 1];
      run_numel = view_numel = 1;
    }
  }
  if (view_d != -1) return std::nullopt;
  return out;
}

// Replaces one -1 in `shape` by the size that keeps numel.
Shape infer_shape(const Shape& shape, int64_t numel, const char* op, const Tensor& a) {
  Shape out = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      MOON_CHECK(infer < 0, op, ": only one dimension can be -1, got ", moon::shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      MOON_CHECK(out[i] >= 0, op, ": invalid size ", out[i], " in shape ", moon::shape_str(shape));
      known *= out[i];
    }
  }
  if (infer >= 0) {
    MOON_CHECK(known != 0 && numel % known == 0, op, ": cannot infer -1 in ", moon::shape_str(shape), " for ", a.desc());
    out[infer] = numel / known;
  }
  MOON_CHECK(shape_numel(out) == numel, op, ": shape ", moon::shape_str(shape), " has ", shape_numel(out),
             " elements but tensor ", a.desc(), " has ", numel);
  return out;
}

void record_reshape_like(const char* name, const Tensor& in, const Tensor& out) {
  if (!needs_grad({&in})) return;
  const Shape in_shape = in.shape();
  record_op(name, {in}, {out}, [in_shape](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{g[0].reshape(in_shape)};
  });
}

}  // namespace

Tensor Tensor::view(const Shape& shape_req) const {
  const Shape s = infer_shape(shape_req, numel(), "view", *this);
  auto st = view_strides(shape(), strides(), s);
  MOON_CHECK(st, "view: tensor ", desc(), " with strides ", moon::shape_str(strides()), " cannot be viewed as ",
             moon::shape_str(s), " without a copy; use reshape() (which copies) or call contiguous() first");
  Tensor out = make_view(*this, s, *st, offset());
  record_reshape_like("view", *this, out);
  return out;
}

Tensor Tensor::reshape(const Shape& shape_req) const {
  const Shape s = infer_shape(shape_req, numel(), "reshape", *this);
  if (auto st = view_strides(shape(), strides(), s)) {
    Tensor out = make_view(*this, s, *st, offset());
    record_reshape_like("reshape", *this, out);
    return out;
  }
  return contiguous().view(s);
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  const int64_t s = wrap_dim(start_dim, dim(), "flatten"), e = wrap_dim(end_dim, dim(), "flatten");
  MOON_CHECK(s <= e, "flatten: start_dim ", start_dim, " is after end_dim ", end_dim, " for ", desc());
  Shape out(shape().begin(), shape().begin() + s);
  int64_t merged = 1;
  for (int64_t d = s; d <= e; ++d) merged *= size(d);
  out.push_back(merged);
  out.insert(out.end(), shape().begin() + e + 1, shape().end());
  return reshape(out);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  MOON_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: ", dims.size(), " dimensions given for ", desc());
  Shape s(dims.size());
  Strides st(dims.size());
  std::vector<int64_t> inverse(dims.size(), -1);
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = wrap_dim(dims[i], dim(), "permute");
    MOON_CHECK(inverse[d] < 0, "permute: dimension ", dims[i], " repeated in the permutation of ", desc());
    inverse[d] = static_cast<int64_t>(i);
    s[i] = size(d);
    st[i] = stride(d);
  }
  Tensor out = make_view(*this, s, st, offset());
  if (needs_grad({this}))
    record_op("permute", {*this}, {out}, [inverse](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{g[0].permute(inverse)};
    });
  return out;
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  std::vector<int64_t> p(dim());
  std::iota(p.begin(), p.end(), 0);
  std::swap(p[wrap_dim(d0, dim(), "transpose")], p[wrap_dim(d1, dim(), "transpose")]);
  return permute(p);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end) const {
  d = wrap_dim(d, dim(), "slice");
  const int64_t n = size(d);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape s = shape();
  s[d] = end - start;
  Tensor out = make_view(*this, s, strides(), offset() + start * stride(d));
  if (needs_grad({this})) {
    const Shape in_shape = shape();
    const DType dt = dtype();
    record_op("slice", {*this}, {out}, [in_shape, dt, d, start, end](const std::vector<Tensor>& g) {
      Tensor full_grad = zeros(in_shape, dt, g[0].device());
      copy_elements(full_grad.slice(d, start, end), g[0]);
      return std::vector<Tensor>{full_grad};
    });
  }
  return out;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  const int64_t n = size(d);
  MOON_CHECK(index >= -n && index < n, "select: index ", index, " is out of range for dimension ", d, " of ", desc());
  if (index < 0) index += n;
  return slice(d, index, index + 1).squeeze(d);
}

Tensor Tensor::expand(const Shape& shape_req) const {
  MOON_CHECK(shape_req.size() >= shape().size(), "expand: target ", moon::shape_str(shape_req), " has fewer dimensions than ",
             desc());
  const size_t lead = shape_req.size() - shape().size();
  Shape s(shape_req.size());
  Strides st(shape_req.size(), 0);
  for (size_t i = 0; i < shape_req.size(); ++i) {
    if (i < lead) {
      MOON_CHECK(shape_req[i] >= 0, "expand: new leading dimension cannot be -1 in ", moon::shape_str(shape_req));
      s[i] = shape_req[i];
      continue;
    }
    const int64_t have = shape()[i - lead];
    const int64_t want = shape_req[i] == -1 ? have : shape_req[i];
    MOON_CHECK(have == want || have == 1, "expand: cannot expand ", desc(), " to ", moon::shape_str(shape_req),
               " (dimension ", i, ": ", have, " -> ", want, "; only size-1 dimensions expand)");
    s[i] = want;
    st[i] = have == want ? strides()[i - lead] : 0;
  }
  Tensor out = make_view(*this, s, st, offset());
  if (needs_grad({this})) {
    const Shape in_shape = shape();
    record_op("expand", {*this}, {out}, [in_shape](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{sum_to(g[0], in_shape)};
    });
  }
  return out;
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  if (size(d) != 1) return *this;
  Shape s = shape();
  Strides st = strides();
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  Tensor out = make_view(*this, s, st, offset());
  record_reshape_like("squeeze", *this, out);
  return out;
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape s = shape();
  Strides st = strides();
  const int64_t inner = d < dim() ? strides()[d] * shape()[d] : 1;
  s.insert(s.begin() + d, 1);
  st.insert(st.begin() + d, inner);
  Tensor out = make_view(*this, s, st, offset());
  record_reshape_like("unsqueeze", *this, out);
  return out;
}

// ---- copies

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  copy_elements(out, *this);
  if (needs_grad({this}))
    record_op("clone", {*this}, {out}, [](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0]}; });
  return out;
}

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::to(Device dev, DType dt) const {
  if (dev == device() && dt == dtype()) return *this;
  Tensor out = empty(shape(), dt, dev);
  copy_elements(out, *this);
  if (needs_grad({this}) && is_floating(dt)) {
    const Device src_dev = device();
    const DType src_dt = dtype();
    record_op("to", {*this}, {out}, [src_dev, src_dt](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{g[0].to(src_dev, src_dt)};
    });
  }
  return out;
}

Tensor Tensor::to(Device dev) const { return to(dev, dtype()); }
Tensor Tensor::to(DType dt) const { return to(device(), dt); }

Tensor& Tensor::fill_(double value) {
  check_inplace_allowed(*this, "fill_");
  fill_elements(*this, value);
  bump_version();
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace_allowed(*this, "copy_");
  copy_elements(*this, src.shape() == shape() ? src : src.detach().expand(shape()));
  bump_version();
  return *this;
}

}  // namespace moon
