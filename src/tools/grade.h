// `g4 grade`: one command for a published or downloaded artifact. PPL of artifact and
// reference, KLD, forensics, restore ranking on failure, and a verdict whose thresholds
// are printed with it. Markdown to stdout; HTML with the heatmap to a file.
#pragma once
#include <string>

#include "model/model.h"

namespace g4 {

struct GradeOptions {
  std::string text;  // evaluation text
  std::string text_name;
  int n_ctx = 512;
  int chunks = 16;
  int restore_ctx = 128, restore_chunks = 8;
  std::string html_out;
};

struct GradeResult {
  bool pass = false;
  std::string markdown;
};

// PPL tolerance of an artifact whose weights are mostly of type t (percent).
double ppl_tolerance_pct(DType t);

GradeResult grade(const Model& artifact, const Model& ref, const GradeOptions& opt);

}  // namespace g4
