// PyTorch parity: replays the cases written by scripts/torch_parity.py (PyTorch in float64 on float32
// inputs) through moon and compares every output and every input gradient, element by element.
//
// The JSON path comes from MOON_PARITY_JSON, else from the build directory (MOON_PARITY_DEFAULT_JSON, set by
// cmake/Tests.cmake). ctest generates it first (fixture test `parity_data`); by hand:
//   /usr/bin/python3 scripts/torch_parity.py --out build/parity.json && build/moon_tests -ts=parity
//
// To cover a new op: a generator in scripts/torch_parity.py and a lambda under the same name in kOps below.
// An op the script generates but moon does not bind yet must be listed in kPending (the test says so).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/loss.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "runtime/autograd.h"

using namespace moon;
using json = nlohmann::json;

namespace {

using Params = json;
using OpFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&, const Params&)>;

std::vector<int64_t> ints(const json& j) { return j.get<std::vector<int64_t>>(); }
double num(const json& j) { return j.get<double>(); }
int64_t num_i(const json& j) { return j.get<int64_t>(); }

// One output.
OpFn one(std::function<Tensor(const std::vector<Tensor>&, const Params&)> f) {
  return [f](const std::vector<Tensor>& in, const Params& p) { return std::vector<Tensor>{f(in, p)}; };
}
OpFn unary(Tensor (*f)(const Tensor&)) {
  return one([f](const std::vector<Tensor>& in, const Params&) { return f(in[0]); });
}
OpFn binary(Tensor (*f)(const Tensor&, const Tensor&)) {
  return one([f](const std::vector<Tensor>& in, const Params&) { return f(in[0], in[1]); });
}

