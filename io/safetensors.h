// safetensors files (Hugging Face's tensor container): a validating, memory-mapped reader and an atomic writer.
//
// Layout: u64 little-endian N | N bytes of UTF-8 JSON header | data buffer. The header maps each tensor name
// to {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]} (offsets relative to the buffer start,
// data C-order little-endian) and may hold "__metadata__": {str: str}. docs/checkpoint-format.md has the
// rules moon follows and the metadata keys it reserves.
//
//   auto f = moon::io::SafetensorsFile::open("model.safetensors");
//   moon::Tensor w = f->tensor("lm_head.weight");                 // zero copy over the mapping when aligned
//   moon::Tensor w32 = f->tensor_as("lm_head.weight", moon::DType::F32);
//   moon::io::save_safetensors("out.safetensors", {{"w", w}}, {{"moon.format_version", "1"}});
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace moon::io {

// One tensor's header entry.
struct TensorInfo {
  std::string name;
  std::string dtype;   // the safetensors name: "F32", "BF16", "F64", ...
  Shape shape;         // may be [] (a scalar) or hold zeros (an empty tensor)
  uint64_t begin = 0;  // byte range [begin, end) in the data buffer
  uint64_t end = 0;
  uint64_t nbytes() const { return end - begin; }
};

// The moon dtype of a safetensors dtype name (F32, BF16, F16, I64, I32, U8), or nullopt for the others.
std::optional<DType> moon_dtype_of(const std::string& safetensors_dtype);
// The safetensors name of a moon dtype ("F32", "BF16", ...).
const char* safetensors_dtype_name(DType dtype);

class SafetensorsFile {
 public:
  // Maps the file and validates the whole header (see docs/checkpoint-format.md, "What the reader checks").
  // Every problem is a moon::Error naming the file and, where there is one, the tensor.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  // The same over bytes held in memory; `label` stands for the file name in error messages.
  static std::shared_ptr<SafetensorsFile> open_from_memory(std::vector<uint8_t> bytes, const std::string& label);

  const std::string& path() const { return label_; }
  std::vector<std::string> names() const;  // in file order (by data offset)
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // throws naming the file for an unknown name
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  size_t data_start() const { return data_start_; }  // file offset of the data buffer (8 + N)

  // A CPU tensor of the stored dtype and shape. When the bytes are aligned to the element size (always, for
  // files moon or the reference writer produce) the tensor is a zero-copy view of the mapping and keeps it
  // alive; otherwise it is a copy. The mapping is private copy-on-write: writing such a tensor in place is
  // safe and never reaches the file (the written pages become private memory of this process). Repeated calls
  // for one name share one storage while any of them lives, so they see each other's writes and autograd's
  // version counter covers them all; tensor_as / a copy gives independent memory.
  // A dtype moon does not load (F64, I16, BOOL, ...) is an error that says what to convert it to.
  Tensor tensor(const std::string& name) const;
  // The tensor converted to `dtype` (e.g. BF16 -> F32); a copy unless the dtype already matches.
  Tensor tensor_as(const std::string& name, DType dtype) const;

 private:
  SafetensorsFile() = default;
  void parse(const uint8_t* bytes, size_t size);

  std::string label_;              // the path (or label) named in errors
  std::shared_ptr<void> owner_;    // keeps the bytes alive: a MappedFile or a byte vector
  const uint8_t* bytes_ = nullptr; // the whole file
  size_t size_ = 0;
  bool writable_ = false;          // the bytes may back tensors that are written in place
  size_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;          // sorted by (begin, end)
  std::map<std::string, size_t> index_;      // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
  mutable std::mutex views_mutex_;                                   // tensor() may be called from threads
  mutable std::map<std::string, std::weak_ptr<Storage>> views_;      // live zero-copy storages by name
};

// Writes `tensors` (in any order; stored sorted by element size then name, so every tensor is aligned to
// its element size) with `metadata` into `path`, atomically: a temporary file, fsync, rename. Tensors of
// any supported dtype, contiguous or not, on any device. Names must be unique, non-empty and not
// "__metadata__". On any error `path` is left as it was.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace moon::io
