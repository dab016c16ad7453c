// Registry entries for the reductions: sum, mean, max (over a dim and over all), argmax, cumsum.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "ops/reduce.h"
#include "ops/registry.h"

namespace moon {

namespace {

// Reduces `in` over the sorted dims with `combine` (starting from the first element met), keepdim or not.
RefTensor ref_reduce(const RefTensor& in, const std::vector<int64_t>& dims, bool keepdim,
                     const std::function<double(double, double)>& combine) {
  const int64_t nd = static_cast<int64_t>(in.shape.size());
  Shape kept = in.shape;
  for (int64_t d : dims) kept[d] = 1;
  RefTensor out{kept, std::vector<double>(static_cast<size_t>(shape_numel(kept)), NAN)};
  std::vector<int64_t> idx(nd);
  for (int64_t i = 0; i < in.numel(); ++i) {
    int64_t rem = i;
    for (int64_t d = nd - 1; d >= 0; --d) idx[d] = rem % in.shape[d], rem /= in.shape[d];
    for (int64_t d : dims) idx[d] = 0;
    double& o = out.data[ref_offset(kept, idx)];
    o = std::isnan(o) ? in.data[i] : combine(o, in.data[i]);
  }
  if (!keepdim) {
    Shape s;
    for (int64_t d = 0; d < nd; ++d)
      if (!std::binary_search(dims.begin(), dims.end(), d)) s.push_back(kept[d]);
    out.shape = s;
  }
  return out;
}

// A (3, n, 4) input and a choice of dims covering innermost, outermost, middle, non-adjacent and all.
struct DimsChoice {
  std::vector<int64_t> dims;
  std::string desc;
};
DimsChoice pick_dims(CaseGen& g) {
  switch (g.pick(0, 5)) {
    case 0: return {{2}, "dims=[-1]"};
    case 1: return {{0}, "dims=[0]"};
    case 2: return {{1}, "dims=[1]"};
    case 3: return {{1, 2}, "dims=[1,2]"};
    case 4: return {{0, 2}, "dims=[0,2]"};
    default: return {{0, 1, 2}, "dims=all"};
  }
}

OpInfo sum_like(const char* name, bool is_mean) {
  OpInfo info;
  info.name = name;
  info.family = "reduce";
  info.make_case = [is_mean](CaseGen& g) {
    OpCase c;
    const DimsChoice dc = pick_dims(g);
    const bool keepdim = g.pick(0, 1) == 1;
    const std::vector<int64_t> dims = dc.dims;
    c.desc = "(3,n,4) " + dc.desc + (keepdim ? " keepdim" : "");
    c.inputs = {g.normal({3, g.n, 4})};
    // Negative dims on the op side exercise wrapping.
    std::vector<int64_t> op_dims = dims;
    if (op_dims.size() == 1) op_dims[0] -= 3;
    c.run = [op_dims, keepdim, is_mean](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{is_mean ? mean(in[0], op_dims, keepdim) : sum(in[0], op_dims, keepdim)};
    };
    c.reference = [dims, keepdim, is_mean](const std::vector<RefTensor>& in) {
      RefTensor r = ref_reduce(in[0], dims, keepdim, [](double a, double b) { return a + b; });
      if (is_mean) {
        int64_t count = 1;
        for (int64_t d : dims) count *= in[0].shape[d];
        for (double& x : r.data) x /= static_cast<double>(count);
      }
      return std::vector<RefTensor>{r};
    };
    c.grad_inputs = {0};
    return c;
  };
  return info;
}

// A (3, n, 4) tensor of distinct values (a scaled random permutation), so the maximum is never tied and
// finite differences do not move it.
Tensor distinct_values(CaseGen& g, const Shape& shape) {
  const int64_t n = shape_numel(shape);
  const std::vector<float> keys = g.normal({n}).to_vector<float>();
  std::vector<int64_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  std::sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return keys[a] < keys[b]; });
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[perm[i]] = 0.05f * static_cast<float>(i - n / 2);
  return from_vector(v, shape);
}

