// Registry entries for the indexing and shape-combining ops (ops/index.h), each with a double-precision
// reference that indexes the inputs directly. Integer index inputs are never differentiated.
#include <algorithm>
#include <numeric>

#include "ops/index.h"
#include "ops/registry.h"

namespace moon {

namespace {

std::vector<int64_t> unravel(const Shape& s, int64_t flat) {
  std::vector<int64_t> c(s.size());
  for (int64_t d = static_cast<int64_t>(s.size()) - 1; d >= 0; --d) {
    c[d] = flat % s[d];
    flat /= s[d];
  }
  return c;
}

RefTensor ref_zeros(const Shape& s) { return RefTensor{s, std::vector<double>(static_cast<size_t>(shape_numel(s)), 0.0)}; }

// Reference of concatenation along dim.
RefTensor ref_concat(const std::vector<RefTensor>& ts, int64_t dim) {
  Shape s = ts[0].shape;
  s[dim] = 0;
  for (const RefTensor& t : ts) s[dim] += t.shape[dim];
  RefTensor out = ref_zeros(s);
  int64_t off = 0;
  for (const RefTensor& t : ts) {
    for (int64_t i = 0; i < t.numel(); ++i) {
      std::vector<int64_t> c = unravel(t.shape, i);
      c[dim] += off;
      out.data[ref_offset(s, c)] = t.data[i];
    }
    off += t.shape[dim];
  }
  return out;
}

// Reference of splitting along dim into pieces of the given sizes.
std::vector<RefTensor> ref_split_pieces(const RefTensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  std::vector<RefTensor> outs;
  int64_t off = 0;
  for (int64_t sz : sizes) {
    Shape s = x.shape;
    s[dim] = sz;
    RefTensor o = ref_zeros(s);
    for (int64_t i = 0; i < o.numel(); ++i) {
      std::vector<int64_t> c = unravel(s, i);
      c[dim] += off;
      o.data[i] = x.data[ref_offset(x.shape, c)];
    }
    outs.push_back(o);
    off += sz;
  }
  return outs;
}

// Distinct, well separated values (spacing >= 0.2) in random order: no ties for topk, even under the
// finite-difference steps.
Tensor separated_values(CaseGen& g, const Shape& s) {
  Tensor u = g.uniform(s, 0.0, 1.0);
  std::vector<float> v = u.to_vector<float>();
  std::vector<int64_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return v[a] < v[b]; });
  Tensor noise = g.uniform(s, 0.0, 0.05);
  std::vector<float> nz = noise.to_vector<float>(), out(v.size());
  const double n = static_cast<double>(v.size());
  for (size_t r = 0; r < order.size(); ++r) out[order[r]] = static_cast<float>(0.25 * (r - n / 2) + nz[r]);
  return from_vector(out, s);
}

// Random index values in [0, hi) for gather/scatter_add of index shape `s`.
Tensor index_tensor(CaseGen& g, const Shape& s, int64_t hi) {
  return g.integers(s, 0, hi, g.pick(0, 1) ? DType::I64 : DType::I32);
}

}  // namespace

