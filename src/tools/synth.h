// `g4 synth`: a random-weight Gemma 4 GGUF with a real variant's dimensions (fewer
// layers and a smaller vocabulary allowed), for benchmarks.
#pragma once
#include <string>

#include "model/spec.h"
#include "tools/quantize.h"

namespace g4 {

struct SynthOptions {
  std::string variant;  // e2b, e4b, 12b, 26b-a4b, 31b
  int layers = 0;       // 0: the variant's
  int vocab = 0;        // 0: 262144
  QuantizeOptions quant;
  uint64_t seed = 1;
  std::string format = "gguf";  // or "safetensors": an HF directory (BF16 weights, config.json)
};

// The variant's description (gemma4-architecture.md §4), possibly cut to `layers`.
ModelSpec synth_spec(const std::string& variant, int layers, int vocab);
void synth_model(const SynthOptions& opt, const std::string& out_path);

}  // namespace g4
