// moon checkpoints (docs/checkpoint-format.md): the parameters in safetensors with the config in the
// metadata (moon.config), written atomically; and loading them back with every mismatch named.
//
//   save_checkpoint("run/model.safetensors", model, {{"moon.tokenizer", tokenizer_json}});
//   std::unique_ptr<MoonModel> m = load_checkpoint("run/model.safetensors");  // or a folder / an index
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/moon_model.h"

namespace moon::io {
class Checkpoint;
}

namespace moon::model {

inline constexpr const char* kConfigKey = "moon.config";
inline constexpr const char* kFormatVersionKey = "moon.format_version";
inline constexpr const char* kTokenizerKey = "moon.tokenizer";  // a tokenizer.json text (optional)
inline constexpr const char* kFormatVersion = "1";
// Tensors whose names start with this prefix hold training state (optimizer moments, the temperature, the
// frozen GRPO reference): saved next to the parameters by `moon train`, ignored when a model is loaded.
inline constexpr const char* kTrainingTensorPrefix = "train.";

// Writes every parameter (f32, or bf16 when `dtype` is BF16) and metadata moon.config + moon.format_version
// (+ `extra`, e.g. moon.training_state, moon.tokenizer) to `path` atomically: a crash leaves the old file.
void save_checkpoint(const std::string& path, const MoonModel& model,
                     const std::map<std::string, std::string>& extra = {}, DType dtype = DType::F32);

// Reads a checkpoint file, folder or sharded index: the config from moon.config, then every parameter.
// A missing, extra or mis-shaped tensor, a truncated file, or a missing config is an error naming the file
// and the tensor.
std::unique_ptr<MoonModel> load_checkpoint(const std::string& path);

// The metadata of a checkpoint (e.g. moon.tokenizer, moon.training_state).
std::map<std::string, std::string> checkpoint_metadata(const std::string& path);

// ---- the parts behind the three functions above (usable on a ParamStore without a whole MoonModel)

// What save_checkpoint writes, from a config and its parameters. `extra` may not set moon.config or
// moon.format_version. dtype: F32 or BF16.
// `extra_tensors` (names must start with kTrainingTensorPrefix) are written as they are (f32), after the
// parameters, in the same atomic file.
void save_params(const std::string& path, const ModelConfig& config, const ParamStore& params,
                 const std::map<std::string, std::string>& extra = {}, DType dtype = DType::F32,
                 const std::vector<std::pair<std::string, Tensor>>& extra_tensors = {});

// The config stored in a checkpoint's moon.config (validated); errors name the checkpoint and, for a missing
// config, say how to make a moon checkpoint from Hugging Face weights.
ModelConfig checkpoint_config(const io::Checkpoint& checkpoint);

// Assigns every tensor of `checkpoint` to the parameter of the same name. Every parameter must be present,
// no tensor may be left over (training-state tensors, named kTrainingTensorPrefix..., are skipped), shapes must match exactly, and the dtypes must be F32, BF16 or F16.
void load_params(const io::Checkpoint& checkpoint, ParamStore& params);

}  // namespace moon::model
