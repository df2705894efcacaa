#include "tools/inspect.h"

#include <fmt/format.h>

#include <map>

namespace g4 {
namespace {

struct Totals {
  int64_t params = 0, bytes = 0;
  std::map<std::string, int64_t> dtype_count, dtype_params;
};

Totals totals(const Model& m) {
  Totals t;
  for (const auto& v : m.file_tensors) {
    t.params += v.numel();
    t.bytes += v.nbytes;
    t.dtype_count[std::string(dtype_name(v.dtype))]++;
    t.dtype_params[std::string(dtype_name(v.dtype))] += v.numel();
  }
  return t;
}

std::string fmt_count(int64_t n) {
  if (n >= 1'000'000'000) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1'000'000) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1'000) return fmt::format("{:.1f}K", n / 1e3);
  return std::to_string(n);
}

}  // namespace

std::vector<NonFiniteTensor> check_finite_weights(Model& m) {
  std::vector<NonFiniteStats> stats(m.file_tensors.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t i = 0; i < m.file_tensors.size(); ++i) stats[i] = scan_non_finite(m.file_tensors[i]);
  std::vector<NonFiniteTensor> out;
  for (size_t i = 0; i < stats.size(); ++i) {
    const auto& s = stats[i];
    if (!s.count()) continue;
    const auto& t = m.file_tensors[i];
    out.push_back({t.name, s});
    m.errors.push_back({t.name, fmt::format("{} non-finite value{} ({} NaN, {} Inf) of {}; the first at flat index {}. "
                                            "The weights are corrupt: re-download or re-convert the file",
                                            s.count(), s.count() == 1 ? "" : "s", s.nan, s.inf, t.numel(), s.first_index)});
  }
  return out;
}

json inspect_json(const Model& m, const std::vector<NonFiniteTensor>& non_finite) {
  const auto& s = m.spec;
  const Totals t = totals(m);
  json j;
  j["path"] = m.path;
  j["format"] = m.format == FileFormat::HF ? "hf-safetensors" : "gguf";
  j["architecture"] = s.architecture;
  j["variant"] = guess_variant(s);
  j["n_layers"] = s.n_layers;
  j["hidden_size"] = s.hidden;
  j["vocab_size"] = s.vocab;
  j["n_heads"] = s.n_heads;
  j["per_layer_input_size"] = s.ple_dim;
  j["kv_shared_layers"] = s.n_kv_shared;
  j["sliding_window"] = s.sliding_window;
  j["final_logit_softcapping"] = s.final_softcap ? json(*s.final_softcap) : json(nullptr);
  j["attention_k_eq_v"] = s.k_eq_v;
  j["moe"] = s.moe ? json{{"experts", s.n_experts}, {"top_k", s.top_k}, {"expert_ff", s.moe_ff}} : json(nullptr);
  j["max_context"] = s.max_ctx;
  j["n_params"] = t.params;
  j["n_bytes"] = t.bytes;
  j["tensors"] = m.file_tensors.size();
  json layers = json::array();
  for (const auto& l : s.layers) {
    layers.push_back({{"index", l.index}, {"type", attn_type_name(l.type)}, {"head_dim", l.head_dim},
                      {"n_heads", l.n_heads}, {"n_kv_heads", l.n_kv_heads}, {"kv_source", l.kv_source},
                      {"owns_kv", l.owns_kv}, {"v_proj", l.has_v_proj}, {"ff_width", l.ff_width}, {"moe", l.moe},
                      {"rope_theta", l.rope_theta}, {"rope_rotated_pairs", l.rope_pairs}, {"window", l.window}});
  }
  j["layers"] = layers;
  json dt = json::object();
  for (const auto& [name, count] : t.dtype_count) dt[name] = {{"tensors", count}, {"params", t.dtype_params.at(name)}};
  j["dtypes"] = dt;
  auto issues = [](const std::vector<ValidationIssue>& v) {
    json a = json::array();
    for (const auto& e : v) a.push_back({{"tensor", e.tensor}, {"message", e.message}});
    return a;
  };
  json nf = json::array();
  for (const auto& t : non_finite)
    nf.push_back({{"tensor", t.tensor}, {"count", t.stats.count()}, {"nan", t.stats.nan}, {"inf", t.stats.inf},
                  {"first_index", t.stats.first_index}});
  j["non_finite"] = nf;
  j["errors"] = issues(m.errors);
  j["warnings"] = issues(m.warnings);
  j["valid"] = m.valid();
  return j;
}

std::string inspect_text(const Model& m) {
  const auto& s = m.spec;
  const Totals t = totals(m);
  std::string o;
  o += fmt::format("model        {}\n", m.path);
  o += fmt::format("format       {}\n", m.format == FileFormat::HF ? "HF safetensors" : "GGUF");
  o += fmt::format("architecture {} (variant: {})\n", s.architecture, guess_variant(s));
  o += fmt::format("layers {}  hidden {}  vocab {}  heads {}  window {}  softcap {}\n", s.n_layers, s.hidden, s.vocab,
                   s.n_heads, s.sliding_window, s.final_softcap ? fmt::format("{}", *s.final_softcap) : "none");
  o += fmt::format("PLE dim {}  KV-shared layers {}  k_eq_v {}  MoE {}\n", s.ple_dim, s.n_kv_shared, s.k_eq_v,
                   s.moe ? fmt::format("{} experts, top-{}, ff {}", s.n_experts, s.top_k, s.moe_ff) : "no");
  o += fmt::format("params {} ({})  bytes {}  tensors {}\n\n", fmt_count(t.params), t.params, t.bytes, m.file_tensors.size());
  o += fmt::format("{:>5} {:<8} {:>4} {:>5} {:>4} {:>6} {:>5} {:>7} {:>10} {:>6} {:>6}\n", "layer", "type", "hd", "heads",
                   "kv", "kv_src", "v", "ff", "rope_theta", "rot", "window");
  for (const auto& l : s.layers)
    o += fmt::format("{:>5} {:<8} {:>4} {:>5} {:>4} {:>6} {:>5} {:>7} {:>10g} {:>6} {:>6}\n", l.index,
                     attn_type_name(l.type), l.head_dim, l.n_heads, l.n_kv_heads,
                     l.owns_kv ? "own" : std::to_string(l.kv_source), l.has_v_proj ? "proj" : "=k",
                     std::to_string(l.ff_width) + (l.moe ? "+E" : ""), l.rope_theta,
                     fmt::format("{}/{}", l.rope_pairs, l.head_dim / 2), l.window ? std::to_string(l.window) : "-");
  o += "\ndtypes:";
  for (const auto& [name, count] : t.dtype_count) o += fmt::format("  {} x{} ({} params)", name, count, fmt_count(t.dtype_params.at(name)));
  o += "\n\n";
  for (const auto& w : m.warnings) o += fmt::format("warning: {}{}\n", w.tensor.empty() ? "" : w.tensor + ": ", w.message);
  for (const auto& e : m.errors) o += fmt::format("error: {}{}\n", e.tensor.empty() ? "" : e.tensor + ": ", e.message);
  o += m.valid() ? "validation: OK\n" : fmt::format("validation: FAILED ({} errors)\n", m.errors.size());
  return o;
}

}  // namespace g4
