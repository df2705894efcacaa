#include "tools/ladder.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "tools/kld_base.h"
#include "tools/token_input.h"
#include "util/error.h"

namespace g4 {
namespace {

void log_softmax(const double* z, int64_t V, std::vector<double>& out) {
  double mx = z[0];
  for (int64_t j = 1; j < V; ++j) mx = std::max(mx, z[j]);
  double s = 0;
  for (int64_t j = 0; j < V; ++j) s += std::exp(z[j] - mx);
  const double lse = mx + std::log(s);
  for (int64_t j = 0; j < V; ++j) out[j] = z[j] - lse;
}

}  // namespace

std::vector<LadderRung> ladder_rungs() {
  std::vector<LadderRung> r;
  auto add = [&](std::string name, std::string what, ForwardOptions fo) { r.push_back({std::move(name), std::move(what), fo}); };
  add("f64", "float64 reference (HF transformers in float64)", {Precision::F64});
  ForwardOptions consts{Precision::F64};
  consts.bf16_embed_scale = true;
  add("f64 bf16-const", "float64, embedding scales sqrt(H), sqrt(P) rounded to bf16", consts);
  add("f32", "float32 throughout", {Precision::F32});
  ForwardOptions weights{Precision::BF16};
  weights.bf16_weights_only = true;
  add("bf16 weights", "weights rounded to bf16, float32 activations", weights);
  add("bf16", "HF's native bf16 forward emulated: every op's output rounded to bf16", {Precision::BF16});
  add("fast", "g4's CPU fast path (the stored weights; 8-bit activations, bf16 AMX tiles for batches where the CPU has them)", {Precision::Fast});
  return r;
}

std::vector<LadderRung> engine_rungs(const std::string& engine) {
  const EngineRounding all = parse_engine_rounding(engine);
  if (engine != "llama.cpp" && engine != "llama.cpp-fa")
    fail("--engine '{}': the engines whose roundings g4 emulates are llama.cpp and llama.cpp-fa", engine);
  std::vector<LadderRung> r;
  auto add = [&](const std::string& list, std::string what) {
    ForwardOptions fo{Precision::F32};
    fo.emulate = parse_engine_rounding(list);
    r.push_back({"f32 +" + list, std::move(what), fo});
  };
  const bool fa = all.attn == EngineRounding::Attn::F16Flash;
  add("gelu-f16", "float32, GELU through ggml's f16 lookup table");
  add("kv-f16", "float32, K/V cache in f16 (llama.cpp's default cache type)");
  add("kv-f16,q-f16", "float32, f16 K/V cache and Q rounded to f16 for Q.K");
  add(fa ? "kv-f16,q-f16,flash-f16" : "kv-f16,q-f16,probs-f16",
      fa ? "float32, ggml's CPU flash attention: f16 Q/K/V, weighted V sum accumulated in f16"
         : "float32, f16 K/V/Q and the softmax probabilities in f16 for P.V");
  add(engine, "float32 with every " + engine + " rounding above: the engine emulated");
  return r;
}

std::vector<int32_t> ladder_tokens(const Model& m, const std::string& text) {
  std::string t = text;
  if (!t.empty() && t.back() == '\n') t.pop_back();
  return load_tokenizer(m).encode(t, true, false);
}

LadderResult run_ladder(const Model& m, const std::string& text, const LadderOptions& opt) {
  std::vector<LadderRung> rungs = ladder_rungs();
  if (!opt.engine.empty())
    for (auto& g : engine_rungs(opt.engine)) rungs.push_back(std::move(g));
  if (opt.kld_base.empty()) return compare_rungs(m, ladder_tokens(m, text), opt, rungs);
  int first = 0;
  const KldBase base = open_kld_base(opt.kld_base, m.spec.vocab, first);
  return compare_rungs(m, {}, opt, rungs, &base);
}

LadderResult compare_rungs(const Model& m, const std::vector<int32_t>& tokens, const LadderOptions& opt,
                           std::vector<LadderRung> rungs, const KldBase* base) {
  const int n_ctx = base ? base->n_ctx : opt.n_ctx;
  if (n_ctx < 4 || n_ctx % 2) fail("-c {} must be even and at least 4", n_ctx);
  if (n_ctx > m.spec.max_ctx) fail("-c {} exceeds the model's context length {}", n_ctx, m.spec.max_ctx);
  if (rungs.empty()) fail("nothing to compare");
  const int64_t avail = base ? base->n_chunk : static_cast<int64_t>(tokens.size()) / n_ctx;
  if (avail < 1) fail("the text has {} tokens, fewer than one chunk of -c {}", tokens.size(), n_ctx);
  const int chunks = static_cast<int>(opt.max_chunks > 0 ? std::min<int64_t>(avail, opt.max_chunks) : avail);
  const int first = base ? base->first : n_ctx / 2 - 1, rows = n_ctx - 1 - first;
  const int64_t V = m.spec.vocab;

  struct Acc {
    double sq = 0, nll = 0, kld = 0, kld_base = 0;
    int64_t top = 0, top_base = 0;
  };
  std::vector<Acc> acc(rungs.size());
  std::vector<PositionDrift> drift(rungs.size(), PositionDrift(opt.kld_bucket));
  // Logits from `from`: the scored positions, or all of them for the drift buckets.
  const int from = opt.drift_all_positions ? 0 : first;
  double ref_sum = 0, ref_sq = 0;
  int64_t n = 0;
  std::vector<Session> sessions;
  for (const auto& r : rungs) {
    ForwardOptions fo = r.forward;
    fo.n_ctx = n_ctx;
    sessions.emplace_back(m, fo);
  }
  std::vector<double> ref_lp(static_cast<size_t>(V)), lp(ref_lp.size());
  for (int c = 0; c < chunks; ++c) {
    const std::vector<int32_t>& src = base ? base->tokens : tokens;
    std::vector<int32_t> chunk(src.begin() + static_cast<int64_t>(c) * n_ctx, src.begin() + static_cast<int64_t>(c + 1) * n_ctx);
    chunk[0] = m.spec.bos_id;
    EvalRequest req;
    req.logits_from = from;
    req.logits_f64 = true;
    // The reference first, then each rung against it (two sets of logits in memory).
    auto eval = [&](size_t k) {
      const auto t0 = std::chrono::steady_clock::now();
      sessions[k].reset();
      std::vector<double> z = sessions[k].eval(chunk, req).logits64;
      rungs[k].seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      return z;
    };
    const std::vector<double> ref = eval(0);
    for (int p = 0; p < rows; ++p)
      for (int64_t j = 0; j < V; ++j) {
        const double z = ref[static_cast<size_t>(first + p - from) * V + j];
        ref_sum += z;
        ref_sq += z * z;
      }
    n += static_cast<int64_t>(rows) * V;
    for (size_t k = 0; k < rungs.size(); ++k) {
      const std::vector<double> logits = k == 0 ? ref : eval(k);
      for (int pos = from; pos <= n_ctx - 2; ++pos) {
        const double* zr = &ref[static_cast<size_t>(pos - from) * V];
        const double* z = &logits[static_cast<size_t>(pos - from) * V];
        log_softmax(zr, V, ref_lp);
        log_softmax(z, V, lp);
        double kl = 0, sq = 0;
        for (int64_t j = 0; j < V; ++j) {
          sq += (z[j] - zr[j]) * (z[j] - zr[j]);
          kl += std::exp(ref_lp[j]) * (ref_lp[j] - lp[j]);
        }
        const bool same_top = (std::max_element(z, z + V) - z) == (std::max_element(zr, zr + V) - zr);
        drift[k].add(pos, kl, same_top);
        if (pos < first) continue;  // drift only: the summary is on the scored positions
        acc[k].sq += sq;
        acc[k].kld += kl;
        acc[k].nll -= lp[chunk[pos + 1]];
        acc[k].top += same_top;
        if (base) {
          const BaseMatch bm = match_base_record(*base, static_cast<int64_t>(c) * rows + (pos - first), z, chunk[pos + 1]);
          acc[k].kld_base += bm.kld;
          acc[k].top_base += bm.top == bm.top_base;
        }
      }
    }
  }
  const double var = ref_sq / n - (ref_sum / n) * (ref_sum / n);
  const double npos = static_cast<double>(chunks) * rows;
  for (size_t k = 0; k < rungs.size(); ++k) {
    rungs[k].nmse = acc[k].sq / n / var;
    rungs[k].kld = acc[k].kld / npos;
    rungs[k].top1 = acc[k].top / npos;
    rungs[k].ppl = std::exp(acc[k].nll / npos);
    rungs[k].by_position = drift[k].buckets();
    if (base) {
      rungs[k].kld_base = acc[k].kld_base / npos;
      rungs[k].top1_base = acc[k].top_base / npos;
    }
  }
  return {rungs, n_ctx, chunks, base != nullptr};
}

std::string format_ladder(const LadderResult& r, const std::string& model) {
  std::string s = fmt::format("precision ladder: {} (c={}, {} chunk{}, each rung against f64 on the same positions)\n\n",
                              model, r.n_ctx, r.chunks, r.chunks == 1 ? "" : "s");
  const std::string eh = r.base ? " mean KLD vs engine | top-1 = engine |" : "";
  s += "| rung | NMSE vs f64 | mean KLD vs f64 | top-1 = f64 | PPL |" + eh + " seconds | what |\n";
  s += std::string("| --- | ---: | ---: | ---: | ---: |") + (r.base ? " ---: | ---: |" : "") + " ---: | --- |\n";
  for (const auto& g : r.rungs) {
    const std::string e = r.base ? fmt::format(" {:.3e} | {:.2f}% |", g.kld_base, 100 * g.top1_base) : "";
    s += fmt::format("| {} | {:.3e} | {:.3e} | {:.2f}% | {:.4f} |{} {:.2f} | {} |\n", g.name, g.nmse, g.kld, 100 * g.top1,
                     g.ppl, e, g.seconds, g.what);
  }
  s += "\n";
  for (const auto& g : r.rungs) s += fmt::format("{}: {}\n", g.name, position_buckets_line(g.by_position));
  return s;
}

}  // namespace g4
