// Helpers of the forensics and damaged-artifact tests: brown-mini as the reference, and
// artifacts made from it by g4's quantizer with an edit applied to the source values.
#pragma once
#include <cmath>
#include <functional>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "test_util.h"
#include "tools/quantize.h"

namespace g4::test {

inline const Model& brown_mini() {
  static Model m = load_model(model_dir("brown-mini"));
  return m;
}

// Layer index of a GGUF tensor name, -1 for global tensors.
inline int layer_of(const std::string& name) {
  std::smatch m;
  static const std::regex re(R"(blk\.(\d+)\.)");
  return std::regex_search(name, m, re) ? std::stoi(m[1]) : -1;
}

// Gaussian noise of `rel` times the values' RMS.
inline void add_noise(std::vector<float>& x, double rel, uint32_t seed) {
  double ss = 0;
  for (float v : x) ss += double(v) * v;
  const double sd = rel * std::sqrt(ss / x.size());
  std::mt19937 rng(seed);
  std::normal_distribution<double> n(0, sd);
  for (auto& v : x) v += static_cast<float>(n(rng));
}

// brown-mini quantized by g4 (type or recipe), with `edit` applied to the source values.
inline std::string quantized(const ScratchDir& d, const std::string& name, std::optional<DType> type, const std::string& recipe,
                             std::function<void(const std::string&, std::vector<float>&)> edit = nullptr) {
  QuantizeOptions qo;
  qo.type = type;
  qo.recipe = recipe;
  qo.verify = false;
  qo.edit_source_for_test = std::move(edit);
  quantize_model(brown_mini(), d.str(name), qo);
  return d.str(name);
}

}  // namespace g4::test
