// safetensors against an independent reader and writer: scripts/safetensors_tool.py (struct + json + numpy,
// torch for bf16 bytes) writes files that moon reads value by value, and reads back the files moon writes.
//
// ctest passes MOON_SAFETENSORS_PYTHON and MOON_SAFETENSORS_TOOL (cmake/tests/safetensors_python.cmake). By hand,
// from the repository root:  build/moon_tests -ts=safetensors_python   (uses /usr/bin/python3 and scripts/).
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "io/file_util.h"
#include "io/safetensors.h"
#include "io/safetensors_sharded.h"
#include "test_util.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using moon::DType;
using moon::Tensor;
using namespace moon::io;
using moon::test::TempDir;

namespace {

using Tool = moon::test::PythonTool;
using moon::test::quoted;

// The interpreter and script from the environment, else /usr/bin/python3 and scripts/ under the current folder.
std::optional<Tool> find_tool() {
  return moon::test::find_python_tool("MOON_SAFETENSORS_PYTHON", "MOON_SAFETENSORS_TOOL", "scripts/safetensors_tool.py",
                                      "safetensors_python", "numpy and torch");
}

// Runs the tool with `args`; its exit status.
int run_tool(const Tool& tool, const std::string& args) { return tool.run(args); }

// A float read from the expectation JSON ("nan", "inf", "-inf" or a number).
double json_float(const json& v) {
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
    return s == "inf" ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
  }
  return v.get<double>();
}

json json_float_value(float x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  return static_cast<double>(x);
}

// Checks every value of tensor `name` of `ckpt` against the expectation entry `e` (exactly; NaN equals NaN and
// the sign of zero counts).
void check_tensor(const Checkpoint& ckpt, const std::string& name, const json& e) {
  CAPTURE(name);
  const std::string dtype = e["dtype"].get<std::string>();
  REQUIRE(ckpt.contains(name));
  CHECK(ckpt.info(name).dtype == dtype);
  CHECK(ckpt.info(name).shape == e["shape"].get<moon::Shape>());
  if (!moon_dtype_of(dtype)) {  // listed, and an error only when asked for
    std::string shard;
    for (const auto& f : ckpt.shards())
      if (f->contains(name)) shard = f->path();
    CHECK(moon::test::error_of([&] { ckpt.tensor(name); }) ==
          "tensor '" + name + "' in " + shard + " has dtype " + dtype + ", which moon does not load; convert it to F32");
    return;
  }
  const Tensor t = ckpt.tensor(name);
  CHECK(t.shape() == e["shape"].get<moon::Shape>());
  const json& values = e["values"];
  REQUIRE(static_cast<int64_t>(values.size()) == t.numel());
  if (dtype == "I64" || dtype == "I32" || dtype == "U8") {
    const std::vector<int64_t> got = t.to(DType::I64).to_vector<int64_t>();
    for (size_t i = 0; i < got.size(); ++i) CHECK_MESSAGE(got[i] == values[i].get<int64_t>(), "element " << i);
    return;
  }
  const std::vector<float> got = ckpt.tensor_as(name, DType::F32).to_vector<float>();
  for (size_t i = 0; i < got.size(); ++i) {
    const double want = json_float(values[i]);
    const bool same = std::isnan(want) ? std::isnan(got[i])
                                       : static_cast<double>(got[i]) == want && std::signbit(got[i]) == std::signbit(want);
    CHECK_MESSAGE(same, "element " << i << ": moon read " << got[i] << ", python wrote " << want);
  }
}


}  // namespace

