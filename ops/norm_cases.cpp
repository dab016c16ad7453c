// Registry entries for the normalisations: softmax, log_softmax, layer_norm, rms_norm, dropout.
#include <algorithm>
#include <cmath>

#include "ops/norm.h"
#include "ops/registry.h"

namespace moon {

namespace {

// softmax (or log_softmax) of `in` along dim, in double.
RefTensor ref_softmax(const RefTensor& in, int64_t dim, bool log) {
  const DimSplit s = ref_split(in.shape, dim);
  RefTensor out = in;
  for (int64_t o = 0; o < s.outer; ++o)
    for (int64_t j = 0; j < s.inner; ++j) {
      auto at = [&](int64_t k) -> double& { return out.data[(o * s.size + k) * s.inner + j]; };
      double m = -INFINITY, z = 0;
      for (int64_t k = 0; k < s.size; ++k) m = std::max(m, at(k));
      for (int64_t k = 0; k < s.size; ++k) z += std::exp(at(k) - m);
      for (int64_t k = 0; k < s.size; ++k) at(k) = log ? at(k) - m - std::log(z) : std::exp(at(k) - m) / z;
    }
  return out;
}

OpInfo softmax_entry(const char* name, bool log) {
  OpInfo info;
  info.name = name;
  info.family = "norm";
  info.make_case = [log](CaseGen& g) {
    OpCase c;
    const int64_t dim = g.pick(0, 2);
    c.desc = "(2,n,5) dim=" + std::to_string(dim - 3);
    c.inputs = {g.normal({2, g.n, 5}, 2.0)};
    c.run = [dim, log](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{log ? log_softmax(in[0], dim - 3) : softmax(in[0], dim - 3)};
    };
    c.reference = [dim, log](const std::vector<RefTensor>& in) {
      return std::vector<RefTensor>{ref_softmax(in[0], dim, log)};
    };
    c.grad_inputs = {0};
    return c;
  };
  return info;
}

// layer_norm (rms when rms) over the last dim in double; w, b may be empty (none).
RefTensor ref_norm(const RefTensor& x, const RefTensor* w, const RefTensor* b, double eps, bool rms) {
  const int64_t C = x.shape.back(), rows = x.numel() / C;
  RefTensor out = x;
  for (int64_t r = 0; r < rows; ++r) {
    const double* p = x.data.data() + r * C;
    double mean = 0, var = 0;
    if (!rms) {
      for (int64_t i = 0; i < C; ++i) mean += p[i];
      mean /= static_cast<double>(C);
    }
    for (int64_t i = 0; i < C; ++i) var += (p[i] - mean) * (p[i] - mean);
    const double rstd = 1.0 / std::sqrt(var / static_cast<double>(C) + eps);
    for (int64_t i = 0; i < C; ++i) {
      double y = (p[i] - mean) * rstd;
      if (w) y *= w->data[i];
      if (b) y += b->data[i];
      out.data[r * C + i] = y;
    }
  }
  return out;
}

}  // namespace

void register_norm_ops(std::vector<OpInfo>& r) {
  r.push_back(softmax_entry("softmax", false));
  r.push_back(softmax_entry("log_softmax", true));

  r.push_back({"layer_norm", "norm", 3, true, op_devices(), [](CaseGen& g) {
                 OpCase c;
                 const int64_t variant = g.pick(0, 2);  // 0: weight and bias, 1: weight only, 2: neither
                 // C >= 3: a row of one or two elements normalises to a constant, so the true x-gradient is 0
                 // and a comparison (bf16 against f32, or a device against the CPU) would only measure noise.
                 const int64_t C = std::max<int64_t>(g.n, 3);
                 const bool has_w = variant <= 1, has_b = variant == 0;
                 const double eps = 1e-5;
                 c.desc = "(2,3," + std::to_string(C) + ")" + (has_w ? " weight" : "") + (has_b ? " bias" : "");
                 c.inputs = {g.normal({2, 3, C}, 1.5)};
                 {
                   float* px = c.inputs[0].data<float>();  // a nonzero mean
                   for (int64_t i = 0; i < c.inputs[0].numel(); ++i) px[i] += 0.5f;
                 }
                 if (has_w) c.inputs.push_back(g.normal({C}));
                 if (has_b) c.inputs.push_back(g.normal({C}));
                 c.run = [has_w, has_b, eps](const std::vector<Tensor>& in) {
                   return std::vector<Tensor>{
                       layer_norm(in[0], has_w ? in[1] : Tensor(), has_b ? in[2] : Tensor(), eps)};
                 };
                 c.reference = [has_w, has_b, eps](const std::vector<RefTensor>& in) {
                   return std::vector<RefTensor>{
                       ref_norm(in[0], has_w ? &in[1] : nullptr, has_b ? &in[2] : nullptr, eps, false)};
                 };
                 for (int i = 0; i < static_cast<int>(c.inputs.size()); ++i) c.grad_inputs.push_back(i);
                 return c;
               }});

  r.push_back({"rms_norm", "norm", 2, true, op_devices(), [](CaseGen& g) {
                 OpCase c;
                 const bool has_w = g.pick(0, 3) != 0;
                 // C >= 2: with one element x * rsqrt(x^2 + eps) is flat (the x-gradient ~ eps / |x|^3 is all
                 // cancellation, 10% noise in f32), so a comparison would only measure noise.
                 const int64_t C = std::max<int64_t>(g.n, 2);
                 const double eps = 1e-6;
                 c.desc = "(2,3," + std::to_string(C) + ")" + (has_w ? " weight" : "");
                 c.inputs = {g.away_from_zero({2, 3, C}, 0.2, 2.0)};
                 if (has_w) c.inputs.push_back(g.normal({C}));
                 c.run = [has_w, eps](const std::vector<Tensor>& in) {
                   return std::vector<Tensor>{rms_norm(in[0], has_w ? in[1] : Tensor(), eps)};
                 };
                 c.reference = [has_w, eps](const std::vector<RefTensor>& in) {
                   return std::vector<RefTensor>{ref_norm(in[0], has_w ? &in[1] : nullptr, nullptr, eps, true)};
                 };
                 for (int i = 0; i < static_cast<int>(c.inputs.size()); ++i) c.grad_inputs.push_back(i);
                 return c;
               }});

  r.push_back({"dropout", "norm", 1, true, op_devices(), [](CaseGen& g) {
                 OpCase c;
                 const double p = g.pick(0, 1) == 0 ? 0.25 : 0.6;
                 const uint64_t seed = 1000 + static_cast<uint64_t>(g.pick(0, 1000)), offset = 8;
                 c.desc = "(3,n) p=" + std::to_string(p).substr(0, 4);
                 c.inputs = {g.normal({3, g.n})};
                 // A fresh generator per call, so every run (and the reference) sees the same mask.
                 c.run = [p, seed, offset](const std::vector<Tensor>& in) {
                   Generator gen(seed);
                   gen.set_state(seed, offset);
                   return std::vector<Tensor>{dropout(in[0], p, true, gen)};
                 };
                 c.reference = [p, seed, offset](const std::vector<RefTensor>& in) {
                   RefTensor out = in[0];
                   for (int64_t i = 0; i < out.numel(); ++i)
                     out.data[i] = dropout_uniform(seed, offset, i) >= static_cast<float>(p) ? out.data[i] / (1.0 - p) : 0.0;
                   return std::vector<RefTensor>{out};
                 };
                 c.grad_inputs = {0};
                 return c;
               }});
}

}  // namespace moon
