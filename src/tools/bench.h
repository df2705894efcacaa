// `g4 bench`: prompt processing (pp) and token generation (tg) speed, llama-bench style,
// plus peak RSS, decode GB/s (weight bytes touched per token / time), and a memory
// bandwidth probe to put that number in context.
#pragma once
#include <string>
#include <vector>

#include "runtime/session.h"
#include "util/json.h"

namespace g4 {

struct BenchOptions {
  int n_prompt = 512, n_gen = 128, reps = 5;
  // Context already in the KV cache before each pp/tg run (llama-bench's -d): the cost of
  // attention over a long context.
  int depth = 0;
  // One untimed run of each test first (llama-bench's default; --no-warmup skips it): it pages
  // in the weights. At long contexts one run is minutes, and the depth fill warms them anyway.
  bool warmup = true;
  Precision precision = Precision::Fast;
  // Batched decode (llama-batched-bench's -npl): for each N, N sequences generate n_gen
  // tokens each in lockstep, one forward per step for all N (as the serving scheduler).
  std::vector<int> n_parallel;
};

struct BatchedRow {
  int n_seq = 0;
  double tps = 0, std = 0;  // generated tokens per second over all sequences
};

struct BenchResult {
  double pp_tps = 0, pp_std = 0, tg_tps = 0, tg_std = 0;
  double peak_rss_gb = 0, decode_gbps = 0, bytes_per_token_gb = 0;
  int64_t n_params = 0, n_bytes = 0;
  std::vector<BatchedRow> batched;
};

BenchResult run_bench(const Model& m, const BenchOptions& opt);
// Read bandwidth of this machine (GB/s), streaming over a buffer larger than the caches.
double measure_read_bandwidth_gbps();
// Bytes of weights one decode step reads (the LM head included, routed experts only).
int64_t decode_bytes_per_token(const Model& m);

}  // namespace g4
