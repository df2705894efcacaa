#include "tools/divergence.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "tools/kld_base.h"
#include "tools/token_input.h"
#include "util/error.h"

namespace g4 {
namespace {

// The router's view of one (layer, position): its top-k, the runner-up and the margin.
struct Route {
  double margin = INFINITY;
  std::vector<int32_t> ids;  // the experts used (top-k, or the forced ones), largest logit first
  int32_t next = -1;         // the (k+1)-th expert by logit
};

struct ChunkRun {
  std::vector<BaseMatch> pos;  // scored positions first .. n_ctx-2
  std::vector<Route> routes;   // [n_layers * n_ctx]
  double kld_sum = 0;
};

class Analyzer {
 public:
  Analyzer(const Model& m, const KldBase& b, int first, const DivergenceOptions& o)
      : m_(m), b_(b), first_(first), o_(o), rows_(b.n_ctx - 1 - first) {}

  std::vector<int32_t> chunk_tokens(int c) const {
    std::vector<int32_t> t(b_.tokens.begin() + static_cast<int64_t>(c) * b_.n_ctx,
                           b_.tokens.begin() + static_cast<int64_t>(c + 1) * b_.n_ctx);
    t[0] = m_.spec.bos_id;  // as perplexity evaluates a chunk
    return t;
  }

  // The reference on chunk c with the given forced routes, against the base records.
  ChunkRun run(int c, const std::vector<RouteForce>& forces) const {
    const int n_ctx = b_.n_ctx;
    const int64_t K = m_.spec.top_k;
    ChunkRun r;
    r.routes.resize(static_cast<size_t>(m_.spec.n_layers) * n_ctx);
    ForwardOptions fo = o_.forward;
    fo.n_ctx = n_ctx;
    fo.n_batch = n_ctx;
    fo.force_routes = forces;
    if (m_.spec.moe)
      fo.on_router = [&](const RouterTrace& t) {
        std::vector<int32_t> order(static_cast<size_t>(t.n_experts));
        for (int64_t i = 0; i < t.n; ++i) {
          const double* z = t.logits + i * t.n_experts;
          std::iota(order.begin(), order.end(), 0);
          std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return z[a] > z[b]; });
          Route& ro = r.routes[static_cast<size_t>(t.layer) * n_ctx + t.pos0 + i];
          ro.ids.assign(t.ids + i * K, t.ids + (i + 1) * K);
          if (t.n_experts > K) {
            ro.margin = z[order[K - 1]] - z[order[K]];
            ro.next = order[K];
          }
        }
      };
    Session s(m_, fo);
    const std::vector<int32_t> chunk = chunk_tokens(c);
    EvalRequest req;
    req.logits_from = first_;
    req.logits_f64 = true;
    const std::vector<double> z = s.eval(chunk, req).logits64;
    const int64_t V = m_.spec.vocab;
    for (int p = 0; p < rows_; ++p) {
      r.pos.push_back(match_base_record(b_, static_cast<int64_t>(c) * rows_ + p, &z[static_cast<size_t>(p) * V],
                                        chunk[first_ + p + 1]));
      if (!std::isfinite(r.pos.back().kld))
        fail("non-finite logits at chunk {}, position {}: the reference produced NaN/Inf", c, first_ + p);
      r.kld_sum += r.pos.back().kld;
    }
    return r;
  }

