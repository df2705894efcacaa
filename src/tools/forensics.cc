#include "tools/forensics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "kernels/quantize.h"
#include "tools/quantize.h"
#include "util/error.h"

namespace g4 {
namespace {

struct Stats { double cosine, rel_rms, max_abs; };

Stats diff_stats(const std::vector<float>& a, const std::vector<float>& ref) {
  double dot = 0, na = 0, nb = 0, err = 0, mx = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double x = a[i], y = ref[i];
    dot += x * y;
    na += x * x;
    nb += y * y;
    err += (x - y) * (x - y);
    mx = std::max(mx, std::abs(x - y));
  }
  Stats s;
  s.cosine = na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : (na == nb ? 1.0 : 0.0);
  s.rel_rms = nb > 0 ? std::sqrt(err / nb) : std::sqrt(err / std::max<size_t>(1, ref.size()));
  s.max_abs = mx;
  if (!std::isfinite(s.rel_rms)) s.rel_rms = INFINITY, s.cosine = 0;
  return s;
}

// A deterministic sample of at most 65536 elements (layer-mapping cosines).
std::vector<float> sample(const std::vector<float>& v) {
  const size_t step = std::max<size_t>(1, v.size() / 65536);
  std::vector<float> s;
  for (size_t i = 0; i < v.size(); i += step) s.push_back(v[i]);
  return s;
}

double cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) { dot += double(a[i]) * b[i]; na += double(a[i]) * a[i]; nb += double(b[i]) * b[i]; }
  return na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : 0;
}

std::optional<PeriodicDamage> find_period(const std::vector<bool>& damaged) {
  const int L = static_cast<int>(damaged.size());
  const int n_bad = static_cast<int>(std::count(damaged.begin(), damaged.end(), true));
  if (n_bad == 0 || n_bad == L) return std::nullopt;
  for (int p = 2; 2 * p <= L; ++p) {
    bool fits = true;
    std::vector<int> bad, good;
    for (int r = 0; r < p && fits; ++r) {
      std::set<bool> seen;
      for (int l = r; l < L; l += p) seen.insert(damaged[l]);
      if (seen.size() != 1) fits = false;
      else (*seen.begin() ? bad : good).push_back(r);
    }
    if (fits && !bad.empty() && !good.empty()) return PeriodicDamage{p, bad, good};
  }
  return std::nullopt;
}

}  // namespace

bool ForensicsReport::clean() const {
  if (!missing.empty() || !load_errors.empty() || !permutations.empty()) return false;
  for (const auto& t : tensors)
    if (t.flagged) return false;
  return true;
}

