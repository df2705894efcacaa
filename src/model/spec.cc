#include "model/spec.h"

#include <cmath>

#include "model/hf_keys.h"
#include "util/error.h"

namespace g4 {

void finalize_spec(ModelSpec& s, const std::string& src) {
  auto positive = [&](int v, const char* name) {
    if (v <= 0) fail("{}: {} must be positive, found {}", src, name, v);
  };
  positive(s.n_layers, hk::kNumLayers);
  positive(s.hidden, hk::kHidden);
  positive(s.vocab, hk::kVocab);
  positive(s.n_heads, hk::kHeads);
  positive(s.head_dim, hk::kHeadDim);
  positive(s.n_kv_heads, hk::kKvHeads);
  positive(s.intermediate, hk::kIntermediate);
  if (s.n_layers > 4096) fail("{}: num_hidden_layers = {} is implausible", src, s.n_layers);
  if (s.ple_dim < 0) fail("{}: hidden_size_per_layer_input must be >= 0", src);
  if (s.n_kv_shared < 0 || s.n_kv_shared >= s.n_layers)
    fail("{}: num_kv_shared_layers = {} must be in [0, num_hidden_layers = {})", src, s.n_kv_shared, s.n_layers);
  if (s.sliding_window < 0) fail("{}: sliding_window must be >= 0", src);
  if (!(s.rms_eps > 0)) fail("{}: rms_norm_eps must be positive", src);
  if (s.final_softcap && !(*s.final_softcap > 0)) fail("{}: final_logit_softcapping must be positive", src);
  if (s.moe) {
    positive(s.n_experts, hk::kExperts);
    positive(s.top_k, hk::kTopK);
    positive(s.moe_ff, hk::kMoeFf);
    if (s.top_k > s.n_experts) fail("{}: top_k_experts {} > num_experts {}", src, s.top_k, s.n_experts);
  }
  if (s.ple_dim > 0 && s.ple_vocab <= 0) fail("{}: vocab_size_per_layer_input must be positive with PLE", src);
  if (static_cast<int>(s.layer_types.size()) != s.n_layers)
    fail("{}: layer_types has {} entries but num_hidden_layers is {}", src, s.layer_types.size(), s.n_layers);
  auto resize = [&](auto& v) { v.resize(static_cast<size_t>(s.n_layers)); };
  resize(s.layer_head_dim);
  resize(s.layer_kv_heads);
  resize(s.layer_n_heads);
  resize(s.layer_ff);

  const int first_shared = s.first_kv_shared();
  s.layers.clear();
  for (int i = 0; i < s.n_layers; ++i) {
    LayerSpec l;
    l.index = i;
    l.type = s.layer_types[i];
    const bool full = l.type == AttnType::Full;
    l.n_heads = s.layer_n_heads[i].value_or(s.n_heads);
    l.head_dim = s.layer_head_dim[i].value_or(full && s.global_head_dim > 0 ? s.global_head_dim : s.head_dim);
    const bool alt_attention = s.k_eq_v && full;
    l.n_kv_heads = s.layer_kv_heads[i].value_or(
        alt_attention && s.n_global_kv_heads ? *s.n_global_kv_heads : s.n_kv_heads);
    l.has_v_proj = !alt_attention;
    positive(l.n_heads, "per-layer num_attention_heads");
    positive(l.head_dim, "per-layer head_dim");
    positive(l.n_kv_heads, "per-layer num_key_value_heads");
    if (l.n_heads % l.n_kv_heads != 0)
      fail("{}: layer {}: {} attention heads are not a multiple of {} KV heads", src, i, l.n_heads, l.n_kv_heads);
    const bool shared = s.n_kv_shared > 0 && i >= first_shared && first_shared > 0;
    l.owns_kv = !shared;
    l.kv_source = i;
    if (shared) {
      // HF rule: the last non-shared layer of the same attention type.
      l.kv_source = -1;
      for (int j = first_shared - 1; j >= 0; --j)
        if (s.layer_types[j] == l.type) { l.kv_source = j; break; }
      if (l.kv_source < 0)
        fail("{}: layer {} is KV-shared ({} attention) but no earlier non-shared layer has that type", src, i,
             attn_type_name(l.type));
    }
    l.ff_width = s.layer_ff[i].value_or(s.double_wide_mlp && shared ? 2 * s.intermediate : s.intermediate);
    positive(l.ff_width, "per-layer intermediate size");
    l.moe = s.moe;
    const RopeSpec& r = full ? s.rope_full : s.rope_sliding;
    if (r.type != "default" && r.type != "proportional")
      fail("{}: rope_type \"{}\" for {} layers is not supported (Gemma 4 uses default and proportional)", src, r.type,
           full ? "full_attention" : "sliding_attention");
    if (!(r.theta > 0)) fail("{}: rope_theta must be positive", src);
    if (l.head_dim % 2 != 0) fail("{}: layer {} head_dim {} is odd; RoPE needs pairs", src, i, l.head_dim);
    l.rope_theta = r.theta;
    l.rope_dim = l.head_dim;
    l.rope_pairs = r.type == "proportional"
                       ? static_cast<int>(std::floor(r.partial_rotary_factor * l.head_dim / 2 + 1e-9))  // int(rho*d // 2)
                       : l.head_dim / 2;
    if (l.rope_pairs < 0 || l.rope_pairs > l.head_dim / 2)
      fail("{}: partial_rotary_factor {} gives {} rotated pairs for head_dim {}", src, r.partial_rotary_factor,
           l.rope_pairs, l.head_dim);
    l.window = full ? 0 : s.sliding_window;
    if (!full && s.sliding_window <= 0) fail("{}: sliding layers need sliding_window > 0", src);
    s.layers.push_back(l);
  }
  for (const auto& l : s.layers) {
    const auto& src_l = s.layers[l.kv_source];
    if (!l.owns_kv && (src_l.head_dim != l.head_dim || src_l.n_kv_heads != l.n_kv_heads))
      fail("{}: layer {} shares KV of layer {} but their head geometry differs", src, l.index, l.kv_source);
  }
}

std::string guess_variant(const ModelSpec& s) {
  struct V { const char* name; int L, H; };
  static const V known[] = {{"E2B", 35, 1536}, {"E4B", 42, 2560}, {"12B", 48, 3840}, {"26B-A4B", 30, 2816}, {"31B", 60, 5376}};
  for (const auto& v : known)
    if (s.n_layers == v.L && s.hidden == v.H) return v.name;
  return "custom";
}

std::vector<float> rope_inv_freq(const LayerSpec& l) {
  std::vector<float> f(static_cast<size_t>(l.head_dim / 2), 0.0f);
  const float base = static_cast<float>(l.rope_theta);
  for (int j = 0; j < l.rope_pairs; ++j) {
    const float expo = static_cast<float>(2 * j) / static_cast<float>(l.rope_dim);
    f[j] = 1.0f / std::pow(base, expo);
  }
  return f;
}

}  // namespace g4
