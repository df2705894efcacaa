// `g4 grade`: one command for a published or downloaded artifact. PPL of artifact and
// reference, KLD, forensics, restore ranking on failure, and a verdict whose thresholds
// are printed with it. Markdown to stdout; HTML with the heatmap to a file.
#pragma once
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/model.h"
#include "tools/forensics.h"
#include "tools/perplexity.h"

namespace g4 {

struct GradeOptions {
  std::string text;  // evaluation text
  std::string text_name;
  int n_ctx = 512;
  int chunks = 16;
  // The restore ranking runs at the same context and chunks (one PPL per artifact on the
  // card) unless these are set (> 0) to make it cheaper on large models.
  int restore_ctx = 0, restore_chunks = 0;
  std::string html_out;  // report.html; report.png (summary) and report.md (card) beside it
  std::string build;     // g4 version and build, for the report's provenance
  bool restore = true;  // run the restore ranking when the verdict is FAIL
  // Several grades against one reference and text (the damaged-artifact suite) share the
  // reference's PPL run and KLD base through this; grade fills it on first use.
  std::shared_ptr<struct GradeReferenceRun> reference_run;
};

struct GradeReferenceRun {
  std::string key;  // reference path, context, chunks, token count
  PerplexityResult ppl;
  std::string kld_base;  // file, removed with this object
  ~GradeReferenceRun();
};

// Limits on what an artifact may do to the output distribution, by main weight type:
// mean KLD and top-1 disagreement, from measured healthy files (README, "Grade verdict").
struct OutputLimits {
  double kld_band = 0, kld_max = 0;        // highest healthy mean KLD measured; the limit
  double miss_band = 0, miss_max = 0;      // same for 1 - same-top-token fraction
};
OutputLimits output_limits(DType t);

struct GradeCheck {
  std::string name, threshold, measured;
  enum Result { Pass, Warn, Fail } result = Pass;
};

struct GradeResult {
  bool pass = false;              // no check failed (warnings allowed)
  std::string verdict;            // PASS, PASS with warnings, FAIL
  std::vector<GradeCheck> checks;
  ForensicsReport forensics;
  double retokenized = 0;         // fraction of the text's tokens the artifact's tokenizer makes differently
  DType band = DType::F32;        // the type whose limits apply (lowest precision with >= 10% of the weights)
  double kld = NAN, miss = NAN;   // mean KLD and top-1 disagreement (NaN: not runnable)
  OutputLimits limits;            // for `band`
  double ppl_tolerance = 0;       // percent, for `band`
  PerplexityResult ppl_ref;       // the reference on the reference's tokens
  std::optional<PerplexityResult> ppl_art, ppl_own;  // the artifact on those tokens; on its own tokenization
  std::optional<RestoreRanking> restore;
  int64_t text_tokens = 0;
  std::string markdown;
};


// PPL tolerance of an artifact whose weights are mostly of type t (percent).
double ppl_tolerance_pct(DType t);

GradeResult grade(const Model& artifact, const Model& ref, const GradeOptions& opt);

// The report files for opt.html_out: one self-contained HTML page (verdict and reasons,
// SVG plots, provenance), a PNG summary and the markdown card (tools/grade_report.cc).
void write_grade_report(const GradeResult& g, const GradeOptions& opt, const Model& artifact, const Model& ref);

}  // namespace g4
