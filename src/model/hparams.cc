#include "model/hparams.h"

#include <cmath>

namespace g4 {
namespace {

using V = std::vector<double>;

V one(double x) { return {x}; }

template <typename F>
V per_layer(const ModelSpec& s, F f) {
  V v;
  for (const auto& l : s.layers) v.push_back(f(l));
  return v;
}

// One value per layer, NaN (not applicable) on layers of the other type: a changed layer
// type is then named once, by the layer-types entry, not again by every per-type entry.
template <typename F>
V per_layer_of(const ModelSpec& s, AttnType t, F f) {
  V v;
  for (const auto& l : s.layers) v.push_back(l.type == t ? static_cast<double>(f(l)) : std::nan(""));
  return v;
}

// The fraction of a full layer's head that rotates (GGUF: the rope_freqs tensor).
double rotary_factor(const LayerSpec& l) { return l.head_dim > 0 ? 2.0 * l.rope_pairs / l.head_dim : 0; }

}  // namespace

const std::vector<Hparam>& hparam_table() {
  static const std::vector<Hparam> t = {
      {"layers", gk::kBlockCount, "num_hidden_layers", [](const ModelSpec& s) { return one(s.n_layers); }},
      {"hidden size", gk::kEmbeddingLength, "hidden_size", [](const ModelSpec& s) { return one(s.hidden); }},
      {"vocabulary size", "tensor token_embd.weight (rows)", "vocab_size", [](const ModelSpec& s) { return one(s.vocab); }},
      {"context length", gk::kContextLength, "max_position_embeddings", [](const ModelSpec& s) { return one(s.max_ctx); }},
      {"attention heads per layer", gk::kHeadCount, "num_attention_heads",
       [](const ModelSpec& s) { return per_layer(s, [](const LayerSpec& l) { return l.n_heads; }); }},
      {"KV heads per layer", gk::kHeadCountKv, "num_key_value_heads, num_global_key_value_heads",
       [](const ModelSpec& s) { return per_layer(s, [](const LayerSpec& l) { return l.n_kv_heads; }); }},
      {"FFN width per layer", gk::kFeedForwardLength, "intermediate_size, use_double_wide_mlp",
       [](const ModelSpec& s) { return per_layer(s, [](const LayerSpec& l) { return l.ff_width; }); }},
      {"head dim, sliding layers", gk::kKeyLengthSwa, "head_dim",
       [](const ModelSpec& s) { return per_layer_of(s, AttnType::Sliding, [](const LayerSpec& l) { return l.head_dim; }); }},
      {"head dim, full layers", gk::kKeyLength, "global_head_dim",
       [](const ModelSpec& s) { return per_layer_of(s, AttnType::Full, [](const LayerSpec& l) { return l.head_dim; }); }},
      {"layer types (1 = sliding)", gk::kSlidingWindowPattern, "layer_types",
       [](const ModelSpec& s) { return per_layer(s, [](const LayerSpec& l) { return l.type == AttnType::Sliding ? 1 : 0; }); }},
      {"sliding window", gk::kSlidingWindow, "sliding_window", [](const ModelSpec& s) { return one(s.sliding_window); }},
      {"rope base, sliding layers", gk::kRopeFreqBaseSwa, "rope_parameters.sliding_attention.rope_theta",
       [](const ModelSpec& s) { return one(s.rope_sliding.theta); }},
      {"rope base, full layers", gk::kRopeFreqBase, "rope_parameters.full_attention.rope_theta",
       [](const ModelSpec& s) { return one(s.rope_full.theta); }},
      {"partial rotary factor, full layers", "tensor rope_freqs.weight", "rope_parameters.full_attention.partial_rotary_factor",
       [](const ModelSpec& s) { return per_layer_of(s, AttnType::Full, rotary_factor); }},
      {"partial rotary factor, sliding layers", gk::kRopeDimCountSwa, "rope_parameters.sliding_attention.partial_rotary_factor",
       [](const ModelSpec& s) { return per_layer_of(s, AttnType::Sliding, rotary_factor); }},
      {"RMSNorm epsilon", gk::kRmsEps, "rms_norm_eps", [](const ModelSpec& s) { return one(s.rms_eps); }},
      {"final logit softcap", gk::kFinalSoftcap, "final_logit_softcapping",
       [](const ModelSpec& s) { return one(s.final_softcap.value_or(0)); }},
      {"KV-shared layers", gk::kSharedKvLayers, "num_kv_shared_layers", [](const ModelSpec& s) { return one(s.n_kv_shared); }},
      {"PLE size", gk::kPleLength, "hidden_size_per_layer_input", [](const ModelSpec& s) { return one(s.ple_dim); }},
      {"PLE vocabulary", "tensor per_layer_token_embd.weight (rows)", "vocab_size_per_layer_input",
       [](const ModelSpec& s) { return one(s.ple_dim > 0 ? s.ple_vocab : 0); }},
      {"k_eq_v (full layers without v_proj)", "absent blk.N.attn_v.weight", "attention_k_eq_v",
       [](const ModelSpec& s) { return one(s.k_eq_v); }},
      {"MoE experts", gk::kExpertCount, "enable_moe_block, num_experts", [](const ModelSpec& s) { return one(s.moe ? s.n_experts : 0); }},
      {"MoE experts per token", gk::kExpertUsedCount, "top_k_experts", [](const ModelSpec& s) { return one(s.moe ? s.top_k : 0); }},
      {"MoE expert FFN width", gk::kExpertFfLength, "moe_intermediate_size", [](const ModelSpec& s) { return one(s.moe ? s.moe_ff : 0); }},
      {"BOS id", gk::kBosId, "bos_token_id", [](const ModelSpec& s) { return one(s.bos_id); }},
      {"EOS id (first)", gk::kEosId, "eos_token_id", [](const ModelSpec& s) { return one(s.eos_ids.empty() ? -1 : s.eos_ids[0]); }},
      {"PAD id", gk::kPadId, "pad_token_id", [](const ModelSpec& s) { return one(s.pad_id); }},
  };
  return t;
}

json hf_config_json(const ModelSpec& s) {
  json c;
  c["architectures"] = {"Gemma4ForCausalLM"};
  c["model_type"] = "gemma4_text";
  c["num_hidden_layers"] = s.n_layers;
  c["hidden_size"] = s.hidden;
  c["vocab_size"] = s.vocab;
  c["max_position_embeddings"] = s.max_ctx;
  c["num_attention_heads"] = s.n_heads;
  c["num_key_value_heads"] = s.n_kv_heads;
  if (s.n_global_kv_heads) c["num_global_key_value_heads"] = *s.n_global_kv_heads;
  c["intermediate_size"] = s.intermediate;
  c["use_double_wide_mlp"] = s.double_wide_mlp;
  c["head_dim"] = s.head_dim;
  c["global_head_dim"] = s.global_head_dim;
  c["attention_k_eq_v"] = s.k_eq_v;
  c["hidden_size_per_layer_input"] = s.ple_dim;
  c["vocab_size_per_layer_input"] = s.ple_vocab;
  c["num_kv_shared_layers"] = s.n_kv_shared;
  c["sliding_window"] = s.sliding_window;
  c["rms_norm_eps"] = s.rms_eps;
  if (s.final_softcap) c["final_logit_softcapping"] = *s.final_softcap;
  c["enable_moe_block"] = s.moe;
  if (s.moe) {
    c["num_experts"] = s.n_experts;
    c["top_k_experts"] = s.top_k;
    c["moe_intermediate_size"] = s.moe_ff;
  }
  auto rope = [](const RopeSpec& r) {
    json j = {{"rope_type", r.type}, {"rope_theta", r.theta}};
    if (r.type == "proportional") j["partial_rotary_factor"] = r.partial_rotary_factor;
    return j;
  };
  c["rope_parameters"] = {{"sliding_attention", rope(s.rope_sliding)}, {"full_attention", rope(s.rope_full)}};
  json lt = json::array();
  for (auto t : s.layer_types) lt.push_back(t == AttnType::Sliding ? "sliding_attention" : "full_attention");
  c["layer_types"] = lt;
  json plc = json::object();
  for (int i = 0; i < s.n_layers; ++i) {
    json e = json::object();
    if (i < static_cast<int>(s.layer_head_dim.size()) && s.layer_head_dim[i]) e["head_dim"] = *s.layer_head_dim[i];
    if (i < static_cast<int>(s.layer_kv_heads.size()) && s.layer_kv_heads[i]) e["num_key_value_heads"] = *s.layer_kv_heads[i];
    if (i < static_cast<int>(s.layer_n_heads.size()) && s.layer_n_heads[i]) e["num_attention_heads"] = *s.layer_n_heads[i];
    if (!e.empty()) plc[std::to_string(i)] = e;
  }
  if (!plc.empty()) c["per_layer_config"] = plc;
  c["hidden_activation"] = "gelu_pytorch_tanh";
  c["bos_token_id"] = s.bos_id;
  c["eos_token_id"] = s.eos_ids;
  c["pad_token_id"] = s.pad_id;
  return c;
}

}  // namespace g4
