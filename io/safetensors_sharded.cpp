// Sharded safetensors checkpoints (Hugging Face layout): the shard writer with its index, and the Checkpoint
// reader that accepts a file, a folder or an index and checks the index against the shards.
#include "io/safetensors_sharded.h"

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "io/file_util.h"
#include "runtime/error.h"

namespace moon::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// "model-00002-of-00005.safetensors" (1-based, five digits as Hugging Face writes them).
std::string shard_file_name(size_t index, size_t count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return buf;
}

// Whether `name` is "model-DDDDD-of-DDDDD.safetensors".
bool is_shard_file_name(const std::string& name) {
  const std::string shape = "model-#####-of-#####.safetensors";
  if (name.size() != shape.size()) return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (shape[i] == '#' ? !std::isdigit(static_cast<unsigned char>(name[i])) : name[i] != shape[i]) return false;
  return true;
}

// Removes files of an earlier save in `folder` that the new one does not use.
void remove_stale_files(const std::string& folder, const std::set<std::string>& keep) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    const std::string name = entry.path().filename().string();
    const bool ours = name == kSingleFileName || name == kIndexFileName || is_shard_file_name(name);
    if (ours && !keep.count(name)) fs::remove(entry.path(), ec);  // best effort: the new files are complete
  }
}

}  // namespace

void save_sharded(const std::string& folder, const std::vector<std::pair<std::string, Tensor>>& tensors,
                  size_t max_shard_bytes, const std::map<std::string, std::string>& metadata) {
  MOON_CHECK(max_shard_bytes > 0, "save_sharded: ", folder, ": max_shard_bytes must be positive");
  MOON_CHECK(!metadata.count("total_size"), "save_sharded: ", folder,
             ": metadata key 'total_size' is reserved for the index; use another key");
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {  // the per-file checks run again in save_safetensors
    MOON_CHECK(seen.insert(name).second, "save_sharded: ", folder, ": tensor name '", name, "' is used twice");
    MOON_CHECK(t.defined(), "save_sharded: ", folder, ": tensor '", name, "' is undefined (an empty Tensor())");
  }

  // Greedy split in the given order: a shard closes when the next tensor would push it past the limit.
  std::vector<std::vector<std::pair<std::string, Tensor>>> shards(1);
  size_t shard_bytes = 0, total_bytes = 0;
  for (const auto& item : tensors) {
    const size_t nbytes = static_cast<size_t>(item.second.numel()) * dtype_size(item.second.dtype());
    if (!shards.back().empty() && shard_bytes + nbytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(item);
    shard_bytes += nbytes;
    total_bytes += nbytes;
  }

  make_dirs(folder);
  const fs::path dir(folder);
  if (shards.size() == 1) {
    save_safetensors((dir / kSingleFileName).string(), shards[0], metadata);
    remove_stale_files(folder, {kSingleFileName});
    return;
  }
  json index_metadata(metadata);
  index_metadata["total_size"] = total_bytes;
  json index = {{"metadata", index_metadata}, {"weight_map", json::object()}};
  std::set<std::string> written;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file = shard_file_name(i, shards.size());
    save_safetensors((dir / file).string(), shards[i], metadata);
    for (const auto& item : shards[i]) index["weight_map"][item.first] = file;
    written.insert(file);
  }
  write_file_atomic((dir / kIndexFileName).string(), index.dump(2) + "\n");  // the commit point
  written.insert(kIndexFileName);
  remove_stale_files(folder, written);
}

// ---- reading

Checkpoint::Checkpoint(const std::string& path) : path_(path) {
  std::error_code ec;
  MOON_CHECK(fs::exists(path, ec), path, ": no such checkpoint (expected a .safetensors file, a folder with ",
             kSingleFileName, " or ", kIndexFileName, ", or the index file)");
  if (fs::is_directory(path, ec)) {
    const fs::path index = fs::path(path) / kIndexFileName, single = fs::path(path) / kSingleFileName;
    const bool has_index = fs::exists(index, ec), has_single = fs::exists(single, ec);
    MOON_CHECK(!(has_index && has_single), path, ": holds both ", kSingleFileName, " and ", kIndexFileName,
               "; one is left over from an earlier save, remove it");
    MOON_CHECK(has_index || has_single, path, ": the folder has neither ", kSingleFileName, " nor ",
               kIndexFileName);
    if (has_index) {
      open_index(index.string());
      return;
    }
    shards_.push_back(SafetensorsFile::open(single.string()));
  } else if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) {
    open_index(path);
    return;
  } else {
    shards_.push_back(SafetensorsFile::open(path));
  }
  metadata_ = shards_[0]->metadata();
  for (const std::string& name : shards_[0]->names()) where_[name] = 0;
}

