// safetensors: round trips of every dtype, the exact bytes moon writes, zero-copy reads, sharded checkpoints,
// atomic writes, every malformed-file error (suite `safetensors`), and seeded corruption (`fuzz_safetensors`).
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "io/file_util.h"
#include "io/safetensors.h"
#include "io/safetensors_sharded.h"
#include "test_util.h"

namespace fs = std::filesystem;
using moon::DType;
using moon::Tensor;
using moon::test::contains;
using moon::test::TempDir;
using moon::test::error_of;
using namespace moon::io;

namespace {


// The elements of t as contiguous bytes (C order).
std::vector<uint8_t> bytes_of(const Tensor& t) {
  Tensor c = t.contiguous();
  std::vector<uint8_t> out(static_cast<size_t>(c.numel()) * moon::dtype_size(c.dtype()));
  if (!out.empty()) std::memcpy(out.data(), c.raw_data(), out.size());
  return out;
}

std::vector<uint8_t> file_bytes(const std::string& path) { return read_file_bytes(path); }

// A safetensors image: u64 length (the header's, unless `length` is given), the header text, `data` bytes.
std::vector<uint8_t> make_file(const std::string& header, size_t data_bytes,
                               uint64_t length = std::numeric_limits<uint64_t>::max()) {
  const uint64_t n = length == std::numeric_limits<uint64_t>::max() ? header.size() : length;
  std::vector<uint8_t> out(8 + header.size() + data_bytes);
  std::memcpy(out.data(), &n, 8);
  std::copy(header.begin(), header.end(), out.begin() + 8);
  for (size_t i = 0; i < data_bytes; ++i) out[8 + header.size() + i] = static_cast<uint8_t>(i * 7 + 1);
  return out;
}

// The error of opening `bytes` (as label "bad.safetensors"), or "" if it opens.
std::string open_error(const std::vector<uint8_t>& bytes) {
  return error_of([&] { SafetensorsFile::open_from_memory(bytes, "bad.safetensors"); });
}

// One tensor of every moon dtype, odd shapes, a scalar and empty tensors.
std::vector<std::pair<std::string, Tensor>> every_dtype() {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> f32(15);
  for (size_t i = 0; i < f32.size(); ++i) f32[i] = std::sin(static_cast<float>(i) * 1.7f) * 1e3f;
  f32[1] = -0.0f, f32[2] = inf, f32[3] = -inf, f32[4] = nan, f32[5] = 1e-45f;
  const std::vector<uint16_t> bf16_bits = {0x3f80, 0xc000, 0x7f80, 0x0001, 0x8000, 0x4049};  // 1, -2, inf, ...
  std::vector<uint8_t> u8(9);
  for (size_t i = 0; i < u8.size(); ++i) u8[i] = static_cast<uint8_t>(i * 31);
  const Tensor f16 = moon::from_vector(std::vector<float>{0.5f, -65504.f, 6.1e-5f, 3.14f, 0.f, -1.f, 1024.f},
                                       {7}, DType::F16);
  return {
      {"f32", moon::from_vector(f32, {3, 5}, DType::F32)},
      {"bf16", moon::from_vector(bf16_bits, {2, 3}, DType::BF16)},
      {"f16", f16},
      {"i64", moon::from_vector(std::vector<int64_t>{std::numeric_limits<int64_t>::min(), -1, 0,
                                                     std::numeric_limits<int64_t>::max()},
                                {2, 2}, DType::I64)},
      {"i32", moon::from_vector(std::vector<int32_t>{-7, 0, 7, std::numeric_limits<int32_t>::max(), 12345}, {5},
                                DType::I32)},
      {"u8", moon::from_vector(u8, {3, 3, 1}, DType::U8)},
      {"scalar", moon::scalar_tensor(2.5, DType::F32)},
      {"empty_f32", moon::empty({0, 4}, DType::F32)},
      {"empty_i64", moon::empty({3, 0}, DType::I64)},
  };
}

// Checks that `f` holds exactly `tensors` (dtype, shape, bytes).
template <class Reader>
void check_same(const Reader& f, const std::vector<std::pair<std::string, Tensor>>& tensors) {
  CHECK(f.names().size() == tensors.size());
  for (const auto& [name, expected] : tensors) {
    CAPTURE(name);
    REQUIRE(f.contains(name));
    const Tensor got = f.tensor(name);
    CHECK(got.dtype() == expected.dtype());
    CHECK(got.shape() == expected.shape());
    CHECK(bytes_of(got) == bytes_of(expected));
  }
}

bool has_temp_files(const fs::path& folder) {
  for (const auto& e : fs::directory_iterator(folder))
    if (contains(e.path().filename().string(), ".tmp.")) return true;
  return false;
}

}  // namespace

