// The one table of Gemma 4 hyperparameters: for each concept, its GGUF metadata key, its
// config.json field and how to read it off a ModelSpec. The GGUF reader (config_gguf.cc),
// the GGUF writer (write_gemma4_metadata in tools/quantize.cc), the config.json writer
// (hf_config_json below, used by `g4 synth --format safetensors`) and the hyperparameter
// grading (tools/grade_meta.cc) all use these names; no other file spells a key.
#pragma once
#include <string>
#include <vector>

#include "model/spec.h"
#include "util/json.h"

namespace g4 {

// GGUF metadata keys (gemma4-tensors.md §8).
namespace gk {
inline constexpr const char* kArchitecture = "general.architecture";
inline constexpr const char* kBlockCount = "gemma4.block_count";
inline constexpr const char* kContextLength = "gemma4.context_length";
inline constexpr const char* kEmbeddingLength = "gemma4.embedding_length";
inline constexpr const char* kFeedForwardLength = "gemma4.feed_forward_length";
inline constexpr const char* kHeadCount = "gemma4.attention.head_count";
inline constexpr const char* kHeadCountKv = "gemma4.attention.head_count_kv";
inline constexpr const char* kKeyLength = "gemma4.attention.key_length";
inline constexpr const char* kValueLength = "gemma4.attention.value_length";
inline constexpr const char* kKeyLengthSwa = "gemma4.attention.key_length_swa";
inline constexpr const char* kValueLengthSwa = "gemma4.attention.value_length_swa";
inline constexpr const char* kRmsEps = "gemma4.attention.layer_norm_rms_epsilon";
inline constexpr const char* kSlidingWindow = "gemma4.attention.sliding_window";
inline constexpr const char* kSlidingWindowPattern = "gemma4.attention.sliding_window_pattern";
inline constexpr const char* kSharedKvLayers = "gemma4.attention.shared_kv_layers";
inline constexpr const char* kPleLength = "gemma4.embedding_length_per_layer_input";
inline constexpr const char* kFinalSoftcap = "gemma4.final_logit_softcapping";
inline constexpr const char* kRopeFreqBase = "gemma4.rope.freq_base";
inline constexpr const char* kRopeFreqBaseSwa = "gemma4.rope.freq_base_swa";
inline constexpr const char* kRopeDimCount = "gemma4.rope.dimension_count";
inline constexpr const char* kRopeDimCountSwa = "gemma4.rope.dimension_count_swa";
inline constexpr const char* kExpertCount = "gemma4.expert_count";
inline constexpr const char* kExpertUsedCount = "gemma4.expert_used_count";
inline constexpr const char* kExpertFfLength = "gemma4.expert_feed_forward_length";
inline constexpr const char* kBosId = "tokenizer.ggml.bos_token_id";
inline constexpr const char* kEosId = "tokenizer.ggml.eos_token_id";
inline constexpr const char* kPadId = "tokenizer.ggml.padding_token_id";
inline constexpr const char* kUnkId = "tokenizer.ggml.unknown_token_id";
// Sizes and switches that GGUF files carry in tensors rather than keys are read from the
// tensors named in model/catalog.h (tensor_name(GlobalTensor::Embed), ...).
}  // namespace gk

struct Hparam {
  const char* what;     // the concept, in words
  const char* gguf;     // GGUF key, or where a GGUF file says it ("tensor ...")
  const char* hf;       // config.json field (dotted path inside text_config)
  // The value(s) a spec gives it: one number, or one per layer (NaN where it does not apply).
  std::vector<double> (*get)(const ModelSpec&);
};

// Every hyperparameter with a counterpart on both sides, in a fixed order.
const std::vector<Hparam>& hparam_table();

// config.json (text config at the root) for a spec, using the table's field names.
json hf_config_json(const ModelSpec& s);

}  // namespace g4