ForensicsReport run_forensics(const Model& art, const Model& ref) {
  if (!ref.valid()) fail("{}: the reference does not validate; fix it first (g4 inspect)", ref.path);
  ForensicsReport r;
  r.n_layers = ref.spec.n_layers;
  for (const auto& e : art.errors) r.load_errors.push_back(fmt::format("{}: {}", e.tensor, e.message));
  const auto slots = expected_tensors(ref.spec, FileFormat::GGUF);
  std::set<std::string> expected_hf;
  std::map<std::string, std::vector<float>> cache_art, cache_ref;  // hf -> sample, for mapping
  for (const auto& s : slots) {
    if (s.hf.empty()) continue;  // rope_freqs: generated from the config
    expected_hf.insert(s.hf);
    auto ia = art.by_hf_name.find(s.hf);
    if (ia == art.by_hf_name.end()) {
      r.missing.push_back(s.gguf);
      continue;
    }
    const TensorView& ta = ia->second;
    const TensorView& tr = ref.by_hf_name.at(s.hf);
    TensorFinding f;
    f.name = s.gguf;
    f.hf = s.hf;
    f.cls = s.cls;
    f.layer = s.layer;
    f.ref_type = tr.dtype;
    f.art_type = ta.dtype;
    if (ta.shape != tr.shape) {
      f.flagged = true;
      f.why = fmt::format("shape {} vs reference {}", ta.shape_str(), tr.shape_str());
      f.cosine = 0;
      f.rel_rms = INFINITY;
      r.tensors.push_back(f);
      continue;
    }
    const auto a = dequantize_all(ta), b = dequantize_all(tr);
    const Stats st = diff_stats(a, b);
    f.cosine = st.cosine;
    f.rel_rms = st.rel_rms;
    f.max_abs = st.max_abs;
    const int64_t cols = s.shape.back();
    if (quantize_supported(ta.dtype) && row_bytes(ta.dtype, cols)) {
      f.explained = diff_stats(quantize_round_trip(b, ta.dtype, s.shape), b).rel_rms;
    } else {
      // A type g4 cannot write (Q2_K/Q3_K): allow the typical error of a 2-3 bit type.
      f.explained = ta.dtype == DType::Q2_K ? 0.35 : 0.2;
    }
    const bool small = s.shape.size() == 1 || s.shape == std::vector<int64_t>{1};
    if (f.rel_rms > 2 * f.explained + 1e-6) {
      f.flagged = true;
      f.why = small ? fmt::format("differs from the reference (max |diff| {:.3g}); scalars and norms must match exactly", f.max_abs)
                    : fmt::format("error {:.3g} is {:.1f}x what {} explains ({:.3g})", f.rel_rms,
                                  f.rel_rms / std::max(f.explained, 1e-12), dtype_name(ta.dtype), f.explained);
    }
    if (!std::isfinite(f.rel_rms)) { f.flagged = true; f.why = "NaN or Inf"; }
    if (s.layer >= 0 && s.shape.size() >= 2) {
      cache_art[s.hf] = sample(a);
      cache_ref[s.hf] = sample(b);
    }
    r.tensors.push_back(f);
  }
  for (const auto& t : art.file_tensors) {
    auto hf = art.format == FileFormat::HF ? strip_hf_prefix(t.name) : std::nullopt;
    bool known = false;
    if (art.format == FileFormat::HF) known = hf && expected_hf.count(*hf);
    else for (const auto& s : slots) known |= s.gguf == t.name;
    if (!known && !(hf && *hf == "lm_head.weight")) r.extra.push_back(t.name);
  }
  // Layer mapping: does artifact layer i look most like reference layer i?
  std::map<std::string, std::vector<const TensorFinding*>> by_class;
  for (const auto& f : r.tensors)
    if (f.layer >= 0 && cache_art.count(f.hf)) by_class[f.cls].push_back(&f);
  for (const auto& [cls, list] : by_class) {
    for (const auto* fi : list) {
      const auto& ai = cache_art[fi->hf];
      const double same = cosine(ai, cache_ref[fi->hf]);
      double best = same;
      int best_layer = fi->layer;
      for (const auto* fj : list) {
        if (fj->layer == fi->layer || cache_ref[fj->hf].size() != ai.size()) continue;
        if (art.by_hf_name.at(fi->hf).shape != ref.by_hf_name.at(fj->hf).shape) continue;
        const double c = cosine(ai, cache_ref[fj->hf]);
        if (c > best) { best = c; best_layer = fj->layer; }
      }
      if (best_layer != fi->layer && best > 0.5 && best - same > 0.05)
        r.permutations.push_back({cls, fi->layer, best_layer, same, best});
    }
  }
  // Damaged layers and classes; periodic pattern over the layer index.
  std::vector<bool> damaged(static_cast<size_t>(r.n_layers), false);
  std::map<std::string, double> class_worst;
  for (const auto& f : r.tensors) {
    if (!f.flagged) continue;
    if (f.layer >= 0) damaged[f.layer] = true;
    class_worst[f.cls] = std::max(class_worst[f.cls], std::isfinite(f.rel_rms) ? f.rel_rms / std::max(f.explained, 1e-9) : 1e30);
  }
  for (int l = 0; l < r.n_layers; ++l)
    if (damaged[l]) r.damaged_layers.push_back(l);
  std::vector<std::pair<double, std::string>> cw;
  for (const auto& [c, w] : class_worst) cw.emplace_back(w, c);
  std::sort(cw.rbegin(), cw.rend());
  for (const auto& [w, c] : cw) r.damaged_classes.push_back(c);
  r.periodic = find_period(damaged);
  return r;
}

