// `g4 ladder`: the precision ladder. One text, one model, every compute precision g4
// has, each compared with the float64 reference on the same positions: NMSE of the
// logits, mean KL divergence, top-1 agreement, and its own perplexity. It answers
// "what does bf16 cost, and where does it come from" (rounded constants, bf16 weights,
// bf16 activations) per model in one command.
#pragma once
#include <string>
#include <vector>

#include "runtime/session.h"
#include "tools/metrics.h"

namespace g4 {

struct LadderOptions {
  int n_ctx = 128;
  int max_chunks = 4;
  // Add the rungs that emulate an engine's roundings ("llama.cpp", "llama.cpp-fa"; "": none).
  std::string engine;
  // An engine's llama.cpp-format base file: the tokens, n_ctx and scoring come from it, and
  // every rung is also compared with it (how much of the engine's difference it explains).
  std::string kld_base;
  // Drift by position: KLD/top-1 per this many chunk positions, over the scored positions,
  // or over every position 0..n_ctx-2 with drift_all_positions (kv-study: error growing
  // along the whole context).
  int kld_bucket = 64;
  bool drift_all_positions = false;
};

struct LadderRung {
  std::string name, what;
  ForwardOptions forward;
  double nmse = 0, kld = 0, top1 = 0, ppl = 0, seconds = 0;
  double kld_base = -1, top1_base = -1;  // against the base file (-1: none given)
  std::vector<PositionBucket> by_position{};  // KLD/top-1 against the first rung per bucket
};

struct LadderResult {
  std::vector<LadderRung> rungs;
  int n_ctx = 0, chunks = 0;
  bool base = false;
};

struct KldBase;

// The rungs, f64 first (the reference of the others).
std::vector<LadderRung> ladder_rungs();
// The rungs of an engine's roundings (backends/emulation.h) on the f32 reference: each
// rounding alone, then all of them ("llama.cpp" or "llama.cpp-fa").
std::vector<LadderRung> engine_rungs(const std::string& engine);
// The text as perplexity tokenizes it (BOS first, one trailing newline dropped).
std::vector<int32_t> ladder_tokens(const Model& m, const std::string& text);
// The engine of the ladder and of kv-study: every rung on the same chunks, each against
// the first rung.
// With `base`, its chunks and scoring are used (tokens are ignored) and each rung is also
// compared with the base's log-probs.
LadderResult compare_rungs(const Model& m, const std::vector<int32_t>& tokens, const LadderOptions& opt,
                           std::vector<LadderRung> rungs, const KldBase* base = nullptr);
// Chunks of the text as perplexity makes them (BOS first; predictions at positions
// n_ctx/2-1 .. n_ctx-2 count, the gold protocol).
LadderResult run_ladder(const Model& m, const std::string& text, const LadderOptions& opt);
std::string format_ladder(const LadderResult& r, const std::string& model);

}  // namespace g4