  // Forced-swap search on chunk c: greedily force the near-tie swap that most lowers the
  // chunk's KLD until no divergent position is left or no swap helps. Returns the final run.
  ChunkRun explain(int c, const ChunkRun& base, std::vector<RoutingFlip>& flips) const {
    ChunkRun cur = base;
    std::vector<RouteForce> forces;
    const double thr = o_.kld_threshold;
    for (int round = 0; round < o_.max_flips; ++round) {
      int last = -1;
      for (int p = 0; p < rows_; ++p)
        if (cur.pos[p].kld > thr) last = first_ + p;
      if (last < 0) break;
      // Near-ties at or before the last divergent position, smallest margin first.
      struct Cand {
        int layer;
        int64_t pos;
        double margin;
      };
      std::vector<Cand> cands;
      for (int l = 0; l < m_.spec.n_layers; ++l) {
        if (!m_.spec.layers[l].moe) continue;
        for (int64_t q = 0; q <= last; ++q) {
          const Route& ro = cur.routes[static_cast<size_t>(l) * b_.n_ctx + q];
          if (ro.next < 0 || ro.margin >= o_.margin) continue;
          const bool forced = std::any_of(forces.begin(), forces.end(), [&](const RouteForce& f) { return f.layer == l && f.pos == q; });
          if (!forced) cands.push_back({l, q, ro.margin});
        }
      }
      std::sort(cands.begin(), cands.end(), [](const Cand& a, const Cand& b) { return a.margin < b.margin; });
      if (static_cast<int>(cands.size()) > o_.max_candidates) cands.resize(static_cast<size_t>(o_.max_candidates));
      double best_gain = 0;
      int best = -1;
      ChunkRun best_run;
      RouteForce best_force;
      for (size_t i = 0; i < cands.size(); ++i) {
        const Route& ro = cur.routes[static_cast<size_t>(cands[i].layer) * b_.n_ctx + cands[i].pos];
        RouteForce f{cands[i].pos, cands[i].layer, ro.ids};
        f.experts.back() = ro.next;  // the k-th expert replaced by the runner-up
        std::vector<RouteForce> trial_forces = forces;
        trial_forces.push_back(f);
        ChunkRun trial = run(c, trial_forces);
        // Useful only if it at least halves some divergent position's KLD.
        bool helps = false;
        for (int p = 0; p < rows_; ++p) helps |= cur.pos[p].kld > thr && trial.pos[p].kld < 0.5 * cur.pos[p].kld;
        const double gain = cur.kld_sum - trial.kld_sum;
        if (helps && gain > best_gain) {
          best_gain = gain;
          best = static_cast<int>(i);
          best_run = std::move(trial);
          best_force = f;
        }
      }
      if (best < 0) break;
      const Cand& bc = cands[static_cast<size_t>(best)];
      RoutingFlip fl;
      fl.chunk = c;
      fl.layer = bc.layer;
      fl.pos = bc.pos;
      fl.full_attention = m_.spec.layers[bc.layer].window == 0;
      fl.experts = cur.routes[static_cast<size_t>(bc.layer) * b_.n_ctx + bc.pos].ids;
      fl.swapped = best_force.experts;
      fl.margin = bc.margin;
      double drop = -1;
      for (int p = 0; p < rows_; ++p) {
        if (cur.pos[p].kld <= thr) continue;
        fl.fixed += best_run.pos[p].kld <= thr;
        if (cur.pos[p].kld - best_run.pos[p].kld > drop) {
          drop = cur.pos[p].kld - best_run.pos[p].kld;
          fl.at = first_ + p;
          fl.kld_before = cur.pos[p].kld;
          fl.kld_after = best_run.pos[p].kld;
        }
      }
      flips.push_back(fl);
      forces.push_back(best_force);
      cur = std::move(best_run);
    }
    return cur;
  }

  int rows() const { return rows_; }

 private:
  const Model& m_;
  const KldBase& b_;
  int first_;
  const DivergenceOptions& o_;
  int rows_;
};

std::string set_str(std::vector<int32_t> ids) {
  std::sort(ids.begin(), ids.end());
  return fmt::format("{{{}}}", fmt::join(ids, ","));
}

}  // namespace

