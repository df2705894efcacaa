#include "model/catalog.h"

#include <fmt/format.h>

#include <regex>

namespace g4 {
namespace {

struct LayerTensorDef {
  const char* hf;    // suffix after "layers.{i}."
  const char* gguf;  // suffix after "blk.{i}."
};

// Per-layer names, HF <-> GGUF (gemma4-tensors.md §3).
constexpr LayerTensorDef kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"post_attention_layernorm.weight", "post_attention_norm.weight"},
    {"pre_feedforward_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    {"post_feedforward_layernorm.weight", "post_ffw_norm.weight"},
    {"layer_scalar", "layer_output_scale.weight"},
    {"per_layer_input_gate.weight", "inp_gate.weight"},
    {"per_layer_projection.weight", "proj.weight"},
    {"post_per_layer_input_norm.weight", "post_norm.weight"},
    {"router.proj.weight", "ffn_gate_inp.weight"},
    {"router.scale", "ffn_gate_inp.scale"},
    {"router.per_expert_scale", "ffn_down_exps.scale"},
    {"experts.gate_up_proj", "ffn_gate_up_exps.weight"},
    {"experts.down_proj", "ffn_down_exps.weight"},
    {"pre_feedforward_layernorm_2.weight", "pre_ffw_norm_2.weight"},
    {"post_feedforward_layernorm_1.weight", "post_ffw_norm_1.weight"},
    {"post_feedforward_layernorm_2.weight", "post_ffw_norm_2.weight"},
};

std::string class_of(const char* gguf_suffix) {
  std::string s(gguf_suffix);
  if (s.size() > 7 && s.compare(s.size() - 7, 7, ".weight") == 0) s.resize(s.size() - 7);
  return s;
}

}  // namespace

std::optional<std::string> strip_hf_prefix(const std::string& name) {
  for (const char* p : {"model.language_model.", "language_model.model.", "model."}) {
    const std::string pre(p);
    if (name.rfind(pre, 0) == 0) {
      std::string rest = name.substr(pre.size());
      if (rest.rfind("vision", 0) == 0 || rest.rfind("audio", 0) == 0 || rest.rfind("embed_vision", 0) == 0 ||
          rest.rfind("embed_audio", 0) == 0)
        return std::nullopt;
      return rest;
    }
  }
  if (name == "lm_head.weight") return name;
  return std::nullopt;
}

std::vector<TensorSlot> expected_tensors(const ModelSpec& s, FileFormat fmt) {
  std::vector<TensorSlot> out;
  const int64_t H = s.hidden, V = s.vocab, L = s.n_layers, P = s.ple_dim;
  auto global = [&](const char* hf, const char* gguf, std::vector<int64_t> shape, bool required = true) {
    out.push_back({hf, gguf, class_of(gguf), -1, std::move(shape), required});
  };
  global("embed_tokens.weight", "token_embd.weight", {V, H});
  if (P > 0) {
    global("embed_tokens_per_layer.weight", "per_layer_token_embd.weight", {s.ple_vocab, L * P});
    global("per_layer_model_projection.weight", "per_layer_model_proj.weight", {L * P, H});
    global("per_layer_projection_norm.weight", "per_layer_proj_norm.weight", {P});
  }
  bool any_full = false;
  for (const auto& l : s.layers) any_full |= l.type == AttnType::Full;
  if (fmt == FileFormat::GGUF && any_full) {
    int full_hd = 0;
    for (const auto& l : s.layers) if (l.type == AttnType::Full) full_hd = l.head_dim;
    global("", "rope_freqs.weight", {full_hd / 2});
  }
  global("norm.weight", "output_norm.weight", {H});

  for (const auto& l : s.layers) {
    const int64_t hd = l.head_dim, q = int64_t{l.n_heads} * hd, kv = int64_t{l.n_kv_heads} * hd, I = l.ff_width;
    auto add = [&](const char* hf, std::vector<int64_t> shape) {
      for (const auto& d : kLayerNames) {
        if (std::string(d.hf) != hf) continue;
        out.push_back({fmt::format("layers.{}.{}", l.index, d.hf), fmt::format("blk.{}.{}", l.index, d.gguf),
                       class_of(d.gguf), l.index, std::move(shape), true});
        return;
      }
    };
    add("input_layernorm.weight", {H});
    add("self_attn.q_proj.weight", {q, H});
    add("self_attn.q_norm.weight", {hd});
    if (l.owns_kv) {
      add("self_attn.k_proj.weight", {kv, H});
      add("self_attn.k_norm.weight", {hd});
      if (l.has_v_proj) add("self_attn.v_proj.weight", {kv, H});
    }
    add("self_attn.o_proj.weight", {H, q});
    add("post_attention_layernorm.weight", {H});
    add("pre_feedforward_layernorm.weight", {H});
    add("mlp.gate_proj.weight", {I, H});
    add("mlp.up_proj.weight", {I, H});
    add("mlp.down_proj.weight", {H, I});
    add("post_feedforward_layernorm.weight", {H});
    add("layer_scalar", {1});
    if (P > 0) {
      add("per_layer_input_gate.weight", {P, H});
      add("per_layer_projection.weight", {H, P});
      add("post_per_layer_input_norm.weight", {H});
    }
    if (l.moe) {
      const int64_t E = s.n_experts, Ie = s.moe_ff;
      add("router.proj.weight", {E, H});
      add("router.scale", {H});
      add("router.per_expert_scale", {E});
      add("experts.gate_up_proj", {E, 2 * Ie, H});
      add("experts.down_proj", {E, H, Ie});
      add("pre_feedforward_layernorm_2.weight", {H});
      add("post_feedforward_layernorm_1.weight", {H});
      add("post_feedforward_layernorm_2.weight", {H});
    }
  }
  return out;
}

