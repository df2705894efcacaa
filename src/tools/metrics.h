// Logit/hidden-state comparison metrics (protocols.md §b): NMSE = MSE / Var(ref)
// with population variance, max |diff|, argmax agreement per row.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "util/json.h"

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

// Drift by position: KLD and top-1 agreement pooled per bucket of positions within a
// chunk (--kld-bucket, default 64), over all chunks, so that error which grows with
// context shows as buckets whose mean rises. perplexity, compare, ladder and kv-study
// all bucket through this one class.
struct PositionBucket {
  int64_t lo = 0, hi = 0;  // chunk positions lo..hi-1
  int64_t n = 0, top_equal = 0;
  double kld_sum = 0;
  double kld() const { return n ? kld_sum / static_cast<double>(n) : 0; }
  double top1() const { return n ? static_cast<double>(top_equal) / static_cast<double>(n) : 0; }
};

class PositionDrift {
 public:
  explicit PositionDrift(int64_t bucket = 64);
  void add(int64_t pos, double kld, bool top_equal);
  // The buckets that hold a position, in position order (unscored ranges are left out).
  std::vector<PositionBucket> buckets() const;
  int64_t bucket_size() const { return size_; }
  std::string table() const;  // one row per bucket: positions, n, mean KLD, top-1
  std::string line() const;   // compact: "KLD by position: 0-63 1.2e-03, 64-127 ..."

 private:
  int64_t size_;
  std::vector<PositionBucket> b_;
};

json position_buckets_json(const std::vector<PositionBucket>& b);
std::string position_buckets_line(const std::vector<PositionBucket>& b);
std::string position_buckets_table(const std::vector<PositionBucket>& b);

}  // namespace g4
