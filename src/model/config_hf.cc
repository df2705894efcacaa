#include "model/config_hf.h"

#include "model/hf_keys.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace g4 {
namespace {

// Typed field access with messages that name the key and what was found.
struct Fields {
  const json& j;
  const std::string& src;

  bool has(const char* k) const { return j.contains(k) && !j[k].is_null(); }
  int get_int(const char* k, std::optional<int> def = std::nullopt) const {
    if (!has(k)) {
      if (def) return *def;
      fail("{}: required key \"{}\" is missing from the text config", src, k);
    }
    const auto& v = j[k];
    if (!v.is_number_integer()) fail("{}: \"{}\" must be an integer, found {}", src, k, v.dump());
    const auto x = v.get<int64_t>();
    if (x < INT32_MIN || x > INT32_MAX) fail("{}: \"{}\" = {} is out of range", src, k, x);
    return static_cast<int>(x);
  }
  double get_num(const char* k, double def) const {
    if (!has(k)) return def;
    if (!j[k].is_number()) fail("{}: \"{}\" must be a number, found {}", src, k, j[k].dump());
    return j[k].get<double>();
  }
  bool get_bool(const char* k, bool def) const {
    if (!has(k)) return def;
    if (!j[k].is_boolean()) fail("{}: \"{}\" must be true or false, found {}", src, k, j[k].dump());
    return j[k].get<bool>();
  }
};

RopeSpec parse_rope(const json& r, const std::string& src, const char* layer_type) {
  if (!r.is_object()) fail("{}: rope_parameters.{} must be an object", src, layer_type);
  RopeSpec out;
  Fields f{r, src};
  if (f.has(hk::kRopeType)) {
    if (!r[hk::kRopeType].is_string()) fail("{}: rope_parameters.{}.rope_type must be a string", src, layer_type);
    out.type = r[hk::kRopeType].get<std::string>();
  }
  out.theta = f.get_num(hk::kRopeTheta, 10000.0);
  out.partial_rotary_factor = f.get_num(hk::kPartialRotary, 1.0);
  if (f.has(hk::kRopeFactor) && f.get_num(hk::kRopeFactor, 1.0) != 1.0)
    fail("{}: rope_parameters.{}.factor = {} is not supported (Gemma 4 uses 1.0)", src, layer_type, r[hk::kRopeFactor].dump());
  return out;
}

}  // namespace

