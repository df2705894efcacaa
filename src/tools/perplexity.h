// Teacher-forced perplexity and KL divergence, exactly as llama.cpp's llama-perplexity
// computes them (protocols.md §a): BOS once, chunks of n_ctx with token 0 := BOS,
// positions n_ctx/2 .. n_ctx-2 scored.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "runtime/session.h"
#include "tools/metrics.h"

namespace g4 {

struct PerplexityOptions {
  int n_ctx = 512;
  int n_batch = 2048;     // tokens per forward call (scheduling only; the math is the same)
  int max_chunks = -1;    // -1 = all
  // Which predictions count. Default (the gold fixtures' protocol, and the issue's
  // "score positions n_ctx/2..n_ctx-1"): the tokens at chunk positions n_ctx/2..n_ctx-1,
  // n_ctx/2 per chunk. llama_scoring: llama-perplexity's, tokens n_ctx/2+1..n_ctx-1.
  bool llama_scoring = false;
  ForwardOptions forward;
  bool want_all_nll = false;        // NLL of every prediction (positions 0..n_ctx-2), for --nll-out
  std::string kld_base_out;         // write base log-probs (llama.cpp's format)
  std::string kld_base_in;          // compare against these base log-probs
  int kld_bucket = 64;              // drift by position: KLD/top-1 per this many chunk positions
  std::function<void(int chunk, int n_chunks, double ppl_so_far)> on_chunk;
};

struct KldStats {
  int64_t n = 0;
  double ppl = 0, ppl_err = 0, ppl_base = 0, ppl_base_err = 0, cor = 0;
  double ln_ratio = 0, ln_ratio_err = 0, ratio = 0, ratio_err = 0, diff = 0, diff_err = 0;
  double kld = 0, kld_err = 0;
  std::vector<std::pair<std::string, double>> kld_pct;   // Maximum, 99.9%, ..., Minimum
  double dp_mean = 0, dp_mean_err = 0, dp_rms = 0, dp_rms_err = 0;
  std::vector<std::pair<std::string, double>> dp_pct;    // in %
  double same_top = 0, same_top_err = 0;                  // fraction
  std::vector<PositionBucket> by_position;                // pooled over chunks (scored positions only)
};

struct PerplexityResult {
  double ppl = 0, ppl_err = 0, nll_mean = 0;
  int chunks = 0;
  int64_t tokens = 0;    // scored predictions
  int64_t n_text_tokens = 0;
  int n_ctx = 0;
  double seconds = 0;
  size_t kv_bytes = 0;     // KV cache bytes held after the last chunk (n_ctx positions)
  std::vector<float> nll;  // [chunks, n_ctx - 1] when want_all_nll (unscored positions included)
  std::optional<KldStats> kld;
};

// text: raw file contents (one trailing newline is dropped, as llama.cpp does).
PerplexityResult run_perplexity(const Model& model, const std::string& text, const PerplexityOptions& opt);
// Same on already tokenized input (BOS first).
PerplexityResult run_perplexity_tokens(const Model& model, const std::vector<int32_t>& tokens, const PerplexityOptions& opt);

std::string format_kld_report(const KldStats& k);

}  // namespace g4