TEST_SUITE("safetensors_python") {
  TEST_CASE("python writes (file and shards), moon reads every value; torch's bf16 bytes pin the byte order") {
    const auto tool = find_tool();
    if (!tool) return;
    TempDir dir;
    REQUIRE(run_tool(*tool, "write --out " + quoted(dir / "py.safetensors") + " --expect " + quoted(dir / "py.json") +
                                " --shard-dir " + quoted(dir / "py_sharded")) == 0);
    const json expect = json::parse(read_file_text(dir / "py.json"));
    REQUIRE(expect["tensors"].contains("torch_bf16"));
    for (const std::string& entry : {dir / "py.safetensors", dir / "py_sharded"}) {
      CAPTURE(entry);
      const Checkpoint ckpt(entry);
      CHECK(ckpt.names().size() == expect["tensors"].size());
      for (const auto& [name, e] : expect["tensors"].items()) check_tensor(ckpt, name, e);
      for (const auto& [k, v] : expect["metadata"].items()) CHECK(ckpt.metadata().at(k) == v.get<std::string>());
    }
    CHECK(Checkpoint(dir / "py_sharded").shards().size() == 3);
    // The first tensor is 15 bytes of U8, so the F32 data after it is unaligned: the copy path.
    auto f = SafetensorsFile::open(dir / "py.safetensors");
    CHECK(f->info("f32").begin == 15);
    CHECK(f->tensor("f32").impl()->storage->owner == nullptr);
    // torch's bytes for bf16 1.0 and -2.0 are 0x3f80 and 0xc000, little-endian.
    CHECK(f->tensor("torch_bf16").to_vector<uint16_t>()[0] == 0x3f80);
    CHECK(f->tensor("torch_bf16").to_vector<uint16_t>()[1] == 0xc000);
  }

  TEST_CASE("moon writes (file and shards), python reads and checks every value") {
    const auto tool = find_tool();
    if (!tool) return;
    TempDir dir;
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<float> f32 = {-0.0f, inf, -inf, std::numeric_limits<float>::quiet_NaN(), 1e-45f, 3.4028235e38f};
    for (int i = 0; i < 24; ++i) f32.push_back(std::cos(static_cast<float>(i)) * 37.5f);
    std::vector<float> bf16_src = {1.f, -2.5f, 0.1f, 1.f / 3.f, -1e30f, 7.f};
    std::vector<int64_t> i64 = {std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), 0, -9};
    std::vector<uint8_t> u8 = {0, 1, 127, 128, 254, 255, 9};
    const Tensor base = moon::from_vector(f32, {5, 6});
    const std::vector<std::pair<std::string, Tensor>> tensors = {
        {"f32_t", base.transpose(0, 1)},  // non-contiguous (6, 5)
        {"bf16", moon::from_vector(bf16_src, {2, 3}, DType::BF16)},
        {"f16", moon::from_vector(std::vector<float>{0.5f, -65504.f, 3.14159f, -0.f}, {4}, DType::F16)},
        {"i64", moon::from_vector(i64, {2, 2}, DType::I64)},
        {"i32", moon::from_vector(std::vector<int32_t>{-2147483647 - 1, 2147483647, 3}, {3, 1}, DType::I32)},
        {"u8", moon::from_vector(u8, {7}, DType::U8)},
        {"scalar", moon::scalar_tensor(-4.25, DType::F32)},
        {"empty", moon::empty({4, 0}, DType::BF16)},
    };
    const std::map<std::string, std::string> meta = {{"moon.format_version", "1"},
                                                     {"moon.config", "{\"dim\": 8, \"name\": \"tiny ✓\"}"}};
    // The expectation comes from the source tensors (through to_vector), not from the files.
    json expect = {{"metadata", meta}, {"tensors", json::object()}};
    for (const auto& [name, t] : tensors) {
      json values = json::array();
      if (t.dtype() == DType::I64 || t.dtype() == DType::I32 || t.dtype() == DType::U8) {
        for (int64_t v : t.to(DType::I64).to_vector<int64_t>()) values.push_back(v);
      } else {
        for (float v : t.to(DType::F32).to_vector<float>()) values.push_back(json_float_value(v));
      }
      expect["tensors"][name] = {{"dtype", safetensors_dtype_name(t.dtype())}, {"shape", t.shape()}, {"values", values}};
    }
    write_file_atomic(dir / "moon.json", expect.dump());
    save_safetensors(dir / "moon.safetensors", tensors, meta);
    save_sharded(dir / "moon_sharded", tensors, 64, meta);
    REQUIRE(fs::exists(dir / "moon_sharded/model.safetensors.index.json"));
    CHECK(run_tool(*tool, "check --in " + quoted(dir / "moon.safetensors") + " --expect " + quoted(dir / "moon.json")) == 0);
    CHECK(run_tool(*tool, "check --in " + quoted(dir / "moon_sharded") + " --expect " + quoted(dir / "moon.json")) == 0);
    // The checker can fail: one wrong value in the expectation is caught.
    expect["tensors"]["i64"]["values"][3] = -8;
    write_file_atomic(dir / "wrong.json", expect.dump());
    CHECK(run_tool(*tool, "check --in " + quoted(dir / "moon.safetensors") + " --expect " + quoted(dir / "wrong.json")) == 1);
  }
}