std::string format_forensics(const ForensicsReport& r) {
  std::string o;
  std::map<std::string, std::vector<const TensorFinding*>> by_class;
  for (const auto& f : r.tensors) by_class[f.cls].push_back(&f);
  o += fmt::format("{:<24} {:>8} {:>10} {:>12} {:>12} {:>8}\n", "class", "tensors", "min cos", "max err", "max err/expl", "flagged");
  for (const auto& [cls, list] : by_class) {
    double mc = 1, me = 0, mr = 0;
    int fl = 0;
    for (const auto* f : list) {
      mc = std::min(mc, f->cosine);
      me = std::max(me, f->rel_rms);
      mr = std::max(mr, f->rel_rms / std::max(f->explained, 1e-12));
      fl += f->flagged;
    }
    o += fmt::format("{:<24} {:>8} {:>10.6f} {:>12.4g} {:>12.3g} {:>8}\n", cls, list.size(), mc, me, me > 0 ? mr : 0.0, fl);
  }
  o += fmt::format("\nper layer: min cosine of its 2-D tensors, and flagged tensors\n");
  for (int l = 0; l < r.n_layers; ++l) {
    double mc = 1;
    int fl = 0;
    for (const auto& f : r.tensors)
      if (f.layer == l) { if (f.cosine < mc && f.art_type != DType::F32) mc = f.cosine; fl += f.flagged; }
    o += fmt::format("  layer {:>3}: min cos {:.6f}  flagged {}\n", l, mc, fl);
  }
  for (const auto& f : r.tensors)
    if (f.flagged) o += fmt::format("FLAG {} ({} -> {}): {}\n", f.name, dtype_name(f.ref_type), dtype_name(f.art_type), f.why);
  for (const auto& m : r.missing) o += fmt::format("MISSING {}\n", m);
  for (const auto& e : r.extra) o += fmt::format("EXTRA {} (not part of the reference model)\n", e);
  for (const auto& e : r.load_errors) o += fmt::format("LOAD {}\n", e);
  for (const auto& p : r.permutations)
    o += fmt::format("PERMUTATION {}: artifact layer {} matches reference layer {} (cos {:.4f}) better than layer {} (cos {:.4f})\n",
                     p.cls, p.artifact_layer, p.looks_like_ref_layer, p.cos_best, p.artifact_layer, p.cos_same);
  if (r.periodic) {
    auto join = [](const std::vector<int>& v) {
      std::string s;
      for (int x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
      return s;
    };
    o += fmt::format("PERIODIC damage: period {}, damaged phases {{{}}} (layer mod {}), clean phases {{{}}}\n", r.periodic->period,
                     join(r.periodic->damaged_phases), r.periodic->period, join(r.periodic->clean_phases));
  }
  if (!r.damaged_classes.empty()) {
    o += "damaged classes (worst first):";
    for (const auto& c : r.damaged_classes) o += " " + c;
    o += "\n";
  }
  o += r.clean() ? "forensics: CLEAN (every tensor within the error its type explains)\n" : "forensics: DAMAGE FOUND\n";
  return o;
}

json forensics_json(const ForensicsReport& r) {
  json t = json::array();
  for (const auto& f : r.tensors)
    t.push_back({{"name", f.name}, {"class", f.cls}, {"layer", f.layer}, {"ref_type", dtype_name(f.ref_type)},
                 {"type", dtype_name(f.art_type)}, {"cosine", f.cosine},
                 {"rel_rms", std::isfinite(f.rel_rms) ? json(f.rel_rms) : json(nullptr)}, {"explained_rel_rms", f.explained},
                 {"max_abs", f.max_abs}, {"flagged", f.flagged}, {"why", f.why}});
  json perms = json::array();
  for (const auto& p : r.permutations)
    perms.push_back({{"class", p.cls}, {"artifact_layer", p.artifact_layer}, {"ref_layer", p.looks_like_ref_layer},
                     {"cos_same", p.cos_same}, {"cos_best", p.cos_best}});
  json per = nullptr;
  if (r.periodic) per = {{"period", r.periodic->period}, {"damaged_phases", r.periodic->damaged_phases}, {"clean_phases", r.periodic->clean_phases}};
  return {{"tensors", t}, {"missing", r.missing}, {"extra", r.extra}, {"load_errors", r.load_errors},
          {"permutations", perms}, {"damaged_layers", r.damaged_layers}, {"damaged_classes", r.damaged_classes},
          {"periodic", per}, {"clean", r.clean()}};
}

std::vector<RestoreResult> run_restore(const Model& art, const Model& ref, const std::string& which,
                                       const std::vector<int32_t>& tokens, const PerplexityOptions& po,
                                       const ForensicsReport* findings) {
  // Hybrids need every tensor: missing ones come from the reference in all of them.
  Model base = art.clone();
  for (const auto& [hf, t] : ref.by_hf_name)
    if (!base.by_hf_name.count(hf)) base.by_hf_name.emplace(hf, t);
  for (const auto& [hf, t] : base.by_hf_name)
    if (t.shape != ref.by_hf_name.at(hf).shape) fail("{}: tensor {} has another shape than the reference; restore needs the same geometry", art.path, hf);
  base.spec = ref.spec;
  base.errors.clear();
  bind_weights(base);
  auto ppl = [&](const Model& m) { return run_perplexity_tokens(m, tokens, po).ppl; };
  const double p_art = ppl(base), p_ref = ppl(ref);
  std::vector<std::pair<std::string, std::function<bool(const std::string& hf, int layer, const std::string& cls)>>> hybrids;
  std::map<std::string, std::string> hf_cls;
  std::map<std::string, int> hf_layer;
  for (const auto& s : expected_tensors(ref.spec, FileFormat::GGUF))
    if (!s.hf.empty()) { hf_cls[s.hf] = s.cls; hf_layer[s.hf] = s.layer; }
  std::set<std::string> classes;
  for (const auto& [hf, c] : hf_cls) classes.insert(c);
  if (which == "auto") {
    for (const auto& c : classes) hybrids.push_back({"class " + c, [c](const std::string&, int, const std::string& k) { return k == c; }});
    auto add_layers = [&](const std::string& label, std::vector<int> layers) {
      hybrids.push_back({label, [layers](const std::string&, int l, const std::string&) {
                           return std::find(layers.begin(), layers.end(), l) != layers.end();
                         }});
    };
    // A group of every layer is the reference itself: nothing to learn from it.
    if (findings && !findings->damaged_layers.empty() &&
        static_cast<int>(findings->damaged_layers.size()) < ref.spec.n_layers) {
      std::string label = "layers";
      for (int l : findings->damaged_layers) label += " " + std::to_string(l);
      add_layers(label + " (flagged)", findings->damaged_layers);
    }
    if (findings && findings->periodic)
      for (int ph : findings->periodic->damaged_phases) {
        std::vector<int> layers;
        for (int l = ph; l < ref.spec.n_layers; l += findings->periodic->period) layers.push_back(l);
        add_layers(fmt::format("layers = {} mod {}", ph, findings->periodic->period), layers);
      }
  } else {
    if (!classes.count(which)) {
      std::string all;
      for (const auto& c : classes) all += " " + c;
      fail("--restore {}: no such tensor class; classes are:{}", which, all);
    }
    hybrids.push_back({"class " + which, [which](const std::string&, int, const std::string& k) { return k == which; }});
  }
  std::vector<RestoreResult> out;
  out.push_back({"artifact", p_art, 0});
  out.push_back({"reference", p_ref, 1});
  for (const auto& [label, pick] : hybrids) {
    Model h = base.clone();
    for (auto& [hf, t] : h.by_hf_name)
      if (pick(hf, hf_layer[hf], hf_cls[hf])) t = ref.by_hf_name.at(hf);
    bind_weights(h);
    const double p = ppl(h);
    const double gap = p_art - p_ref;
    out.push_back({label, p, std::abs(gap) > 1e-12 ? (p_art - p) / gap : 0.0});
  }
  std::sort(out.begin() + 2, out.end(), [](const RestoreResult& a, const RestoreResult& b) { return a.ppl < b.ppl; });
  return out;
}

std::string format_restore(const std::vector<RestoreResult>& r) {
  std::string o = fmt::format("{:<36} {:>12} {:>14}\n", "restored from the reference", "PPL", "gap closed");
  for (const auto& x : r) o += fmt::format("{:<36} {:>12.4f} {:>13.1f}%\n", x.what, x.ppl, 100 * x.gap_closed);
  return o;
}

}  // namespace g4