DivergenceReport run_divergence(const Model& m, const std::string& base_path, const DivergenceOptions& opt) {
  int first = 0;
  const KldBase b = open_kld_base(base_path, m.spec.vocab, first);
  if (b.n_ctx > m.spec.max_ctx) fail("{}: n_ctx {} exceeds the model's context length {}", base_path, b.n_ctx, m.spec.max_ctx);
  if (opt.kld_threshold <= 0 || opt.margin <= 0) fail("--threshold and --margin must be positive");
  DivergenceReport r;
  r.reference = precision_name(opt.forward.precision);
  if (opt.forward.emulate.any()) r.reference += " +" + engine_rounding_name(opt.forward.emulate);
  r.n_ctx = b.n_ctx;
  r.first = first;
  r.llama_scoring = first == b.n_ctx / 2;
  r.kld_threshold = opt.kld_threshold;
  r.margin = opt.margin;
  r.chunks = opt.max_chunks > 0 ? std::min(opt.max_chunks, b.n_chunk) : b.n_chunk;
  Analyzer an(m, b, first, opt);
  const int rows = an.rows();
  const ModelSpec& s = m.spec;

  // 1. The reference on every chunk: per-position KLD and the router margins.
  std::vector<ChunkRun> runs;
  for (int l = 0; l < s.n_layers; ++l)
    if (s.layers[l].moe) r.margins.push_back({l, s.layers[l].window == 0, 0, 0, INFINITY});
  double nll = 0, nll_base = 0;
  int64_t same = 0;
  for (int c = 0; c < r.chunks; ++c) {
    runs.push_back(an.run(c, {}));
    const std::vector<int32_t> toks = an.chunk_tokens(c);
    for (int p = 0; p < rows; ++p) {
      const BaseMatch& bm = runs.back().pos[p];
      r.positions.push_back({c, first + p, toks[first + p], toks[first + p + 1], bm.kld, bm.nll, bm.nll_base, bm.top,
                             bm.top_base, NAN});
      nll += bm.nll;
      nll_base += bm.nll_base;
      same += bm.top == bm.top_base;
    }
    for (auto& lm : r.margins)
      for (int q = 0; q < b.n_ctx; ++q) {
        const Route& ro = runs.back().routes[static_cast<size_t>(lm.layer) * b.n_ctx + q];
        if (ro.next < 0) continue;
        ++lm.positions;
        lm.near_ties += ro.margin < opt.margin;
        lm.min_margin = std::min(lm.min_margin, ro.margin);
      }
  }
  const double n = static_cast<double>(r.positions.size());
  std::vector<double> klds;
  for (const auto& p : r.positions) {
    klds.push_back(p.kld);
    r.kld_mean += p.kld / n;
    r.kld_max = std::max(r.kld_max, p.kld);
    r.divergent += p.kld > opt.kld_threshold;
  }
  std::sort(klds.begin(), klds.end());
  r.kld_median = klds[klds.size() / 2];
  r.top1 = same / n;
  r.ppl = std::exp(nll / n);
  r.ppl_base = std::exp(nll_base / n);

  // 2. Divergent chunks: the forced-swap search (MoE models; not when everything diverges).
  const bool everywhere = r.kld_median > opt.kld_threshold;
  for (int c = 0; c < r.chunks; ++c) {
    ChunkDivergence cd;
    cd.chunk = c;
    const auto* pos = &r.positions[static_cast<size_t>(c) * rows];
    for (int p = 0; p < rows; ++p) {
      cd.kld_mean += pos[p].kld / rows;
      cd.kld_max = std::max(cd.kld_max, pos[p].kld);
      cd.top1 += (pos[p].top == pos[p].top_base) / static_cast<double>(rows);
      if (pos[p].kld > opt.kld_threshold) {
        if (cd.first_divergent < 0) cd.first_divergent = first + p;
        ++cd.divergent;
      }
    }
    if (cd.first_divergent >= 0) {
      const int after = rows - (cd.first_divergent - first);
      cd.persists = after > 1 && 2 * cd.divergent >= after;
    }
    if (cd.divergent > 0 && s.moe && !everywhere) {
      const ChunkRun fin = an.explain(c, runs[static_cast<size_t>(c)], r.flips);
      for (int p = 0; p < rows; ++p) {
        auto& pd = r.positions[static_cast<size_t>(c) * rows + p];
        pd.kld_forced = fin.pos[p].kld;
        cd.explained += pd.kld > opt.kld_threshold && pd.kld_forced <= opt.kld_threshold;
      }
    }
    r.explained += cd.explained;
    r.per_chunk.push_back(cd);
  }

  // 3. The verdict.
  if (r.divergent == 0) {
    r.verdict_kind = "agree";
    r.verdict = fmt::format("agreement: no position above KLD {:.0e} (max {:.2e}); the engines differ only by rounding noise",
                            opt.kld_threshold, r.kld_max);
  } else if (everywhere) {
    r.verdict_kind = "structural";
    r.verdict = fmt::format("structural difference (diverges everywhere): median KLD {:.2e} > {:.0e}, {} of {} positions; "
                            "not rounding: compare the math (g4 compare, forensics)",
                            r.kld_median, opt.kld_threshold, r.divergent, r.positions.size());
  } else if (r.explained == r.divergent) {
    r.verdict_kind = "routing-flips";
    r.verdict = fmt::format("precision-sensitive routing flips ({} position{}, explained): {} forced expert swap{} at "
                            "router near-ties bring{} every divergent position below KLD {:.0e}",
                            r.divergent, r.divergent == 1 ? "" : "s", r.flips.size(), r.flips.size() == 1 ? "" : "s",
                            r.flips.size() == 1 ? "s" : "", opt.kld_threshold);
  } else {
    r.verdict_kind = "unexplained";
    r.verdict = fmt::format("unexplained: {} of {} divergent positions (KLD > {:.0e}) are not explained by router "
                            "near-tie swaps{}",
                            r.divergent - r.explained, r.divergent, opt.kld_threshold,
                            s.moe ? "" : " (a dense model has no router)");
  }
  return r;
}

