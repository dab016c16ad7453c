#include "ops/registry.h"

#include "runtime/error.h"

namespace moon {

const std::vector<OpInfo>& op_registry() {
  static const std::vector<OpInfo> registry = [] {
    std::vector<OpInfo> r;
    register_view_ops(r);
    register_elementwise_ops(r);
    register_attention_ops(r);
    register_reduce_ops(r);
    register_norm_ops(r);
    register_matmul_ops(r);
    register_loss_ops(r);
    // (each op family adds its register_*_ops call here)
    register_index_ops(r);
    return r;
  }();
  return registry;
}

std::vector<DeviceType> op_devices() {
#ifdef MOON_CUDA
  return {DeviceType::CPU, DeviceType::CUDA};
#else
  return {DeviceType::CPU};
#endif
}

OpInfo op_entry(std::string name, std::string family, int arity, std::function<OpCase(CaseGen&)> make_case) {
  OpInfo info;
  info.name = std::move(name);
  info.family = std::move(family);
  info.arity = arity;
  info.make_case = std::move(make_case);
  info.devices = op_devices();
  return info;
}

const OpInfo* find_op(const std::string& name) {
  for (const OpInfo& op : op_registry())
    if (op.name == name) return &op;
  return nullptr;
}

Tensor CaseGen::normal(const Shape& shape, double stddev) {
  Tensor t = randn(shape, gen);
  if (stddev != 1.0) {
    float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(p[i] * stddev);
  }
  return t;
}

Tensor CaseGen::uniform(const Shape& shape, double lo, double hi) { return rand(shape, gen, lo, hi); }

Tensor CaseGen::away_from_zero(const Shape& shape, double gap, double hi) {
  Tensor t = rand(shape, gen, gap, hi);
  Tensor sign = rand(shape, gen, 0.0, 1.0);
  float* p = t.data<float>();
  const float* s = sign.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (s[i] < 0.5f) p[i] = -p[i];
  return t;
}

Tensor CaseGen::integers(const Shape& shape, int64_t lo, int64_t hi, DType dtype) {
  return randint(shape, gen, lo, hi, dtype);
}

Tensor CaseGen::mask(const Shape& shape, double p_keep) {
  Tensor u = rand(shape, gen, 0.0, 1.0);
  Tensor m = empty(shape, DType::U8);
  const float* up = u.data<float>();
  uint8_t* mp = m.data<uint8_t>();
  for (int64_t i = 0; i < m.numel(); ++i) mp[i] = up[i] < p_keep ? 1 : 0;
  return m;
}

int64_t CaseGen::pick(int64_t lo, int64_t hi) {
  const auto r = philox4x32(gen.reserve(4), gen.seed());
  return lo + static_cast<int64_t>(r[0] % static_cast<uint32_t>(hi - lo + 1));
}

RefTensor to_ref(const Tensor& t) {
  RefTensor r;
  r.shape = t.shape();
  r.data = t.to_vector<double>();
  return r;
}

Tensor from_ref(const RefTensor& r, DType dtype) {
  std::vector<float> f(r.data.begin(), r.data.end());
  Tensor t = from_vector(f, r.shape);
  return dtype == DType::F32 ? t : t.to(dtype);
}

int64_t ref_offset(const Shape& shape, const std::vector<int64_t>& index) {
  int64_t off = 0;
  for (size_t d = 0; d < shape.size(); ++d) off = off * shape[d] + index[d];
  return off;
}

RefTensor ref_binary(const RefTensor& a, const RefTensor& b, const std::function<double(double, double)>& f) {
  RefTensor out;
  out.shape = broadcast_shapes(a.shape, b.shape, "reference");
  const int64_t nd = static_cast<int64_t>(out.shape.size());
  out.data.resize(static_cast<size_t>(shape_numel(out.shape)));
  // Broadcast strides of a and b within the output shape (0 where the operand has size 1).
  auto bstrides = [&](const Shape& s) {
    Strides st(nd, 0);
    const Strides cs = contiguous_strides(s);
    for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i) {
      const int64_t d = nd - static_cast<int64_t>(s.size()) + i;
      st[d] = s[i] == 1 ? 0 : cs[i];
    }
    return st;
  };
  const Strides sa = bstrides(a.shape), sb = bstrides(b.shape);
  for (int64_t i = 0; i < out.numel(); ++i) {
    int64_t rem = i, oa = 0, ob = 0;
    for (int64_t d = nd - 1; d >= 0; --d) {
      const int64_t idx = rem % out.shape[d];
      rem /= out.shape[d];
      oa += idx * sa[d];
      ob += idx * sb[d];
    }
    out.data[i] = f(a.data[oa], b.data[ob]);
  }
  return out;
}

RefTensor ref_unary(const RefTensor& a, const std::function<double(double)>& f) {
  RefTensor out{a.shape, a.data};
  for (double& x : out.data) x = f(x);
  return out;
}

DimSplit ref_split(const Shape& shape, int64_t dim) {
  DimSplit s{1, shape.empty() ? 1 : shape[dim], 1};
  for (int64_t d = 0; d < dim; ++d) s.outer *= shape[d];
  for (int64_t d = dim + 1; d < static_cast<int64_t>(shape.size()); ++d) s.inner *= shape[d];
  return s;
}

}  // namespace moon
