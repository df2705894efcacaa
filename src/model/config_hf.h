// HF config.json (text_config nested or at the root; flat or per_layer_config form)
// -> ModelSpec. gemma4-architecture.md §1-3.
#pragma once
#include <string>

#include "model/spec.h"
#include "util/json.h"

namespace g4 {

ModelSpec spec_from_hf_config(const json& config, const std::string& source);
ModelSpec spec_from_hf_config_file(const std::string& path);

}  // namespace g4