// op name (as in scripts/torch_parity.py) -> the same op in moon.
const std::map<std::string, OpFn>& ops_table() {
  static const std::map<std::string, OpFn> table = [] {
    std::map<std::string, OpFn> t;
    // ---- elementwise (ops/elementwise.h)
    t["add"] = binary(add);
    t["sub"] = binary(sub);
    t["mul"] = binary(mul);
    t["div"] = binary(div);
    t["maximum"] = binary(maximum);
    t["minimum"] = binary(minimum);
    t["add_scalar"] = one([](auto& in, auto& p) { return add_scalar(in[0], num(p["s"])); });
    t["scale"] = one([](auto& in, auto& p) { return scale(in[0], num(p["s"])); });
    t["pow"] = one([](auto& in, auto& p) { return pow(in[0], num(p["exponent"])); });
    t["neg"] = unary(neg);
    t["exp"] = unary(exp);
    t["log"] = unary(log);
    t["sqrt"] = unary(sqrt);
    t["rsqrt"] = unary(rsqrt);
    t["abs"] = unary(abs);
    t["square"] = unary(square);
    t["tanh"] = unary(tanh);
    t["sigmoid"] = unary(sigmoid);
    t["relu"] = unary(relu);
    t["silu"] = unary(silu);
    t["gelu"] = one([](auto& in, auto& p) {
      return gelu(in[0], p["approximate"] == "tanh" ? GeluApprox::Tanh : GeluApprox::Erf);
    });
    t["clamp"] = one([](auto& in, auto& p) { return clamp(in[0], num(p["lo"]), num(p["hi"])); });
    t["where"] = one([](auto& in, auto&) { return where(in[0], in[1], in[2]); });
    t["masked_fill"] = one([](auto& in, auto& p) { return masked_fill(in[0], in[1], num(p["value"])); });
    t["eq"] = binary(eq);
    t["gt"] = binary(gt);
    t["lt"] = binary(lt);
    // ---- reductions (ops/reduce.h)
    t["sum"] = one([](auto& in, auto&) { return sum(in[0]); });
    t["mean"] = one([](auto& in, auto&) { return mean(in[0]); });
    t["sum_dims"] = one([](auto& in, auto& p) { return sum(in[0], ints(p["dims"]), p["keepdim"].template get<bool>()); });
    t["mean_dims"] = one([](auto& in, auto& p) { return mean(in[0], ints(p["dims"]), p["keepdim"].template get<bool>()); });
    t["sum_to"] = one([](auto& in, auto& p) { return sum_to(in[0], ints(p["shape"])); });
    t["max"] = one([](auto& in, auto&) { return max(in[0]); });
    t["max_dim"] = [](const std::vector<Tensor>& in, const Params& p) {
      MaxResult r = max(in[0], num_i(p["dim"]), p["keepdim"].get<bool>());
      return std::vector<Tensor>{r.values, r.indices};
    };
    t["argmax"] = one([](auto& in, auto& p) { return argmax(in[0], num_i(p["dim"]), p["keepdim"].template get<bool>()); });
    t["cumsum"] = one([](auto& in, auto& p) { return cumsum(in[0], num_i(p["dim"])); });
    // ---- indexing and combining (ops/index.h)
    t["embedding"] = one([](auto& in, auto&) { return embedding(in[0], in[1]); });
    t["index_select"] = one([](auto& in, auto& p) { return index_select(in[0], num_i(p["dim"]), in[1]); });
    t["gather"] = one([](auto& in, auto& p) { return gather(in[0], num_i(p["dim"]), in[1]); });
    t["scatter_add"] = one([](auto& in, auto& p) { return scatter_add(in[0], num_i(p["dim"]), in[1], in[2]); });
    t["concat"] = one([](auto& in, auto& p) { return concat(in, num_i(p["dim"])); });
    t["stack"] = one([](auto& in, auto& p) { return stack(in, num_i(p["dim"])); });
    t["split"] = [](const std::vector<Tensor>& in, const Params& p) { return split(in[0], ints(p["sizes"]), num_i(p["dim"])); };
    t["chunk"] = [](const std::vector<Tensor>& in, const Params& p) { return chunk(in[0], num_i(p["chunks"]), num_i(p["dim"])); };
    t["topk"] = [](const std::vector<Tensor>& in, const Params& p) {
      TopKResult r = topk(in[0], num_i(p["k"]), num_i(p["dim"]), p["largest"].get<bool>());
      return std::vector<Tensor>{r.values, r.indices};
    };
    // ---- matrix products (ops/matmul.h)
    t["matmul"] = binary(matmul);
    t["bmm"] = binary(bmm);
    t["linear"] = one([](auto& in, auto&) { return linear(in[0], in[1], in.size() > 2 ? in[2] : Tensor()); });
    // ---- normalisations (ops/norm.h)
    t["softmax"] = one([](auto& in, auto& p) { return softmax(in[0], num_i(p["dim"])); });
    t["log_softmax"] = one([](auto& in, auto& p) { return log_softmax(in[0], num_i(p["dim"])); });
    t["layer_norm"] = one([](auto& in, auto& p) {
      return layer_norm(in[0], in.size() > 1 ? in[1] : Tensor(), in.size() > 2 ? in[2] : Tensor(), num(p["eps"]));
    });
    t["rms_norm"] = one([](auto& in, auto& p) { return rms_norm(in[0], in.size() > 1 ? in[1] : Tensor(), num(p["eps"])); });
    t["dropout"] = one([](auto& in, auto& p) {
      Generator gen(p["seed"].template get<uint64_t>());
      gen.set_state(p["seed"].template get<uint64_t>(), p["offset"].template get<uint64_t>());
      return dropout(in[0], num(p["p"]), p["training"].template get<bool>(), gen);
    });
    // ---- losses and similarities (ops/loss.h)
    t["cross_entropy"] = one([](auto& in, auto& p) {
      return cross_entropy(in[0], in[1], num_i(p["ignore_index"]), num(p["label_smoothing"]));
    });
    t["l2_normalize"] = one([](auto& in, auto& p) { return l2_normalize(in[0], num_i(p["dim"]), num(p["eps"])); });
    t["cosine_similarity_matrix"] = one([](auto& in, auto& p) { return cosine_similarity_matrix(in[0], in[1], num(p["eps"])); });
    // ---- views and copies (runtime/tensor.h)
    t["reshape"] = one([](auto& in, auto& p) { return in[0].reshape(ints(p["shape"])); });
    t["flatten"] = one([](auto& in, auto& p) { return in[0].flatten(num_i(p["start"]), num_i(p["end"])); });
    t["permute"] = one([](auto& in, auto& p) { return in[0].permute(ints(p["dims"])); });
    t["transpose"] = one([](auto& in, auto& p) { return in[0].transpose(num_i(p["d0"]), num_i(p["d1"])); });
    t["slice"] = one([](auto& in, auto& p) {
      return in[0].slice(num_i(p["dim"]), num_i(p["start"]), num_i(p["end"]));
    });
    t["select"] = one([](auto& in, auto& p) { return in[0].select(num_i(p["dim"]), num_i(p["index"])); });
    t["expand"] = one([](auto& in, auto& p) { return in[0].expand(ints(p["shape"])); });
    t["squeeze"] = one([](auto& in, auto& p) { return in[0].squeeze(num_i(p["dim"])); });
    t["unsqueeze"] = one([](auto& in, auto& p) { return in[0].unsqueeze(num_i(p["dim"])); });
    t["contiguous"] = one([](auto& in, auto& p) { return in[0].permute(ints(p["permute"])).contiguous(); });
    // ---- attention (ops/attention.h)
    t["scaled_dot_product_attention"] = one([](auto& in, auto& p) {
      AttentionOptions o;
      o.causal = p["causal"].template get<bool>();
      o.q_offset = num_i(p["q_offset"]);
      o.scale = num(p["scale"]);
      if (in.size() > 3) o.key_keep = in[3];
      return scaled_dot_product_attention(in[0], in[1], in[2], o);
    });
    t["rope"] = one([](auto& in, auto& p) { return rope(in[0], in[1], num(p["theta"])); });
    return t;
  }();
  return table;
}

