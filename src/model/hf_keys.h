// Every config.json field g4 reads or writes, named once (gemma4-architecture.md §2).
// The reader (model/config_hf.cc), the writer (hf_config_json in model/hparams.cc, used
// by `g4 synth --format safetensors`) and the hyperparameter table use these.
#pragma once

namespace g4::hk {

inline constexpr const char* kTextConfig = "text_config";
inline constexpr const char* kModelType = "model_type";
inline constexpr const char* kArchitectures = "architectures";
inline constexpr const char* kNumLayers = "num_hidden_layers";
inline constexpr const char* kHidden = "hidden_size";
inline constexpr const char* kVocab = "vocab_size";
inline constexpr const char* kHeads = "num_attention_heads";
inline constexpr const char* kHeadDim = "head_dim";
inline constexpr const char* kGlobalHeadDim = "global_head_dim";
inline constexpr const char* kKvHeads = "num_key_value_heads";
inline constexpr const char* kGlobalKvHeads = "num_global_key_value_heads";
inline constexpr const char* kIntermediate = "intermediate_size";
inline constexpr const char* kDoubleWideMlp = "use_double_wide_mlp";
inline constexpr const char* kKEqV = "attention_k_eq_v";
inline constexpr const char* kPleDim = "hidden_size_per_layer_input";
inline constexpr const char* kPleVocab = "vocab_size_per_layer_input";
inline constexpr const char* kKvShared = "num_kv_shared_layers";
inline constexpr const char* kSlidingWindow = "sliding_window";
inline constexpr const char* kRmsEps = "rms_norm_eps";
inline constexpr const char* kFinalSoftcap = "final_logit_softcapping";
inline constexpr const char* kMaxCtx = "max_position_embeddings";
inline constexpr const char* kMoe = "enable_moe_block";
inline constexpr const char* kExperts = "num_experts";
inline constexpr const char* kTopK = "top_k_experts";
inline constexpr const char* kMoeFf = "moe_intermediate_size";
inline constexpr const char* kAttentionBias = "attention_bias";
inline constexpr const char* kActivation = "hidden_activation";
inline constexpr const char* kBidirectional = "use_bidirectional_attention";
inline constexpr const char* kRopeParameters = "rope_parameters";
inline constexpr const char* kLayerTypes = "layer_types";
inline constexpr const char* kPerLayerConfig = "per_layer_config";
inline constexpr const char* kBosId = "bos_token_id";
inline constexpr const char* kEosId = "eos_token_id";
inline constexpr const char* kPadId = "pad_token_id";
// Inside rope_parameters: one object per layer type.
inline constexpr const char* kSlidingAttention = "sliding_attention";
inline constexpr const char* kFullAttention = "full_attention";
inline constexpr const char* kRopeType = "rope_type";
inline constexpr const char* kRopeTheta = "rope_theta";
inline constexpr const char* kPartialRotary = "partial_rotary_factor";
inline constexpr const char* kRopeFactor = "factor";

}  // namespace g4::hk