std::string format_divergence(const DivergenceReport& r, const Model& m, int top) {
  std::optional<Tokenizer> tok;
  try {
    tok = load_tokenizer(m);
  } catch (const Error&) {
  }
  auto text = [&](int32_t id) {
    std::string t = tok ? tok->token_text(id) : std::string();
    std::string e;
    for (char ch : t) e += ch == '\n' ? std::string("\\n") : std::string(1, ch);
    return fmt::format("{} '{}'", id, e);
  };
  std::string o = fmt::format(
      "divergence: reference {} vs the base file ({} chunks of {}, {} scored positions per chunk from {}, {} scoring)\n",
      r.reference, r.chunks, r.n_ctx, r.n_ctx - 1 - r.first, r.first, r.llama_scoring ? "llama-perplexity" : "gold");
  o += fmt::format("mean KLD {:.6f}, median {:.2e}, max {:.6f}; top-1 {:.2f}%; PPL {:.4f} (reference) vs {:.4f} (base)\n\n",
                   r.kld_mean, r.kld_median, r.kld_max, 100 * r.top1, r.ppl, r.ppl_base);
  o += fmt::format("per chunk (divergent: KLD > {:.0e}):\n", r.kld_threshold);
  o += "| chunk | mean KLD | max KLD | top-1 | first divergent | divergent | after onset | explained |\n";
  o += "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |\n";
  for (const auto& c : r.per_chunk)
    o += fmt::format("| {} | {:.2e} | {:.2e} | {:.2f}% | {} | {} | {} | {} |\n", c.chunk, c.kld_mean, c.kld_max, 100 * c.top1,
                     c.first_divergent < 0 ? std::string("-") : std::to_string(c.first_divergent), c.divergent,
                     c.first_divergent < 0 ? "-" : c.persists ? "persists" : "isolated", c.explained);
  std::vector<const PositionDivergence*> worst;
  for (const auto& p : r.positions) worst.push_back(&p);
  std::sort(worst.begin(), worst.end(), [](auto* a, auto* b) { return a->kld > b->kld; });
  worst.resize(std::min<size_t>(worst.size(), static_cast<size_t>(std::max(0, top))));
  o += "\nworst positions:\n| chunk | pos | token -> next | KLD | top-1 ref / base | KLD after swaps |\n";
  o += "| ---: | ---: | --- | ---: | --- | ---: |\n";
  for (const auto* p : worst)
    o += fmt::format("| {} | {} | {} -> {} | {:.2e} | {} / {} | {} |\n", p->chunk, p->pos, text(p->token), text(p->next),
                     p->kld, p->top, p->top_base, std::isnan(p->kld_forced) ? std::string("-") : fmt::format("{:.2e}", p->kld_forced));
  if (!r.margins.empty()) {
    o += fmt::format("\nrouter margins at the top-k boundary (k-th minus (k+1)-th logit, reference, every position):\n");
    o += fmt::format("| layer | attention | positions | near-ties (< {:.0e}) | share | min margin |\n", r.margin);
    o += "| ---: | --- | ---: | ---: | ---: | ---: |\n";
    for (const auto& l : r.margins)
      o += fmt::format("| {} | {} | {} | {} | {:.1f}% | {:.2e} |\n", l.layer, l.full_attention ? "full" : "sliding",
                       l.positions, l.near_ties, l.positions ? 100.0 * l.near_ties / l.positions : 0.0, l.min_margin);
  }
  if (!r.flips.empty()) {
    o += "\nforced expert swaps that explain the divergence:\n";
    for (const auto& f : r.flips)
      o += fmt::format("chunk {} position {}: layer {} ({}) experts {} vs {}, margin {:.1e}; forcing the swap brings KLD at "
                       "position {} from {:.2e} to {:.2e} ({} divergent position{} fixed)\n",
                       f.chunk, f.pos, f.layer, f.full_attention ? "full attention" : "sliding", set_str(f.experts),
                       set_str(f.swapped), f.margin, f.at, f.kld_before, f.kld_after, f.fixed, f.fixed == 1 ? "" : "s");
  }
  o += fmt::format("\nverdict: {}\n", r.verdict);
  return o;
}

