// Where the bundled model lives and which sampling defaults a model file suggests.
#pragma once
#include <string>

#include "model/model.h"
#include "runtime/sampler.h"

namespace g4 {

// -m omitted: ./models/brown-mini if it exists, else the source tree's copy.
std::string default_model_path();
// llama.cpp's defaults, replaced by GGUF general.sampling.* or HF generation_config.json.
SamplingParams model_sampling_defaults(const Model& m);

}  // namespace g4
