// Saving and loading moon checkpoints: parameters by their Hugging Face names in safetensors, the config as
// JSON in the metadata (docs/checkpoint-format.md, "Model checkpoints").
#include "model/checkpoint.h"

#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "io/safetensors_sharded.h"
#include "runtime/autograd.h"
#include "runtime/error.h"

namespace moon::model {
namespace {

// "a, b, c" for the first `limit` names, then "and N more".
std::string name_list(const std::vector<std::string>& names, size_t limit = 5) {
  std::ostringstream os;
  for (size_t i = 0; i < names.size() && i < limit; ++i) os << (i ? ", " : "") << names[i];
  if (names.size() > limit) os << " and " << names.size() - limit << " more";
  return os.str();
}

}  // namespace

void save_params(const std::string& path, const ModelConfig& config, const ParamStore& params,
                 const std::map<std::string, std::string>& extra, DType dtype,
                 const std::vector<std::pair<std::string, Tensor>>& extra_tensors) {
  MOON_CHECK(dtype == DType::F32 || dtype == DType::BF16, "save_checkpoint ", path,
             ": parameters are saved as F32 or BF16, not ", dtype_name(dtype));
  for (const char* reserved : {kConfigKey, kFormatVersionKey})
    MOON_CHECK(!extra.count(reserved), "save_checkpoint ", path, ": metadata key ", reserved,
               " is written by save_checkpoint itself; do not pass it in `extra`");
  std::map<std::string, std::string> metadata = extra;
  metadata.insert_or_assign(kConfigKey, config.to_json());
  metadata.insert_or_assign(kFormatVersionKey, std::string(kFormatVersion));
  NoGradGuard no_grad;
  std::vector<std::pair<std::string, Tensor>> tensors;
  tensors.reserve(params.all().size());
  for (const auto& [name, value] : params.all())
    tensors.emplace_back(name, dtype == DType::F32 ? value.detach() : value.detach().to(dtype));
  for (const auto& [name, value] : extra_tensors) {
    MOON_CHECK(name.rfind(kTrainingTensorPrefix, 0) == 0, "save_checkpoint ", path, ": extra tensor ", name,
               " must be named ", kTrainingTensorPrefix, "... (training state), so that loading a model skips it");
    MOON_CHECK(!params.contains(name), "save_checkpoint ", path, ": extra tensor ", name, " is also a parameter");
    tensors.emplace_back(name, value.detach());
  }
  io::save_safetensors(path, tensors, metadata);
}

void save_checkpoint(const std::string& path, const MoonModel& model, const std::map<std::string, std::string>& extra,
                     DType dtype) {
  save_params(path, model.config(), model.params(), extra, dtype);
}

ModelConfig checkpoint_config(const io::Checkpoint& checkpoint) {
  const auto& meta = checkpoint.metadata();
  auto it = meta.find(kConfigKey);
  if (it == meta.end())
    fail(checkpoint.path(), ": no ", kConfigKey,
         " in the metadata, so this is not a moon checkpoint (for Hugging Face weights, make one with "
         "`moon import --vision DIR --decoder DIR --out CKPT`)");
  auto version = meta.find(kFormatVersionKey);
  if (version != meta.end() && version->second != kFormatVersion)
    fail(checkpoint.path(), ": ", kFormatVersionKey, " is \"", version->second, "\", but this build of moon reads version ",
         kFormatVersion, " (use a newer moon)");
  return ModelConfig::from_json(it->second, checkpoint.path() + " (" + kConfigKey + ")");
}

void load_params(const io::Checkpoint& checkpoint, ParamStore& params) {
  std::vector<std::string> missing;
  for (const auto& [name, value] : params.all())
    if (!checkpoint.contains(name)) missing.push_back(name + " " + value.shape_str());
  if (!missing.empty())
    fail(checkpoint.path(), ": ", missing.size() == 1 ? "tensor " : std::to_string(missing.size()) + " tensors ",
         name_list(missing), missing.size() == 1 ? " is" : " are",
         " missing; the config in the checkpoint needs them (a truncated save, or weights of another model?)");
  NoGradGuard no_grad;
  for (const auto& shard : checkpoint.shards()) {
    for (const std::string& name : shard->names()) {
      if (name.rfind(kTrainingTensorPrefix, 0) == 0) continue;  // training state, not a parameter
      if (!params.contains(name))
        fail(shard->path(), ": tensor ", name,
             " is not a parameter of the model its config describes (is moon.config the config these weights "
             "were saved with?)");
      const std::string& dtype = shard->info(name).dtype;
      if (dtype != "F32" && dtype != "BF16" && dtype != "F16")
        fail(shard->path(), ": tensor ", name, " has dtype ", dtype, "; a parameter must be F32, BF16 or F16");
      params.assign(name, shard->tensor(name), shard->path());
    }
  }
}

std::unique_ptr<MoonModel> load_checkpoint(const std::string& path) {
  io::Checkpoint checkpoint(path);
  auto model = std::make_unique<MoonModel>(checkpoint_config(checkpoint));
  load_params(checkpoint, model->params());
  return model;
}

std::map<std::string, std::string> checkpoint_metadata(const std::string& path) {
  return io::Checkpoint(path).metadata();
}

}  // namespace moon::model
