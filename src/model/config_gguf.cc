#include "model/config_gguf.h"

#include <cmath>
#include <cstring>

#include "model/catalog.h"
#include "model/hparams.h"
#include "util/error.h"

namespace g4 {
namespace {

const TensorView* find_tensor(const GgufFile& g, const std::string& name) {
  for (const auto& t : g.tensors)
    if (t.name == name) return &t;
  return nullptr;
}

// Scalar or per-layer array (INT32/UINT32 arrays both accepted, as llama.cpp does).
void per_layer_ints(const GgufFile& g, const std::string& key, int n_layers, int& scalar,
                    std::vector<std::optional<int>>& per_layer, bool required) {
  const auto* v = g.find(key);
  if (!v) {
    if (required) fail("{}: required metadata key '{}' is missing", g.path, key);
    return;
  }
  auto check = [&](int64_t x) {
    if (x < 0 || x > INT32_MAX) fail("{}: '{}' value {} is out of range", g.path, key, x);
    return static_cast<int>(x);
  };
  if (v->is_array()) {
    if (v->ai.size() != static_cast<size_t>(n_layers))
      fail("{}: '{}' has {} entries but block_count is {}", g.path, key, v->array_size(), n_layers);
    per_layer.assign(static_cast<size_t>(n_layers), std::nullopt);
    for (int i = 0; i < n_layers; ++i) per_layer[i] = check(v->ai[i]);
    scalar = *per_layer[0];
  } else {
    scalar = check(*g.get_int(key));
  }
}

int req_int(const GgufFile& g, const std::string& key) {
  auto v = g.get_int(key);
  if (!v) fail("{}: required metadata key '{}' is missing", g.path, key);
  if (*v < 0 || *v > INT32_MAX) fail("{}: '{}' = {} is out of range", g.path, key, *v);
  return static_cast<int>(*v);
}

}  // namespace

ModelSpec spec_from_gguf(const GgufFile& g) {
  const auto arch = g.get_string(gk::kArchitecture);
  if (!arch) fail("{}: metadata key 'general.architecture' is missing", g.path);
  if (*arch != "gemma4")
    fail("{}: general.architecture is \"{}\"; g4 runs Gemma 4 text models (\"gemma4\")", g.path, *arch);
  ModelSpec s;
  s.source_format = "gguf";
  s.n_layers = req_int(g, gk::kBlockCount);
  if (s.n_layers <= 0 || s.n_layers > 4096) fail("{}: gemma4.block_count = {} is implausible", g.path, s.n_layers);
  s.hidden = req_int(g, gk::kEmbeddingLength);
  s.max_ctx = req_int(g, gk::kContextLength);
  per_layer_ints(g, gk::kHeadCount, s.n_layers, s.n_heads, s.layer_n_heads, true);
  per_layer_ints(g, gk::kHeadCountKv, s.n_layers, s.n_kv_heads, s.layer_kv_heads, true);
  per_layer_ints(g, gk::kFeedForwardLength, s.n_layers, s.intermediate, s.layer_ff, true);
  s.global_head_dim = req_int(g, gk::kKeyLength);
  s.head_dim = g.get_int(gk::kKeyLengthSwa).value_or(s.global_head_dim);
  if (auto vl = g.get_int(gk::kValueLength); vl && *vl != s.global_head_dim)
    fail("{}: attention.value_length {} != key_length {}; Gemma 4 needs them equal", g.path, *vl, s.global_head_dim);
  if (auto vl = g.get_int(gk::kValueLengthSwa); vl && *vl != s.head_dim)
    fail("{}: attention.value_length_swa {} != key_length_swa {}", g.path, *vl, s.head_dim);
  s.rms_eps = g.get_float(gk::kRmsEps).value_or(1e-6);
  s.sliding_window = req_int(g, gk::kSlidingWindow);
  s.n_kv_shared = static_cast<int>(g.get_int(gk::kSharedKvLayers).value_or(0));
  s.ple_dim = static_cast<int>(g.get_int(gk::kPleLength).value_or(0));
  s.final_softcap = g.get_float(gk::kFinalSoftcap).value_or(30.0);  // llama.cpp's default
  if (auto e = g.get_int(gk::kExpertCount); e && *e > 0) {
    s.moe = true;
    s.n_experts = static_cast<int>(*e);
    s.top_k = req_int(g, gk::kExpertUsedCount);
    s.moe_ff = req_int(g, gk::kExpertFfLength);
  }
  const auto* pat = g.find(gk::kSlidingWindowPattern);
  if (!pat) fail("{}: required metadata key 'gemma4.attention.sliding_window_pattern' is missing", g.path);
  if (!pat->is_array() || pat->ai.size() != static_cast<size_t>(s.n_layers))
    fail("{}: gemma4.attention.sliding_window_pattern must be a BOOL array of block_count ({}) entries", g.path, s.n_layers);
  for (auto b : pat->ai) s.layer_types.push_back(b ? AttnType::Sliding : AttnType::Full);

  // Sizes that only the tensors tell.
  const TensorView* embd = find_tensor(g, tensor_name(GlobalTensor::Embed).gguf);
  if (!embd || embd->shape.size() != 2)
    fail("{}: tensor 'token_embd.weight' (2-D, [vocab, hidden]) is missing; the file is not a complete model", g.path);
  if (embd->shape[0] > INT32_MAX) fail("{}: vocab size {} is out of range", g.path, embd->shape[0]);
  s.vocab = static_cast<int>(embd->shape[0]);
  if (s.ple_dim > 0) {
    const TensorView* pe = find_tensor(g, tensor_name(GlobalTensor::PleEmbed).gguf);
    s.ple_vocab = pe && pe->shape.size() == 2 && pe->shape[0] <= INT32_MAX ? static_cast<int>(pe->shape[0]) : s.vocab;
  }

  // k_eq_v has no key: llama.cpp treats a missing attn_v as "V = raw K".
  for (int i = 0; i < s.n_layers - s.n_kv_shared; ++i)
    if (s.layer_types[i] == AttnType::Full && !find_tensor(g, gguf_name(i, LayerTensor::V))) s.k_eq_v = true;

  // RoPE. Sliding layers: default RoPE over the whole head. Full layers: llama.cpp
  // rotates n_rot = dimension_count dims and silences pairs with rope_freqs >= 1e29.
  s.rope_sliding = {"default", g.get_float(gk::kRopeFreqBaseSwa).value_or(10000.0), 1.0};
  if (auto d = g.get_int(gk::kRopeDimCountSwa); d && *d != s.head_dim)
    fail("{}: rope.dimension_count_swa = {} but sliding head size is {}; partial RoPE on sliding layers is not Gemma 4",
         g.path, *d, s.head_dim);
  s.rope_full = {"proportional", g.get_float(gk::kRopeFreqBase).value_or(1e6), 1.0};
  bool any_full = false;
  for (auto t : s.layer_types) any_full |= t == AttnType::Full;
  if (any_full) {
    if (auto d = g.get_int(gk::kRopeDimCount); d && *d != s.global_head_dim)
      fail("{}: rope.dimension_count = {} but the full-attention head size is {}; g4 expects llama.cpp's layout "
           "(all dims with rope_freqs)", g.path, *d, s.global_head_dim);
    const TensorView* rf = find_tensor(g, tensor_name(GlobalTensor::RopeFreqs).gguf);
    if (rf) {
      if (rf->dtype != DType::F32 || rf->shape.size() != 1 || rf->shape[0] != s.global_head_dim / 2)
        fail("{}: tensor 'rope_freqs.weight' must be F32 [{}], found {} {}", g.path, s.global_head_dim / 2,
             dtype_name(rf->dtype), rf->shape_str());
      int pairs = 0;
      bool in_tail = false;
      for (int64_t j = 0; j < rf->shape[0]; ++j) {
        float f;
        std::memcpy(&f, rf->data + 4 * j, 4);
        if (f == 1.0f && !in_tail) { ++pairs; continue; }
        if (f >= 1e29f) { in_tail = true; continue; }
        fail("{}: rope_freqs.weight[{}] = {} (byte {}): g4 supports the proportional pattern (1.0 then >= 1e29)",
             g.path, j, f, rf->file_offset + 4 * j);
      }
      s.rope_full.partial_rotary_factor = 2.0 * pairs / s.global_head_dim;
    }
    // Without rope_freqs the model would rotate every pair: the validation step
    // reports the missing tensor instead of silently doing that.
  }
  s.bos_id = static_cast<int>(g.get_int(gk::kBosId).value_or(2));
  if (auto e = g.get_int(gk::kEosId)) s.eos_ids = {static_cast<int>(*e)};
  s.pad_id = static_cast<int>(g.get_int(gk::kPadId).value_or(0));
  finalize_spec(s, g.path);
  return s;
}

}  // namespace g4