TEST_SUITE("safetensors") {
  TEST_CASE("every dtype, a scalar, empty tensors and metadata survive a round trip") {
    TempDir dir;
    const auto tensors = every_dtype();
    const std::map<std::string, std::string> meta = {{"moon.format_version", "1"}, {"note", "héllo \"q\"\n"}};
    save_safetensors(dir / "a.safetensors", tensors, meta);
    auto f = SafetensorsFile::open(dir / "a.safetensors");
    check_same(*f, tensors);
    CHECK(f->metadata() == meta);
    CHECK(f->data_start() % 8 == 0);
    // File order: 8-byte elements first, then 4, 2, 1; by name within a size.
    CHECK(f->names() == std::vector<std::string>{"empty_i64", "i64", "empty_f32", "f32", "i32", "scalar", "bf16",
                                                 "f16", "u8"});
    const TensorInfo& info = f->info("f32");
    CHECK(info.dtype == "F32");
    CHECK(info.shape == moon::Shape{3, 5});
    CHECK(info.nbytes() == 60);
    CHECK(f->info("scalar").shape.empty());
    // Aligned data is not copied: the tensor's storage is the mapping, kept alive by the tensor alone.
    Tensor i64 = f->tensor("i64");
    CHECK(i64.impl()->storage->owner != nullptr);
    f.reset();
    CHECK(i64.to_vector<int64_t>()[3] == std::numeric_limits<int64_t>::max());
  }

  TEST_CASE("the bytes moon writes: length, header padded with spaces to 8, data") {
    TempDir dir;
    save_safetensors(dir / "t.safetensors", {{"a", moon::from_vector(std::vector<float>{1.f, 2.f}, {2})}},
                     {{"k", "v"}});
    const std::vector<uint8_t> bytes = file_bytes(dir / "t.safetensors");
    const std::string expected_json = R"({"__metadata__":{"k":"v"},"a":{"data_offsets":[0,8],"dtype":"F32","shape":[2]}})";
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    CHECK(n % 8 == 0);
    CHECK(n == (expected_json.size() + 7) / 8 * 8);
    const std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(n));
    CHECK(header == expected_json + std::string(n - expected_json.size(), ' '));
    REQUIRE(bytes.size() == 8 + n + 8);
    float values[2];
    std::memcpy(values, bytes.data() + 8 + n, 8);
    CHECK(values[0] == 1.f);
    CHECK(values[1] == 2.f);
  }

  TEST_CASE("zero-copy tensors may be written in place; the file does not change") {
    TempDir dir;
    const Tensor src = moon::from_vector(std::vector<float>{1, 2, 3, 4}, {4});
    save_safetensors(dir / "w.safetensors", {{"w", src}});
    const std::vector<uint8_t> before = file_bytes(dir / "w.safetensors");
    auto f = SafetensorsFile::open(dir / "w.safetensors");
    Tensor w = f->tensor("w");
    REQUIRE(w.impl()->storage->owner != nullptr);
    w.fill_(9.0);
    CHECK(w.to_vector<float>() == std::vector<float>{9, 9, 9, 9});
    Tensor again = f->tensor("w");  // shares w's storage (and its version counter) while w lives
    CHECK(again.impl()->storage == w.impl()->storage);
    CHECK(again.version() == w.version());
    CHECK(again.to_vector<float>() == std::vector<float>{9, 9, 9, 9});
    CHECK(f->tensor_as("w", DType::BF16).to_vector<float>() == std::vector<float>{9, 9, 9, 9});
    CHECK(file_bytes(dir / "w.safetensors") == before);
    CHECK(SafetensorsFile::open(dir / "w.safetensors")->tensor("w").to_vector<float>() ==
          std::vector<float>{1, 2, 3, 4});
  }

  TEST_CASE("tensor_as converts, and misaligned data is copied") {
    TempDir dir;
    const std::vector<uint16_t> bits = {0x3f80, 0xbfc0, 0x4120};  // 1, -1.5, 10
    save_safetensors(dir / "b.safetensors", {{"b", moon::from_vector(bits, {3}, DType::BF16)}});
    auto f = SafetensorsFile::open(dir / "b.safetensors");
    const Tensor as_f32 = f->tensor_as("b", DType::F32);
    CHECK(as_f32.dtype() == DType::F32);
    CHECK(as_f32.to_vector<float>() == std::vector<float>{1.f, -1.5f, 10.f});

    // A 1-byte tensor first puts the F32 tensor at buffer offset 1: not 4-aligned, so it is copied.
    const std::string header =
        R"({"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"x":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
    // Padded to 8 so that the buffer starts 8-aligned in memory and 'x' sits at an odd address.
    std::vector<uint8_t> bytes = make_file(header + std::string((8 - header.size() % 8) % 8, ' '), 0);
    bytes.push_back(7);
    const float xs[2] = {3.5f, -0.25f};
    bytes.insert(bytes.end(), reinterpret_cast<const uint8_t*>(xs), reinterpret_cast<const uint8_t*>(xs) + 8);
    auto g = SafetensorsFile::open_from_memory(bytes, "misaligned");
    const Tensor x = g->tensor("x");
    CHECK(x.impl()->storage->owner == nullptr);  // a copy
    CHECK(x.to_vector<float>() == std::vector<float>{3.5f, -0.25f});
    CHECK(g->tensor("u").to_vector<uint8_t>() == std::vector<uint8_t>{7});
    CHECK(g->names() == std::vector<std::string>{"u", "x"});
  }

  TEST_CASE("non-contiguous and offset views are written as their values") {
    TempDir dir;
    const Tensor base = moon::arange(0, 12, 1, DType::F32).reshape({3, 4});
    const Tensor t = base.transpose(0, 1);  // (4, 3), strides (1, 4)
    const Tensor s = base.slice(1, 1, 3);   // (3, 2), offset 1
    REQUIRE(!t.is_contiguous());
    save_safetensors(dir / "v.safetensors", {{"t", t}, {"s", s}});
    auto f = SafetensorsFile::open(dir / "v.safetensors");
    CHECK(f->tensor("t").to_vector<float>() == t.contiguous().to_vector<float>());
    CHECK(f->tensor("t").to_vector<float>()[1] == 4.f);
    CHECK(f->tensor("s").to_vector<float>() == std::vector<float>{1, 2, 5, 6, 9, 10});
  }

  TEST_CASE("a dtype moon does not load is listed, and is an error only when requested") {
    const std::string header =
        R"({"d":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"i":{"dtype":"I32","shape":[2],"data_offsets":[8,16]}})";
    auto f = SafetensorsFile::open_from_memory(make_file(header, 16), "mixed.safetensors");
    CHECK(f->names() == std::vector<std::string>{"d", "i"});
    CHECK(f->info("d").dtype == "F64");
    CHECK(error_of([&] { f->tensor("d"); }) ==
          "tensor 'd' in mixed.safetensors has dtype F64, which moon does not load; convert it to F32");
    CHECK(f->tensor("i").numel() == 2);
    CHECK(error_of([&] { f->tensor("nope"); }) ==
          "mixed.safetensors: no tensor named 'nope' (the file holds 2 tensors, e.g. 'd')");
    CHECK(!moon_dtype_of("F64"));
    CHECK(moon_dtype_of("BF16") == DType::BF16);
  }

  TEST_CASE("sharded checkpoints: shards, the index, and Checkpoint over every entry point") {
    TempDir dir;
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (int i = 0; i < 5; ++i)  // 100 bytes each
      tensors.push_back({"layer" + std::to_string(i) + ".w", moon::full({25}, i + 0.5, DType::F32)});
    tensors.push_back({"ids", moon::from_vector(std::vector<int64_t>{4, 5}, {2}, DType::I64)});  // 16 bytes
    const std::map<std::string, std::string> meta = {{"moon.config", "{\"dim\":8}"}};
    save_sharded(dir / "ck", tensors, 250, meta);

    // 100+100 | 100+100 | 100+16
    const fs::path ck = std::filesystem::path(dir.path) / "ck";
    CHECK(fs::exists(ck / "model-00001-of-00003.safetensors"));
    CHECK(fs::exists(ck / "model-00003-of-00003.safetensors"));
    CHECK(!fs::exists(ck / "model.safetensors"));
    const auto index = nlohmann::json::parse(read_file_text((ck / kIndexFileName).string()));
    CHECK(index["metadata"]["total_size"] == 516);
    CHECK(index["metadata"]["moon.config"] == "{\"dim\":8}");
    CHECK(index["weight_map"]["layer0.w"] == "model-00001-of-00003.safetensors");
    CHECK(index["weight_map"]["layer3.w"] == "model-00002-of-00003.safetensors");
    CHECK(index["weight_map"]["ids"] == "model-00003-of-00003.safetensors");
    CHECK(index["weight_map"].size() == 6);
    CHECK(SafetensorsFile::open((ck / "model-00002-of-00003.safetensors").string())->metadata() == meta);

    for (const std::string& entry : {(ck).string(), (ck / kIndexFileName).string()}) {
      CAPTURE(entry);
      Checkpoint c(entry);
      CHECK(c.shards().size() == 3);
      check_same(c, tensors);
      CHECK(c.names() ==
            std::vector<std::string>{"layer0.w", "layer1.w", "layer2.w", "layer3.w", "ids", "layer4.w"});
      CHECK(c.metadata().at("total_size") == "516");
      CHECK(c.metadata().at("moon.config") == "{\"dim\":8}");
      CHECK(c.tensor_as("ids", DType::F32).to_vector<float>() == std::vector<float>{4, 5});
      CHECK(error_of([&] { c.tensor("missing"); }) ==
            entry + ": the checkpoint has no tensor named 'missing' (6 tensors; list them with names())");
    }
    // One shard: model.safetensors and no index; the earlier index and shards are removed.
    save_sharded(dir / "ck", tensors, 1 << 20, meta);
    CHECK(fs::exists(ck / "model.safetensors"));
    CHECK(!fs::exists(ck / kIndexFileName));
    CHECK(!fs::exists(ck / "model-00001-of-00003.safetensors"));
    Checkpoint single(ck.string());
    check_same(single, tensors);
    CHECK(single.metadata() == meta);
    check_same(Checkpoint((ck / "model.safetensors").string()), tensors);
    // And back to shards: model.safetensors goes.
    save_sharded(dir / "ck", tensors, 300, {});
    CHECK(!fs::exists(ck / "model.safetensors"));
    CHECK(Checkpoint(ck.string()).shards().size() == 2);
    CHECK(error_of([&] { save_sharded(dir / "ck", tensors, 300, {{"total_size", "1"}}); }) ==
          "save_sharded: " + (dir / "ck") + ": metadata key 'total_size' is reserved for the index; use another key");
  }

  TEST_CASE("Checkpoint errors: missing shard, tensor not in its shard, tensor in two shards, bad folders") {
    TempDir dir;
    const Tensor a = moon::full({4}, 1.0), b = moon::full({4}, 2.0);
    save_safetensors(dir / "s1.safetensors", {{"a", a}});
    save_safetensors(dir / "s2.safetensors", {{"b", b}, {"a", a}});
    const std::string index = dir / "idx.json";
    auto with_index = [&](const std::string& text) {
      write_file_atomic(index, text);
      return error_of([&] { Checkpoint c(index); });
    };
    CHECK(with_index(R"({"weight_map":{"a":"s1.safetensors","b":"s3.safetensors"}})") ==
          index + ": shard 's3.safetensors' (holding 'b') does not exist at " + (dir / "s3.safetensors") +
              "; the checkpoint is incomplete");
    CHECK(with_index(R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors"}})") ==
          index + ": the index puts 'b' in s1.safetensors but that shard does not hold it");
    CHECK(with_index(R"({"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})") ==
          index + ": tensor 'a' is in two shards, " + (dir / "s1.safetensors") + " and " + (dir / "s2.safetensors"));
    CHECK(with_index(R"({"weight_map":{"b":"s2.safetensors","b":"s2.safetensors"}})") ==
          index + ": tensor 'b' is listed twice in the weight_map");
    CHECK(with_index(R"({"weight_map":{"b":"../s2.safetensors"}})") ==
          index + ": weight_map entry of 'b' names '../s2.safetensors', which is not a file in the index's folder");
    CHECK(with_index(R"({"weight_map":{"b":3}})") == index + ": weight_map entry of 'b' is not a file name");
    CHECK(with_index(R"({"metadata":{}})") ==
          index + ": expected an object with a \"weight_map\" object {tensor: shard file}");
    CHECK(contains(with_index("{oops"), index + ": not valid JSON ("));
    // Only s2 listed: a checkpoint of its two tensors.
    write_file_atomic(index, R"({"metadata":{"total_size":32},"weight_map":{"a":"s2.safetensors","b":"s2.safetensors"}})");
    Checkpoint ok(index);
    CHECK(ok.names() == std::vector<std::string>{"a", "b"});
    CHECK(ok.metadata().at("total_size") == "32");

    fs::create_directories(std::filesystem::path(dir.path) / "empty");
    CHECK(error_of([&] { Checkpoint c(dir / "empty"); }) ==
          (dir / "empty") + ": the folder has neither model.safetensors nor model.safetensors.index.json");
    CHECK(contains(error_of([&] { Checkpoint c(dir / "nothing"); }), (dir / "nothing") + ": no such checkpoint"));
    fs::create_directories(std::filesystem::path(dir.path) / "both");
    save_safetensors(dir / "both/model.safetensors", {{"a", a}});
    write_file_atomic(dir / "both/model.safetensors.index.json", R"({"weight_map":{}})");
    CHECK(contains(error_of([&] { Checkpoint c(dir / "both"); }), "holds both model.safetensors and"));
  }

  TEST_CASE("writes are atomic: no temp file after success, a failed write leaves the old file") {
    TempDir dir;
    const std::string path = dir / "c.safetensors";
    const Tensor a = moon::full({3}, 1.0);
    save_safetensors(path, {{"a", a}});
    CHECK(!has_temp_files(dir.path));
    const std::vector<uint8_t> before = file_bytes(path);
    CHECK(error_of([&] { save_safetensors(path, {{"a", a}, {"a", a}}); }) ==
          "save_safetensors: " + path + ": tensor name 'a' is used twice");
    CHECK(error_of([&] { save_safetensors(path, {{"", a}}); }) ==
          "save_safetensors: " + path + ": a tensor has an empty name");
    CHECK(error_of([&] { save_safetensors(path, {{"__metadata__", a}}); }) ==
          "save_safetensors: " + path + ": '__metadata__' is reserved for the metadata; rename the tensor");
    CHECK(error_of([&] { save_safetensors(path, {{"a", a}, {"u", Tensor()}}); }) ==
          "save_safetensors: " + path + ": tensor 'u' is undefined (an empty Tensor())");
    CHECK(contains(error_of([&] { save_safetensors(path, {{"bad\xff", a}}); }), "is not valid UTF-8"));
    CHECK(file_bytes(path) == before);
    CHECK(!has_temp_files(dir.path));
    const std::string missing = dir / "no/such/folder/c.safetensors";
    CHECK(contains(error_of([&] { save_safetensors(missing, {{"a", a}}); }), "does not exist"));
    CHECK(!fs::exists(missing));
  }

  TEST_CASE("every malformed file is a moon::Error that names the file and says what is wrong") {
    TempDir dir;
    {  // through the mapped-file path: empty and short files
      std::ofstream(dir / "empty.safetensors").close();
      CHECK(error_of([&] { SafetensorsFile::open(dir / "empty.safetensors"); }) ==
            (dir / "empty.safetensors") +
                ": the file is empty (0 bytes); a safetensors file starts with an 8-byte header length");
      std::ofstream(dir / "short.safetensors") << "abc";
      CHECK(error_of([&] { SafetensorsFile::open(dir / "short.safetensors"); }) ==
            (dir / "short.safetensors") +
                ": the file is only 3 bytes, shorter than the 8-byte header length that starts a safetensors file");
      CHECK(contains(error_of([&] { SafetensorsFile::open(dir / "absent.safetensors"); }), "absent.safetensors"));
    }
    const std::string P = "bad.safetensors: ";
    auto entry = [](const std::string& body) { return "{\"t\":" + body + "}"; };
    CHECK(open_error(make_file("{}", 0, 100)) ==
          P + "header length 100 runs past the end of the file (10 bytes); the file is truncated or not a "
              "safetensors file");
    CHECK(open_error(make_file("{}", 0, 1ull << 40)) ==
          P + "header length 1099511627776 is over the 100 MiB limit; is this a safetensors file?");
    CHECK(contains(open_error(make_file("{\"t\": nope}", 0)), P + "the header is not valid JSON ("));
    CHECK(contains(open_error(make_file("{\"t\":{}} x", 0)), P + "the header is not valid JSON ("));
    CHECK(open_error(make_file("[1, 2]", 0)) ==
          P + "the header is not a JSON object (it must start with '{', got byte 91)");
    CHECK(open_error(make_file("", 0)) == P + "the header is not a JSON object (it must start with '{')");
    CHECK(open_error(make_file(entry("[1]"), 0)) ==
          P + "tensor 't': the entry must be an object with dtype, shape and data_offsets, got [1]");
    CHECK(open_error(make_file(entry(R"({"shape":[1],"data_offsets":[0,4]})"), 4)) ==
          P + "tensor 't': \"dtype\" is missing or not a string");
    CHECK(open_error(make_file(entry(R"({"dtype":32,"shape":[1],"data_offsets":[0,4]})"), 4)) ==
          P + "tensor 't': \"dtype\" is missing or not a string");
    CHECK(contains(open_error(make_file(entry(R"({"dtype":"F33","shape":[1],"data_offsets":[0,4]})"), 4)),
                   P + "tensor 't': unknown dtype \"F33\" (the format knows F32, BF16, F16,"));
    CHECK(open_error(make_file(entry(R"({"dtype":"F32","data_offsets":[0,4]})"), 4)) ==
          P + "tensor 't': \"shape\" is missing or not an array of non-negative integers");
    CHECK(open_error(make_file(entry(R"({"dtype":"F32","shape":[-1],"data_offsets":[0,4]})"), 4)) ==
          P + "tensor 't': \"shape\" must hold non-negative integers, got [-1]");
    CHECK(open_error(make_file(entry(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})"), 4)) ==
          P + "tensor 't': \"shape\" must hold non-negative integers, got [1.5]");
    CHECK(open_error(make_file(entry(R"({"dtype":"F32","shape":[1]})"), 4)) ==
          P + "tensor 't': \"data_offsets\" must be an array [begin, end] of two non-negative integers");
    CHECK(open_error(make_file(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,8]})"), 4)) ==
          P + "tensor 't': \"data_offsets\" must be an array [begin, end] of two non-negative integers");
    CHECK(open_error(make_file(entry(R"({"dtype":"F32","shape":[1],"data_offsets":["0",4]})"), 4)) ==
          P + "tensor 't': \"data_offsets\" must hold two non-negative integers, got [\"0\",4]");
    CHECK(open_error(make_file(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[4,0]})"), 4)) ==
          P + "tensor 't': data_offsets [4, 0] end before they begin");
    CHECK(open_error(make_file(entry(R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,20]})"), 20)) ==
          P + "tensor 't': data_offsets [0, 20] hold 20 bytes but dtype F32 and shape [2, 3] need 24");
    CHECK(open_error(make_file(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), 4)) ==
          P + "tensor 't': data_offsets [0, 8] run past the end of the data buffer (4 bytes)");
    CHECK(open_error(make_file(
              entry(R"({"dtype":"U8","shape":[4294967296,4294967296,4],"data_offsets":[0,4]})"), 4)) ==
          P + "tensor 't': shape [4294967296, 4294967296, 4] has more elements than fit in 64 bits");
    CHECK(open_error(make_file(entry(R"({"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,4]})"),
                               4)) ==
          P + "tensor 't': shape [2305843009213693952] has more elements than fit in 64 bits");
    CHECK(open_error(make_file(entry(R"({"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,4]})"),
                               4)) ==
          P + "tensor 't': dimension 18446744073709551615 does not fit in int64");
    CHECK(open_error(make_file(entry(R"({"dtype":"F4","shape":[3],"data_offsets":[0,1]})"), 1)) ==
          P + "tensor 't': 3 elements of F4 do not fill whole bytes");
    // 'a' at [0, 4] and 'b' at [b, e].
    auto pair_file = [&](int b, int e, size_t data) {
      std::string h = R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[)";
      h.append(std::to_string(b)).append(",").append(std::to_string(e)).append("]}}");
      return make_file(h, data);
    };
    CHECK(open_error(pair_file(2, 6, 6)) == P + "tensors 'a' [0, 4] and 'b' [2, 6] overlap");
    CHECK(open_error(pair_file(6, 10, 10)) ==
          P + "2 bytes of the data buffer before tensor 'b' (at 6) belong to no tensor; the format allows no gaps");
    CHECK(open_error(pair_file(4, 8, 9)) ==
          P + "the data buffer has 9 bytes but the tensors cover only 8; trailing bytes belong to no tensor "
              "(truncated header or appended data?)");
    CHECK(open_error(make_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1)) ==
          P + "tensor 'a' appears twice in the header");
    CHECK(open_error(make_file(R"({"__metadata__":{"k":1}})", 0)) ==
          P + "metadata value of 'k' must be a string, got 1 (the format allows only strings; store JSON as text)");
    CHECK(open_error(make_file(R"({"__metadata__":[1]})", 0)) ==
          P + "\"__metadata__\" must be an object of strings, got [1]");
    CHECK(contains(open_error(make_file("{\"t\":" + std::string(100, '[') + std::string(100, ']') + "}", 0)),
                   "nests deeper than 64 levels"));
    CHECK(contains(open_error(make_file("{\"\xff\":1}", 0)), P + "the header is not valid JSON ("));
    // Valid corner cases: no tensors at all; trailing spaces; an empty tensor sharing an offset.
    CHECK(open_error(make_file("{}", 0)).empty());
    CHECK(open_error(make_file("{}      ", 0)).empty());
    CHECK(open_error(make_file(R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]},"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 4)).empty());
  }
}

