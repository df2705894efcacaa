// The grade report: one self-contained HTML page (verdict and its reasons first, then
// SVG plots, then provenance and the full card), a PNG summary for issues and chats, and
// the markdown card.
#include <cairo.h>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <openssl/evp.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include "tools/grade.h"
#include "util/error.h"
#include "util/svg.h"

namespace g4 {
namespace {

namespace fs = std::filesystem;
using R = GradeCheck::Result;

// SHA-256 of a file, streamed (bounded memory whatever its size).
std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open to hash", path);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::vector<char> buf(4 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &n);
  std::string hex;
  for (unsigned i = 0; i < n; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

std::string sha256_text(const std::string& s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_Digest(s.data(), s.size(), md, &n, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned i = 0; i < n; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

// The files a model was read from: the GGUF, or the checkpoint's config, tokenizer and shards.
std::vector<fs::path> model_files(const std::string& path) {
  if (!fs::is_directory(path)) return {path};
  std::vector<fs::path> v;
  for (const auto& e : fs::directory_iterator(path)) {
    const auto n = e.path().filename().string();
    if (e.is_regular_file() && (n.ends_with(".safetensors") || n == "config.json" || n == "tokenizer.json"))
      v.push_back(e.path());
  }
  std::sort(v.begin(), v.end());
  return v;
}

std::string human_bytes(uintmax_t b) {
  return b >= (1ull << 30) ? fmt::format("{:.2f} GiB", b / double(1ull << 30)) : fmt::format("{:.1f} MiB", b / double(1ull << 20));
}

const char* result_class(R r) { return r == R::Pass ? "pass" : r == R::Warn ? "warn" : "fail"; }
const char* result_word(R r) { return r == R::Pass ? "pass" : r == R::Warn ? "warn" : "FAIL"; }

// Per layer and class: error / explained error, the forensics severity.
svg::Lines layer_plot(const GradeResult& g) {
  const ForensicsReport& f = g.forensics;
  svg::Lines l;
  l.css_class = "plot-layers";
  l.title = "Per-layer error against what the quantization type explains";
  l.subtitle = "relative RMS error / error of the reference re-quantized to the same type (float types: 1 ulp); "
               "above 2 = flagged (ringed red)";
  l.x_label = "layer";
  l.y_label = "error / explained (log)";
  l.log_y = true;
  for (int i = 0; i < f.n_layers; ++i) l.x.push_back(i);
  std::map<std::string, std::vector<double>> by_class;
  double lo = INFINITY;
  for (const auto& t : f.tensors) {
    if (t.layer < 0 || t.layer >= f.n_layers) continue;
    auto& v = by_class.try_emplace(t.cls, std::vector<double>(static_cast<size_t>(f.n_layers), NAN)).first->second;
    const double s = std::min(t.severity(), 1e6);
    v[static_cast<size_t>(t.layer)] = s;
    if (s > 0) lo = std::min(lo, s);
  }
  for (auto& [c, v] : by_class) {
    l.series_names.push_back(c);
    l.series.push_back(std::move(v));
  }
  l.band_lo = std::isfinite(lo) ? std::min(lo, 0.1) : 0.1;
  l.band_hi = 2;
  l.band_label = "expected: within 2x what the type explains";
  return l;
}

svg::Heatmap heatmap_plot(const GradeResult& g) {
  const ForensicsReport& f = g.forensics;
  std::map<std::string, std::map<int, const TensorFinding*>> grid;
  for (const auto& t : f.tensors)
    if (t.layer >= 0) grid[t.cls][t.layer] = &t;
  svg::Heatmap h;
  h.css_class = "plot-heatmap";
  h.title = "Damage map: tensor class x layer";
  h.subtitle = "colour: log10(error / explained error); green <= 1 (as expected), red >= 100";
  h.x_label = "layer";
  for (int i = 0; i < f.n_layers; ++i) h.col_labels.push_back(std::to_string(i));
  for (const auto& [cls, layers] : grid) {
    h.row_labels.push_back(cls);
    for (int i = 0; i < f.n_layers; ++i) {
      auto it = layers.find(i);
      h.values.push_back(it == layers.end() ? NAN : it->second->severity());
      h.cell_tip.push_back(it == layers.end() ? cls + " layer " + std::to_string(i) + ": absent"
                                              : fmt::format("{}: error {:.3g}, explained {:.3g}, ratio {:.3g}, cosine {:.6f}{}",
                                                            it->second->name, it->second->rel_rms, it->second->explained,
                                                            it->second->severity(), it->second->cosine,
                                                            it->second->flagged ? " (flagged)" : ""));
    }
  }
  h.colour = [](double s) { return std::clamp(std::log10(std::max(s, 1.0)) / 2.0, 0.0, 1.0); };
  h.bar_high = ">= 100x";
  h.bar_low = "<= 1x";
  return h;
}

svg::Bars ppl_plot(const GradeResult& g) {
  svg::Bars b;
  b.css_class = "plot-ppl";
  b.title = "Perplexity";
  b.subtitle = fmt::format("c={}, {} chunks; dashed: the reference and the {} tolerance (+{}%)", g.ppl_ref.n_ctx, g.ppl_ref.chunks,
                           dtype_name(g.band), g.ppl_tolerance);
  b.x_label = "perplexity (lower is better)";
  auto add = [&](const std::string& label, double v, const std::string& colour, double err) {
    b.labels.push_back(label);
    b.values.push_back(v);
    b.colours.push_back(colour);
    b.value_text.push_back(err > 0 ? fmt::format("{:.4f} ± {:.4f}", v, err) : fmt::format("{:.4f}", v));
  };
  add("reference", g.ppl_ref.ppl, "#2ca02c", g.ppl_ref.ppl_err);
  if (g.ppl_art) add("artifact (reference tokens)", g.ppl_art->ppl, g.pass ? "#4a7fb5" : "#d62728", g.ppl_art->ppl_err);
  if (g.ppl_own) add("artifact (own tokenizer, metadata)", g.ppl_own->ppl, "#9467bd", g.ppl_own->ppl_err);
  if (g.restore)
    for (const auto& r : g.restore->rows)
      if (r.what != "artifact" && r.what != "reference") add("restored: " + r.what, r.ppl, "#bbbbbb", 0);
  b.marks = {{g.ppl_ref.ppl, "reference"}, {g.ppl_ref.ppl * (1 + g.ppl_tolerance / 100), "tolerance"}};
  // Start the axis below the lowest value so that small differences show.
  double lo = g.ppl_ref.ppl;
  for (double v : b.values) lo = std::min(lo, v);
  b.x_min = 0.9 * lo;
  return b;
}

svg::Bars kld_plot(const GradeResult& g) {
  svg::Bars b;
  b.css_class = "plot-kld";
  b.title = "KL divergence per token: distribution";
  b.subtitle = fmt::format("percentiles over {} scored tokens; dashed: healthy {} band and limit for the mean", g.ppl_art ? g.ppl_art->tokens : 0,
                           dtype_name(g.band));
  b.x_label = "KLD(reference || artifact), nats (log)";
  b.log_x = true;
  if (g.ppl_art && g.ppl_art->kld) {
    const KldStats& k = *g.ppl_art->kld;
    b.labels.push_back("mean");
    b.values.push_back(std::max(k.kld, 1e-12));
    b.colours.push_back(k.kld > g.limits.kld_max ? "#d62728" : "#4a7fb5");
    b.value_text.push_back(fmt::format("{:.3g} ± {:.2g}", k.kld, k.kld_err));
    for (const auto& [name, v] : k.kld_pct) {
      b.labels.push_back(name);
      b.values.push_back(std::max(v, 1e-12));
      b.colours.push_back("#8fb3d9");
      b.value_text.push_back(fmt::format("{:.3g}", v));
    }
  }
  b.marks = {{g.limits.kld_band, "healthy"}, {g.limits.kld_max, "limit"}};
  return b;
}

svg::Bars top1_plot(const GradeResult& g) {
  svg::Bars b;
  b.css_class = "plot-top1";
  b.title = "Top-1 agreement";
  b.subtitle = fmt::format("tokens whose most likely next token differs from the reference's; dashed: healthy {} band and limit",
                           dtype_name(g.band));
  b.x_label = "top-1 disagreement, %";
  if (std::isfinite(g.miss)) {
    b.labels.push_back("artifact");
    b.values.push_back(100 * g.miss);
    b.colours.push_back(g.miss > g.limits.miss_max ? "#d62728" : "#4a7fb5");
    b.value_text.push_back(fmt::format("{:.2f}% disagree ({:.2f}% agree)", 100 * g.miss, 100 * (1 - g.miss)));
  }
  b.marks = {{100 * g.limits.miss_band, "healthy"}, {100 * g.limits.miss_max, "limit"}};
  return b;
}

svg::Bars restore_plot(const RestoreRanking& rr) {
  svg::Bars b;
  b.css_class = "plot-restore";
  b.title = "Restore ranking: the PPL gap closed by putting reference parts back";
  b.subtitle = fmt::format("c={}, {} chunks; gap {:.4f} ± {:.4f}{}", rr.n_ctx, rr.chunks, rr.gap, rr.gap_err,
                           rr.noise() ? " (within noise: shares mean little)" : "");
  b.x_label = "gap closed, %";
  for (const auto& r : rr.rows) {
    if (r.what == "artifact" || r.what == "reference") continue;
    b.labels.push_back(r.what);
    b.values.push_back(100 * r.gap_closed);
    b.colours.push_back(r.gap_closed >= 0.5 ? "#2ca02c" : "#8fb3d9");
    b.value_text.push_back(fmt::format("{:.1f}% (PPL {:.4f})", 100 * r.gap_closed, r.ppl));
  }
  b.marks = {{100, "100%"}};
  return b;
}

std::string provenance_rows(const GradeResult& g, const GradeOptions& opt, const Model& art, const Model& ref) {
  std::string o;
  auto row = [&](const std::string& k, const std::string& v) { o += "<tr><th>" + svg::escape(k) + "</th><td>" + v + "</td></tr>\n"; };
  for (const auto& [what, m] : {std::pair<const char*, const Model*>{"artifact", &art}, {"reference", &ref}}) {
    std::string files;
    for (const auto& p : model_files(m->path)) {
      std::error_code ec;
      const auto size = fs::file_size(p, ec);
      files += fmt::format("<code>{}</code> {} sha256 <code>{}</code><br>", svg::escape(p.filename().string()),
                           ec ? "?" : human_bytes(size), sha256_file(p.string()));
    }
    row(what, "<code>" + svg::escape(m->path) + "</code><br>" + files);
  }
  row("text", fmt::format("<code>{}</code>, {} bytes, sha256 <code>{}</code>; {} tokens (the reference's tokenizer)",
                          svg::escape(opt.text_name), opt.text.size(), sha256_text(opt.text), g.text_tokens));
  row("evaluation", fmt::format("c={}, {} chunks, f32 forward for both models; KLD against the reference's full distributions",
                                g.ppl_ref.n_ctx, g.ppl_ref.chunks));
  if (g.restore) row("restore ranking", fmt::format("c={}, {} chunks", g.restore->n_ctx, g.restore->chunks));
  row("g4", svg::escape(opt.build.empty() ? "g4 (build unknown)" : opt.build));
  row("date", fmt::format("{:%Y-%m-%d %H:%M:%S} UTC", fmt::gmtime(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now()))));
  return o;
}

// The summary PNG: verdict, checks and the damage heatmap.
void write_summary_png(const GradeResult& g, const std::string& path) {
  const auto [hw, hh] = heatmap_size(g.forensics);
  const int top = 40 + 18 * static_cast<int>(g.checks.size()) + 20;
  const int W = std::max(hw, 900), H = top + hh;
  cairo_surface_t* s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
  cairo_t* cr = cairo_create(s);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
  cairo_set_font_size(cr, 18);
  if (!g.pass) cairo_set_source_rgb(cr, 0.7, 0, 0);
  else if (g.verdict == "PASS") cairo_set_source_rgb(cr, 0, 0.5, 0);
  else cairo_set_source_rgb(cr, 0.65, 0.4, 0);
  cairo_move_to(cr, 10, 26);
  cairo_show_text(cr, ("g4 grade: " + g.verdict).c_str());
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, 12);
  int y = 48;
  for (const auto& c : g.checks) {
    if (c.result == R::Fail) cairo_set_source_rgb(cr, 0.7, 0, 0);
    else if (c.result == R::Warn) cairo_set_source_rgb(cr, 0.65, 0.4, 0);
    else cairo_set_source_rgb(cr, 0, 0.45, 0);
    cairo_move_to(cr, 10, y);
    cairo_show_text(cr, result_word(c.result));
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_move_to(cr, 60, y);
    std::string line = c.name + ": " + c.measured;
    if (line.size() > 140) line = line.substr(0, 137) + "...";
    cairo_show_text(cr, line.c_str());
    y += 18;
  }
  cairo_translate(cr, 0, top);
  draw_heatmap(cr, g.forensics);
  cairo_destroy(cr);
  const auto st = cairo_surface_write_to_png(s, path.c_str());
  cairo_surface_destroy(s);
  if (st != CAIRO_STATUS_SUCCESS) fail("cannot write PNG '{}': {}", path, cairo_status_to_string(st));
}

}  // namespace

void write_grade_report(const GradeResult& g, const GradeOptions& opt, const Model& art, const Model& ref) {
  const fs::path html = opt.html_out;
  fs::path png = html, md = html;
  png.replace_extension(".png");
  md.replace_extension(".md");
  std::string h;
  h += "<!doctype html><html><head><meta charset=\"utf-8\"><title>g4 grade: " + svg::escape(g.verdict) + "</title><style>"
       "body{font-family:sans-serif;max-width:1150px;margin:1.5em auto;color:#222}h1{margin-bottom:.2em}"
       "pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}table{border-collapse:collapse;margin:.5em 0}"
       "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}.pass{color:#080}.warn{color:#a60}"
       ".fail{color:#b00;font-weight:bold}.verdict{font-size:1.6em}.plots svg{display:block;margin:1.2em 0;max-width:100%}"
       "</style></head><body>\n";
  const char* vc = !g.pass ? "fail" : g.verdict == "PASS" ? "pass" : "warn";
  h += fmt::format("<h1>g4 grade: <span class=\"verdict {}\">{}</span></h1>\n", vc, svg::escape(g.verdict));
  h += "<p>artifact <code>" + svg::escape(art.path) + "</code> against reference <code>" + svg::escape(ref.path) + "</code></p>\n";
  // The reasons first: every failed or warned check with its measurement.
  std::string reasons;
  for (const auto& c : g.checks)
    if (c.result != R::Pass)
      reasons += fmt::format("<li><span class=\"{}\">{}</span> <b>{}</b>: {} (threshold: {})</li>\n", result_class(c.result),
                             result_word(c.result), svg::escape(c.name), svg::escape(c.measured), svg::escape(c.threshold));
  h += reasons.empty() ? "<p class=\"reasons\">Every check passed.</p>\n" : "<ul class=\"reasons\">\n" + reasons + "</ul>\n";
  if (!g.forensics.anatomy.words.empty()) h += "<p><b>Damage anatomy:</b> " + svg::escape(g.forensics.anatomy.words) + "</p>\n";
  h += "<table class=\"checks\"><tr><th>check</th><th>threshold</th><th>measured</th><th>result</th></tr>\n";
  for (const auto& c : g.checks)
    h += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>\n", svg::escape(c.name),
                     svg::escape(c.threshold), svg::escape(c.measured), result_class(c.result), result_word(c.result));
  h += "</table>\n<div class=\"plots\">\n";
  h += svg::lines(layer_plot(g));
  h += svg::heatmap(heatmap_plot(g));
  h += svg::bars(ppl_plot(g));
  h += svg::bars(kld_plot(g));
  h += svg::bars(top1_plot(g));
  if (g.restore) h += svg::bars(restore_plot(*g.restore));
  h += "</div>\n<h2>Provenance</h2>\n<table class=\"provenance\">\n" + provenance_rows(g, opt, art, ref) + "</table>\n";
  h += "<details><summary>The markdown card (also in <code>" + svg::escape(md.filename().string()) +
       "</code>)</summary><pre>" + svg::escape(g.markdown) + "</pre></details>\n</body></html>\n";
  std::ofstream f(html, std::ios::binary);
  f << h;
  f.close();
  if (!f) fail("cannot write '{}'", html.string());
  std::ofstream m(md, std::ios::binary);
  m << g.markdown;
  m.close();
  if (!m) fail("cannot write '{}'", md.string());
  write_summary_png(g, png.string());
}

}  // namespace g4