void register_index_ops(std::vector<OpInfo>& r) {
  r.push_back({"embedding", "index", 2, true, op_devices(), [](CaseGen& g) {
                 // few rows and many ids: repeated ids exercise the backward's accumulation
                 const int64_t V = g.pick(2, 6), C = g.n, T = g.pick(2, 5);
                 OpCase c;
                 c.desc = "weight (V,n), ids (2,T) with repeats";
                 c.inputs = {g.normal({V, C}), g.integers({2, T}, 0, V, g.pick(0, 1) ? DType::I64 : DType::I32)};
                 c.run = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{embedding(in[0], in[1])}; };
                 c.reference = [](const std::vector<RefTensor>& in) {
                   const RefTensor& w = in[0];
                   const int64_t C = w.shape[1];
                   Shape s = in[1].shape;
                   s.push_back(C);
                   RefTensor out = ref_zeros(s);
                   for (int64_t i = 0; i < in[1].numel(); ++i)
                     for (int64_t k = 0; k < C; ++k)
                       out.data[i * C + k] = w.data[static_cast<int64_t>(in[1].data[i]) * C + k];
                   return std::vector<RefTensor>{out};
                 };
                 c.grad_inputs = {0};
                 c.fwd_tol = 0;
                 return c;
               }});
  r.push_back({"index_select", "index", 2, true, op_devices(), [](CaseGen& g) {
                 const int64_t dim = g.pick(0, 2), L = g.pick(1, 5);
                 const Shape s = {3, g.n, 2};
                 OpCase c;
                 c.desc = "(3,n,2) dim=" + std::to_string(dim) + " L=" + std::to_string(L);
                 c.inputs = {g.normal(s), g.integers({L}, 0, s[dim])};
                 c.run = [dim](const std::vector<Tensor>& in) { return std::vector<Tensor>{index_select(in[0], dim, in[1])}; };
                 c.reference = [dim](const std::vector<RefTensor>& in) {
                   Shape os = in[0].shape;
                   os[dim] = in[1].numel();
                   RefTensor out = ref_zeros(os);
                   for (int64_t i = 0; i < out.numel(); ++i) {
                     std::vector<int64_t> cc = unravel(os, i);
                     cc[dim] = static_cast<int64_t>(in[1].data[cc[dim]]);
                     out.data[i] = in[0].data[ref_offset(in[0].shape, cc)];
                   }
                   return std::vector<RefTensor>{out};
                 };
                 c.grad_inputs = {0};
                 c.fwd_tol = 0;
                 return c;
               }});
  r.push_back({"gather", "index", 2, true, op_devices(), [](CaseGen& g) {
                 const int64_t dim = g.pick(0, 2);
                 const Shape xs = {3, g.n, 4};
                 Shape is = {g.pick(1, 3), g.pick(1, g.n), g.pick(1, 4)};
                 is[dim] = g.pick(1, 6);  // may exceed x.size(dim): gathers with repeats
                 OpCase c;
                 c.desc = "x (3,n,4) index " + shape_str(is) + " dim=" + std::to_string(dim);
                 c.inputs = {g.normal(xs), index_tensor(g, is, xs[dim])};
                 c.run = [dim](const std::vector<Tensor>& in) { return std::vector<Tensor>{gather(in[0], dim, in[1])}; };
                 c.reference = [dim](const std::vector<RefTensor>& in) {
                   RefTensor out = ref_zeros(in[1].shape);
                   for (int64_t i = 0; i < out.numel(); ++i) {
                     std::vector<int64_t> cc = unravel(out.shape, i);
                     cc[dim] = static_cast<int64_t>(in[1].data[i]);
                     out.data[i] = in[0].data[ref_offset(in[0].shape, cc)];
                   }
                   return std::vector<RefTensor>{out};
                 };
                 c.grad_inputs = {0};
                 c.fwd_tol = 0;
                 return c;
               }});
  r.push_back({"scatter_add", "index", 3, true, op_devices(), [](CaseGen& g) {
                 const int64_t dim = g.pick(0, 1);
                 const Shape xs = {g.n, 3};
                 Shape is = {g.pick(1, g.n), g.pick(1, 3)};
                 is[dim] = g.pick(1, 6);  // repeated targets accumulate
                 OpCase c;
                 c.desc = "x (n,3) index " + shape_str(is) + " dim=" + std::to_string(dim);
                 c.inputs = {g.normal(xs), index_tensor(g, is, xs[dim]), g.normal(is)};
                 c.run = [dim](const std::vector<Tensor>& in) {
                   return std::vector<Tensor>{scatter_add(in[0], dim, in[1], in[2])};
                 };
                 c.reference = [dim](const std::vector<RefTensor>& in) {
                   RefTensor out = in[0];
                   for (int64_t i = 0; i < in[1].numel(); ++i) {
                     std::vector<int64_t> cc = unravel(in[1].shape, i);
                     cc[dim] = static_cast<int64_t>(in[1].data[i]);
                     out.data[ref_offset(out.shape, cc)] += in[2].data[i];
                   }
                   return std::vector<RefTensor>{out};
                 };
                 c.grad_inputs = {0, 2};
                 c.fwd_tol = 1e-6;
                 return c;
               }});
  r.push_back({"concat", "index", 3, true, op_devices(), [](CaseGen& g) {
                 const int64_t dim = g.pick(0, 2);
                 std::vector<Tensor> ins;
                 for (int i = 0; i < 3; ++i) {
                   Shape s = {2, g.n, 3};
                   s[dim] = g.pick(dim == 1 ? 0 : 1, 3);  // a zero-size piece is allowed
                   ins.push_back(g.normal(s));
                 }
                 OpCase c;
                 c.desc = "3 tensors (2,n,3) dim=" + std::to_string(dim);
                 c.inputs = ins;
                 c.run = [dim](const std::vector<Tensor>& in) { return std::vector<Tensor>{concat(in, dim)}; };
                 c.reference = [dim](const std::vector<RefTensor>& in) { return std::vector<RefTensor>{ref_concat(in, dim)}; };
                 c.grad_inputs = {0, 1, 2};
                 c.fwd_tol = 0;
                 return c;
               }});
  r.push_back({"stack", "index", 2, true, op_devices(), [](CaseGen& g) {
                 const int64_t dim = g.pick(0, 2);
                 OpCase c;
                 c.desc = "2 tensors (n,3) new dim=" + std::to_string(dim);
                 c.inputs = {g.normal({g.n, 3}), g.normal({g.n, 3})};
                 c.run = [dim](const std::vector<Tensor>& in) { return std::vector<Tensor>{stack(in, dim)}; };
                 c.reference = [dim](const std::vector<RefTensor>& in) {
                   std::vector<RefTensor> parts;
                   for (const RefTensor& t : in) {
                     RefTensor u = t;
                     u.shape.insert(u.shape.begin() + dim, 1);
                     parts.push_back(u);
                   }
                   return std::vector<RefTensor>{ref_concat(parts, dim)};
                 };
                 c.grad_inputs = {0, 1};
                 c.fwd_tol = 0;
                 return c;
               }});
  r.push_back({"split", "index", 1, true, op_devices(), [](CaseGen& g) {
                 const int64_t dim = g.pick(0, 1);
                 const Shape s = {g.n + 2, 5};
                 const int64_t a = g.pick(0, s[dim] - 1);
                 const int64_t b = g.pick(0, s[dim] - a);
                 const std::vector<int64_t> sizes = {a, b, s[dim] - a - b};
                 OpCase c;
                 c.desc = "(n+2,5) dim=" + std::to_string(dim) + " sizes " + shape_str(sizes);
                 c.inputs = {g.normal(s)};
                 c.run = [sizes, dim](const std::vector<Tensor>& in) {
                   std::vector<Tensor> outs = split(in[0], sizes, dim);
                   outs.pop_back();  // the last piece unused: its gradient arrives zero-filled
                   return outs;
                 };
                 c.reference = [sizes, dim](const std::vector<RefTensor>& in) {
                   std::vector<RefTensor> outs = ref_split_pieces(in[0], sizes, dim);
                   outs.pop_back();
                   return outs;
                 };
                 c.grad_inputs = {0};
                 c.fwd_tol = 0;
                 return c;
               }});
  r.push_back({"chunk", "index", 1, true, op_devices(), [](CaseGen& g) {
                 const int64_t k = g.pick(1, 3);
                 const Shape s = {2, g.n * k};
                 OpCase c;
                 c.desc = "(2,n*k) into k=" + std::to_string(k) + " along dim 1";
                 c.inputs = {g.normal(s)};
                 c.run = [k](const std::vector<Tensor>& in) { return chunk(in[0], k, 1); };
                 c.reference = [k](const std::vector<RefTensor>& in) {
                   return ref_split_pieces(in[0], std::vector<int64_t>(k, in[0].shape[1] / k), 1);
                 };
                 c.grad_inputs = {0};
                 c.fwd_tol = 0;
                 return c;
               }});
  r.push_back({"topk", "index", 1, true, op_devices(), [](CaseGen& g) {
                 const int64_t dim = g.pick(0, 1);
                 const bool largest = g.pick(0, 1) == 1;
                 const Shape s = {g.n + 1, 4};
                 const int64_t k = g.pick(1, s[dim]);
                 OpCase c;
                 c.desc = "(n+1,4) k=" + std::to_string(k) + " dim=" + std::to_string(dim) +
                          (largest ? " largest" : " smallest");
                 c.inputs = {separated_values(g, s)};
                 c.run = [k, dim, largest](const std::vector<Tensor>& in) {
                   TopKResult t = topk(in[0], k, dim, largest);
                   return std::vector<Tensor>{t.values, t.indices};
                 };
                 c.reference = [k, dim, largest](const std::vector<RefTensor>& in) {
                   const RefTensor& x = in[0];
                   Shape os = x.shape;
                   os[dim] = k;
                   RefTensor vals = ref_zeros(os), idx = ref_zeros(os);
                   const DimSplit sp = ref_split(x.shape, dim);
                   for (int64_t o = 0; o < sp.outer; ++o)
                     for (int64_t i = 0; i < sp.inner; ++i) {
                       std::vector<int64_t> ord(sp.size);
                       std::iota(ord.begin(), ord.end(), 0);
                       auto at = [&](int64_t t) { return x.data[(o * sp.size + t) * sp.inner + i]; };
                       std::stable_sort(ord.begin(), ord.end(),
                                        [&](int64_t a, int64_t b) { return largest ? at(a) > at(b) : at(a) < at(b); });
                       for (int64_t j = 0; j < k; ++j) {
                         vals.data[(o * k + j) * sp.inner + i] = at(ord[j]);
                         idx.data[(o * k + j) * sp.inner + i] = static_cast<double>(ord[j]);
                       }
                     }
                   return std::vector<RefTensor>{vals, idx};
                 };
                 c.grad_inputs = {0};
                 c.fwd_tol = 0;
                 return c;
               }});
}

}  // namespace moon
