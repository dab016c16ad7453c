// safetensors reading (header validation, zero-copy tensors over a private mapping) and atomic writing.
// The rules checked here are listed in docs/checkpoint-format.md ("What the reader checks").
#include "io/safetensors.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "io/file_util.h"
#include "runtime/error.h"

namespace moon::io {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; so is moon's host");

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the reference library's limit
constexpr int kMaxJsonDepth = 64;                   // the header is 3 levels deep; deeper is not a header

// Every dtype name of the format: its width in bits, the moon dtype that loads it, and what to convert to.
struct DTypeEntry {
  const char* name;
  int bits;
  std::optional<DType> moon;
  const char* convert_to;  // the hint for dtypes moon does not load
};

const DTypeEntry kDTypes[] = {
    {"F32", 32, DType::F32, ""},    {"BF16", 16, DType::BF16, ""},  {"F16", 16, DType::F16, ""},
    {"I64", 64, DType::I64, ""},    {"I32", 32, DType::I32, ""},    {"U8", 8, DType::U8, ""},
    {"BOOL", 8, std::nullopt, "U8"}, {"I8", 8, std::nullopt, "I32"}, {"I16", 16, std::nullopt, "I32"},
    {"U16", 16, std::nullopt, "I32"}, {"U32", 32, std::nullopt, "I64"}, {"U64", 64, std::nullopt, "I64"},
    {"F64", 64, std::nullopt, "F32"}, {"C64", 64, std::nullopt, "two F32 tensors"},
    {"F8_E5M2", 8, std::nullopt, "BF16"}, {"F8_E4M3", 8, std::nullopt, "BF16"},
    {"F8_E8M0", 8, std::nullopt, "BF16"}, {"F6_E2M3", 6, std::nullopt, "BF16"},
    {"F6_E3M2", 6, std::nullopt, "BF16"}, {"F4", 4, std::nullopt, "BF16"},
};

const DTypeEntry* find_dtype(const std::string& name) {
  for (const DTypeEntry& e : kDTypes)
    if (name == e.name) return &e;
  return nullptr;
}

std::string known_dtype_list() {
  std::string s;
  for (const DTypeEntry& e : kDTypes) s.append(s.empty() ? "" : ", ").append(e.name);
  return s;
}

std::string shape_text(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s.append(i ? ", " : "").append(std::to_string(shape[i]));
  return s.append("]");
}

std::string range_text(const TensorInfo& t) {
  std::string s = "[";
  s.append(std::to_string(t.begin)).append(", ").append(std::to_string(t.end)).append("]");
  return s;
}

// A JSON value as short text for error messages.
std::string short_dump(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

// A non-negative JSON integer (nullopt for anything else, including floats and negatives).
std::optional<uint64_t> as_count(const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

// Parses the header text, rejecting duplicate names (which JSON itself allows) and absurd nesting.
json parse_header_json(const std::string& text, const std::string& label) {
  std::set<std::string> seen;
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    MOON_CHECK(depth <= kMaxJsonDepth, label, ": the header nests deeper than ", kMaxJsonDepth,
               " levels; not a safetensors header");
    if (event == json::parse_event_t::key && depth == 1) {
      const std::string key = parsed.get<std::string>();
      MOON_CHECK(seen.insert(key).second, label, ": tensor '", key, "' appears twice in the header");
    }
    return true;
  };
  try {
    return json::parse(text, on_event);
  } catch (const json::exception& e) {
    fail(label, ": the header is not valid JSON (", e.what(), ")");
  }
}

// One tensor entry of the header -> TensorInfo, checking types, overflow and the byte count.
TensorInfo parse_entry(const std::string& name, const json& entry, const std::string& label) {
  const std::string where = label + ": tensor '" + name + "'";
  MOON_CHECK(entry.is_object(), where, ": the entry must be an object with dtype, shape and data_offsets, got ",
             short_dump(entry));
  TensorInfo info;
  info.name = name;
  auto dtype_it = entry.find("dtype");
  MOON_CHECK(dtype_it != entry.end() && dtype_it->is_string(), where, ": \"dtype\" is missing or not a string");
  info.dtype = dtype_it->get<std::string>();
  const DTypeEntry* dt = find_dtype(info.dtype);
  MOON_CHECK(dt, where, ": unknown dtype \"", info.dtype, "\" (the format knows ", known_dtype_list(), ")");

  auto shape_it = entry.find("shape");
  MOON_CHECK(shape_it != entry.end() && shape_it->is_array(), where,
             ": \"shape\" is missing or not an array of non-negative integers");
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : *shape_it) {
    const std::optional<uint64_t> n = as_count(d);
    MOON_CHECK(n, where, ": \"shape\" must hold non-negative integers, got ", short_dump(*shape_it));
    MOON_CHECK(*n <= static_cast<uint64_t>(INT64_MAX), where, ": dimension ", *n, " does not fit in int64");
    info.shape.push_back(static_cast<int64_t>(*n));
    overflow = overflow || __builtin_mul_overflow(numel, *n, &numel);
  }
  uint64_t bits = 0;
  overflow = overflow || numel > static_cast<uint64_t>(INT64_MAX) ||
             __builtin_mul_overflow(numel, static_cast<uint64_t>(dt->bits), &bits);
  MOON_CHECK(!overflow, where, ": shape ", shape_text(info.shape), " has more elements than fit in 64 bits");
  MOON_CHECK(bits % 8 == 0, where, ": ", numel, " elements of ", info.dtype, " do not fill whole bytes");

  auto offsets_it = entry.find("data_offsets");
  MOON_CHECK(offsets_it != entry.end() && offsets_it->is_array() && offsets_it->size() == 2, where,
             ": \"data_offsets\" must be an array [begin, end] of two non-negative integers");
  const std::optional<uint64_t> begin = as_count((*offsets_it)[0]), end = as_count((*offsets_it)[1]);
  MOON_CHECK(begin && end, where, ": \"data_offsets\" must hold two non-negative integers, got ",
             short_dump(*offsets_it));
  info.begin = *begin;
  info.end = *end;
  MOON_CHECK(info.begin <= info.end, where, ": data_offsets ", range_text(info), " end before they begin");
  MOON_CHECK(info.end - info.begin == bits / 8, where, ": data_offsets ", range_text(info), " hold ",
             info.end - info.begin, " bytes but dtype ", info.dtype, " and shape ", shape_text(info.shape),
             " need ", bits / 8);
  return info;
}

}  // namespace

