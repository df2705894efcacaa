#include "tools/grade.h"

#include <fmt/format.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "tools/forensics.h"
#include "tools/perplexity.h"
#include "tools/token_input.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace g4 {
namespace {

std::string base64(const std::string& in) {
  static const char* tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
    for (int k = 3; k >= 0; --k) out += tbl[(v >> (6 * k)) & 63];
  }
  if (i < in.size()) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    if (i + 1 < in.size()) v |= uint32_t(uint8_t(in[i + 1])) << 8;
    out += tbl[(v >> 18) & 63];
    out += tbl[(v >> 12) & 63];
    out += i + 1 < in.size() ? tbl[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}

// The type holding most parameters among the 2-D tensors.
DType dominant_type(const ForensicsReport& f, const Model& art) {
  std::map<DType, int64_t> params;
  for (const auto& t : f.tensors) {
    auto it = art.by_hf_name.find(t.hf);
    if (it != art.by_hf_name.end() && it->second.shape.size() >= 2) params[t.art_type] += it->second.numel();
  }
  DType best = DType::F32;
  int64_t n = -1;
  for (const auto& [t, p] : params)
    if (p > n) { n = p; best = t; }
  return best;
}

}  // namespace

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

GradeResult grade(const Model& art, const Model& ref, const GradeOptions& opt) {
  GradeResult g;
  const ForensicsReport f = run_forensics(art, ref);
  const Tokenizer tok = load_tokenizer(ref);
  std::string text = opt.text;
  if (!text.empty() && text.back() == '\n') text.pop_back();
  const auto tokens = tok.encode(text, true, false);
  const bool runnable = art.valid();
  PerplexityOptions po;
  po.n_ctx = opt.n_ctx;
  po.max_chunks = opt.chunks;
  po.forward.precision = Precision::F32;
  const std::string base_file = (std::filesystem::temp_directory_path() / fmt::format("g4-grade-{}.kld", ::getpid())).string();
  po.kld_base_out = base_file;
  const PerplexityResult pr = run_perplexity_tokens(ref, tokens, po);
  std::optional<PerplexityResult> pa;
  if (runnable) {
    PerplexityOptions pk = po;
    pk.kld_base_out.clear();
    pk.kld_base_in = base_file;
    pa = run_perplexity_tokens(art, {}, pk);
  }
  std::filesystem::remove(base_file);

  const DType main_type = dominant_type(f, art);
  const double tol = ppl_tolerance_pct(main_type);
  const double delta_pct = pa ? 100 * (pa->ppl / pr.ppl - 1) : INFINITY;
  double min_cos8 = 1;
  std::map<std::string, std::pair<double, double>> cos_range;  // class -> (min, max) cosine, 8-bit tensors
  for (const auto& t : f.tensors) {
    const bool eight = t.art_type == DType::Q8_0 || t.art_type == DType::F16 || t.art_type == DType::BF16 || t.art_type == DType::F32;
    if (!eight || t.layer < 0) continue;
    min_cos8 = std::min(min_cos8, t.cosine);
    auto& [lo, hi] = cos_range.try_emplace(t.cls, 1.0, 0.0).first->second;
    lo = std::min(lo, t.cosine);
    hi = std::max(hi, t.cosine);
  }
  double spread = 0;
  for (const auto& [c, r] : cos_range) spread = std::max(spread, r.second - r.first);
  int flagged = 0;
  for (const auto& t : f.tensors) flagged += t.flagged;

  struct Check { std::string name, threshold, measured; bool ok; };
  std::vector<Check> checks = {
      {"loads and validates", "no load errors", fmt::format("{} errors", f.load_errors.size()), f.load_errors.empty()},
      {"complete", "no missing tensors", fmt::format("{} missing", f.missing.size()), f.missing.empty()},
      {"perplexity", fmt::format("within +{}% of the reference ({} artifact)", tol, dtype_name(main_type)),
       pa ? fmt::format("{:.4f} vs {:.4f} ({:+.2f}%)", pa->ppl, pr.ppl, delta_pct) : "not runnable", pa && delta_pct <= tol},
      {"tensor errors", "each within 2x the error its own type explains", fmt::format("{} flagged", flagged), flagged == 0},
      {">= 8-bit tensors", "cosine > 0.99 and uniform across layers (spread < 0.01)",
       fmt::format("min cosine {:.5f}, spread {:.5f}", min_cos8, spread), min_cos8 > 0.99 && spread < 0.01},
      {"layer mapping", "every layer matches its own reference layer best", fmt::format("{} permutations", f.permutations.size()),
       f.permutations.empty()},
  };
  g.pass = true;
  for (const auto& c : checks) g.pass &= c.ok;

  std::string md;
  md += fmt::format("# g4 grade card\n\n- artifact: `{}`\n- reference: `{}`\n- text: {} ({} tokens; c={}, {} chunks, f32)\n\n",
                    art.path, ref.path, opt.text_name, tokens.size(), opt.n_ctx, pr.chunks);
  md += fmt::format("## Verdict: **{}**\n\n| check | threshold | measured | result |\n|---|---|---|---|\n", g.pass ? "PASS" : "FAIL");
  for (const auto& c : checks) md += fmt::format("| {} | {} | {} | {} |\n", c.name, c.threshold, c.measured, c.ok ? "pass" : "**FAIL**");
  md += fmt::format("\nPPL tolerances by main type: F32/F16/BF16 0.5%, Q8_0 1%, Q6_K 2%, Q5_* 3%, Q4_K 5%, Q4_0/Q4_1 8%, Q3_K 15%, Q2_K 40%.\n");
  md += "\n## Perplexity and KL divergence\n\n";
  md += fmt::format("| model | PPL |\n|---|---|\n| reference | {:.4f} ± {:.4f} |\n", pr.ppl, pr.ppl_err);
  if (pa) {
    md += fmt::format("| artifact | {:.4f} ± {:.4f} |\n\n", pa->ppl, pa->ppl_err);
    const auto& k = *pa->kld;
    md += fmt::format("KLD mean {:.6f} ± {:.6f}, 99% {:.6f}, max {:.6f}; same top token {:.2f}%; RMS Δp {:.3f}%\n",
                      k.kld, k.kld_err, k.kld_pct[2].second, k.kld_pct[0].second, 100 * k.same_top, k.dp_rms);
  }
  md += "\n## Forensics\n\n```\n" + format_forensics(f) + "```\n";
  if (!g.pass && runnable) {
    const auto rr = run_restore(art, ref, "auto", tokens,
                                [&] { PerplexityOptions r; r.n_ctx = opt.restore_ctx; r.max_chunks = opt.restore_chunks;
                                      r.forward.precision = Precision::F32; return r; }(), &f);
    md += fmt::format("\n## Restore ranking (c={}, {} chunks): what putting reference tensors back buys\n\n```\n{}```\n",
                      opt.restore_ctx, opt.restore_chunks, format_restore(rr));
  }
  g.markdown = md;
  if (!opt.html_out.empty()) {
    const std::string png = opt.html_out + ".heatmap.png";
    write_heatmap_png(f, png);
    const std::string img = base64(read_text_file(png));
    std::filesystem::remove(png);
    std::ofstream h(opt.html_out);
    if (!h) fail("cannot write '{}'", opt.html_out);
    h << "<!doctype html><html><head><meta charset=\"utf-8\"><title>g4 grade card</title><style>"
         "body{font-family:sans-serif;max-width:1100px;margin:2em auto}pre{background:#f6f6f6;padding:1em;overflow:auto}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}.pass{color:#080}.fail{color:#b00}"
         "</style></head><body>";
    h << "<h1>g4 grade card: <span class=\"" << (g.pass ? "pass\">PASS" : "fail\">FAIL") << "</span></h1>";
    h << "<p>artifact <code>" << html_escape(art.path) << "</code><br>reference <code>" << html_escape(ref.path) << "</code></p>";
    h << "<table><tr><th>check</th><th>threshold</th><th>measured</th><th>result</th></tr>";
    for (const auto& c : checks)
      h << "<tr><td>" << html_escape(c.name) << "</td><td>" << html_escape(c.threshold) << "</td><td>" << html_escape(c.measured)
        << "</td><td class=\"" << (c.ok ? "pass\">pass" : "fail\">FAIL") << "</td></tr>";
    h << "</table><h2>Damage map</h2><img alt=\"layer x class heatmap\" src=\"data:image/png;base64," << img << "\">";
    h << "<h2>Full report</h2><pre>" << html_escape(md) << "</pre></body></html>\n";
  }
  return g;
}

}  // namespace g4
