// Logit/hidden-state comparison metrics (protocols.md §b): NMSE = MSE / Var(ref)
// with population variance, max |diff|, argmax agreement per row.
#pragma once
#include <cstdint>
#include <span>
#include <string>

namespace g4 {

struct CompareStats {
  double nmse = 0;
  double max_abs = 0;
  double mean_abs = 0;
  int64_t rows = 0;
  int64_t argmax_equal = 0;  // rows whose first maximum agrees
  std::string summary() const;
};

// test/ref are [rows, cols] row-major; non-finite reference entries are skipped.
CompareStats compare_arrays(std::span<const float> test, std::span<const float> ref, int64_t cols);

}  // namespace g4
