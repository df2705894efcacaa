#include "formats/tensor.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace g4 {

std::optional<int64_t> checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d != 0 && n > INT64_MAX / d) return std::nullopt;
    n *= d;
  }
  return n;
}

int64_t TensorView::numel() const { return checked_numel(shape).value_or(0); }

std::string shape_to_string(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

std::string TensorView::shape_str() const { return shape_to_string(shape); }

}  // namespace g4
