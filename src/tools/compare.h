// `g4 compare`: the same tokens through two models (any formats, precisions): logits
// NMSE per position and overall, max |diff|, KL divergence, top-1 agreement, and the
// per-layer hidden-state NMSE/cosine that shows where two artifacts part ways.
#pragma once
#include <string>
#include <vector>

#include "runtime/session.h"
#include "tools/metrics.h"
#include "util/json.h"

namespace g4 {

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
};

CompareReport compare_models(const Model& a, const Model& b, const std::vector<int32_t>& tokens,
                             const ForwardOptions& fa, const ForwardOptions& fb, int64_t kld_bucket = 64);
std::string format_compare(const CompareReport& r, const std::string& name_a, const std::string& name_b);
json compare_json(const CompareReport& r);

// KL(p || q) and top-1 agreement of two rows of logits.
double kl_divergence(const float* ref_logits, const float* test_logits, int64_t n);

}  // namespace g4