std::optional<DType> moon_dtype_of(const std::string& safetensors_dtype) {
  const DTypeEntry* e = find_dtype(safetensors_dtype);
  return e ? e->moon : std::nullopt;
}

const char* safetensors_dtype_name(DType dtype) {
  for (const DTypeEntry& e : kDTypes)
    if (e.moon == dtype) return e.name;
  fail("safetensors: moon dtype ", dtype_name(dtype), " has no safetensors name");
}

// ---- reading

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto mapping = std::make_shared<MappedFile>(path);
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->label_ = path;
  // The mapping is MAP_PRIVATE: allowing writes makes in-place updates of zero-copy tensors copy-on-write
  // (private to this process, never written to the file) instead of a crash. If refused, tensors are copies.
  if (mapping->size() > 0)
    f->writable_ = ::mprotect(const_cast<uint8_t*>(mapping->data()), mapping->size(), PROT_READ | PROT_WRITE) == 0;
  f->bytes_ = mapping->data();
  f->size_ = mapping->size();
  f->owner_ = mapping;
  f->parse(f->bytes_, f->size_);
  return f;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open_from_memory(std::vector<uint8_t> bytes,
                                                                   const std::string& label) {
  auto buffer = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->label_ = label;
  f->writable_ = true;
  f->bytes_ = buffer->data();
  f->size_ = buffer->size();
  f->owner_ = buffer;
  f->parse(f->bytes_, f->size_);
  return f;
}

