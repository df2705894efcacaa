// GGUF gemma4.* metadata (+ the rope_freqs tensor) -> ModelSpec. gemma4-tensors.md §6, §8.
#pragma once
#include "formats/gguf.h"
#include "model/spec.h"

namespace g4 {

ModelSpec spec_from_gguf(const GgufFile& g);

}  // namespace g4
