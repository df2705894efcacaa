#include "tools/metrics.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "util/error.h"

namespace g4 {

std::string CompareStats::summary() const {
  return fmt::format("NMSE {:.3e}  max|diff| {:.3e}  mean|diff| {:.3e}  argmax {}/{}", nmse, max_abs, mean_abs,
                     argmax_equal, rows);
}

CompareStats compare_arrays(std::span<const float> test, std::span<const float> ref, int64_t cols) {
  if (test.size() != ref.size()) fail("compare: sizes differ ({} vs {})", test.size(), ref.size());
  if (cols <= 0 || ref.size() % static_cast<size_t>(cols) != 0) fail("compare: {} values are not rows of {}", ref.size(), cols);
  CompareStats s;
  s.rows = static_cast<int64_t>(ref.size()) / cols;
  double sum = 0, sum2 = 0, se = 0, sa = 0;
  int64_t n = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(ref[i])) continue;
    const double r = ref[i], d = static_cast<double>(test[i]) - r;
    sum += r;
    sum2 += r * r;
    se += d * d;
    sa += std::abs(d);
    s.max_abs = std::max(s.max_abs, std::abs(d));
    ++n;
  }
  if (n == 0) return s;
  const double mean = sum / n, var = sum2 / n - mean * mean, mse = se / n;
  s.nmse = var > 0 ? mse / var : (mse > 0 ? std::numeric_limits<double>::infinity() : 0.0);
  s.mean_abs = sa / n;
  for (int64_t r = 0; r < s.rows; ++r) {
    int64_t at = 0, ar = 0;
    for (int64_t c = 1; c < cols; ++c) {
      if (test[r * cols + c] > test[r * cols + at]) at = c;
      if (ref[r * cols + c] > ref[r * cols + ar]) ar = c;
    }
    s.argmax_equal += at == ar;
  }
  return s;
}

PositionDrift::PositionDrift(int64_t bucket) : size_(bucket) {
  if (bucket < 1) fail("--kld-bucket {}: a bucket holds at least one position", bucket);
}

void PositionDrift::add(int64_t pos, double kld, bool top_equal) {
  if (pos < 0) fail("internal: position {} < 0", pos);
  const size_t i = static_cast<size_t>(pos / size_);
  while (b_.size() <= i) {
    const int64_t lo = static_cast<int64_t>(b_.size()) * size_;
    b_.push_back({lo, lo + size_});
  }
  b_[i].n += 1;
  b_[i].kld_sum += kld;
  b_[i].top_equal += top_equal;
}

std::vector<PositionBucket> PositionDrift::buckets() const {
  std::vector<PositionBucket> out;
  for (const auto& b : b_)
    if (b.n) out.push_back(b);
  return out;
}

std::string PositionDrift::table() const { return position_buckets_table(buckets()); }
std::string PositionDrift::line() const { return position_buckets_line(buckets()); }

json position_buckets_json(const std::vector<PositionBucket>& b) {
  json a = json::array();
  for (const auto& x : b)
    a.push_back({{"from", x.lo}, {"to", x.hi - 1}, {"n", x.n}, {"kld", x.kld()}, {"top1", x.top1()}});
  return a;
}

std::string position_buckets_line(const std::vector<PositionBucket>& b) {
  std::string s = "KLD by position:";
  for (size_t i = 0; i < b.size(); ++i)
    s += fmt::format("{} {}-{} {:.2e}", i ? "," : "", b[i].lo, b[i].hi - 1, b[i].kld());
  return s;
}

std::string position_buckets_table(const std::vector<PositionBucket>& b) {
  std::string s = fmt::format("{:>11} {:>8} {:>12} {:>8}\n", "positions", "n", "mean KLD", "top-1");
  for (const auto& x : b)
    s += fmt::format("{:>11} {:>8} {:>12.4e} {:>7.2f}%\n", fmt::format("{}-{}", x.lo, x.hi - 1), x.n, x.kld(), 100 * x.top1());
  return s;
}

}  // namespace g4