std::optional<std::string> contradiction(const ModelSpec& s, FileFormat fmt, const std::string& name) {
  static const std::regex hf_layer(R"(layers\.(\d+)\.(.+))");
  static const std::regex gguf_layer(R"(blk\.(\d+)\.(.+))");
  std::smatch m;
  const bool is_hf = fmt == FileFormat::HF;
  if (std::regex_match(name, m, is_hf ? hf_layer : gguf_layer)) {
    const std::string idx_s = m[1];
    const std::string suffix = m[2];
    const LayerTensorDef* def = nullptr;
    for (const auto& d : kLayerNames)
      if (suffix == (is_hf ? d.hf : d.gguf)) def = &d;
    if (!def) return std::nullopt;
    const long idx = idx_s.size() > 6 ? 1000000 : std::stol(idx_s);
    if (idx >= s.n_layers)
      return fmt::format("layer {} does not exist: the config has num_hidden_layers = {}", idx, s.n_layers);
    const auto& l = s.layers[static_cast<size_t>(idx)];
    const std::string hf = def->hf;
    if ((hf == "self_attn.k_proj.weight" || hf == "self_attn.v_proj.weight" || hf == "self_attn.k_norm.weight") && !l.owns_kv)
      return fmt::format("layer {} is KV-shared (num_kv_shared_layers = {}): it reads the K/V of layer {} and owns no {}",
                         idx, s.n_kv_shared, l.kv_source, hf);
    if (hf == "self_attn.v_proj.weight" && !l.has_v_proj)
      return fmt::format("layer {} is a full-attention layer of an attention_k_eq_v model: V is the K projection, there is no v_proj", idx);
    if (hf.rfind("per_layer", 0) == 0 || hf == "post_per_layer_input_norm.weight")
      return fmt::format("the config has hidden_size_per_layer_input = 0 (no per-layer embeddings)");
    if (hf.rfind("router", 0) == 0 || hf.rfind("experts", 0) == 0 || hf.find("feedforward_layernorm_") != std::string::npos)
      return fmt::format("the config has enable_moe_block = false");
    return std::nullopt;
  }
  const char* ple[] = {"embed_tokens_per_layer.weight", "per_layer_model_projection.weight", "per_layer_projection_norm.weight",
                       "per_layer_token_embd.weight", "per_layer_model_proj.weight", "per_layer_proj_norm.weight"};
  for (const char* p : ple)
    if (name == p) return fmt::format("the config has hidden_size_per_layer_input = 0 (no per-layer embeddings)");
  return std::nullopt;
}

}  // namespace g4
