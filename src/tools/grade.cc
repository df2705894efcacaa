#include "tools/grade.h"

#include <fmt/format.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "tools/artifact_meta.h"
#include "tools/forensics.h"
#include "tools/perplexity.h"
#include "tools/token_input.h"
#include "util/error.h"
#include "util/mapped_file.h"
#include "util/progress.h"

namespace g4 {
namespace {

// Healthy bands: the highest mean KLD and top-1 disagreement measured on healthy brown-mini
// files of each band type (brown-heldout, c=512, 8 chunks, f32; README "Grade verdict").
constexpr double KLD_F = 4.42e-5, MISS_F = 0.0034,     // BF16 truncated from an f32 master (the suite's control)
                 KLD_Q8_0 = 5.8e-5, MISS_Q8_0 = 0.0078,    // llama.cpp Q8_0 (= g4 q8_0)
                 KLD_Q6_K = 4.51e-4, MISS_Q6_K = 0.0156,   // llama.cpp Q6_K, g4 q6_k
                 KLD_Q5 = 3.61e-3, MISS_Q5 = 0.0474,       // g4 q5_0 (all tensors); llama.cpp Q5_0/Q5_1/Q5_K_S/Q5_K_M below
                 KLD_Q4_K = 7.98e-3, MISS_Q4_K = 0.0698,   // g4 q4_k (all tensors); Q4_K_M, Q4_K_S, mixed-8-4 below
                 KLD_Q4_0 = 1.235e-2, MISS_Q4_0 = 0.0796,  // g4 q4_1 (all tensors); llama.cpp Q4_0, Q4_1 below
                 KLD_Q3_K = 1.58e-2, MISS_Q3_K = 0.0977,   // llama.cpp Q3_K_S
                 KLD_Q2_K = 3.33e-2, MISS_Q2_K = 0.123;    // llama.cpp Q2_K

DType band_type(const ForensicsReport& f, const Model& art) {
  std::map<DType, int64_t> params;
  int64_t total = 0;
  for (const auto& t : f.tensors) {
    auto it = art.by_hf_name.find(t.hf);
    if (it != art.by_hf_name.end() && it->second.shape.size() >= 2) params[t.art_type] += it->second.numel(), total += it->second.numel();
  }
  auto bpw = [](DType t) { auto rb = row_bytes(t, 256); return rb ? 8.0 * static_cast<double>(*rb) / 256 : 64.0; };
  DType best = DType::F32;
  for (const auto& [t, p] : params)
    if (10 * p >= total && bpw(t) < bpw(best)) best = t;
  return best;
}

}  // namespace

GradeReferenceRun::~GradeReferenceRun() {
  if (!kld_base.empty()) {
    std::error_code ec;
    std::filesystem::remove(kld_base, ec);
  }
}

double ppl_tolerance_pct(DType t) {
  switch (t) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::F64: return 0.5;
    case DType::Q8_0: return 1.0;
    case DType::Q6_K: return 2.0;
    case DType::Q5_0: case DType::Q5_1: case DType::Q5_K: return 3.0;
    case DType::Q4_K: return 5.0;
    case DType::Q4_0: case DType::Q4_1: return 8.0;
    case DType::Q3_K: return 15.0;
    default: return 40.0;
  }
}

OutputLimits output_limits(DType t) {
  // kld_band / miss_band: the highest mean KLD and top-1 disagreement measured on healthy
  // brown-mini files of that main type (llama.cpp's and g4's quants, several recipes; README
  // "Grade verdict" has the table). The limits are 4x those: far outside the band fails.
  auto L = [](double kld, double miss) { return OutputLimits{kld, 4 * kld, miss, std::min(1.0, 4 * miss)}; };
  switch (t) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::F64: return L(KLD_F, MISS_F);
    case DType::Q8_0: return L(KLD_Q8_0, MISS_Q8_0);
    case DType::Q6_K: return L(KLD_Q6_K, MISS_Q6_K);
    case DType::Q5_0: case DType::Q5_1: case DType::Q5_K: return L(KLD_Q5, MISS_Q5);
    case DType::Q4_K: return L(KLD_Q4_K, MISS_Q4_K);
    case DType::Q4_0: case DType::Q4_1: return L(KLD_Q4_0, MISS_Q4_0);
    case DType::Q3_K: return L(KLD_Q3_K, MISS_Q3_K);
    default: return L(KLD_Q2_K, MISS_Q2_K);
  }
}

