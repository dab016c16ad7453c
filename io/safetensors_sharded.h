// Sharded safetensors checkpoints as Hugging Face writes them: model-00001-of-0000N.safetensors ... plus
// model.safetensors.index.json ({"metadata": {"total_size": bytes, ...}, "weight_map": {tensor: shard}}),
// and `Checkpoint`, one reader for a single file, a folder, or an index.
//
//   moon::io::save_sharded("ckpt/", tensors, 2ull << 30, {{"moon.format_version", "1"}});
//   moon::io::Checkpoint ckpt("ckpt/");          // or "ckpt/model.safetensors.index.json", or "x.safetensors"
//   moon::Tensor w = ckpt.tensor("model.embed_tokens.weight");
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"

namespace moon::io {

inline constexpr const char* kSingleFileName = "model.safetensors";
inline constexpr const char* kIndexFileName = "model.safetensors.index.json";

// Writes `tensors` into `folder` (created if missing) in shards of at most `max_shard_bytes` of tensor data
// each (a larger tensor gets a shard of its own), in the given order. One shard is written as
// model.safetensors with no index; several as model-0000i-of-0000N.safetensors and the index, which is
// written last (atomically), so a crash before it leaves the previous checkpoint's index in charge.
// `metadata` goes into every shard and into the index's "metadata" (next to "total_size", which is
// reserved). Files of an earlier save that the new one no longer uses (model.safetensors, the index, other
// model-*-of-*.safetensors) are removed afterwards.
void save_sharded(const std::string& folder, const std::vector<std::pair<std::string, Tensor>>& tensors,
                  size_t max_shard_bytes, const std::map<std::string, std::string>& metadata = {});

class Checkpoint {
 public:
  // `path`: a .safetensors file, a folder holding model.safetensors or model.safetensors.index.json, or the
  // index file itself. Every shard is opened (and validated) now; errors name the index, shard and tensor.
  explicit Checkpoint(const std::string& path);

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // shard by shard, each in file order
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  Tensor tensor(const std::string& name) const;  // see SafetensorsFile::tensor
  Tensor tensor_as(const std::string& name, DType dtype) const;
  // A single file's __metadata__, or the index's "metadata" (numbers such as total_size as their JSON text).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<std::shared_ptr<SafetensorsFile>>& shards() const { return shards_; }

 private:
  void open_index(const std::string& index_path);
  const SafetensorsFile& shard_of(const std::string& name) const;

  std::string path_;
  std::vector<std::shared_ptr<SafetensorsFile>> shards_;
  std::map<std::string, size_t> where_;  // tensor name -> shard position
  std::map<std::string, std::string> metadata_;
};

}  // namespace moon::io
