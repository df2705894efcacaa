#include "util/svg.h"

#include <fmt/format.h>

#include <algorithm>

namespace g4::svg {
namespace {

constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                                    "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39"};

std::string open(const std::string& cls, int w, int h, const std::string& title, const std::string& subtitle) {
  std::string o = fmt::format(
      "<svg class=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"10\" y=\"18\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
      escape(cls), w, h, w, h, escape(title));
  if (!subtitle.empty()) o += fmt::format("<text x=\"10\" y=\"34\" fill=\"#444\">{}</text>\n", escape(subtitle));
  return o;
}

// Tick values for [lo, hi]: decades on a log axis, ~5 round steps on a linear one.
std::vector<double> ticks(double lo, double hi, bool log) {
  std::vector<double> t;
  if (log) {
    for (double e = std::floor(std::log10(lo)); e <= std::ceil(std::log10(hi)) && t.size() < 20; ++e) t.push_back(std::pow(10, e));
    return t;
  }
  const double span = hi - lo, raw = span / 5, mag = std::pow(10, std::floor(std::log10(raw > 0 ? raw : 1)));
  const double step = raw / mag < 2 ? 2 * mag : raw / mag < 5 ? 5 * mag : 10 * mag;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-12 * std::abs(hi) && t.size() < 20; v += step) t.push_back(v);
  return t;
}

std::string num(double v) {
  if (v == 0) return "0";
  const double a = std::abs(v);
  return a >= 1e4 || a < 1e-3 ? fmt::format("{:.0e}", v) : fmt::format("{:.4g}", v);
}

}  // namespace

std::string escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '&': o += "&amp;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string ramp(double t) {
  t = std::clamp(std::isnan(t) ? 0.0 : t, 0.0, 1.0);
  // green (40,160,70) -> yellow (235,200,60) -> red (200,40,40)
  auto mix = [](double a, double b, double u) { return static_cast<int>(a + (b - a) * u); };
  if (t < 0.5) return fmt::format("rgb({},{},{})", mix(40, 235, 2 * t), mix(160, 200, 2 * t), mix(70, 60, 2 * t));
  return fmt::format("rgb({},{},{})", mix(235, 200, 2 * t - 1), mix(200, 40, 2 * t - 1), mix(60, 40, 2 * t - 1));
}

std::string heatmap(const Heatmap& h) {
  const int R = static_cast<int>(h.row_labels.size()), C = static_cast<int>(h.col_labels.size());
  size_t longest = 4;
  for (const auto& l : h.row_labels) longest = std::max(longest, l.size());
  const int left = 20 + static_cast<int>(longest) * 7, top = 50;
  const int W = left + C * h.cell_w + 110, H = top + R * h.cell_h + 50;
  std::string o = open(h.css_class, W, H, h.title, h.subtitle);
  for (int r = 0; r < R; ++r) {
    o += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", left - 6, top + r * h.cell_h + h.cell_h / 2 + 4,
                     escape(h.row_labels[r]));
    for (int c = 0; c < C; ++c) {
      const size_t i = static_cast<size_t>(r * C + c);
      const double v = i < h.values.size() ? h.values[i] : NAN;
      const std::string fill = std::isnan(v) ? "#ddd" : ramp(h.colour ? h.colour(v) : v);
      o += fmt::format("<rect class=\"cell\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" stroke=\"white\">", left + c * h.cell_w,
                       top + r * h.cell_h, h.cell_w, h.cell_h, fill);
      if (i < h.cell_tip.size()) o += "<title>" + escape(h.cell_tip[i]) + "</title>";
      o += "</rect>\n";
      if (i < h.cell_text.size() && !h.cell_text[i].empty())
        o += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"white\">{}</text>\n", left + c * h.cell_w + h.cell_w / 2,
                         top + r * h.cell_h + h.cell_h / 2 + 4, escape(h.cell_text[i]));
    }
  }
  // Column labels: every one when they fit, else every k-th.
  const int every = std::max(1, static_cast<int>(std::ceil(24.0 / h.cell_w)));
  for (int c = 0; c < C; c += every)
    o += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", left + c * h.cell_w + h.cell_w / 2,
                     top + R * h.cell_h + 14, escape(h.col_labels[c]));
  o += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", left + C * h.cell_w / 2, top + R * h.cell_h + 32,
                   escape(h.x_label));
  if (!h.y_label.empty())
    o += fmt::format("<text x=\"12\" y=\"{}\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">{}</text>\n", top + R * h.cell_h / 2,
                     top + R * h.cell_h / 2, escape(h.y_label));
  // Colour bar with its end labels, and the "absent" swatch.
  const int bx = left + C * h.cell_w + 24, bh = std::max(60, std::min(160, R * h.cell_h));
  for (int k = 0; k < 20; ++k)
    o += fmt::format("<rect class=\"colorbar\" x=\"{}\" y=\"{}\" width=\"14\" height=\"{:.2f}\" fill=\"{}\"/>\n", bx, top + k * bh / 20.0,
                     bh / 20.0 + 0.5, ramp(1 - k / 19.0));
  o += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n<text x=\"{}\" y=\"{}\">{}</text>\n", bx + 18, top + 9, escape(h.bar_high), bx + 18,
                   top + bh, escape(h.bar_low));
  o += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"10\" fill=\"#ddd\"/><text x=\"{}\" y=\"{}\">absent</text>\n", bx,
                   top + bh + 12, bx + 18, top + bh + 21);
  return o + "</svg>\n";
}

