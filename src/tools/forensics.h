// `g4 forensics`: an artifact (GGUF or HF dir) against the checkpoint it claims to be.
// Per tensor: cosine, relative RMS error and the error its own type explains (the
// reference re-quantized with that type); per class and layer summaries; a layer
// mapping check (permutations); periodic damage over the layer index; restore runs
// that put reference tensors back one class or layer group at a time.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "model/model.h"
#include "tools/perplexity.h"
#include "util/json.h"

namespace g4 {

struct TensorFinding {
  std::string name, hf, cls;  // GGUF name, HF name, class (GGUF suffix)
  int layer = -1;
  DType ref_type = DType::F32, art_type = DType::F32;
  double cosine = 1, rel_rms = 0, explained = 0;  // explained: rel. RMS error of the ref re-quantized to art_type
  double max_abs = 0;                             // for scalars and norms, compared exactly
  bool flagged = false;
  std::string why;
};

struct Permutation {
  std::string cls;
  int artifact_layer = 0, looks_like_ref_layer = 0;
  double cos_same = 0, cos_best = 0;
};

struct PeriodicDamage {
  int period = 0;
  std::vector<int> damaged_phases, clean_phases;
};

struct ForensicsReport {
  std::vector<TensorFinding> tensors;
  std::vector<std::string> missing, extra, load_errors;
  std::vector<Permutation> permutations;
  std::vector<int> damaged_layers;
  std::vector<std::string> damaged_classes;  // classes with a flagged tensor, worst first
  std::optional<PeriodicDamage> periodic;
  int n_layers = 0;
  bool clean() const;
};

// Flagging rule: relative RMS error above 2x what the tensor's own type explains (+1e-6).
ForensicsReport run_forensics(const Model& artifact, const Model& ref);
std::string format_forensics(const ForensicsReport& r);
json forensics_json(const ForensicsReport& r);
// Heatmap of layer x class (error / explained, log scale) as PNG via cairo.
void write_heatmap_png(const ForensicsReport& r, const std::string& path);

struct RestoreResult {
  std::string what;  // "class attn_q", "layers 2,5", "artifact", "reference"
  double ppl = 0;
  double gap_closed = 0;  // (PPL_artifact - PPL_hybrid) / (PPL_artifact - PPL_ref)
};

// `which`: a class name, or "auto" (every class present, plus the damaged layer groups).
std::vector<RestoreResult> run_restore(const Model& artifact, const Model& ref, const std::string& which,
                                       const std::vector<int32_t>& tokens, const PerplexityOptions& po,
                                       const ForensicsReport* findings = nullptr);
std::string format_restore(const std::vector<RestoreResult>& r);

}  // namespace g4
