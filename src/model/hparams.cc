#include "model/hparams.h"

#include <cmath>

#include "model/hf_keys.h"

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
      {"layers", gk::kBlockCount, hk::kNumLayers, [](const ModelSpec& s) { return one(s.n_layers); }},
      {"hidden size", gk::kEmbeddingLength, hk::kHidden, [](const ModelSpec& s) { return one(s.hidden); }},
      {"vocabulary size", "tensor token_embd.weight (rows)", hk::kVocab, [](const ModelSpec& s) { return one(s.vocab); }},
      {"context length", gk::kContextLength, hk::kMaxCtx, [](const ModelSpec& s) { return one(s.max_ctx); }},
      {"attention heads per layer", gk::kHeadCount, hk::kHeads,
       [](const ModelSpec& s) { return per_layer(s, [](const LayerSpec& l) { return l.n_heads; }); }},
      {"KV heads per layer", gk::kHeadCountKv, std::string(hk::kKvHeads) + ", " + hk::kGlobalKvHeads,
       [](const ModelSpec& s) { return per_layer(s, [](const LayerSpec& l) { return l.n_kv_heads; }); }},
      {"FFN width per layer", gk::kFeedForwardLength, std::string(hk::kIntermediate) + ", " + hk::kDoubleWideMlp,
       [](const ModelSpec& s) { return per_layer(s, [](const LayerSpec& l) { return l.ff_width; }); }},
      {"head dim, sliding layers", gk::kKeyLengthSwa, hk::kHeadDim,
       [](const ModelSpec& s) { return per_layer_of(s, AttnType::Sliding, [](const LayerSpec& l) { return l.head_dim; }); }},
      {"head dim, full layers", gk::kKeyLength, hk::kGlobalHeadDim,
       [](const ModelSpec& s) { return per_layer_of(s, AttnType::Full, [](const LayerSpec& l) { return l.head_dim; }); }},
      {"layer types (1 = sliding)", gk::kSlidingWindowPattern, hk::kLayerTypes,
       [](const ModelSpec& s) { return per_layer(s, [](const LayerSpec& l) { return l.type == AttnType::Sliding ? 1 : 0; }); }},
      {"sliding window", gk::kSlidingWindow, hk::kSlidingWindow, [](const ModelSpec& s) { return one(s.sliding_window); }},
      {"rope base, sliding layers", gk::kRopeFreqBaseSwa, std::string(hk::kRopeParameters) + "." + hk::kSlidingAttention + "." + hk::kRopeTheta,
       [](const ModelSpec& s) { return one(s.rope_sliding.theta); }},
      {"rope base, full layers", gk::kRopeFreqBase, std::string(hk::kRopeParameters) + "." + hk::kFullAttention + "." + hk::kRopeTheta,
       [](const ModelSpec& s) { return one(s.rope_full.theta); }},
      {"partial rotary factor, full layers", "tensor rope_freqs.weight", std::string(hk::kRopeParameters) + "." + hk::kFullAttention + "." + hk::kPartialRotary,
       [](const ModelSpec& s) { return per_layer_of(s, AttnType::Full, rotary_factor); }},
      {"partial rotary factor, sliding layers", gk::kRopeDimCountSwa, std::string(hk::kRopeParameters) + "." + hk::kSlidingAttention + "." + hk::kPartialRotary,
       [](const ModelSpec& s) { return per_layer_of(s, AttnType::Sliding, rotary_factor); }},
      {"RMSNorm epsilon", gk::kRmsEps, hk::kRmsEps, [](const ModelSpec& s) { return one(s.rms_eps); }},
      {"final logit softcap", gk::kFinalSoftcap, hk::kFinalSoftcap,
       [](const ModelSpec& s) { return one(s.final_softcap.value_or(0)); }},
      {"KV-shared layers", gk::kSharedKvLayers, hk::kKvShared, [](const ModelSpec& s) { return one(s.n_kv_shared); }},
      {"PLE size", gk::kPleLength, hk::kPleDim, [](const ModelSpec& s) { return one(s.ple_dim); }},
      {"PLE vocabulary", "tensor per_layer_token_embd.weight (rows)", hk::kPleVocab,
       [](const ModelSpec& s) { return one(s.ple_dim > 0 ? s.ple_vocab : 0); }},
      {"k_eq_v (full layers without v_proj)", "absent blk.N.attn_v.weight", hk::kKEqV,
       [](const ModelSpec& s) { return one(s.k_eq_v); }},
      {"MoE experts", gk::kExpertCount, std::string(hk::kMoe) + ", " + hk::kExperts, [](const ModelSpec& s) { return one(s.moe ? s.n_experts : 0); }},
      {"MoE experts per token", gk::kExpertUsedCount, hk::kTopK, [](const ModelSpec& s) { return one(s.moe ? s.top_k : 0); }},
      {"MoE expert FFN width", gk::kExpertFfLength, hk::kMoeFf, [](const ModelSpec& s) { return one(s.moe ? s.moe_ff : 0); }},
      {"BOS id", gk::kBosId, hk::kBosId, [](const ModelSpec& s) { return one(s.bos_id); }},
      {"EOS id (first)", gk::kEosId, hk::kEosId, [](const ModelSpec& s) { return one(s.eos_ids.empty() ? -1 : s.eos_ids[0]); }},
      {"PAD id", gk::kPadId, hk::kPadId, [](const ModelSpec& s) { return one(s.pad_id); }},
  };
  return t;
}