// Reads the index, opens every shard it names and checks that each tensor is in exactly its shard.
void Checkpoint::open_index(const std::string& index_path) {
  const std::string text = read_file_text(index_path);
  std::string top_key;
  std::set<std::string> listed;
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) top_key = parsed.get<std::string>();
    if (event == json::parse_event_t::key && depth == 2 && top_key == "weight_map") {
      const std::string name = parsed.get<std::string>();
      MOON_CHECK(listed.insert(name).second, index_path, ": tensor '", name, "' is listed twice in the weight_map");
    }
    return true;
  };
  json index;
  try {
    index = json::parse(text, on_event);
  } catch (const json::exception& e) {
    fail(index_path, ": not valid JSON (", e.what(), ")");
  }
  MOON_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(), index_path,
             ": expected an object with a \"weight_map\" object {tensor: shard file}");
  if (index.contains("metadata")) {
    MOON_CHECK(index["metadata"].is_object(), index_path, ": \"metadata\" must be an object");
    for (const auto& [k, v] : index["metadata"].items()) metadata_[k] = v.is_string() ? v.get<std::string>() : v.dump();
  }

  const fs::path folder = fs::path(index_path).parent_path();
  std::map<std::string, std::string> mapped;  // tensor -> shard file, as the index says
  std::map<std::string, std::string> files;   // shard file -> a tensor it should hold (for messages)
  for (const auto& [name, file_value] : index["weight_map"].items()) {
    MOON_CHECK(file_value.is_string(), index_path, ": weight_map entry of '", name, "' is not a file name");
    const std::string file = file_value.get<std::string>();
    MOON_CHECK(!file.empty() && file.find('/') == std::string::npos && file != "." && file != "..", index_path,
               ": weight_map entry of '", name, "' names '", file, "', which is not a file in the index's folder");
    mapped[name] = file;
    files.emplace(file, name);
  }
  for (const auto& [file, name] : files) {  // in file-name order: model-00001-of-... first
    const fs::path shard_path = folder / file;
    std::error_code ec;
    MOON_CHECK(fs::exists(shard_path, ec), index_path, ": shard '", file, "' (holding '", name,
               "') does not exist at ", shard_path.string(), "; the checkpoint is incomplete");
    shards_.push_back(SafetensorsFile::open(shard_path.string()));
  }
  // Every tensor of every shard lives in exactly one shard; each listed tensor is where the index says.
  for (size_t s = 0; s < shards_.size(); ++s) {
    for (const std::string& name : shards_[s]->names()) {
      auto [it, fresh] = where_.emplace(name, s);
      MOON_CHECK(fresh, index_path, ": tensor '", name, "' is in two shards, ", shards_[it->second]->path(),
                 " and ", shards_[s]->path());
    }
  }
  for (const auto& [name, file] : mapped) {
    auto it = where_.find(name);
    const std::string shard_path = (folder / file).string();
    MOON_CHECK(it != where_.end() && shards_[it->second]->path() == shard_path, index_path, ": the index puts '",
               name, "' in ", file, " but that shard does not hold it");
  }
  // Tensors that shards hold but the index does not list are not part of the checkpoint.
  for (auto it = where_.begin(); it != where_.end();) it = mapped.count(it->first) ? std::next(it) : where_.erase(it);
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (size_t s = 0; s < shards_.size(); ++s)
    for (const std::string& name : shards_[s]->names())
      if (auto it = where_.find(name); it != where_.end() && it->second == s) out.push_back(name);
  return out;
}

const SafetensorsFile& Checkpoint::shard_of(const std::string& name) const {
  auto it = where_.find(name);
  MOON_CHECK(it != where_.end(), path_, ": the checkpoint has no tensor named '", name, "' (",
             where_.size(), " tensors; list them with names())");
  return *shards_[it->second];
}

const TensorInfo& Checkpoint::info(const std::string& name) const { return shard_of(name).info(name); }
Tensor Checkpoint::tensor(const std::string& name) const { return shard_of(name).tensor(name); }
Tensor Checkpoint::tensor_as(const std::string& name, DType dtype) const {
  return shard_of(name).tensor_as(name, dtype);
}

}  // namespace moon::io
