// Registry entries for the elementwise ops.
#include <cmath>

#include "ops/elementwise.h"
#include "ops/registry.h"

namespace moon {

namespace {

// A binary op on two broadcast-compatible random shapes.
OpInfo binary_entry(const char* name, Tensor (*op)(const Tensor&, const Tensor&), double (*ref)(double, double),
                    bool positive_rhs = false) {
  OpInfo info;
  info.name = name;
  info.family = "elementwise";
  info.arity = 2;
  info.make_case = [op, ref, positive_rhs](CaseGen& g) {
    OpCase c;
    const int64_t n = g.n;
    const int64_t variant = g.pick(0, 2);
    Shape sa = {3, n}, sb = {3, n};
    if (variant == 1) sb = {n};      // broadcast a row
    if (variant == 2) sa = {3, 1};   // broadcast a column
    c.desc = shape_str(sa) + " op " + shape_str(sb);
    c.inputs = {g.normal(sa), positive_rhs ? g.uniform(sb, 0.5, 2.0) : g.normal(sb)};
    c.run = [op](const std::vector<Tensor>& in) { return std::vector<Tensor>{op(in[0], in[1])}; };
    c.reference = [ref](const std::vector<RefTensor>& in) {
      return std::vector<RefTensor>{ref_binary(in[0], in[1], ref)};
    };
    c.grad_inputs = {0, 1};
    return c;
  };
  return info;
}

}  // namespace

void register_elementwise_ops(std::vector<OpInfo>& r) {
  r.push_back(binary_entry("add", add, [](double x, double y) { return x + y; }));
  r.push_back(binary_entry("sub", sub, [](double x, double y) { return x - y; }));
  r.push_back(binary_entry("mul", mul, [](double x, double y) { return x * y; }));
  r.push_back(binary_entry("div", div, [](double x, double y) { return x / y; }, true));
}

}  // namespace moon
