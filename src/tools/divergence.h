// `g4 divergence`: why another engine differs from the reference, in one command. It reads
// the engine's llama.cpp-format KL-divergence base file (llama-perplexity
// --kl-divergence-base), runs g4's reference (optionally with that engine's roundings
// emulated) on the same tokens, and reports
//   - KLD / top-1 per position and per chunk, the worst positions with their tokens, where
//     divergence starts in each chunk and whether it persists (state carried through the
//     KV cache) or stays isolated;
//   - for MoE models, the router margin at the top-k boundary (k-th minus (k+1)-th logit)
//     of every layer and position, and for the divergent positions the near-ties that
//     explain them: forcing the swapped expert in the reference (ForwardOptions::
//     force_routes) and measuring the KLD again;
//   - a verdict: agreement, precision-sensitive routing flips (explained), a structural
//     difference, or unexplained.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/session.h"
#include "util/json.h"

namespace g4 {

struct DivergenceOptions {
  ForwardOptions forward;        // the reference run (precision, --emulate)
  int max_chunks = -1;           // -1: every chunk of the base file
  double kld_threshold = 1e-3;   // a position diverges above this KLD
  double margin = 1e-3;          // a router near-tie: k-th minus (k+1)-th logit below this
  int max_candidates = 48;       // near-ties tried per round of the forced-swap search
  int max_flips = 8;             // accepted swaps per chunk at most
  int top = 10;                  // worst positions listed
};

struct PositionDivergence {
  int chunk = 0, pos = 0;          // pos: the predicting position within the chunk
  int32_t token = 0, next = 0;     // the token at pos and the one it predicts
  double kld = 0, nll = 0, nll_base = 0;
  int32_t top = 0, top_base = 0;
  double kld_forced = NAN;         // after the chunk's accepted swaps (NaN: no search in this chunk)
};

struct ChunkDivergence {
  int chunk = 0;
  double kld_mean = 0, kld_max = 0, top1 = 0;
  int first_divergent = -1;        // position, -1: none
  int divergent = 0, explained = 0;
  bool persists = false;           // most scored positions after the onset diverge too
};

struct LayerMargins {
  int layer = 0;
  bool full_attention = false;
  int64_t positions = 0, near_ties = 0;
  double min_margin = 0;
};

struct RoutingFlip {
  int chunk = 0, layer = 0;
  int64_t pos = 0;
  bool full_attention = false;
  std::vector<int32_t> experts, swapped;  // the reference's choice, the forced one
  double margin = 0;
  int64_t at = 0;                          // the divergent position the swap helps most
  double kld_before = 0, kld_after = 0;    // at `at`
  int fixed = 0;                           // divergent positions brought below the threshold
};

struct DivergenceReport {
  std::string reference;                 // e.g. "f64" or "f32 +gelu-f16,kv-f16"
  int n_ctx = 0, chunks = 0, first = 0;  // first: first scored position of a chunk
  bool llama_scoring = true;
  double kld_threshold = 0, margin = 0;
  double kld_mean = 0, kld_max = 0, kld_median = 0, top1 = 0, ppl = 0, ppl_base = 0;
  std::vector<PositionDivergence> positions;  // every scored position, chunk-major
  std::vector<ChunkDivergence> per_chunk;
  std::vector<LayerMargins> margins;          // MoE layers only
  std::vector<RoutingFlip> flips;
  int divergent = 0, explained = 0;
  std::string verdict_kind;  // "agree", "routing-flips", "structural", "unexplained"
  std::string verdict;       // the sentence
};

DivergenceReport run_divergence(const Model& m, const std::string& base_path, const DivergenceOptions& opt);
std::string format_divergence(const DivergenceReport& r, const Model& m, int top);
json divergence_json(const DivergenceReport& r);

}  // namespace g4
