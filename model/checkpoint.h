// moon checkpoints (docs/checkpoint-format.md): the parameters in safetensors with the config in the
// metadata (moon.config), written atomically; and loading them back with every mismatch named.
#pragma once
#include <map>
#include <memory>
#include <string>

#include "model/moon_model.h"

namespace moon::model {

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

}  // namespace moon::model