// Ops the script generates that moon does not bind here yet (their implementation is in progress).
const std::set<std::string> kPending = {};

std::string shape_of(const json& j) { return shape_str(ints(j["shape"])); }

// A moon tensor from a JSON tensor (f32/f64 -> f32, i64, u8).
Tensor tensor_from_json(const json& j) {
  const Shape shape = ints(j["shape"]);
  const std::string dt = j["dtype"];
  if (dt == "f32" || dt == "f64") return from_vector(j["data"].get<std::vector<float>>(), shape);
  if (dt == "i64") return from_vector<int64_t>(j["data"].get<std::vector<int64_t>>(), shape, DType::I64);
  if (dt == "u8") return from_vector<uint8_t>(j["data"].get<std::vector<uint8_t>>(), shape, DType::U8);
  fail("parity: unknown dtype '", dt, "' in the JSON");
}

// "[1, 4, 2]": the multi-index of flat element i in shape.
std::string index_str(const Shape& shape, int64_t i) {
  std::vector<int64_t> idx(shape.size());
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    idx[d] = i % shape[d];
    i /= shape[d];
  }
  std::ostringstream os;
  os << "[";
  for (size_t d = 0; d < idx.size(); ++d) os << (d ? ", " : "") << idx[d];
  os << "]";
  return os.str();
}

// Compares ours to torch's tensor; returns "" or a message naming the tensor and its first bad element.
std::string compare(const Tensor& ours, const json& ref, const json& tol, const std::string& what) {
  if (!ours.defined()) return what + ": moon returned no tensor";
  if (ours.shape() != Shape(ints(ref["shape"])))
    return what + ": moon shape " + ours.shape_str() + ", torch shape " + shape_of(ref);
  const std::string dt = ref["dtype"];
  const bool exact = dt == "i64" || dt == "u8";
  if (exact == is_floating(ours.dtype()))
    return what + ": moon dtype " + dtype_name(ours.dtype()) + ", torch dtype " + dt;
  const std::vector<double> v = ours.to_vector<double>();
  const std::vector<double> r = ref["data"].get<std::vector<double>>();
  const double atol = tol[0], rtol = tol[1];
  int64_t bad = 0, first = -1;
  double worst = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    const double diff = std::fabs(v[i] - r[i]);
    const double allowed = exact ? 0.0 : atol + rtol * std::fabs(r[i]);
    if (!(diff <= allowed)) {  // also catches NaN
      if (first < 0) first = static_cast<int64_t>(i);
      ++bad;
      worst = std::max(worst, std::isnan(diff) ? INFINITY : diff);
    }
  }
  if (bad == 0) return "";
  std::ostringstream os;
  os.precision(9);
  os << what << " " << ours.shape_str() << ": element " << index_str(ours.shape(), first) << " = " << v[first]
     << ", torch " << r[first];
  if (exact)
    os << " (integers must match exactly); ";
  else
    os << " (|diff| " << std::fabs(v[first] - r[first]) << " > " << atol << " + " << rtol << "*|torch|); ";
  os << bad << " of " << v.size() << " elements differ, worst |diff| " << worst;
  return os.str();
}

