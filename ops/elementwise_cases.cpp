// Registry entries for the elementwise ops: random inputs kept away from kinks and poles (so central
// finite differences are valid), a double-precision reference, and the float inputs to differentiate.
#include <cmath>

#include "ops/elementwise.h"
#include "ops/registry.h"

namespace moon {

namespace {

// The input distribution of a unary case.
enum class Dist {
  Normal,        // N(0, 1)
  Positive,      // U(0.5, 2): log, sqrt, rsqrt, pow
  AwayFromZero,  // |x| in [0.1, 2]: relu, abs (kink at 0)
};

Tensor draw(CaseGen& g, Dist d, const Shape& s) {
  switch (d) {
    case Dist::Normal: return g.normal(s);
    case Dist::Positive: return g.uniform(s, 0.5, 2.0);
    case Dist::AwayFromZero: return g.away_from_zero(s);
  }
  return Tensor();
}

// A shape with the free size n: (3, n), (2, n, 3) or (n).
Shape unary_shape(CaseGen& g) {
  switch (g.pick(0, 2)) {
    case 0: return {3, g.n};
    case 1: return {2, g.n, 3};
    default: return {g.n};
  }
}

OpInfo unary_entry(const char* name, std::function<Tensor(const Tensor&)> op, std::function<double(double)> ref,
                   Dist dist) {
  OpInfo info;
  info.name = name;
  info.family = "elementwise";
  info.arity = 1;
  info.make_case = [op, ref, dist](CaseGen& g) {
    OpCase c;
    const Shape s = unary_shape(g);
    c.desc = shape_str(s);
    c.inputs = {draw(g, dist, s)};
    c.run = [op](const std::vector<Tensor>& in) { return std::vector<Tensor>{op(in[0])}; };
    c.reference = [ref](const std::vector<RefTensor>& in) { return std::vector<RefTensor>{ref_unary(in[0], ref)}; };
    c.grad_inputs = {0};
    return c;
  };
  return info;
}

// Two broadcast-compatible shapes: equal, a row broadcast, or a column broadcast against a row.
void binary_shapes(CaseGen& g, Shape& sa, Shape& sb) {
  const int64_t n = g.n;
  sa = {3, n};
  sb = {3, n};
  const int64_t variant = g.pick(0, 3);
  if (variant == 1) sb = {n};      // broadcast a row
  if (variant == 2) sa = {3, 1};   // broadcast a column
  if (variant == 3) sb = {};       // a 0-d scalar
}

// A binary op on two broadcast-compatible random shapes.
OpInfo binary_entry(const char* name, Tensor (*op)(const Tensor&, const Tensor&), double (*ref)(double, double),
                    bool positive_rhs = false) {
  OpInfo info;
  info.name = name;
  info.family = "elementwise";
  info.arity = 2;
  info.make_case = [op, ref, positive_rhs](CaseGen& g) {
    OpCase c;
    Shape sa, sb;
    binary_shapes(g, sa, sb);
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

// Small integers as f32 (so eq sees equal pairs), from {-2, ..., 2}.
Tensor small_integers(CaseGen& g, const Shape& s) { return g.integers(s, -2, 3, DType::I64).to(DType::F32); }

// A comparison: u8 result, no backward.
OpInfo compare_entry(const char* name, Tensor (*op)(const Tensor&, const Tensor&), double (*ref)(double, double)) {
  OpInfo info;
  info.name = name;
  info.family = "elementwise";
  info.arity = 2;
  info.has_backward = false;
  info.make_case = [op, ref](CaseGen& g) {
    OpCase c;
    Shape sa, sb;
    binary_shapes(g, sa, sb);
    c.desc = shape_str(sa) + " cmp " + shape_str(sb);
    c.inputs = {small_integers(g, sa), small_integers(g, sb)};
    c.run = [op](const std::vector<Tensor>& in) { return std::vector<Tensor>{op(in[0], in[1])}; };
    c.reference = [ref](const std::vector<RefTensor>& in) {
      return std::vector<RefTensor>{ref_binary(in[0], in[1], ref)};
    };
    return c;
  };
  return info;
}

constexpr double kClampLo = -0.5, kClampHi = 0.8;  // the clamp case's bounds

double gelu_erf_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double gelu_tanh_ref(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

}  // namespace

void register_elementwise_ops(std::vector<OpInfo>& r) {
  // ---- binary, broadcasting
  r.push_back(binary_entry("add", add, [](double x, double y) { return x + y; }));
  r.push_back(binary_entry("sub", sub, [](double x, double y) { return x - y; }));
  r.push_back(binary_entry("mul", mul, [](double x, double y) { return x * y; }));
  r.push_back(binary_entry("div", div, [](double x, double y) { return x / y; }, true));
  // Normal inputs: a tie within the finite-difference step (1e-5) has probability ~1e-5 per element.
  r.push_back(binary_entry("maximum", maximum, [](double x, double y) { return std::max(x, y); }));
  r.push_back(binary_entry("minimum", minimum, [](double x, double y) { return std::min(x, y); }));

  // ---- comparisons
  r.push_back(compare_entry("eq", eq, [](double x, double y) { return x == y ? 1.0 : 0.0; }));
  r.push_back(compare_entry("gt", gt, [](double x, double y) { return x > y ? 1.0 : 0.0; }));
  r.push_back(compare_entry("lt", lt, [](double x, double y) { return x < y ? 1.0 : 0.0; }));

  // ---- unary
  r.push_back(unary_entry("neg", [](const Tensor& x) { return neg(x); }, [](double x) { return -x; }, Dist::Normal));
  r.push_back(unary_entry("exp", [](const Tensor& x) { return exp(x); }, [](double x) { return std::exp(x); },
                          Dist::Normal));
  r.push_back(unary_entry("log", [](const Tensor& x) { return log(x); }, [](double x) { return std::log(x); },
                          Dist::Positive));
  r.push_back(unary_entry("sqrt", [](const Tensor& x) { return sqrt(x); }, [](double x) { return std::sqrt(x); },
                          Dist::Positive));
  r.push_back(unary_entry("rsqrt", [](const Tensor& x) { return rsqrt(x); },
                          [](double x) { return 1.0 / std::sqrt(x); }, Dist::Positive));
  r.push_back(unary_entry("abs", [](const Tensor& x) { return abs(x); }, [](double x) { return std::fabs(x); },
                          Dist::AwayFromZero));
  r.push_back(unary_entry("square", [](const Tensor& x) { return square(x); }, [](double x) { return x * x; },
                          Dist::Normal));
  r.push_back(unary_entry("tanh", [](const Tensor& x) { return tanh(x); }, [](double x) { return std::tanh(x); },
                          Dist::Normal));
  r.push_back(unary_entry("sigmoid", [](const Tensor& x) { return sigmoid(x); },
                          [](double x) { return 1.0 / (1.0 + std::exp(-x)); }, Dist::Normal));
  r.push_back(unary_entry("relu", [](const Tensor& x) { return relu(x); }, [](double x) { return x > 0 ? x : 0.0; },
                          Dist::AwayFromZero));
  r.push_back(unary_entry("gelu", [](const Tensor& x) { return gelu(x); }, gelu_erf_ref, Dist::Normal));
  r.push_back(unary_entry("gelu_tanh", [](const Tensor& x) { return gelu(x, GeluApprox::Tanh); }, gelu_tanh_ref,
                          Dist::Normal));
  r.push_back(unary_entry("silu", [](const Tensor& x) { return silu(x); },
                          [](double x) { return x / (1.0 + std::exp(-x)); }, Dist::Normal));

  // ---- with a scalar
  r.push_back(unary_entry("add_scalar", [](const Tensor& x) { return add_scalar(x, 0.75); },
                          [](double x) { return x + 0.75; }, Dist::Normal));
  r.push_back(unary_entry("scale", [](const Tensor& x) { return scale(x, -1.5); }, [](double x) { return x * -1.5; },
                          Dist::Normal));
  {
    OpInfo info;
    info.name = "pow";
    info.family = "elementwise";
    info.make_case = [](CaseGen& g) {
      // Exact shortcuts (2, 3, 0.5, -0.5, -1) and the general e^(p ln x) path (1.7, -1.3); 4 and 5 on
      // inputs of both signs exercise integer exponents of negative bases (sign (-1)^p).
      static constexpr double kExps[] = {2.0, 3.0, 0.5, -0.5, -1.0, 1.7, -1.3, 4.0, 5.0};
      const double p = kExps[g.pick(0, 8)];
      const bool any_sign = p == 4.0 || p == 5.0 || p == 2.0 || p == 3.0;
      OpCase c;
      const Shape s = unary_shape(g);
      c.desc = shape_str(s) + " ^ " + std::to_string(p);
      c.inputs = {any_sign ? g.away_from_zero(s, 0.5, 1.5) : g.uniform(s, 0.5, 2.0)};
      c.run = [p](const std::vector<Tensor>& in) { return std::vector<Tensor>{pow(in[0], p)}; };
      c.reference = [p](const std::vector<RefTensor>& in) {
        return std::vector<RefTensor>{ref_unary(in[0], [p](double x) { return std::pow(x, p); })};
      };
      c.grad_inputs = {0};
      return c;
    };
    r.push_back(info);
  }
  {
    OpInfo info;
    info.name = "clamp";
    info.family = "elementwise";
    info.make_case = [](CaseGen& g) {
      // Bounds -0.5 and 0.8; inputs are moved off a 0.02-wide band around each bound (the kinks).
      OpCase c;
      const Shape s = unary_shape(g);
      c.desc = shape_str(s) + " in [-0.5, 0.8]";
      Tensor x = g.normal(s);
      float* p = x.data<float>();
      for (int64_t i = 0; i < x.numel(); ++i) {
        if (std::fabs(p[i] - kClampLo) < 0.02) p[i] = static_cast<float>(kClampLo - 0.05);
        if (std::fabs(p[i] - kClampHi) < 0.02) p[i] = static_cast<float>(kClampHi + 0.05);
      }
      c.inputs = {x};
      c.run = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{clamp(in[0], kClampLo, kClampHi)}; };
      c.reference = [](const std::vector<RefTensor>& in) {
        return std::vector<RefTensor>{ref_unary(in[0], [](double x) { return std::min(std::max(x, kClampLo), kClampHi); })};
      };
      c.grad_inputs = {0};
      return c;
    };
    r.push_back(info);
  }

  // ---- selection
  {
    OpInfo info;
    info.name = "where";
    info.family = "elementwise";
    info.arity = 3;
    info.make_case = [](CaseGen& g) {
      const int64_t n = g.n;
      Shape sc = {3, n}, sa = {3, n}, sb = {3, n};
      const int64_t variant = g.pick(0, 2);
      if (variant == 1) sc = {3, 1}, sb = {n};  // condition per row, b a broadcast row
      if (variant == 2) sc = {n}, sa = {3, 1}, sb = {};  // a per row, b a 0-d scalar
      OpCase c;
      c.desc = shape_str(sc) + " ? " + shape_str(sa) + " : " + shape_str(sb);
      c.inputs = {g.mask(sc, 0.5), g.normal(sa), g.normal(sb)};
      c.run = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{where(in[0], in[1], in[2])}; };
      c.reference = [](const std::vector<RefTensor>& in) {
        // c ? a : b = (c ? a : 0) + (c ? 0 : b), each half broadcast on its own.
        const RefTensor ta = ref_binary(in[0], in[1], [](double m, double x) { return m != 0 ? x : 0.0; });
        const RefTensor tb = ref_binary(in[0], in[2], [](double m, double y) { return m != 0 ? 0.0 : y; });
        return std::vector<RefTensor>{ref_binary(ta, tb, [](double x, double y) { return x + y; })};
      };
      c.grad_inputs = {1, 2};
      return c;
    };
    r.push_back(info);
  }
  {
    OpInfo info;
    info.name = "masked_fill";
    info.family = "elementwise";
    info.arity = 2;
    info.make_case = [](CaseGen& g) {
      const int64_t n = g.n;
      Shape sa = {3, n}, sm = {3, n};
      const int64_t variant = g.pick(0, 2);
      if (variant == 1) sm = {n};         // one mask row for every row (a padding mask)
      if (variant == 2) sm = {2, 3, 1};   // the mask adds a leading dimension and broadcasts along rows
      OpCase c;
      c.desc = shape_str(sa) + " mask " + shape_str(sm);
      c.inputs = {g.normal(sa), g.mask(sm, 0.3)};
      c.run = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{masked_fill(in[0], in[1], -3.5)}; };
      c.reference = [](const std::vector<RefTensor>& in) {
        return std::vector<RefTensor>{ref_binary(in[0], in[1], [](double x, double m) { return m != 0 ? -3.5 : x; })};
      };
      c.grad_inputs = {0};
      return c;
    };
    r.push_back(info);
  }
}

}  // namespace moon