// Reference max along `dim` with first-max indices (as doubles).
std::vector<RefTensor> ref_max_dim(const RefTensor& in, int64_t dim, bool keepdim) {
  const DimSplit s = ref_split(in.shape, dim);
  Shape kept = in.shape;
  kept[dim] = 1;
  if (!keepdim) kept.erase(kept.begin() + dim);
  RefTensor vals{kept, std::vector<double>(static_cast<size_t>(s.outer * s.inner))};
  RefTensor idx = vals;
  for (int64_t o = 0; o < s.outer; ++o)
    for (int64_t j = 0; j < s.inner; ++j) {
      int64_t best = 0;
      for (int64_t k = 1; k < s.size; ++k)
        if (in.data[(o * s.size + k) * s.inner + j] > in.data[(o * s.size + best) * s.inner + j]) best = k;
      vals.data[o * s.inner + j] = in.data[(o * s.size + best) * s.inner + j];
      idx.data[o * s.inner + j] = static_cast<double>(best);
    }
  return {vals, idx};
}

}  // namespace

void register_reduce_ops(std::vector<OpInfo>& r) {
  r.push_back(sum_like("sum", false));
  r.push_back(sum_like("mean", true));

  r.push_back({"max_dim", "reduce", 1, true, op_devices(), [](CaseGen& g) {
                 OpCase c;
                 const int64_t dim = g.pick(0, 2);
                 const bool keepdim = g.pick(0, 1) == 1;
                 c.desc = "(3,n,4) dim=" + std::to_string(dim) + (keepdim ? " keepdim" : "");
                 c.inputs = {distinct_values(g, {3, g.n, 4})};
                 c.run = [dim, keepdim](const std::vector<Tensor>& in) {
                   MaxResult m = max(in[0], dim, keepdim);
                   return std::vector<Tensor>{m.values, m.indices};
                 };
                 c.reference = [dim, keepdim](const std::vector<RefTensor>& in) { return ref_max_dim(in[0], dim, keepdim); };
                 c.grad_inputs = {0};
                 return c;
               }});
  r.push_back({"max_all", "reduce", 1, true, op_devices(), [](CaseGen& g) {
                 OpCase c;
                 c.desc = "(3,n,4) all";
                 c.inputs = {distinct_values(g, {3, g.n, 4})};
                 c.run = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{max(in[0])}; };
                 c.reference = [](const std::vector<RefTensor>& in) {
                   return std::vector<RefTensor>{
                       RefTensor{{}, {*std::max_element(in[0].data.begin(), in[0].data.end())}}};
                 };
                 c.grad_inputs = {0};
                 return c;
               }});
  r.push_back({"argmax", "reduce", 1, false, op_devices(), [](CaseGen& g) {
                 OpCase c;
                 const int64_t dim = g.pick(0, 2);
                 const bool keepdim = g.pick(0, 1) == 1;
                 c.desc = "(3,n,4) dim=" + std::to_string(dim - 3) + (keepdim ? " keepdim" : "");
                 c.inputs = {distinct_values(g, {3, g.n, 4})};
                 c.run = [dim, keepdim](const std::vector<Tensor>& in) {
                   return std::vector<Tensor>{argmax(in[0], dim - 3, keepdim)};
                 };
                 c.reference = [dim, keepdim](const std::vector<RefTensor>& in) {
                   return std::vector<RefTensor>{ref_max_dim(in[0], dim, keepdim)[1]};
                 };
                 return c;
               }});
  r.push_back({"cumsum", "reduce", 1, true, op_devices(), [](CaseGen& g) {
                 OpCase c;
                 const int64_t dim = g.pick(0, 2);
                 c.desc = "(3,n,4) dim=" + std::to_string(dim);
                 c.inputs = {g.normal({3, g.n, 4})};
                 c.run = [dim](const std::vector<Tensor>& in) { return std::vector<Tensor>{cumsum(in[0], dim)}; };
                 c.reference = [dim](const std::vector<RefTensor>& in) {
                   const DimSplit s = ref_split(in[0].shape, dim);
                   RefTensor out = in[0];
                   for (int64_t o = 0; o < s.outer; ++o)
                     for (int64_t j = 0; j < s.inner; ++j)
                       for (int64_t k = 1; k < s.size; ++k)
                         out.data[(o * s.size + k) * s.inner + j] += out.data[(o * s.size + k - 1) * s.inner + j];
                   return std::vector<RefTensor>{out};
                 };
                 c.grad_inputs = {0};
                 return c;
               }});
}

}  // namespace moon
