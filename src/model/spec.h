// The model description: everything the forward pass needs to know about a Gemma 4
// text decoder, as plain data. Built from an HF config.json or from GGUF metadata
// (the two front ends fill the same struct, then finalize_spec derives the rest).
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace g4 {

enum class AttnType { Sliding, Full };
inline const char* attn_type_name(AttnType t) { return t == AttnType::Sliding ? "sliding" : "full"; }

struct RopeSpec {
  std::string type = "default";  // "default" or "proportional"
  double theta = 10000.0;
  double partial_rotary_factor = 1.0;
};

struct LayerSpec {
  int index = 0;
  AttnType type = AttnType::Sliding;
  int n_heads = 0;
  int head_dim = 0;
  int n_kv_heads = 0;
  bool owns_kv = true;   // false: KV-shared, reads kv_source's cache
  int kv_source = 0;     // == index when owns_kv
  bool has_v_proj = true;  // false on k_eq_v full layers: V = raw K projection
  int ff_width = 0;
  bool moe = false;
  double rope_theta = 10000.0;
  int rope_dim = 0;          // exponent denominator d in theta^(-2j/d)
  int rope_pairs = 0;        // pairs j < rope_pairs rotate; the rest are identity
  int window = 0;            // 0 = causal only; else sliding window W
};

struct ModelSpec {
  std::string architecture = "gemma4";
  std::string source_format;  // "hf" or "gguf"
  int n_layers = 0;
  int hidden = 0;
  int vocab = 0;
  int n_heads = 0;
  int head_dim = 0;          // sliding layers
  int global_head_dim = 0;   // full layers
  int n_kv_heads = 0;
  std::optional<int> n_global_kv_heads;
  int intermediate = 0;
  bool double_wide_mlp = false;
  bool k_eq_v = false;
  int ple_dim = 0;           // P; 0 disables per-layer embeddings
  int ple_vocab = 0;
  int n_kv_shared = 0;
  int sliding_window = 0;
  double rms_eps = 1e-6;
  std::optional<double> final_softcap;
  int max_ctx = 0;
  bool moe = false;
  int n_experts = 0;
  int top_k = 0;
  int moe_ff = 0;
  RopeSpec rope_sliding;
  RopeSpec rope_full{"proportional", 1e6, 0.25};
  std::vector<AttnType> layer_types;
  // Per-layer overrides from per_layer_config (HF >= 5.15) or GGUF arrays.
  std::vector<std::optional<int>> layer_head_dim, layer_kv_heads, layer_n_heads, layer_ff;
  int bos_id = 2;
  std::vector<int> eos_ids{1};
  int pad_id = 0;

  std::vector<LayerSpec> layers;  // derived by finalize_spec

  int first_kv_shared() const { return n_layers - n_kv_shared; }
};

// Derives `layers` from the global fields and checks that the numbers make sense
// (positive sizes, heads divisible by kv heads, ...). Throws g4::Error naming the
// field and `source`.
void finalize_spec(ModelSpec& spec, const std::string& source);

// RoPE inverse frequencies of a layer, float32 as HF computes them:
// inv_freq[j] = 1 / theta^(2j / rope_dim) for j < rope_pairs, 0 (identity pair) after.
std::vector<float> rope_inv_freq(const LayerSpec& l);

// Variant guess from the geometry: "E2B", "E4B", "12B", "26B-A4B", "31B" or "custom".
std::string guess_variant(const ModelSpec& spec);

}  // namespace g4
