// `g4 inspect`: what a model file is, and whether g4 will run it.
#pragma once
#include <string>
#include <vector>

#include "model/model.h"
#include "tools/finite.h"
#include "util/json.h"

namespace g4 {

struct NonFiniteTensor {
  std::string tensor;
  NonFiniteStats stats;
};
// Scans every tensor for NaN/Inf (scan_non_finite); each tensor that has any becomes a
// validation error of `m`, so inspect fails on it.
std::vector<NonFiniteTensor> check_finite_weights(Model& m);

// `non_finite`: the findings of check_finite_weights, listed per tensor under "non_finite".
json inspect_json(const Model& m, const std::vector<NonFiniteTensor>& non_finite = {});
std::string inspect_text(const Model& m);

}  // namespace g4