std::string bars(const Bars& b) {
  const int n = static_cast<int>(b.labels.size()), bh = 20, top = 62;
  size_t longest = 4;
  for (const auto& l : b.labels) longest = std::max(longest, l.size());
  const int left = 20 + static_cast<int>(std::min<size_t>(longest, 48)) * 7, pw = 420;
  const int W = left + pw + 130, H = top + n * (bh + 6) + 50;
  double lo = b.log_x ? INFINITY : 0, hi = 0;
  for (double v : b.values)
    if (std::isfinite(v)) hi = std::max(hi, v), lo = b.log_x && v > 0 ? std::min(lo, v) : lo;
  for (const auto& [v, _] : b.marks) hi = std::max(hi, v);
  if (b.log_x) lo = std::isfinite(lo) ? std::pow(10, std::floor(std::log10(lo))) : 1, hi = std::pow(10, std::ceil(std::log10(std::max(hi, lo * 10))));
  if (!b.log_x) {
    for (double v : b.values) lo = std::min(lo, std::isfinite(v) ? v : 0);
    if (std::isfinite(b.x_min)) lo = b.x_min;
    if (hi <= lo) hi = lo + 1;
    hi += 0.05 * (hi - lo);
  }
  auto X = [&](double v) {
    const double t = b.log_x ? (std::log10(std::max(v, lo)) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) : (v - lo) / (hi - lo);
    return left + pw * std::clamp(t, 0.0, 1.0);
  };
  std::string o = open(b.css_class, W, H, b.title, b.subtitle);
  for (double t : ticks(lo, hi, b.log_x)) {
    if (t < lo || t > hi) continue;
    o += fmt::format("<line x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#eee\"/><text x=\"{0:.1f}\" y=\"{3}\" "
                     "text-anchor=\"middle\" fill=\"#444\">{4}</text>\n",
                     X(t), top - 4, top + n * (bh + 6), top + n * (bh + 6) + 14, num(t));
  }
  for (int i = 0; i < n; ++i) {
    const double v = b.values[i];
    const int y = top + i * (bh + 6);
    const std::string label = b.labels[i].size() > 48 ? b.labels[i].substr(0, 45) + "..." : b.labels[i];
    o += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\"><title>{}</title>{}</text>\n", left - 6, y + 14, escape(b.labels[i]),
                     escape(label));
    const double x0 = X(b.log_x ? lo : std::max(lo, 0.0)), x1 = std::isfinite(v) ? X(v) : x0;
    o += fmt::format("<rect class=\"bar\" x=\"{:.1f}\" y=\"{}\" width=\"{:.1f}\" height=\"{}\" fill=\"{}\"/>\n", std::min(x0, x1), y,
                     std::abs(x1 - x0), bh, i < static_cast<int>(b.colours.size()) ? b.colours[i] : "#4a7fb5");
    const std::string txt = i < static_cast<int>(b.value_text.size()) ? b.value_text[i] : num(v);
    o += fmt::format("<text x=\"{:.1f}\" y=\"{}\">{}</text>\n", std::max(x0, x1) + 4, y + 14, escape(txt));
  }
  // Mark labels alternate between two heights so that close marks stay readable.
  for (size_t k = 0; k < b.marks.size(); ++k)
    o += fmt::format("<line x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#b00\" stroke-dasharray=\"4 3\"/>"
                     "<text x=\"{0:.1f}\" y=\"{3}\" fill=\"#b00\" text-anchor=\"{5}\">{4}</text>\n",
                     X(b.marks[k].first), top - 4, top + n * (bh + 6), top - 6 - 10 * static_cast<int>(k % 2), escape(b.marks[k].second),
                     k % 2 ? "start" : "end");
  o += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", left + pw / 2, top + n * (bh + 6) + 32, escape(b.x_label));
  return o + "</svg>\n";
}

