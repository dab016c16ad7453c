// Registry entries for the view and copy ops: each case builds a random view and checks it against a
// reference that indexes the input directly.
#include "ops/elementwise.h"
#include "ops/registry.h"

namespace moon {

namespace {

// Reference for a view given as a function from output index to input index.
RefTensor ref_gather_view(const RefTensor& in, const Shape& out_shape,
                          const std::function<std::vector<int64_t>(const std::vector<int64_t>&)>& source) {
  RefTensor out{out_shape, std::vector<double>(static_cast<size_t>(shape_numel(out_shape)))};
  std::vector<int64_t> idx(out_shape.size(), 0);
  for (int64_t i = 0; i < out.numel(); ++i) {
    int64_t rem = i;
    for (int64_t d = static_cast<int64_t>(out_shape.size()) - 1; d >= 0; --d) {
      idx[d] = rem % out_shape[d];
      rem /= out_shape[d];
    }
    out.data[i] = in.data[ref_offset(in.shape, source(idx))];
  }
  return out;
}

OpCase unary_case(std::string desc, Tensor x, std::function<Tensor(const Tensor&)> op,
                  std::function<RefTensor(const RefTensor&)> ref) {
  OpCase c;
  c.desc = std::move(desc);
  c.inputs = {std::move(x)};
  c.run = [op](const std::vector<Tensor>& in) { return std::vector<Tensor>{op(in[0])}; };
  c.reference = [ref](const std::vector<RefTensor>& in) { return std::vector<RefTensor>{ref(in[0])}; };
  c.grad_inputs = {0};
  c.fwd_tol = 0;
  return c;
}

}  // namespace

void register_view_ops(std::vector<OpInfo>& r) {
  r.push_back({"reshape", "view", 1, true, op_devices(), [](CaseGen& g) {
                 const int64_t a = g.pick(1, 4), b = g.n;
                 return unary_case("(a,b,2)->(b,a*2)", g.normal({a, b, 2}),
                                   [a, b](const Tensor& x) { return x.reshape({b, a * 2}).contiguous(); },
                                   [a, b](const RefTensor& x) { return RefTensor{{b, a * 2}, x.data}; });
               }});
  r.push_back({"permute", "view", 1, true, op_devices(), [](CaseGen& g) {
                 const Shape s = {2, g.n, 3};
                 return unary_case("(2,n,3) -> (3,2,n)", g.normal(s),
                                   [](const Tensor& x) { return x.permute({2, 0, 1}).contiguous(); },
                                   [s](const RefTensor& x) {
                                     return ref_gather_view(x, {s[2], s[0], s[1]}, [](const std::vector<int64_t>& i) {
                                       return std::vector<int64_t>{i[1], i[2], i[0]};
                                     });
                                   });
               }});
  r.push_back({"transpose", "view", 1, true, op_devices(), [](CaseGen& g) {
                 const Shape s = {g.n, 5};
                 return unary_case("(n,5).T", g.normal(s), [](const Tensor& x) { return x.transpose(0, 1) * 1.0; },
                                   [s](const RefTensor& x) {
                                     return ref_gather_view(x, {s[1], s[0]}, [](const std::vector<int64_t>& i) {
                                       return std::vector<int64_t>{i[1], i[0]};
                                     });
                                   });
               }});
  r.push_back({"slice", "view", 1, true, op_devices(), [](CaseGen& g) {
                 const int64_t n = g.n + 2, lo = g.pick(0, 1), hi = n - g.pick(0, 1);
                 return unary_case("(3,n+2)[:, lo:hi]", g.normal({3, n}),
                                   [lo, hi](const Tensor& x) { return x.slice(1, lo, hi).contiguous(); },
                                   [lo, hi](const RefTensor& x) {
                                     return ref_gather_view(x, {3, hi - lo}, [lo](const std::vector<int64_t>& i) {
                                       return std::vector<int64_t>{i[0], i[1] + lo};
                                     });
                                   });
               }});
  r.push_back({"select", "view", 1, true, op_devices(), [](CaseGen& g) {
                 const int64_t k = g.pick(0, 2);
                 return unary_case("(n,3)[:, k]", g.normal({g.n, 3}),
                                   [k](const Tensor& x) { return x.select(1, k).contiguous(); },
                                   [k](const RefTensor& x) {
                                     return ref_gather_view(x, {x.shape[0]}, [k](const std::vector<int64_t>& i) {
                                       return std::vector<int64_t>{i[0], k};
                                     });
                                   });
               }});
  r.push_back({"expand", "view", 1, true, op_devices(), [](CaseGen& g) {
                 const int64_t n = g.n;
                 return unary_case("(n,1)->(2,n,4)", g.normal({n, 1}),
                                   [n](const Tensor& x) { return x.expand({2, n, 4}).contiguous(); },
                                   [n](const RefTensor& x) {
                                     return ref_gather_view(x, {2, n, 4}, [](const std::vector<int64_t>& i) {
                                       return std::vector<int64_t>{i[1], 0};
                                     });
                                   });
               }});
  r.push_back({"squeeze_unsqueeze", "view", 1, true, op_devices(), [](CaseGen& g) {
                 return unary_case("(n,1,2) squeeze(1).unsqueeze(0)", g.normal({g.n, 1, 2}),
                                   [](const Tensor& x) { return x.squeeze(1).unsqueeze(0).contiguous(); },
                                   [](const RefTensor& x) { return RefTensor{{1, x.shape[0], 2}, x.data}; });
               }});
  r.push_back({"to_bf16", "copy", 1, true, op_devices(), [](CaseGen& g) {
                 // f32 -> bf16 -> f32; a bf16 input (the bf16 suite) goes bf16 -> f32 -> bf16 and keeps its dtype
                 OpCase c = unary_case("f32 -> bf16 -> f32", g.normal({g.n, 3}),
                                       [](const Tensor& x) {
                                         const DType other = x.dtype() == DType::BF16 ? DType::F32 : DType::BF16;
                                         return x.to(other).to(x.dtype());
                                       },
                                       [](const RefTensor& x) {
                                         return ref_unary(x, [](double v) {
                                           return static_cast<double>(bf16_to_f32(f32_to_bf16(static_cast<float>(v))));
                                         });
                                       });
                 c.fd_step = 1e-3;  // bf16 rounding is a step function: the check uses the identity's slope
                 c.grad_inputs = {};
                 return c;
               }});
}

}  // namespace moon
