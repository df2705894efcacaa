// Small self-contained SVG charts for reports (grade card, niah grid): no scripts, no
// network, readable in any browser and inlinable in HTML. Each chart is one <svg> element
// with a class naming it, a title, labelled axes and a legend or colour bar.
#pragma once
#include <cmath>
#include <functional>
#include <string>
#include <vector>

namespace g4::svg {

std::string escape(const std::string& s);

// Colour of t in [0, 1] from green (0) through yellow to red (1).
std::string ramp(double t);

// A heatmap: rows x cols cells, NaN = absent (grey). colour(v) in [0, 1] along ramp().
struct Heatmap {
  std::string css_class, title, subtitle, x_label, y_label;
  std::vector<std::string> row_labels, col_labels;
  std::vector<double> values;           // rows x cols, row-major
  std::vector<std::string> cell_text;   // optional, printed in the cell
  std::vector<std::string> cell_tip;    // optional hover text
  std::function<double(double)> colour;  // value -> [0, 1]
  std::string bar_low, bar_high;         // colour-bar end labels
  int cell_w = 22, cell_h = 20;
};
std::string heatmap(const Heatmap& h);

// Horizontal bars, one per label; `marks` draws dashed vertical reference lines.
struct Bars {
  std::string css_class, title, subtitle, x_label;
  std::vector<std::string> labels;
  std::vector<double> values;
  std::vector<std::string> colours;  // per bar (empty: one colour)
  std::vector<std::string> value_text;
  std::vector<std::pair<double, std::string>> marks;
  bool log_x = false;
  double x_min = NAN;  // linear axis start (default 0): differences between close values show
};
std::string bars(const Bars& b);

// Points per series over an x axis (series may have NaN gaps); optional shaded band
// [band_lo, band_hi] across the plot and points above band_hi ringed in red.
struct Lines {
  std::string css_class, title, subtitle, x_label, y_label;
  std::vector<double> x;
  std::vector<std::string> series_names;
  std::vector<std::vector<double>> series;  // each x.size() long
  bool log_y = false;
  double band_lo = NAN, band_hi = NAN;
  std::string band_label;
};
std::string lines(const Lines& l);

}  // namespace g4::svg
