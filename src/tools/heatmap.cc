// The forensics heatmap: one cell per (class, layer), colour = log10(error / explained).
#include <cairo.h>
#include <fmt/format.h>

#include <cmath>
#include <map>

#include "tools/forensics.h"
#include "util/error.h"

namespace g4 {

namespace {

std::map<std::string, std::map<int, const TensorFinding*>> heatmap_grid(const ForensicsReport& r) {
  std::map<std::string, std::map<int, const TensorFinding*>> grid;
  for (const auto& f : r.tensors)
    if (f.layer >= 0) grid[f.cls][f.layer] = &f;
  return grid;
}

constexpr int kCell = 22, kLeft = 170, kTop = 50;

}  // namespace

std::pair<int, int> heatmap_size(const ForensicsReport& r) {
  const int L = std::max(1, r.n_layers), C = std::max<int>(1, static_cast<int>(heatmap_grid(r).size()));
  return {kLeft + L * kCell + 120, kTop + C * kCell + 40};
}

void draw_heatmap(cairo_t* cr, const ForensicsReport& r) {
  const auto grid = heatmap_grid(r);
  const int cell = kCell, left = kLeft, top = kTop, L = std::max(1, r.n_layers), C = std::max<int>(1, static_cast<int>(grid.size()));
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, 11);
  cairo_set_source_rgb(cr, 0, 0, 0);
  cairo_move_to(cr, 10, 20);
  cairo_show_text(cr, "error / error its type explains (log scale): green <= 1, red >= 100");
  // Colour: 0 (ratio <= 1) green -> 1 (ratio >= 100) red; grey when absent.
  auto colour = [&](double ratio, double& R, double& G, double& B) {
    const double t = std::clamp(std::log10(std::max(ratio, 1.0)) / 2.0, 0.0, 1.0);
    R = 0.2 + 0.8 * t;
    G = 0.75 * (1 - t) + 0.1;
    B = 0.25 * (1 - t);
  };
  int row = 0;
  for (const auto& [cls, layers] : grid) {
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_move_to(cr, 10, top + row * cell + 15);
    cairo_show_text(cr, cls.c_str());
    for (int l = 0; l < L; ++l) {
      double R = 0.85, G = 0.85, B = 0.85;
      auto it = layers.find(l);
      if (it != layers.end()) {
        const auto* f = it->second;
        const double ratio = f->severity();
        colour(f->flagged ? ratio : std::min(ratio, 1.0), R, G, B);
      }
      cairo_set_source_rgb(cr, R, G, B);
      cairo_rectangle(cr, left + l * cell, top + row * cell, cell - 2, cell - 2);
      cairo_fill(cr);
    }
    ++row;
  }
  cairo_set_source_rgb(cr, 0, 0, 0);
  for (int l = 0; l < L; ++l) {
    cairo_move_to(cr, left + l * cell + 4, top + C * cell + 14);
    cairo_show_text(cr, std::to_string(l).c_str());
  }
  cairo_move_to(cr, left, top + C * cell + 32);
  cairo_show_text(cr, "layer");
}

void write_heatmap_png(const ForensicsReport& r, const std::string& path) {
  const auto [W, H] = heatmap_size(r);
  cairo_surface_t* s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
  cairo_t* cr = cairo_create(s);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  draw_heatmap(cr, r);
  cairo_destroy(cr);
  const auto st = cairo_surface_write_to_png(s, path.c_str());
  cairo_surface_destroy(s);
  if (st != CAIRO_STATUS_SUCCESS) fail("cannot write PNG '{}': {}", path, cairo_status_to_string(st));
}

}  // namespace g4
