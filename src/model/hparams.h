// The one table of Gemma 4 hyperparameters: for each concept, its GGUF metadata key, its
// config.json field and how to read it off a ModelSpec. The GGUF reader (config_gguf.cc),
// the GGUF writer (write_gemma4_metadata in tools/quantize.cc), the config.json writer
// (hf_config_json below, used by `g4 synth --format safetensors`) and the hyperparameter
// grading (tools/grade_meta.cc) all use these names; no other file spells a key.
#pragma once
#include <string>
#include <vector>

#include "formats/gguf_keys.h"
#include "model/spec.h"
#include "util/json.h"

namespace g4 {


struct Hparam {
  const char* what;     // the concept, in words
  const char* gguf;     // GGUF key, or where a GGUF file says it ("tensor ...")
  std::string hf;       // config.json field (dotted path inside text_config)
  // The value(s) a spec gives it: one number, or one per layer (NaN where it does not apply).
  std::vector<double> (*get)(const ModelSpec&);
};

// Every hyperparameter with a counterpart on both sides, in a fixed order.
const std::vector<Hparam>& hparam_table();

// config.json (text config at the root) for a spec, using the table's field names.
json hf_config_json(const ModelSpec& s);

}  // namespace g4