std::string lines(const Lines& l) {
  const int left = 70, top = 50, pw = 640, ph = 260;
  size_t longest = 0;
  for (const auto& s : l.series_names) longest = std::max(longest, s.size());
  const int W = left + pw + 30 + static_cast<int>(longest) * 7 + 30, H = top + ph + 50;
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  for (double x : l.x) xlo = std::min(xlo, x), xhi = std::max(xhi, x);
  for (const auto& s : l.series)
    for (double v : s)
      if (std::isfinite(v) && (!l.log_y || v > 0)) ylo = std::min(ylo, v), yhi = std::max(yhi, v);
  for (double v : {l.band_lo, l.band_hi})
    if (std::isfinite(v) && (!l.log_y || v > 0)) ylo = std::min(ylo, v), yhi = std::max(yhi, v);
  if (!std::isfinite(xlo)) xlo = 0, xhi = 1;
  if (xhi <= xlo) xhi = xlo + 1;
  if (!std::isfinite(ylo)) ylo = l.log_y ? 1 : 0, yhi = ylo + 1;
  if (l.log_y) ylo = std::pow(10, std::floor(std::log10(ylo))), yhi = std::pow(10, std::ceil(std::log10(yhi * 1.01)));
  else if (yhi <= ylo) yhi = ylo + 1;
  auto X = [&](double x) { return left + pw * (x - xlo) / (xhi - xlo); };
  auto Y = [&](double y) {
    const double t = l.log_y ? (std::log10(std::max(y, ylo)) - std::log10(ylo)) / (std::log10(yhi) - std::log10(ylo)) : (y - ylo) / (yhi - ylo);
    return top + ph * (1 - std::clamp(t, 0.0, 1.0));
  };
  std::string o = open(l.css_class, W, H, l.title, l.subtitle);
  if (std::isfinite(l.band_lo) && std::isfinite(l.band_hi))
    o += fmt::format("<rect class=\"band\" x=\"{}\" y=\"{:.1f}\" width=\"{}\" height=\"{:.1f}\" fill=\"#2ca02c\" fill-opacity=\"0.12\"/>"
                     "<text x=\"{}\" y=\"{:.1f}\" fill=\"#2a7a2a\">{}</text>\n",
                     left, Y(l.band_hi), pw, Y(l.band_lo) - Y(l.band_hi), left + 6, Y(l.band_hi) + 13, escape(l.band_label));
  for (double t : ticks(ylo, yhi, l.log_y))
    o += fmt::format("<line x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" stroke=\"#eee\"/><text x=\"{3}\" y=\"{4:.1f}\" "
                     "text-anchor=\"end\" fill=\"#444\">{5}</text>\n",
                     left, left + pw, Y(t), left - 6, Y(t) + 4, num(t));
  for (double t : ticks(xlo, xhi, false))
    o += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\" fill=\"#444\">{}</text>\n", X(t), top + ph + 14, num(t));
  o += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\n", left, top, pw, ph);
  for (size_t s = 0; s < l.series.size(); ++s) {
    const char* col = kPalette[s % std::size(kPalette)];
    std::string path;
    for (size_t i = 0; i < l.x.size() && i < l.series[s].size(); ++i) {
      const double v = l.series[s][i];
      if (!std::isfinite(v)) continue;
      path += fmt::format("{}{:.1f},{:.1f} ", path.empty() ? "M" : "L", X(l.x[i]), Y(v));
      const bool out = std::isfinite(l.band_hi) && v > l.band_hi;
      o += fmt::format("<circle class=\"point\" cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"{}\" fill=\"{}\" stroke=\"{}\" stroke-width=\"{}\">"
                       "<title>{} at {}: {}</title></circle>\n",
                       X(l.x[i]), Y(v), out ? 4 : 2.5, col, out ? "#d00" : col, out ? 2 : 0, escape(l.series_names[s]), num(l.x[i]), num(v));
    }
    if (!path.empty()) o += fmt::format("<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-opacity=\"0.6\"/>\n", path, col);
    o += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n", left + pw + 20,
                     top + 14 * s, col, left + pw + 34, top + 14 * s + 9, escape(l.series_names[s]));
  }
  o += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", left + pw / 2, top + ph + 32, escape(l.x_label));
  o += fmt::format("<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text>\n", top + ph / 2, top + ph / 2,
                   escape(l.y_label));
  return o + "</svg>\n";
}

}  // namespace g4::svg
