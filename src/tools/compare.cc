#include "tools/compare.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "tools/forensics.h"
#include "util/error.h"

namespace g4 {

double kl_divergence(const float* p_logits, const float* q_logits, int64_t n) {
  auto lse = [n](const float* z) {
    double mx = z[0];
    for (int64_t i = 1; i < n; ++i) mx = std::max(mx, static_cast<double>(z[i]));
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += std::exp(z[i] - mx);
    return mx + std::log(s);
  };
  const double lp = lse(p_logits), lq = lse(q_logits);
  double kl = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double a = p_logits[i] - lp, b = q_logits[i] - lq;
    kl += std::exp(a) * (a - b);
  }
  return std::max(0.0, kl);
}

CompareReport compare_models(const Model& a, const Model& b, const std::vector<int32_t>& tokens,
                             const ForwardOptions& fa, const ForwardOptions& fb, int64_t kld_bucket) {
  if (a.spec.vocab != b.spec.vocab)
    fail("the models have different vocabularies ({} vs {}); logits cannot be compared", a.spec.vocab, b.spec.vocab);
  if (tokens.empty()) fail("no tokens to compare on");
  const bool same_geometry = a.spec.n_layers == b.spec.n_layers && a.spec.hidden == b.spec.hidden;
  Session sa(a, fa), sb(b, fb);
  EvalRequest req;
  req.hidden = same_geometry;
  const EvalOutput oa = sa.eval(tokens, req), ob = sb.eval(tokens, req);
  CompareReport r;
  const int64_t V = a.spec.vocab, T = static_cast<int64_t>(tokens.size());
  r.n_tokens = T;
  r.logits = compare_arrays(ob.logits, oa.logits, V);
  int64_t same = 0;
  PositionDrift drift(kld_bucket);
  for (int64_t t = 0; t < T; ++t) {
    const auto row = compare_arrays(std::span(ob.logits).subspan(t * V, V), std::span(oa.logits).subspan(t * V, V), V);
    r.position_nmse.push_back(row.nmse);
    same += row.argmax_equal;
    const double kl = kl_divergence(&oa.logits[t * V], &ob.logits[t * V], V);
    r.kld_mean += kl / T;
    r.kld_max = std::max(r.kld_max, kl);
    drift.add(t, kl, row.argmax_equal != 0);
  }
  r.by_position = drift.buckets();
  r.top1 = static_cast<double>(same) / T;
  if (same_geometry) {
    const int64_t H = a.spec.hidden, per = T * H;
    for (int64_t e = 0; e <= a.spec.n_layers; ++e) {
      const auto ha = std::span(oa.hidden).subspan(e * per, per), hb = std::span(ob.hidden).subspan(e * per, per);
      double dot = 0, na = 0, nb = 0;
      for (int64_t i = 0; i < per; ++i) { dot += double(ha[i]) * hb[i]; na += double(ha[i]) * ha[i]; nb += double(hb[i]) * hb[i]; }
      HiddenCompare h{static_cast<int>(e), compare_arrays(hb, ha, H).nmse, na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : 1.0};
      if (r.divergence_layer < 0 && e > 0 && h.nmse > CompareReport::kDivergenceNmse) r.divergence_layer = static_cast<int>(e - 1);
      r.hidden.push_back(h);
    }
  }
  return r;
}

void explain_compare(CompareReport& r, const ForensicsReport& f) {
  r.explained = true;
  r.layer_severity = f.anatomy.layer_severity;
  r.bad_layers = f.damaged_layers;
  std::sort(r.bad_layers.begin(), r.bad_layers.end());
  r.first_bad_layer = r.bad_layers.empty() ? -1 : r.bad_layers.front();
  r.first_bad_why.clear();
  r.other_findings.clear();
  // The worst tensor of the first bad layer says what is wrong with it.
  const TensorFinding* worst = nullptr;
  for (const auto& t : f.tensors) {
    if (t.flagged && t.layer == r.first_bad_layer && r.first_bad_layer >= 0 && (!worst || t.severity() > worst->severity())) worst = &t;
    if (t.flagged && t.layer < 0) r.other_findings.push_back(fmt::format("{}: {}", t.name, t.why));
  }
  if (worst) r.first_bad_why = fmt::format("{}: {}", worst->name, worst->why);
  for (const auto& m : f.missing) r.other_findings.push_back(fmt::format("{}: missing", m));
  for (const auto& e : f.load_errors) r.other_findings.push_back(e);
  for (const auto& p : f.permutations)
    r.other_findings.push_back(fmt::format("{} of layer {} looks like layer {} of A (cosine {:.3f} vs {:.3f})", p.cls, p.artifact_layer,
                                           p.looks_like_ref_layer, p.cos_best, p.cos_same));
  for (const auto& h : f.hparams)
    r.other_findings.push_back(fmt::format("{} ({}): B has {}, A has {}", h.what, h.gguf_key, h.artifact, h.reference));
  for (const auto& v : f.vocab.findings) r.other_findings.push_back("tokenizer: " + v);

  const double last = r.hidden.empty() ? 0 : r.hidden.back().nmse;
  if (r.within_expected()) {
    double s = 0;
    int at = -1;
    for (size_t l = 0; l < r.layer_severity.size(); ++l)
      if (r.layer_severity[l] > s) s = r.layer_severity[l], at = static_cast<int>(l);
    r.verdict = fmt::format(
        "within expected quantization error: every tensor of B is within what its quant type explains (worst {:.2f}x, layer {}); "
        "the hidden states drift to NMSE {:.2e} and the logits to KLD {:.2e} from that alone",
        s, at, last, r.kld_mean);
  } else if (r.first_bad_layer >= 0) {
    const int L = r.first_bad_layer;
    std::string jump;
    if (static_cast<size_t>(L + 1) < r.hidden.size())
      jump = fmt::format("; the hidden-state NMSE goes from {:.2e} into it to {:.2e} out of it", r.hidden[L].nmse, r.hidden[L + 1].nmse);
    r.verdict = fmt::format("beyond expected quantization error: first bad layer {} ({}){}", L, r.first_bad_why, jump);
    if (r.bad_layers.size() > 1) {
      std::vector<std::string> ls;
      for (int l : r.bad_layers) ls.push_back(std::to_string(l));
      r.verdict += fmt::format("; bad layers: {}", fmt::join(ls, ", "));
    }
  } else {
    r.verdict = fmt::format("beyond expected quantization error outside the layers: {}", r.other_findings.front());
  }
}