json divergence_json(const DivergenceReport& r) {
  json pos = json::array(), chunks = json::array(), margins = json::array(), flips = json::array();
  for (const auto& p : r.positions)
    pos.push_back({{"chunk", p.chunk}, {"pos", p.pos}, {"token", p.token}, {"next", p.next}, {"kld", p.kld},
                   {"nll", p.nll}, {"nll_base", p.nll_base}, {"top", p.top}, {"top_base", p.top_base},
                   {"kld_after_swaps", std::isnan(p.kld_forced) ? json(nullptr) : json(p.kld_forced)}});
  for (const auto& c : r.per_chunk)
    chunks.push_back({{"chunk", c.chunk}, {"kld_mean", c.kld_mean}, {"kld_max", c.kld_max}, {"top1", c.top1},
                      {"first_divergent", c.first_divergent}, {"divergent", c.divergent}, {"persists", c.persists},
                      {"explained", c.explained}});
  for (const auto& l : r.margins)
    margins.push_back({{"layer", l.layer}, {"full_attention", l.full_attention}, {"positions", l.positions},
                       {"near_ties", l.near_ties}, {"min_margin", l.min_margin}});
  for (const auto& f : r.flips)
    flips.push_back({{"chunk", f.chunk}, {"pos", f.pos}, {"layer", f.layer}, {"full_attention", f.full_attention},
                     {"experts", f.experts}, {"swapped", f.swapped}, {"margin", f.margin}, {"at", f.at},
                     {"kld_before", f.kld_before}, {"kld_after", f.kld_after}, {"fixed", f.fixed}});
  return {{"reference", r.reference}, {"n_ctx", r.n_ctx}, {"chunks", r.chunks}, {"first_scored", r.first},
          {"kld_threshold", r.kld_threshold}, {"margin", r.margin}, {"kld_mean", r.kld_mean}, {"kld_median", r.kld_median},
          {"kld_max", r.kld_max}, {"top1", r.top1}, {"ppl", r.ppl}, {"ppl_base", r.ppl_base}, {"divergent", r.divergent},
          {"explained", r.explained}, {"verdict_kind", r.verdict_kind}, {"verdict", r.verdict}, {"per_chunk", chunks},
          {"router_margins", margins}, {"flips", flips}, {"positions", pos}};
}

}  // namespace g4