// ---- seeded corruption: every mutant either opens (and every tensor reads) or throws moon::Error

namespace {

uint64_t g_checksum = 0;  // every byte read lands here, so the reads cannot be optimised away

// Opens `bytes` and touches every element of every tensor moon loads; returns whether it opened.
bool open_and_read(const std::vector<uint8_t>& bytes) {
  try {
    auto f = SafetensorsFile::open_from_memory(bytes, "mutant.safetensors");
    for (const std::string& name : f->names()) {
      if (!moon_dtype_of(f->info(name).dtype)) {
        CHECK(!error_of([&] { f->tensor(name); }).empty());
        continue;
      }
      const std::vector<uint8_t> data = bytes_of(f->tensor(name));
      for (uint8_t b : data) g_checksum += b;
    }
    for (const auto& [k, v] : f->metadata()) g_checksum += k.size() + v.size();
    return true;
  } catch (const moon::Error&) {
    return false;
  }
}

// Applies one random mutation: bit flips in the length or header, truncation, byte insertion, textual edits
// of the header (digits, brackets, quotes), or a new length field.
std::vector<uint8_t> mutate(std::vector<uint8_t> b, std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  uint64_t header_len = 0;
  std::memcpy(&header_len, b.data(), 8);
  const size_t header_end = static_cast<size_t>(std::min<uint64_t>(b.size(), 8 + std::min<uint64_t>(header_len, b.size())));
  uint64_t op = rng() % 8;
  const bool header_op = op == 1 || op == 3 || op == 5 || op == 7;
  if (header_op && header_end <= 8) op = 0;  // no header bytes to edit
  switch (op) {
    case 0:  // flip a bit of the length
      b[pick(8)] ^= static_cast<uint8_t>(1u << pick(8));
      break;
    case 1:  // flip bits in the header
      for (int k = 0; k < 1 + static_cast<int>(pick(3)); ++k) b[8 + pick(header_end - 8)] ^= static_cast<uint8_t>(1u << pick(8));
      break;
    case 2:  // truncate
      b.resize(pick(b.size()));
      break;
    case 3: {  // insert bytes into the header, keeping (or not) the length in step
      const size_t at = 8 + pick(header_end - 8);
      const size_t n = 1 + pick(4);
      for (size_t k = 0; k < n; ++k) b.insert(b.begin() + static_cast<long>(at), static_cast<uint8_t>(rng()));
      if (rng() % 2) {
        const uint64_t len = header_len + n;
        std::memcpy(b.data(), &len, 8);
      }
      break;
    }
    case 4: {  // replace a digit with another digit (shapes and offsets go wrong in plausible ways)
      std::vector<size_t> digits;
      for (size_t i = 8; i < header_end; ++i)
        if (b[i] >= '0' && b[i] <= '9') digits.push_back(i);
      if (!digits.empty()) b[digits[pick(digits.size())]] = static_cast<uint8_t>('0' + pick(10));
      break;
    }
    case 5: {  // replace a byte of the header with JSON punctuation
      static const char kPunct[] = "{}[]\",:- 09e.\\";
      b[8 + pick(header_end - 8)] = static_cast<uint8_t>(kPunct[pick(sizeof kPunct - 1)]);
      break;
    }
    case 6: {  // a new length field, small or wild
      const uint64_t len = rng() % 2 ? header_len + pick(17) - 8 : rng();
      std::memcpy(b.data(), &len, 8);
      break;
    }
    default: {  // delete a run of header bytes, length unchanged
      const size_t at = 8 + pick(header_end - 8);
      const size_t n = std::min(b.size() - at, 1 + pick(6));
      b.erase(b.begin() + static_cast<long>(at), b.begin() + static_cast<long>(at + n));
      break;
    }
  }
  return b;
}

}  // namespace

