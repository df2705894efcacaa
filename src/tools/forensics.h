// `g4 forensics`: an artifact (GGUF or HF dir) against the checkpoint it claims to be.
// Per tensor: cosine, relative RMS error and the error its own type explains (the
// reference re-quantized with that type; for float types, a 1-ulp rounding allowance);
// per class and layer severities with tiers and periods (the damage anatomy); a layer
// mapping check (permutations); the hyperparameters and the tokenizer; restore runs that
// put reference tensors (or the reference's hyperparameters) back.
// Tensors are streamed a block of rows at a time: memory stays bounded by a few MB per
// thread plus the layer-mapping samples, whatever the model's size.
#pragma once
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "model/model.h"
#include "tools/artifact_meta.h"
#include "tools/perplexity.h"
#include "util/json.h"

namespace g4 {

struct TensorFinding {
  std::string name, hf, cls;  // GGUF name, HF name, class (GGUF suffix)
  int layer = -1;
  DType ref_type = DType::F32, art_type = DType::F32;
  double cosine = 1, rel_rms = 0;
  // explained: relative RMS error the artifact's type explains. Quantized types: the
  // reference re-quantized to art_type. Float types: RMS of the 1-ulp allowance.
  double explained = 0;
  double max_abs = 0;
  int64_t numel = 0;
  bool float_rule = false;  // judged element by element against 1 ulp
  int64_t beyond_ulp = 0;   // float rule: elements more than 1 ulp away
  bool rerounded = false;   // float rule: differs, but every element within 1 ulp
  bool flagged = false;
  std::string why;
  double severity() const;  // rel_rms / explained (1e12 for NaN/Inf or a shape mismatch)
};

struct Permutation {
  std::string cls;
  int artifact_layer = 0, looks_like_ref_layer = 0;
  double cos_same = 0, cos_best = 0;
};

struct PeriodicDamage {
  int period = 0;
  std::vector<int> damaged_phases, clean_phases;  // flags: phases whose layers are all flagged / all clean
  std::vector<int> phase_tier;                    // severity: the tier (index into Anatomy::tiers) of each phase
};

// Layers grouped by severity: a tier is a run of layers whose severities lie within a
// factor of 4 of each other when sorted; tiers are separated by gaps larger than that.
struct Tier {
  std::vector<int> layers;
  double severity = 0;  // median of its layers' severities
};

struct Anatomy {
  std::vector<double> layer_severity;                       // per layer: its worst tensor's severity
  std::vector<std::pair<std::string, double>> class_severity;  // per class: worst tensor, worst first
  std::vector<Tier> tiers;                                  // least severe first; one tier = uniform
  std::optional<PeriodicDamage> periodic_flags, periodic_severity;
  std::string words;  // "layers 2 and 5 are ~180x worse than the rest, period 3, phase 2"
};

struct ForensicsReport {
  std::vector<TensorFinding> tensors;
  std::vector<std::string> missing, extra, load_errors;
  std::vector<Permutation> permutations;
  std::vector<int> damaged_layers;
  std::vector<std::string> damaged_classes;  // classes with a flagged tensor, worst first
  std::optional<PeriodicDamage> periodic;    // over the flagged bit (== anatomy.periodic_flags)
  Anatomy anatomy;
  std::vector<HparamFinding> hparams;
  VocabReport vocab;
  int n_layers = 0;
  int rerounded = 0;  // tensors re-rounded within 1 ulp (legitimate, reported, not a failure)
  double seconds = 0;
  uint64_t bytes_read = 0;  // tensor bytes of both files
  bool tensors_clean() const;
  bool clean() const;  // tensors, hyperparameters and tokenizer
};

ForensicsReport run_forensics(const Model& artifact, const Model& ref);
std::string format_forensics(const ForensicsReport& r);
json forensics_json(const ForensicsReport& r);
// Heatmap of layer x class (error / explained, log scale) as PNG via cairo.
void write_heatmap_png(const ForensicsReport& r, const std::string& path);
// The same drawn on a cairo context at its origin (the grade summary PNG), and its size.
std::pair<int, int> heatmap_size(const ForensicsReport& r);
void draw_heatmap(struct _cairo* cr, const ForensicsReport& r);

struct RestoreResult {
  std::string what;  // "class attn_q", "layers 2,5", "artifact", "reference", "metadata"
  double ppl = 0;
  double gap_closed = 0;  // (PPL_artifact - PPL_hybrid) / (PPL_artifact - PPL_ref)
};

struct RestoreRanking {
  std::vector<RestoreResult> rows;  // artifact, reference, then hybrids best first
  int n_ctx = 0, chunks = 0;        // what the text allowed
  double gap = 0, gap_err = 0;      // PPL artifact - reference, and its paired standard error
  bool noise() const { return std::abs(gap) < 2 * gap_err; }  // gap shares mean nothing then
};

// `which`: a class name, "metadata", or "auto" (every class, the damaged classes together,
// the flagged layers, each severity tier, each periodic phase, and the reference's
// hyperparameters when they differ). The artifact runs with its own hyperparameters.
RestoreRanking run_restore(const Model& artifact, const Model& ref, const std::string& which,
                           const std::vector<int32_t>& tokens, const PerplexityOptions& po,
                           const ForensicsReport* findings = nullptr);
std::string format_restore(const RestoreRanking& r);

}  // namespace g4
