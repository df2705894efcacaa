#include "tools/compare.h"

#include <fmt/format.h>

#include <cmath>

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
    o += fmt::format("{:>6} {:>12} {:>12}\n", "entry", "NMSE", "cosine");
    for (const auto& h : r.hidden) o += fmt::format("{:>6} {:>12.3e} {:>12.8f}\n", h.entry, h.nmse, h.cosine);
    if (r.divergence_layer >= 0)
      o += fmt::format("divergence starts at layer {} (its output is the first with NMSE > {:g})\n", r.divergence_layer,
                       CompareReport::kDivergenceNmse);
    else
      o += fmt::format("no layer output differs by more than NMSE {:g}\n", CompareReport::kDivergenceNmse);
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
          {"divergence_layer", r.divergence_layer < 0 ? json(nullptr) : json(r.divergence_layer)}};
}

}  // namespace g4
