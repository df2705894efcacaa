// Non-finite weights: a NaN or Inf stored in a tensor (or in a quantized block's scale)
// poisons every forward pass that reads it, so inspect and forensics report them.
#pragma once
#include <cstdint>

#include "formats/tensor.h"

namespace g4 {

struct NonFiniteStats {
  int64_t nan = 0, inf = 0;
  int64_t first_index = -1;  // flat element index of the first non-finite value, -1 if none
  bool scanned = false;      // false for types that cannot hold non-finite values or that we cannot decode
  int64_t count() const { return nan + inf; }
};

// Decodes the tensor block by block (quantized types through their scales) and counts
// NaN and +-Inf values.
NonFiniteStats scan_non_finite(const TensorView& t);

}  // namespace g4