GradeResult grade(const Model& art, const Model& ref, const GradeOptions& opt) {
  GradeResult g;
  // Stages on a terminal (grade runs for minutes on real models): one bar, one step a stage.
  Progress stages("grade", 5);
  auto stage = [&](int i, const char* what) { stages.update(i, what); };
  stage(0, "forensics: every tensor, the hyperparameters and the tokenizer");
  g.forensics = run_forensics(art, ref);
  const ForensicsReport& f = g.forensics;
  const Tokenizer tok = load_tokenizer(ref);
  std::string text = opt.text;
  if (!text.empty() && text.back() == '\n') text.pop_back();
  const auto tokens = tok.encode(text, true, false);
  const bool runnable = art.valid();
  PerplexityOptions po;
  po.n_ctx = opt.n_ctx;
  po.max_chunks = opt.chunks;
  po.forward.precision = Precision::F32;
  const std::string key = fmt::format("{}|{}|{}|{}", ref.path, opt.n_ctx, opt.chunks, tokens.size());
  std::shared_ptr<GradeReferenceRun> run = opt.reference_run ? opt.reference_run : std::make_shared<GradeReferenceRun>();
  if (run->key != key) {
    if (!run->kld_base.empty()) std::filesystem::remove(run->kld_base);
    run->key = key;
    run->kld_base = (std::filesystem::temp_directory_path() /
                     fmt::format("g4-grade-{}-{}.kld", ::getpid(), reinterpret_cast<uintptr_t>(run.get()))).string();
    po.kld_base_out = run->kld_base;
    stage(1, "perplexity of the reference (and its distributions, the KLD base)");
    run->ppl = run_perplexity_tokens(ref, tokens, po);
    po.kld_base_out.clear();
  }
  const std::string& base_file = run->kld_base;
  const PerplexityResult& pr = run->ppl;
  std::optional<PerplexityResult> pa, pown;
  std::optional<Tokenizer> art_tok;
  std::string tok_error;
  try {
    art_tok = load_tokenizer(art);
  } catch (const Error& e) {
    tok_error = e.what();
  }
  if (runnable) {
    // KLD needs the same ids on both sides: the reference's tokenization.
    PerplexityOptions pk = po;
    pk.kld_base_in = base_file;
    stage(2, "perplexity and KL divergence of the artifact");
    pa = run_perplexity_tokens(art, {}, pk);
    // And the artifact as its users run it: its own tokenizer, its own metadata.
    if (art_tok && !f.vocab.same()) {
      PerplexityOptions pe = po;
      stage(3, "perplexity of the artifact with its own tokenizer");
      pown = run_perplexity_tokens(art, art_tok->encode(text, art_tok->add_bos_default(), false), pe);
    }
  }
  if (art_tok) g.retokenized = f.vocab.same() ? 0.0 : retokenized_fraction(*art_tok, tok, text);

  const DType main_type = band_type(f, art);
  g.band = main_type;
  const double tol = ppl_tolerance_pct(main_type);
  const OutputLimits lim = output_limits(main_type);
  g.limits = lim;
  g.ppl_tolerance = tol;
  g.ppl_ref = pr;
  g.ppl_art = pa;
  g.ppl_own = pown;
  g.text_tokens = static_cast<int64_t>(tokens.size());
  const double delta_pct = pa ? 100 * (pa->ppl / pr.ppl - 1) : INFINITY;
  double min_cos8 = 1;
  std::map<std::string, std::pair<double, double>> cos_range;  // class -> (min, max) cosine, 8-bit tensors
  // Weight matrices stored at 8 bits or more (norm vectors and scalars are F32 in every
  // file and say nothing about the quantization).
  int n_eight = 0;
  for (const auto& t : f.tensors) {
    const bool eight = t.art_type == DType::Q8_0 || t.art_type == DType::F16 || t.art_type == DType::BF16 || t.art_type == DType::F32;
    if (!eight || t.layer < 0 || t.numel < 4096) continue;
    ++n_eight;
    min_cos8 = std::min(min_cos8, t.cosine);
    auto& [lo, hi] = cos_range.try_emplace(t.cls, 1.0, 0.0).first->second;
    lo = std::min(lo, t.cosine);
    hi = std::max(hi, t.cosine);
  }
  double spread = 0;
  for (const auto& [c, r] : cos_range) spread = std::max(spread, r.second - r.first);
  int flagged = 0;
  for (const auto& t : f.tensors) flagged += t.flagged;
  using R = GradeCheck::Result;
  auto pf = [](bool ok) { return ok ? R::Pass : R::Fail; };
  const double kld = pa && pa->kld ? pa->kld->kld : INFINITY, miss = pa && pa->kld ? 1 - pa->kld->same_top : 1;
  if (pa && pa->kld) g.kld = kld, g.miss = miss;
  const double kld_err = pa && pa->kld ? pa->kld->kld_err : 0, miss_err = pa && pa->kld ? pa->kld->same_top_err : 0;
  // Fail when even the value less two standard errors is above the limit, warn when the value
  // less one standard error is above 1.5x the band: a short text cannot fail a healthy file.
  auto judge = [&](double v, double err, double band, double limit) {
    if (!pa || !pa->kld) return R::Fail;
    if (v - 2 * err > limit) return R::Fail;
    return v - err > 1.5 * band ? R::Warn : R::Pass;
  };
  std::string vocab_measured = f.vocab.same() ? "identical" : fmt::format("{} differences ({} token ids, {} merges)", f.vocab.findings.size(),
                                                                          f.vocab.tokens_differ, f.vocab.merges_differ);
  if (!tok_error.empty()) vocab_measured = "does not load";
  else if (!f.vocab.same()) vocab_measured += fmt::format("; {:.2f}% of the text tokenized differently", 100 * g.retokenized);
  std::string hp_measured = f.hparams.empty() ? "all equal" : "";
  for (const auto& h : f.hparams) hp_measured += fmt::format("{}{}: {} vs {}", hp_measured.empty() ? "" : "; ", h.what, h.artifact, h.reference);
  g.checks = {
      {"loads and validates", "no load errors", fmt::format("{} errors", f.load_errors.size()), pf(f.load_errors.empty())},
      {"complete", "no missing tensors", fmt::format("{} missing", f.missing.size()), pf(f.missing.empty())},
      {"tokenizer", "tokens, types, merges, special ids and flags equal the reference's", vocab_measured, pf(f.vocab.same())},
      {"hyperparameters", "every GGUF key / config field equals the reference's", hp_measured, pf(f.hparams.empty())},
      {"perplexity", fmt::format("within +{}% of the reference ({} artifact)", tol, dtype_name(main_type)),
       pa ? fmt::format("{:.4f} vs {:.4f} ({:+.2f}%)", pa->ppl, pr.ppl, delta_pct) : "not runnable", pf(pa && delta_pct <= tol)},
      {"KL divergence", fmt::format("mean - 2 s.e. <= {:.3g} (4x the highest healthy {} file's {:.3g})", lim.kld_max, dtype_name(main_type), lim.kld_band),
       pa ? fmt::format("{:.5f} ± {:.5f}", kld, kld_err) : "not runnable", judge(kld, kld_err, lim.kld_band, lim.kld_max)},
      {"top-1 agreement", fmt::format("disagreement - 2 s.e. <= {:.2f}% (4x the highest healthy {} file's {:.2f}%)", 100 * lim.miss_max,
                                      dtype_name(main_type), 100 * lim.miss_band),
       pa ? fmt::format("{:.2f}% ± {:.2f}% disagree", 100 * miss, 100 * miss_err) : "not runnable", judge(miss, miss_err, lim.miss_band, lim.miss_max)},
      {"tensor errors", "each within 2x the error its own type explains (float types: 1 ulp)",
       fmt::format("{} flagged", flagged) + (f.rerounded ? fmt::format(", {} re-rounded within 1 ulp", f.rerounded) : ""),
       flagged ? R::Fail : f.rerounded ? R::Warn : R::Pass},
      {">= 8-bit matrices", "cosine > 0.99 and uniform across layers (spread < 0.01)",
       n_eight ? fmt::format("{} matrices: min cosine {:.5f}, spread {:.5f}", n_eight, min_cos8, spread)
               : "not applicable: no layer matrix is stored at 8 bits or more",
       pf(min_cos8 > 0.99 && spread < 0.01)},
      {"layer mapping", "every layer matches its own reference layer best", fmt::format("{} permutations", f.permutations.size()),
       pf(f.permutations.empty())},
  };
  g.pass = true;
  bool warned = false;
  for (const auto& c : g.checks) { g.pass &= c.result != R::Fail; warned |= c.result == R::Warn; }
  g.verdict = !g.pass ? "FAIL" : warned ? "PASS with warnings" : "PASS";
  auto res = [](R r) { return r == R::Pass ? "pass" : r == R::Warn ? "warn" : "**FAIL**"; };

  std::string md;
  md += fmt::format("# g4 grade card\n\n- artifact: `{}`\n- reference: `{}`\n- text: {} ({} tokens; c={}, {} chunks, f32)\n\n",
                    art.path, ref.path, opt.text_name, tokens.size(), pr.n_ctx, pr.chunks);
  md += fmt::format("## Verdict: **{}**\n\n| check | threshold | measured | result |\n|---|---|---|---|\n", g.verdict);
  for (const auto& c : g.checks) md += fmt::format("| {} | {} | {} | {} |\n", c.name, c.threshold, c.measured, res(c.result));
  md += "\nPPL tolerances by main type: F32/F16/BF16 0.5%, Q8_0 1%, Q6_K 2%, Q5_* 3%, Q4_K 5%, Q4_0/Q4_1 8%, Q3_K 15%, Q2_K 40%. "
        "KLD and top-1: warn when the value less one standard error is above 1.5x the healthy band, fail when the value less two is above 4x. Rules: README, \"Grade verdict\".\n";
  if (!f.anatomy.words.empty()) md += "\n**Damage anatomy:** " + f.anatomy.words + "\n";
  md += "\n## Perplexity and KL divergence\n\n";
  md += fmt::format("| model | PPL |\n|---|---|\n| reference | {:.4f} ± {:.4f} |\n", pr.ppl, pr.ppl_err);
  if (pa) {
    md += fmt::format("| artifact (reference tokens) | {:.4f} ± {:.4f} |\n", pa->ppl, pa->ppl_err);
    if (pown) md += fmt::format("| artifact (its own tokenizer and metadata) | {:.4f} ± {:.4f} |\n", pown->ppl, pown->ppl_err);
    md += "\n";
    const auto& k = *pa->kld;
    md += fmt::format("KLD mean {:.6f} ± {:.6f}, 99% {:.6f}, max {:.6f}; same top token {:.2f}%; RMS Δp {:.3f}%\n",
                      k.kld, k.kld_err, k.kld_pct[2].second, k.kld_pct[0].second, 100 * k.same_top, k.dp_rms);
  }
  if (!f.vocab.same() || !tok_error.empty()) {
    md += "\n## Tokenizer\n\n";
    if (!tok_error.empty()) md += "- " + tok_error + "\n";
    for (const auto& v : f.vocab.findings) md += "- " + v + "\n";
    md += fmt::format("- {:.2f}% of the evaluation text's tokens are tokenized differently by the artifact\n", 100 * g.retokenized);
  }
  if (!f.hparams.empty()) {
    md += "\n## Hyperparameters\n\n| what | GGUF key | config.json field | artifact | reference |\n|---|---|---|---|---|\n";
    for (const auto& h : f.hparams) md += fmt::format("| {} | `{}` | `{}` | {} | {} |\n", h.what, h.gguf_key, h.hf_field, h.artifact, h.reference);
  }
  md += "\n## Forensics\n\n```\n" + format_forensics(f) + "```\n";
  if (!g.pass && runnable && opt.restore) {
    PerplexityOptions r = po;
    if (opt.restore_ctx > 0) r.n_ctx = opt.restore_ctx;
    if (opt.restore_chunks > 0) r.max_chunks = opt.restore_chunks;
    stage(4, "restore ranking: hybrids with reference parts put back");
    g.restore = run_restore(art, ref, "auto", tokens, r, &f);
    md += fmt::format("\n## Restore ranking (c={}, {} chunks): what putting reference tensors back buys\n\n```\n{}```\n",
                      g.restore->n_ctx, g.restore->chunks, format_restore(*g.restore));
  }
  g.markdown = md;
  stages.finish();
  if (!opt.html_out.empty()) write_grade_report(g, opt, art, ref);
  return g;
}

}  // namespace g4
