// `g4 compare`: the same tokens through two models (any formats, precisions): logits
// NMSE per position and overall, max |diff|, KL divergence, top-1 agreement, and the
// per-layer hidden-state NMSE/cosine that shows where two artifacts part ways. When B is
// an artifact of A's checkpoint, explain_compare() judges that divergence against what
// B's quant types explain, with forensics' model (tools/forensics.h): a healthy quant is
// "within expected quantization error", a damaged one names its first bad layer.
#pragma once
#include <string>
#include <vector>

#include "runtime/session.h"
#include "tools/metrics.h"
#include "util/json.h"

namespace g4 {

struct ForensicsReport;

struct HiddenCompare {
  int entry = 0;  // 0: scaled embeddings; i: output of layer i-1; last: after the final norm
  double nmse = 0, cosine = 1;
};

struct CompareReport {
  int64_t n_tokens = 0;
  CompareStats logits;
  std::vector<double> position_nmse;
  double kld_mean = 0, kld_max = 0, top1 = 0;
  std::vector<PositionBucket> by_position;  // KLD and top-1 per kld_bucket positions
  std::vector<HiddenCompare> hidden;  // empty when the geometries differ
  int divergence_layer = -1;          // first layer whose output NMSE exceeds kDivergenceNmse
  static constexpr double kDivergenceNmse = 1e-6;

  // Set by explain_compare: the divergence against what B's types explain.
  bool explained = false;
  std::vector<double> layer_severity;  // per layer: B's worst tensor error / the error its type explains
  std::vector<int> bad_layers;         // layers with a tensor beyond what its type explains (forensics' flag)
  int first_bad_layer = -1;            // the first of them; -1 if none
  std::string first_bad_why;           // "blk.3.ffn_down.weight: error 0.3 is 45x what Q8_0 explains (0.0066)"
  std::vector<std::string> other_findings;  // global tensors, hyperparameters, tokenizer, permutations, missing tensors
  bool within_expected() const { return explained && first_bad_layer < 0 && other_findings.empty(); }
  std::string verdict;  // one line
};

CompareReport compare_models(const Model& a, const Model& b, const std::vector<int32_t>& tokens,
                             const ForwardOptions& fa, const ForwardOptions& fb, int64_t kld_bucket = 64);
std::string format_compare(const CompareReport& r, const std::string& name_a, const std::string& name_b);
json compare_json(const CompareReport& r);

// Judges the divergence of B (the artifact) against A (its reference) with the forensics
// of B against A (run_forensics(B, A)): which layers' weights lie beyond the error their
// quant types explain, and what the hidden states do there.
void explain_compare(CompareReport& r, const ForensicsReport& f);

// KL(p || q) and top-1 agreement of two rows of logits.
double kl_divergence(const float* ref_logits, const float* test_logits, int64_t n);

}  // namespace g4
