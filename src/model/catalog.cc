#include "model/catalog.h"

#include <fmt/format.h>

#include <regex>

namespace g4 {
namespace {

// Indexed by LayerTensor.
constexpr TensorName kLayerNames[] = {
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
static_assert(std::size(kLayerNames) == static_cast<size_t>(LayerTensor::Count));

// Indexed by GlobalTensor.
constexpr TensorName kGlobalNames[] = {
    {"embed_tokens.weight", "token_embd.weight"},
    {"embed_tokens_per_layer.weight", "per_layer_token_embd.weight"},
    {"per_layer_model_projection.weight", "per_layer_model_proj.weight"},
    {"per_layer_projection_norm.weight", "per_layer_proj_norm.weight"},
    {"", "rope_freqs.weight"},
    {"norm.weight", "output_norm.weight"},
};
static_assert(std::size(kGlobalNames) == static_cast<size_t>(GlobalTensor::Count));

std::string class_of(const char* gguf_suffix) {
  std::string s(gguf_suffix);
  if (s.size() > 7 && s.compare(s.size() - 7, 7, ".weight") == 0) s.resize(s.size() - 7);
  return s;
}

}  // namespace

const TensorName& tensor_name(LayerTensor t) { return kLayerNames[static_cast<int>(t)]; }
const TensorName& tensor_name(GlobalTensor t) { return kGlobalNames[static_cast<int>(t)]; }
std::string hf_name(int layer, LayerTensor t) { return fmt::format("layers.{}.{}", layer, tensor_name(t).hf); }
std::string gguf_name(int layer, LayerTensor t) { return fmt::format("blk.{}.{}", layer, tensor_name(t).gguf); }

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
  auto global = [&](GlobalTensor t, std::vector<int64_t> shape) {
    const TensorName& n = tensor_name(t);
    out.push_back({n.hf, n.gguf, class_of(n.gguf), -1, std::move(shape), true});
  };
  global(GlobalTensor::Embed, {V, H});
  if (P > 0) {
    global(GlobalTensor::PleEmbed, {s.ple_vocab, L * P});
    global(GlobalTensor::PleModelProj, {L * P, H});
    global(GlobalTensor::PleProjNorm, {P});
  }
  bool any_full = false;
  for (const auto& l : s.layers) any_full |= l.type == AttnType::Full;
  if (fmt == FileFormat::GGUF && any_full) {
    int full_hd = 0;
    for (const auto& l : s.layers) if (l.type == AttnType::Full) full_hd = l.head_dim;
    global(GlobalTensor::RopeFreqs, {full_hd / 2});
  }
  global(GlobalTensor::FinalNorm, {H});

  for (const auto& l : s.layers) {
    const int64_t hd = l.head_dim, q = int64_t{l.n_heads} * hd, kv = int64_t{l.n_kv_heads} * hd, I = l.ff_width;
    using LT = LayerTensor;
    auto add = [&](LT t, std::vector<int64_t> shape) {
      out.push_back({hf_name(l.index, t), gguf_name(l.index, t), class_of(tensor_name(t).gguf), l.index, std::move(shape), true});
    };
    add(LT::AttnNorm, {H});
    add(LT::Q, {q, H});
    add(LT::QNorm, {hd});
    if (l.owns_kv) {
      add(LT::K, {kv, H});
      add(LT::KNorm, {hd});
      if (l.has_v_proj) add(LT::V, {kv, H});
    }
    add(LT::O, {H, q});
    add(LT::PostAttnNorm, {H});
    add(LT::FfnNorm, {H});
    add(LT::Gate, {I, H});
    add(LT::Up, {I, H});
    add(LT::Down, {H, I});
    add(LT::PostFfnNorm, {H});
    add(LT::LayerScalar, {1});
    if (P > 0) {
      add(LT::PleGate, {P, H});
      add(LT::PleProj, {H, P});
      add(LT::PlePostNorm, {H});
    }
    if (l.moe) {
      const int64_t E = s.n_experts, Ie = s.moe_ff;
      add(LT::RouterProj, {E, H});
      add(LT::RouterScale, {H});
      add(LT::PerExpertScale, {E});
      add(LT::ExpertsGateUp, {E, 2 * Ie, H});
      add(LT::ExpertsDown, {E, H, Ie});
      add(LT::PreFfnNorm2, {H});
      add(LT::PostFfnNorm1, {H});
      add(LT::PostFfnNorm2, {H});
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
    const TensorName* def = nullptr;
    for (const auto& d : kLayerNames)
      if (suffix == (is_hf ? d.hf : d.gguf)) def = &d;
    if (!def) return std::nullopt;
    const long idx = idx_s.size() > 6 ? 1000000 : std::stol(idx_s);
    if (idx >= s.n_layers)
      return fmt::format("layer {} does not exist: the config has num_hidden_layers = {}", idx, s.n_layers);
    const auto& l = s.layers[static_cast<size_t>(idx)];
    const std::string hf = def->hf;
    auto is = [&](LayerTensor t) { return def == &tensor_name(t); };
    if ((is(LayerTensor::K) || is(LayerTensor::V) || is(LayerTensor::KNorm)) && !l.owns_kv)
      return fmt::format("layer {} is KV-shared (num_kv_shared_layers = {}): it reads the K/V of layer {} and owns no {}",
                         idx, s.n_kv_shared, l.kv_source, hf);
    if (is(LayerTensor::V) && !l.has_v_proj)
      return fmt::format("layer {} is a full-attention layer of an attention_k_eq_v model: V is the K projection, there is no v_proj", idx);
    const auto in = [&](LayerTensor lo, LayerTensor hi) { return def >= &tensor_name(lo) && def <= &tensor_name(hi); };
    if (in(LayerTensor::PleGate, LayerTensor::PlePostNorm))
      return fmt::format("the config has hidden_size_per_layer_input = 0 (no per-layer embeddings)");
    if (in(LayerTensor::RouterProj, LayerTensor::PostFfnNorm2)) return fmt::format("the config has enable_moe_block = false");
    return std::nullopt;
  }
  for (GlobalTensor t : {GlobalTensor::PleEmbed, GlobalTensor::PleModelProj, GlobalTensor::PleProjNorm})
    if (name == (is_hf ? tensor_name(t).hf : tensor_name(t).gguf))
      return fmt::format("the config has hidden_size_per_layer_input = 0 (no per-layer embeddings)");
  return std::nullopt;
}

}  // namespace g4