// Runs one case; returns the failure messages (empty when it matches).
std::vector<std::string> run_case(const json& c, const OpFn& fn) {
  std::vector<std::string> errors;
  const std::string where = "parity case " + c["id"].get<std::string>() + " (op " + c["op"].get<std::string>() + "): ";
  std::vector<Tensor> inputs;
  for (const json& in : c["inputs"]) {
    Tensor t = tensor_from_json(in);
    if (in["requires_grad"].get<bool>()) t.set_requires_grad(true);
    inputs.push_back(t);
  }
  std::vector<Tensor> outs;
  try {
    outs = fn(inputs, c["params"]);
  } catch (const std::exception& e) {
    return {where + "forward threw: " + e.what()};
  }
  const json& ref_outs = c["outputs"];
  if (outs.size() != ref_outs.size())
    return {where + "moon returned " + std::to_string(outs.size()) + " outputs, torch " + std::to_string(ref_outs.size())};
  for (size_t k = 0; k < outs.size(); ++k) {
    std::string e = compare(outs[k], ref_outs[k], c["tol"]["fwd"], "output " + std::to_string(k));
    if (!e.empty()) errors.push_back(where + e);
  }
  if (!errors.empty()) return errors;  // gradients of a wrong forward say nothing new

  std::vector<Tensor> roots, grads;
  for (size_t k = 0; k < outs.size(); ++k) {
    const json& go = c["grad_outputs"][k];
    if (go.is_null()) continue;
    if (!outs[k].requires_grad()) {
      errors.push_back(where + "output " + std::to_string(k) + " " + outs[k].desc() +
                       " does not require grad, but torch differentiates it");
      continue;
    }
    roots.push_back(outs[k]);
    grads.push_back(tensor_from_json(go));
  }
  if (roots.empty() || !errors.empty()) return errors;
  try {
    run_backward(roots, grads, false);
  } catch (const std::exception& e) {
    return {where + "backward threw: " + e.what()};
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    const json& ref = c["grads"][i];
    if (ref.is_null()) continue;
    Tensor g = inputs[i].grad();
    if (!g.defined()) g = zeros(inputs[i].shape());  // no gradient arrived: it must be zero
    const std::string name = c["inputs"][i]["name"];
    std::string e = compare(g, ref, c["tol"]["grad"], "gradient of input " + std::to_string(i) + " '" + name + "'");
    if (!e.empty()) errors.push_back(where + e);
  }
  return errors;
}

std::string parity_json_path() {
  if (const char* env = std::getenv("MOON_PARITY_JSON")) return env;
#ifdef MOON_PARITY_DEFAULT_JSON
  return MOON_PARITY_DEFAULT_JSON;
#else
  return "build/parity.json";
#endif
}

}  // namespace

TEST_SUITE("parity") {

TEST_CASE("torch parity: every op matches PyTorch forward and backward") {
  const std::string path = parity_json_path();
  if (!std::filesystem::exists(path)) {
    const std::string hint = "parity: " + path +
                             " does not exist; generate it with `/usr/bin/python3 scripts/torch_parity.py --out " + path +
                             "` (ctest runs it as test parity_data)";
    if (std::getenv("MOON_PARITY_JSON")) FAIL(hint);  // asked for explicitly (ctest): a missing file is an error
    WARN_MESSAGE(false, hint);
    return;
  }
  json doc;
  {
    std::ifstream f(path);
    REQUIRE_MESSAGE(f.good(), "parity: cannot read " << path);
    f >> doc;
  }
  const auto& table = ops_table();
  std::map<std::string, int> cases_per_op;
  std::set<std::string> unbound;
  int checked = 0, failed = 0;
  for (const json& c : doc["cases"]) {
    const std::string op = c["op"];
    auto it = table.find(op);
    if (it == table.end()) {
      unbound.insert(op);
      continue;
    }
    ++cases_per_op[op];
    ++checked;
    const std::vector<std::string> errors = run_case(c, it->second);
    for (const std::string& e : errors) FAIL_CHECK(e);
    failed += !errors.empty();
  }
  for (const std::string& op : unbound)
    CHECK_MESSAGE(kPending.count(op), "parity: scripts/torch_parity.py generates op '" << op
                  << "' but tests/test_torch_parity.cpp has no binding for it; add one to ops_table() (or to kPending)");
  for (const auto& [op, fn] : table)
    CHECK_MESSAGE(cases_per_op.count(op), "parity: op '" << op << "' is bound but " << path
                  << " has no case for it; add a generator to scripts/torch_parity.py (and rerun it)");
  MESSAGE("parity: " << checked << " cases over " << cases_per_op.size() << " ops checked against torch "
          << doc["torch"].get<std::string>() << " (" << failed << " failed); not yet bound: " << unbound.size()
          << " ops");
}

TEST_CASE("torch parity: the comparison names the op, the tensor and the element") {
  json ref = {{"shape", {2, 3}}, {"dtype", "f64"}, {"data", {0, 1, 2, 3, 4, 5}}};
  Tensor ours = from_vector(std::vector<float>{0, 1, 2, 3, 4.5f, 5}, {2, 3});
  const std::string msg = compare(ours, ref, json::array({1e-5, 1e-5}), "output 0");
  CHECK(msg.find("output 0") != std::string::npos);
  CHECK(msg.find("[1, 1]") != std::string::npos);
  CHECK(msg.find("1 of 6") != std::string::npos);
  CHECK(compare(ours, ref, json::array({1.0, 0.0}), "output 0").empty());
  json wrong_shape = {{"shape", {3, 2}}, {"dtype", "f64"}, {"data", {0, 1, 2, 3, 4, 5}}};
  CHECK(compare(ours, wrong_shape, json::array({1e-5, 1e-5}), "x").find("torch shape (3, 2)") != std::string::npos);
}

}  // TEST_SUITE