json hf_config_json(const ModelSpec& s) {
  json c;
  c[hk::kArchitectures] = {"Gemma4ForCausalLM"};
  c[hk::kModelType] = "gemma4_text";
  c[hk::kNumLayers] = s.n_layers;
  c[hk::kHidden] = s.hidden;
  c[hk::kVocab] = s.vocab;
  c[hk::kMaxCtx] = s.max_ctx;
  c[hk::kHeads] = s.n_heads;
  c[hk::kKvHeads] = s.n_kv_heads;
  if (s.n_global_kv_heads) c[hk::kGlobalKvHeads] = *s.n_global_kv_heads;
  c[hk::kIntermediate] = s.intermediate;
  c[hk::kDoubleWideMlp] = s.double_wide_mlp;
  c[hk::kHeadDim] = s.head_dim;
  c[hk::kGlobalHeadDim] = s.global_head_dim;
  c[hk::kKEqV] = s.k_eq_v;
  c[hk::kPleDim] = s.ple_dim;
  c[hk::kPleVocab] = s.ple_vocab;
  c[hk::kKvShared] = s.n_kv_shared;
  c[hk::kSlidingWindow] = s.sliding_window;
  c[hk::kRmsEps] = s.rms_eps;
  if (s.final_softcap) c[hk::kFinalSoftcap] = *s.final_softcap;
  c[hk::kMoe] = s.moe;
  if (s.moe) {
    c[hk::kExperts] = s.n_experts;
    c[hk::kTopK] = s.top_k;
    c[hk::kMoeFf] = s.moe_ff;
  }
  auto rope = [](const RopeSpec& r) {
    json j = {{hk::kRopeType, r.type}, {hk::kRopeTheta, r.theta}};
    if (r.type == "proportional") j[hk::kPartialRotary] = r.partial_rotary_factor;
    return j;
  };
  c[hk::kRopeParameters] = {{hk::kSlidingAttention, rope(s.rope_sliding)}, {hk::kFullAttention, rope(s.rope_full)}};
  json lt = json::array();
  for (auto t : s.layer_types) lt.push_back(t == AttnType::Sliding ? hk::kSlidingAttention : hk::kFullAttention);
  c[hk::kLayerTypes] = lt;
  json plc = json::object();
  for (int i = 0; i < s.n_layers; ++i) {
    json e = json::object();
    if (i < static_cast<int>(s.layer_head_dim.size()) && s.layer_head_dim[i]) e[hk::kHeadDim] = *s.layer_head_dim[i];
    if (i < static_cast<int>(s.layer_kv_heads.size()) && s.layer_kv_heads[i]) e[hk::kKvHeads] = *s.layer_kv_heads[i];
    if (i < static_cast<int>(s.layer_n_heads.size()) && s.layer_n_heads[i]) e[hk::kHeads] = *s.layer_n_heads[i];
    if (!e.empty()) plc[std::to_string(i)] = e;
  }
  if (!plc.empty()) c[hk::kPerLayerConfig] = plc;
  c[hk::kActivation] = "gelu_pytorch_tanh";
  c[hk::kBosId] = s.bos_id;
  c[hk::kEosId] = s.eos_ids;
  c[hk::kPadId] = s.pad_id;
  return c;
}

}  // namespace g4
