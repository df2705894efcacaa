// Every GGUF metadata key g4 reads or writes, named once (gemma4-tensors.md §8, formats.md).
// The readers (formats/gguf.cc, model/config_gguf.cc, tokenizer/), the writers
// (tools/quantize.cc, tools/synth.cc) and the grading (model/hparams.cc) use these.
#pragma once

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
inline constexpr const char* kTokenizerModel = "tokenizer.ggml.model";
inline constexpr const char* kTokenizerPre = "tokenizer.ggml.pre";
inline constexpr const char* kTokens = "tokenizer.ggml.tokens";
inline constexpr const char* kScores = "tokenizer.ggml.scores";
inline constexpr const char* kTokenType = "tokenizer.ggml.token_type";
inline constexpr const char* kMerges = "tokenizer.ggml.merges";
inline constexpr const char* kAddBos = "tokenizer.ggml.add_bos_token";
inline constexpr const char* kAddEos = "tokenizer.ggml.add_eos_token";
inline constexpr const char* kAddSpacePrefix = "tokenizer.ggml.add_space_prefix";
inline constexpr const char* kAlignment = "general.alignment";
inline constexpr const char* kFileType = "general.file_type";
inline constexpr const char* kName = "general.name";
inline constexpr const char* kQuantizationVersion = "general.quantization_version";
// Split files (llama.cpp's gguf-split): NAME-00001-of-0000N.gguf ... each with these keys.
inline constexpr const char* kSplitNo = "split.no";
inline constexpr const char* kSplitCount = "split.count";
inline constexpr const char* kSplitTensorsCount = "split.tensors.count";
// Sizes and switches that GGUF files carry in tensors rather than keys are read from the
// tensors named in model/catalog.h (tensor_name(GlobalTensor::Embed), ...).
}  // namespace gk

}  // namespace g4
