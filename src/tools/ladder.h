// `g4 ladder`: the precision ladder. One text, one model, every compute precision g4
// has, each compared with the float64 reference on the same positions: NMSE of the
// logits, mean KL divergence, top-1 agreement, and its own perplexity. It answers
// "what does bf16 cost, and where does it come from" (rounded constants, bf16 weights,
// bf16 activations) per model in one command.
#pragma once
#include <string>
#include <vector>

#include "runtime/session.h"

namespace g4 {

struct LadderOptions {
  int n_ctx = 128;
  int max_chunks = 4;
};

struct LadderRung {
  std::string name, what;
  ForwardOptions forward;
  double nmse = 0, kld = 0, top1 = 0, ppl = 0, seconds = 0;
};

struct LadderResult {
  std::vector<LadderRung> rungs;
  int n_ctx = 0, chunks = 0;
};

// The rungs, f64 first (the reference of the others).
std::vector<LadderRung> ladder_rungs();
// The text as perplexity tokenizes it (BOS first, one trailing newline dropped).
std::vector<int32_t> ladder_tokens(const Model& m, const std::string& text);
// The engine of the ladder and of kv-study: every rung on the same chunks, each against
// the first rung.
LadderResult compare_rungs(const Model& m, const std::vector<int32_t>& tokens, const LadderOptions& opt,
                           std::vector<LadderRung> rungs);
// Chunks of the text as perplexity makes them (BOS first; predictions at positions
// n_ctx/2-1 .. n_ctx-2 count, the gold protocol).
LadderResult run_ladder(const Model& m, const std::string& text, const LadderOptions& opt);
std::string format_ladder(const LadderResult& r, const std::string& model);

}  // namespace g4