std::string format_compare(const CompareReport& r, const std::string& na, const std::string& nb) {
  std::string o = fmt::format("A = {}\nB = {}\n{} tokens\n\n", na, nb, r.n_tokens);
  o += fmt::format("logits (B vs A): {}\n", r.logits.summary());
  o += fmt::format("KL(A || B): mean {:.4e}, max {:.4e}; top-1 agreement {:.2f}%\n", r.kld_mean, r.kld_max, 100 * r.top1);
  double worst = 0;
  size_t worst_at = 0;
  for (size_t t = 0; t < r.position_nmse.size(); ++t)
    if (r.position_nmse[t] > worst) { worst = r.position_nmse[t]; worst_at = t; }
  o += fmt::format("worst position: {} (NMSE {:.3e})\n", worst_at, worst);
  o += "\nKL(A || B) and top-1 by position\n" + position_buckets_table(r.by_position);
  if (!r.hidden.empty()) {
    o += "\nhidden states (HF convention: 0 = embeddings, i = output of layer i-1, last after the final norm)\n";
    if (r.explained) o += "with, per layer, B's worst tensor error over what its quant type explains (forensics; > 2 is beyond)\n";
    o += fmt::format("{:>6} {:>12} {:>12}{}\n", "entry", "NMSE", "cosine", r.explained ? fmt::format(" {:>10}", "err/expl") : "");
    for (const auto& h : r.hidden) {
      o += fmt::format("{:>6} {:>12.3e} {:>12.8f}", h.entry, h.nmse, h.cosine);
      const int layer = h.entry - 1;  // entry i is the output of layer i-1
      if (r.explained && layer >= 0 && layer < static_cast<int>(r.layer_severity.size())) {
        o += fmt::format(" {:>9.2f}x", r.layer_severity[layer]);
        if (std::find(r.bad_layers.begin(), r.bad_layers.end(), layer) != r.bad_layers.end())
          o += layer == r.first_bad_layer ? "  <- first bad layer" : "  <- bad";
      }
      o += "\n";
    }
    if (r.explained) {
      o += "verdict: " + r.verdict + "\n";
      for (const auto& x : r.other_findings) o += "  also: " + x + "\n";
    } else if (r.divergence_layer >= 0) {
      o += fmt::format("the hidden states first differ (NMSE > {:g}) at the output of layer {}; "
                       "no forensics of B against A to say what its quant types explain\n",
                       CompareReport::kDivergenceNmse, r.divergence_layer);
    } else {
      o += fmt::format("no layer output differs by more than NMSE {:g}\n", CompareReport::kDivergenceNmse);
    }
  } else {
    o += "(different geometries: hidden states not compared)\n";
  }
  return o;
}

json compare_json(const CompareReport& r) {
  json h = json::array();
  for (const auto& x : r.hidden) h.push_back({{"entry", x.entry}, {"nmse", x.nmse}, {"cosine", x.cosine}});
  return {{"tokens", r.n_tokens},
          {"logits", {{"nmse", r.logits.nmse}, {"max_abs", r.logits.max_abs}, {"mean_abs", r.logits.mean_abs},
                      {"argmax_equal", r.logits.argmax_equal}, {"rows", r.logits.rows}}},
          {"position_nmse", r.position_nmse},
          {"kld_mean", r.kld_mean},
          {"kld_max", r.kld_max},
          {"top1_agreement", r.top1},
          {"by_position", position_buckets_json(r.by_position)},
          {"hidden", h},
          {"divergence_layer", r.divergence_layer < 0 ? json(nullptr) : json(r.divergence_layer)},
          {"explained", r.explained ? json{{"within_expected", r.within_expected()},
                                           {"first_bad_layer", r.first_bad_layer < 0 ? json(nullptr) : json(r.first_bad_layer)},
                                           {"first_bad_why", r.first_bad_why},
                                           {"bad_layers", r.bad_layers},
                                           {"layer_severity", r.layer_severity},
                                           {"other_findings", r.other_findings},
                                           {"verdict", r.verdict}}
                                    : json(nullptr)}};
}

}  // namespace g4