// Validates the layout and the whole header; fills tensors_, index_ and metadata_.
void SafetensorsFile::parse(const uint8_t* bytes, size_t size) {
  const std::string& L = label_;
  MOON_CHECK(size > 0, L, ": the file is empty (0 bytes); a safetensors file starts with an 8-byte header length");
  MOON_CHECK(size >= 8, L, ": the file is only ", size,
             " bytes, shorter than the 8-byte header length that starts a safetensors file");
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // (u64 little-endian)
  MOON_CHECK(header_len <= kMaxHeaderBytes, L, ": header length ", header_len,
             " is over the 100 MiB limit; is this a safetensors file?");
  MOON_CHECK(header_len <= size - 8, L, ": header length ", header_len, " runs past the end of the file (",
             size, " bytes); the file is truncated or not a safetensors file");
  MOON_CHECK(header_len > 0 && bytes[8] == '{', L, ": the header is not a JSON object (it must start with '{'",
             header_len > 0 ? std::string(", got byte ") + std::to_string(bytes[8]) : std::string(), ")");
  const std::string text(reinterpret_cast<const char*>(bytes) + 8, header_len);
  const json header = parse_header_json(text, L);
  MOON_CHECK(header.is_object(), L, ": the header is not a JSON object");
  data_start_ = 8 + header_len;
  const uint64_t buffer_size = size - data_start_;

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      MOON_CHECK(value.is_object(), L, ": \"__metadata__\" must be an object of strings, got ", short_dump(value));
      for (const auto& [mk, mv] : value.items()) {
        MOON_CHECK(mv.is_string(), L, ": metadata value of '", mk, "' must be a string, got ", short_dump(mv),
                   " (the format allows only strings; store JSON as text)");
        metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    TensorInfo info = parse_entry(key, value, L);
    MOON_CHECK(info.end <= buffer_size, L, ": tensor '", key, "': data_offsets ", range_text(info),
               " run past the end of the data buffer (", buffer_size, " bytes)");
    tensors_.push_back(std::move(info));
  }

  // The ranges, sorted, must tile the buffer exactly: no overlap, no gap, nothing left over.
  std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end != b.end ? a.end < b.end : a.name < b.name;
  });
  uint64_t covered = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const TensorInfo& t = tensors_[i];
    if (t.begin < covered)
      fail(L, ": tensors '", tensors_[i - 1].name, "' ", range_text(tensors_[i - 1]), " and '", t.name, "' ",
           range_text(t), " overlap");
    MOON_CHECK(t.begin == covered, L, ": ", t.begin - covered, " bytes of the data buffer before tensor '", t.name,
               "' (at ", t.begin, ") belong to no tensor; the format allows no gaps");
    covered = t.end;
    index_[t.name] = i;
  }
  MOON_CHECK(covered == buffer_size, L, ": the data buffer has ", buffer_size, " bytes but the tensors cover only ",
             covered, "; trailing bytes belong to no tensor (truncated header or appended data?)");
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const TensorInfo& t : tensors_) out.push_back(t.name);
  return out;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    if (tensors_.empty()) fail(label_, ": no tensor named '", name, "' (the file holds no tensors)");
    fail(label_, ": no tensor named '", name, "' (the file holds ", tensors_.size(), " tensors, e.g. '",
         tensors_[0].name, "')");
  }
  return tensors_[it->second];
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& t = info(name);
  const std::optional<DType> dtype = moon_dtype_of(t.dtype);
  if (!dtype)
    fail("tensor '", name, "' in ", label_, " has dtype ", t.dtype, ", which moon does not load; convert it to ",
         find_dtype(t.dtype)->convert_to);
  const uint8_t* src = bytes_ + data_start_ + t.begin;  // (shape) C-order, little-endian
  const bool aligned = reinterpret_cast<uintptr_t>(src) % dtype_size(*dtype) == 0;
  if (t.nbytes() == 0 || !aligned || !writable_) {
    Tensor out = empty(t.shape, *dtype);
    if (t.nbytes() > 0) std::memcpy(out.raw_data(), src, t.nbytes());
    return out;
  }
  auto impl = std::make_shared<TensorImpl>();
  {
    std::lock_guard<std::mutex> lock(views_mutex_);
    std::weak_ptr<Storage>& view = views_[name];
    impl->storage = view.lock();
    if (!impl->storage) {
      impl->storage = Storage::wrap(const_cast<uint8_t*>(src), t.nbytes(), kCPU, owner_);
      view = impl->storage;
    }
  }
  impl->shape = t.shape;
  impl->strides = contiguous_strides(t.shape);
  impl->dtype = *dtype;
  return Tensor(std::move(impl));
}

Tensor SafetensorsFile::tensor_as(const std::string& name, DType dtype) const {
  Tensor t = tensor(name);
  return t.dtype() == dtype ? t : t.to(dtype);
}

// ---- writing

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Check everything that can be checked before a byte is written.
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    MOON_CHECK(!name.empty(), "save_safetensors: ", path, ": a tensor has an empty name");
    MOON_CHECK(name != "__metadata__", "save_safetensors: ", path,
               ": '__metadata__' is reserved for the metadata; rename the tensor");
    MOON_CHECK(seen.insert(name).second, "save_safetensors: ", path, ": tensor name '", name, "' is used twice");
    MOON_CHECK(t.defined(), "save_safetensors: ", path, ": tensor '", name, "' is undefined (an empty Tensor())");
  }
  // Storage order: larger elements first, then by name, so each tensor starts aligned to its element size.
  std::vector<const std::pair<std::string, Tensor>*> order;
  for (const auto& item : tensors) order.push_back(&item);
  std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    const size_t sa = dtype_size(a->second.dtype()), sb = dtype_size(b->second.dtype());
    return sa != sb ? sa > sb : a->first < b->first;
  });

  std::string header = "{";
  try {
    if (!metadata.empty()) header.append("\"__metadata__\":").append(json(metadata).dump());
    uint64_t offset = 0;
    for (const auto* item : order) {
      const Tensor& t = item->second;
      const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype());
      json entry = {{"dtype", safetensors_dtype_name(t.dtype())},
                    {"shape", t.shape()},
                    {"data_offsets", {offset, offset + nbytes}}};
      if (header.size() > 1) header += ',';
      header.append(json(item->first).dump()).append(":").append(entry.dump());
      offset += nbytes;
    }
  } catch (const json::exception& e) {
    fail("save_safetensors: ", path, ": a tensor name or metadata string is not valid UTF-8 (", e.what(), ")");
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');  // pad so the data buffer starts 8-aligned
  const uint64_t header_len = header.size();        // (u64 little-endian on disk)

  write_file_atomic(path, [&](const ByteSink& sink) {
    sink(&header_len, 8);
    sink(header.data(), header.size());
    for (const auto* item : order) {  // one tensor at a time: at most one extra host copy alive
      Tensor t = item->second.detach();
      if (!t.device().is_cpu()) t = t.to(kCPU);
      t = t.contiguous();
      const size_t nbytes = static_cast<size_t>(t.numel()) * dtype_size(t.dtype());
      if (nbytes > 0) sink(t.raw_data(), nbytes);
    }
  });
}

}  // namespace moon::io
