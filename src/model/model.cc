#include "model/model.h"

#include <filesystem>
#include <set>

#include "model/config_gguf.h"
#include "model/config_hf.h"
#include "formats/safetensors.h"
#include "kernels/dequant.h"
#include "util/error.h"
#include "formats/gguf_keys.h"

namespace g4 {
namespace fs = std::filesystem;

bool dtype_computable(DType t) { return dequant_supported(t); }

void bind_weights(Model& m) {
  auto get = [&](const std::string& hf) -> const TensorView* {
    auto it = m.by_hf_name.find(hf);
    return it == m.by_hf_name.end() ? nullptr : &it->second;
  };
  auto global = [&](GlobalTensor t) { return get(tensor_name(t).hf); };
  m.w.embed = global(GlobalTensor::Embed);
  m.w.ple_embed = global(GlobalTensor::PleEmbed);
  m.w.ple_model_proj = global(GlobalTensor::PleModelProj);
  m.w.ple_proj_norm = global(GlobalTensor::PleProjNorm);
  m.w.final_norm = global(GlobalTensor::FinalNorm);
  using LT = LayerTensor;
  using Field = const TensorView* LayerWeights::*;
  static constexpr std::pair<LT, Field> kFields[] = {
      {LT::AttnNorm, &LayerWeights::attn_norm}, {LT::Q, &LayerWeights::q}, {LT::K, &LayerWeights::k},
      {LT::V, &LayerWeights::v}, {LT::O, &LayerWeights::o}, {LT::QNorm, &LayerWeights::q_norm},
      {LT::KNorm, &LayerWeights::k_norm}, {LT::PostAttnNorm, &LayerWeights::post_attn_norm},
      {LT::FfnNorm, &LayerWeights::ffn_norm}, {LT::Gate, &LayerWeights::gate}, {LT::Up, &LayerWeights::up},
      {LT::Down, &LayerWeights::down}, {LT::PostFfnNorm, &LayerWeights::post_ffn_norm},
      {LT::LayerScalar, &LayerWeights::layer_scalar}, {LT::PleGate, &LayerWeights::ple_gate},
      {LT::PleProj, &LayerWeights::ple_proj}, {LT::PlePostNorm, &LayerWeights::ple_post_norm},
      {LT::RouterProj, &LayerWeights::router_proj}, {LT::RouterScale, &LayerWeights::router_scale},
      {LT::PerExpertScale, &LayerWeights::per_expert_scale}, {LT::ExpertsGateUp, &LayerWeights::experts_gate_up},
      {LT::ExpertsDown, &LayerWeights::experts_down}, {LT::PreFfnNorm2, &LayerWeights::pre_ffn_norm_2},
      {LT::PostFfnNorm1, &LayerWeights::post_ffn_norm_1}, {LT::PostFfnNorm2, &LayerWeights::post_ffn_norm_2},
  };
  static_assert(std::size(kFields) == static_cast<size_t>(LT::Count));
  m.w.layers.assign(static_cast<size_t>(m.spec.n_layers), {});
  for (int i = 0; i < m.spec.n_layers; ++i)
    for (const auto& [t, field] : kFields) m.w.layers[i].*field = get(hf_name(i, t));
}

Model Model::clone() const {
  Model c;
  c.path = path;
  c.format = format;
  c.spec = spec;
  c.file_tensors = file_tensors;
  c.by_hf_name = by_hf_name;
  c.errors = errors;
  c.warnings = warnings;
  c.gguf = gguf;
  if (c.valid()) bind_weights(c);
  return c;
}

namespace {

void validate(Model& m, const LoadOptions& opt) {
  const bool hf = m.format == FileFormat::HF;
  std::map<std::string, const TensorView*> by_file_name;  // catalogue name in file -> tensor
  std::set<std::string> ignored;
  for (const auto& t : m.file_tensors) {
    if (hf) {
      auto stripped = strip_hf_prefix(t.name);
      if (!stripped) {
        ignored.insert(t.name);
        continue;
      }
      if (*stripped == "lm_head.weight") {  // tied: HF drops it too; warn so nobody is surprised
        m.warnings.push_back({t.name, "lm_head.weight is ignored: Gemma 4 ties the LM head to embed_tokens"});
        continue;
      }
      if (!by_file_name.emplace(*stripped, &t).second)
        m.errors.push_back({t.name, "the same tensor appears twice (under two prefixes); remove one copy"});
    } else {
      by_file_name.emplace(t.name, &t);
    }
  }
  if (!ignored.empty())
    m.warnings.push_back({"", fmt::format("{} non-text tensors (vision/audio towers, e.g. '{}') are ignored",
                                          ignored.size(), *ignored.begin())});

  const auto slots = expected_tensors(m.spec, m.format);
  std::set<std::string> used;
  for (const auto& slot : slots) {
    const std::string& fname = hf ? slot.hf : slot.gguf;
    auto it = by_file_name.find(fname);
    const std::string shown = hf ? "model.language_model." + slot.hf : slot.gguf;
    if (it == by_file_name.end()) {
      if (!slot.required) continue;
      std::string why;
      if (slot.cls == "inp_gate" || slot.cls == "proj" || slot.cls == "post_norm" || slot.gguf.rfind("per_layer", 0) == 0)
        why = fmt::format(" The config says hidden_size_per_layer_input = {}: this model uses per-layer embeddings and "
                          "cannot run without them (a known extractor bug drops them); re-export from the original checkpoint.",
                          m.spec.ple_dim);
      else if (slot.gguf == "rope_freqs.weight")
        why = " Full-attention layers need it for proportional RoPE; re-convert with a current llama.cpp converter.";
      else if (slot.cls == "layer_output_scale")
        why = " The per-layer scalar multiplies the whole hidden state; without it PPL explodes. Re-convert the model.";
      m.errors.push_back({shown, fmt::format("missing: expected {} {} (layer {}).{}", slot.hf.empty() ? slot.gguf : slot.hf,
                                             shape_to_string(slot.shape), slot.layer, why)});
      continue;
    }
    const TensorView& t = *it->second;
    used.insert(fname);
    if (t.shape != slot.shape) {
      m.errors.push_back({t.name, fmt::format("shape {} but the config implies {} ({}); the checkpoint and config.json "
                                              "do not belong together", t.shape_str(), shape_to_string(slot.shape),
                                              slot.layer >= 0 ? fmt::format("layer {}", slot.layer) : "global")});
      continue;
    }
    if (!dtype_computable(t.dtype)) {
      m.errors.push_back({t.name, fmt::format("dtype {} is not supported for compute (supported: F32, F16, BF16, F64, "
                                              "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K)", dtype_name(t.dtype))});
      continue;
    }
    if (!slot.hf.empty()) {
      TensorView v = t;
      m.by_hf_name.emplace(slot.hf, std::move(v));
    }
  }
  for (const auto& [name, t] : by_file_name) {
    if (used.count(name)) continue;
    if (auto why = contradiction(m.spec, m.format, name)) {
      auto& list = opt.lenient ? m.warnings : m.errors;
      list.push_back({t->name, fmt::format("present, but {}. Either config and weights do not match, or the file carries "
                                           "stale tensors (use --lenient to load anyway and ignore it)", *why)});
    } else {
      m.warnings.push_back({t->name, "unknown tensor, not used by the Gemma 4 text forward pass"});
    }
  }
  // Every embedding row must have a token: a shorter tokenizer.ggml.tokens lets the model
  // sample ids the tokenizer cannot print (llama.cpp requires equal counts).
  if (m.gguf)
    if (const GgufValue* toks = m.gguf->find(gk::kTokens); toks && toks->is_array() &&
                                                                        static_cast<int64_t>(toks->array_size()) != m.spec.vocab)
      m.errors.push_back({gk::kTokens, fmt::format("has {} tokens but token_embd.weight has {} rows; the "
                                                               "tokenizer does not match the model (re-convert the GGUF)",
                                                               toks->array_size(), m.spec.vocab)});
  if (m.errors.empty()) bind_weights(m);
}

}  // namespace

Model open_model(const std::string& path, const LoadOptions& opt) {
  Model m;
  m.path = path;
  if (fs::is_directory(path)) {
    m.format = FileFormat::HF;
    const fs::path cfg = fs::path(path) / "config.json";
    if (!fs::exists(cfg)) fail("{}: no config.json in this directory; is it an HF checkpoint?", path);
    m.spec = spec_from_hf_config_file(cfg.string());
    m.file_tensors = read_safetensors_dir(path);
  } else if (fs::exists(path)) {
    m.format = FileFormat::GGUF;
    m.gguf = read_gguf(path);
    m.spec = spec_from_gguf(*m.gguf);
    m.file_tensors = m.gguf->tensors;
  } else {
    fail("'{}' does not exist (expected an HF checkpoint directory or a .gguf file)", path);
  }
  validate(m, opt);
  return m;
}

Model load_model(const std::string& path, const LoadOptions& opt) {
  Model m = open_model(path, opt);
  if (!m.valid()) {
    std::string msg = fmt::format("{}: the model failed validation ({} error{}):", path, m.errors.size(),
                                  m.errors.size() == 1 ? "" : "s");
    for (const auto& e : m.errors) msg += fmt::format("\n  {}: {}", e.tensor.empty() ? "model" : e.tensor, e.message);
    throw Error(msg);
  }
  return m;
}

}  // namespace g4