ModelSpec spec_from_hf_config(const json& root, const std::string& src) {
  if (!root.is_object()) fail("{}: config is not a JSON object", src);
  const json& tc = root.contains(hk::kTextConfig) && root[hk::kTextConfig].is_object() ? root[hk::kTextConfig] : root;
  Fields f{tc, src};
  ModelSpec s;
  s.source_format = "hf";
  if (tc.contains(hk::kModelType) && tc[hk::kModelType].is_string()) {
    const auto mt = tc[hk::kModelType].get<std::string>();
    if (mt.rfind("gemma4", 0) != 0)
      fail("{}: model_type \"{}\" is not a Gemma 4 text model (expected gemma4_text or gemma4)", src, mt);
  }
  s.n_layers = f.get_int(hk::kNumLayers);
  s.hidden = f.get_int(hk::kHidden);
  s.vocab = f.get_int(hk::kVocab);
  s.n_heads = f.get_int(hk::kHeads);
  s.head_dim = f.get_int(hk::kHeadDim);
  s.global_head_dim = f.get_int(hk::kGlobalHeadDim, 0);
  s.n_kv_heads = f.get_int(hk::kKvHeads);
  if (f.has(hk::kGlobalKvHeads)) s.n_global_kv_heads = f.get_int(hk::kGlobalKvHeads);
  s.intermediate = f.get_int(hk::kIntermediate);
  s.double_wide_mlp = f.get_bool(hk::kDoubleWideMlp, false);
  s.k_eq_v = f.get_bool(hk::kKEqV, false);
  s.ple_dim = f.get_int(hk::kPleDim, 0);
  s.ple_vocab = f.get_int(hk::kPleVocab, s.vocab);
  s.n_kv_shared = f.get_int(hk::kKvShared, 0);
  s.sliding_window = f.get_int(hk::kSlidingWindow, 512);
  s.rms_eps = f.get_num(hk::kRmsEps, 1e-6);
  if (f.has(hk::kFinalSoftcap)) s.final_softcap = f.get_num(hk::kFinalSoftcap, 0);
  s.max_ctx = f.get_int(hk::kMaxCtx, 131072);
  s.moe = f.get_bool(hk::kMoe, false);
  if (s.moe) {
    s.n_experts = f.get_int(hk::kExperts);
    s.top_k = f.get_int(hk::kTopK);
    s.moe_ff = f.get_int(hk::kMoeFf);
  }
  if (f.has(hk::kAttentionBias) && f.get_bool(hk::kAttentionBias, false))
    fail("{}: attention_bias = true is not part of Gemma 4 and is not supported", src);
  if (f.has(hk::kActivation)) {
    if (!tc[hk::kActivation].is_string() || tc[hk::kActivation] != "gelu_pytorch_tanh")
      fail("{}: hidden_activation {} is not supported (Gemma 4 uses \"gelu_pytorch_tanh\")", src, tc[hk::kActivation].dump());
  }
  if (f.has(hk::kBidirectional)) {
    const auto& b = tc[hk::kBidirectional];
    if (b == "all") fail("{}: use_bidirectional_attention = \"all\" (non-causal text) is not supported", src);
  }
  if (f.has(hk::kRopeParameters)) {
    const auto& rp = tc[hk::kRopeParameters];
    if (!rp.is_object()) fail("{}: rope_parameters must be an object keyed by layer type", src);
    if (rp.contains(hk::kSlidingAttention)) s.rope_sliding = parse_rope(rp[hk::kSlidingAttention], src, hk::kSlidingAttention);
    if (rp.contains(hk::kFullAttention)) s.rope_full = parse_rope(rp[hk::kFullAttention], src, hk::kFullAttention);
  }
  if (f.has(hk::kLayerTypes)) {
    const auto& lt = tc[hk::kLayerTypes];
    if (!lt.is_array()) fail("{}: layer_types must be an array", src);
    for (const auto& t : lt) {
      if (t == hk::kSlidingAttention) s.layer_types.push_back(AttnType::Sliding);
      else if (t == hk::kFullAttention) s.layer_types.push_back(AttnType::Full);
      else fail("{}: layer_types entry {} is not \"sliding_attention\" or \"full_attention\"", src, t.dump());
    }
  } else {
    // HF rule when layer_types is absent: every 6th layer is full.
    for (int i = 0; i < s.n_layers; ++i) s.layer_types.push_back((i + 1) % 6 == 0 ? AttnType::Full : AttnType::Sliding);
  }
  // HF forces the last layer to full attention (llama.cpp does not; no released config differs).
  if (!s.layer_types.empty()) s.layer_types.back() = AttnType::Full;
  s.layer_head_dim.resize(static_cast<size_t>(std::max(0, s.n_layers)));
  s.layer_kv_heads.resize(s.layer_head_dim.size());
  s.layer_n_heads.resize(s.layer_head_dim.size());
  if (f.has(hk::kPerLayerConfig)) {
    const auto& plc = tc[hk::kPerLayerConfig];
    if (!plc.is_object() && !plc.is_array()) fail("{}: per_layer_config must be an object keyed by layer index", src);
    auto apply = [&](int idx, const json& e) {
      if (idx < 0 || idx >= s.n_layers) fail("{}: per_layer_config names layer {} but the model has {}", src, idx, s.n_layers);
      if (!e.is_object()) fail("{}: per_layer_config[{}] must be an object", src, idx);
      Fields ef{e, src};
      if (ef.has(hk::kHeadDim)) s.layer_head_dim[idx] = ef.get_int(hk::kHeadDim);
      if (ef.has(hk::kKvHeads)) s.layer_kv_heads[idx] = ef.get_int(hk::kKvHeads);
      if (ef.has(hk::kHeads)) s.layer_n_heads[idx] = ef.get_int(hk::kHeads);
    };
    if (plc.is_object()) {
      for (auto it = plc.begin(); it != plc.end(); ++it) {
        int idx = -1;
        try { size_t used = 0; idx = std::stoi(it.key(), &used); if (used != it.key().size()) idx = -1; } catch (...) {}
        if (idx < 0) fail("{}: per_layer_config key \"{}\" is not a layer index", src, it.key());
        apply(idx, it.value());
      }
    } else {
      for (size_t i = 0; i < plc.size(); ++i) if (!plc[i].is_null()) apply(static_cast<int>(i), plc[i]);
    }
  }
  if (root.contains(hk::kEosId) || tc.contains(hk::kEosId)) {
    const auto& e = root.contains(hk::kEosId) ? root[hk::kEosId] : tc[hk::kEosId];
    s.eos_ids.clear();
    if (e.is_array()) { for (const auto& x : e) if (x.is_number_integer()) s.eos_ids.push_back(x.get<int>()); }
    else if (e.is_number_integer()) s.eos_ids.push_back(e.get<int>());
  }
  s.bos_id = f.get_int(hk::kBosId, 2);
  s.pad_id = f.get_int(hk::kPadId, 0);
  finalize_spec(s, src);
  return s;
}

ModelSpec spec_from_hf_config_file(const std::string& path) {
  return spec_from_hf_config(parse_json_strict(read_text_file(path), path), path);
}

}  // namespace g4