TEST_SUITE("fuzz_safetensors") {
  TEST_CASE("thousands of seeded mutations of valid files open cleanly or throw moon::Error") {
    TempDir dir;
    save_safetensors(dir / "a.safetensors", every_dtype(), {{"moon.format_version", "1"}, {"k", "v"}});
    save_safetensors(dir / "b.safetensors",
                     {{"x", moon::from_vector(std::vector<float>{1, 2, 3}, {3})},
                      {"y", moon::from_vector(std::vector<uint8_t>{1, 2}, {1, 2}, DType::U8)}});
    std::vector<std::vector<uint8_t>> seeds = {file_bytes(dir / "a.safetensors"), file_bytes(dir / "b.safetensors")};
    // A file with a dtype moon does not load, misaligned data and padding.
    seeds.push_back(make_file(
        R"({"d":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"u":{"dtype":"U8","shape":[3],"data_offsets":[8,11]},"f":{"dtype":"BF16","shape":[2],"data_offsets":[11,15]}}   )",
        15));
    for (const auto& s : seeds) REQUIRE(open_and_read(s));

    std::mt19937_64 rng(20240611);
    int opened = 0, rejected = 0;
    const int kMutants = 20000;
    for (int i = 0; i < kMutants; ++i) {
      std::vector<uint8_t> b = seeds[static_cast<size_t>(i) % seeds.size()];
      const int rounds = 1 + static_cast<int>(rng() % 3);
      for (int r = 0; r < rounds && b.size() >= 8; ++r) b = mutate(std::move(b), rng);
      (open_and_read(b) ? opened : rejected)++;
      if (i % 500 == 0) {  // the mapped-file path too
        const std::string path = dir / "mutant.safetensors";
        write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
        try {
          auto f = SafetensorsFile::open(path);
          for (const std::string& name : f->names())
            if (moon_dtype_of(f->info(name).dtype)) (void)bytes_of(f->tensor(name));
        } catch (const moon::Error&) {
        }
      }
    }
    MESSAGE("mutants: " << opened << " opened, " << rejected << " rejected");
    CHECK(opened + rejected == kMutants);
    CHECK(opened > 50);    // some mutations keep the file valid (e.g. a digit of the metadata)
    CHECK(rejected > 2000);  // most break it
  }

  TEST_CASE("mutated shard indexes open cleanly or throw moon::Error") {
    TempDir dir;
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (int i = 0; i < 4; ++i) tensors.push_back({std::string("t").append(std::to_string(i)), moon::full({8}, i, DType::F32)});
    save_sharded(dir / "ck", tensors, 40);
    const std::string index = read_file_text(dir / "ck/model.safetensors.index.json");
    REQUIRE(Checkpoint(dir / "ck").shards().size() == 4);
    std::mt19937_64 rng(77);
    int opened = 0, rejected = 0;
    for (int i = 0; i < 400; ++i) {
      std::string text = index;
      const size_t at = static_cast<size_t>(rng() % text.size());
      switch (rng() % 4) {
        case 0: text[at] = static_cast<char>(text[at] ^ (1 << (rng() % 8))); break;
        case 1: text.resize(at); break;
        case 2: text.erase(at, 1 + rng() % 8); break;
        default: {
          static const char kPunct[] = "{}[]\",:0123456789-/.";
          text[at] = kPunct[rng() % (sizeof kPunct - 1)];
          break;
        }
      }
      const std::string path = dir / "ck/mutant.index.json";  // next to the shards
      std::ofstream(path, std::ios::binary) << text;
      try {
        Checkpoint c(path);
        for (const std::string& name : c.names()) (void)bytes_of(c.tensor(name));
        ++opened;
      } catch (const moon::Error&) {
        ++rejected;
      }
    }
    MESSAGE("index mutants: " << opened << " opened, " << rejected << " rejected");
    CHECK(opened > 0);
    CHECK(rejected > 100);
  }
}
