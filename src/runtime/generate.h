// Generation: prompt in, tokens out through a Session's KV cache, streamed as text.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "runtime/session.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

namespace g4 {

struct GenerateOptions {
  int max_tokens = 128;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;          // end-of-generation tokens
  std::vector<std::string> stop_strings;  // text that ends generation (not included)
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (the stop token excluded)
  std::string text;
  std::string finish_reason;    // "stop" or "length"
  int64_t prompt_tokens = 0;    // tokens evaluated for the prompt (after cache reuse)
};

// Turns a token stream into complete UTF-8 text pieces and applies stop strings.
class TextStream {
 public:
  TextStream(const Tokenizer& tok, std::vector<std::string> stops) : tok_(tok), stops_(std::move(stops)) {}
  // Returns the text that is safe to emit now; sets `stopped` when a stop string appeared.
  std::string push(int32_t id, bool& stopped);
  std::string flush();  // whatever is held back, at the end

 private:
  const Tokenizer& tok_;
  std::vector<std::string> stops_;
  std::string pending_;  // decoded bytes not yet emitted
};

// One sequence's token loop without the forward: given the logits after its last
// token, it picks the next token (sampling), turns tokens into text (stop strings,
// UTF-8) and decides when the sequence ends. Everything decided per token lives here,
// so generate() (one sequence on a Session) and the batching scheduler (many sequences
// in one Session::step) behave the same.
class Generation {
 public:
  // `history`: the tokens the model has seen (the prompt); max_ctx: the model's context.
  Generation(const Tokenizer& tok, const GenerateOptions& opt, std::vector<int32_t> history, int64_t max_ctx);

  struct Next {
    int32_t id = -1;   // the token to feed next (valid when !done)
    std::string text;  // text that became final with this token
    bool done = false;
  };
  // The next token from the logits after the last token of history().
  Next next(std::span<const float> logits);
  // Text held back (a possible stop-string prefix, unfinished UTF-8), at the end.
  std::string finish();
  // Ends the sequence early with this reason (e.g. "cancelled" when the client is gone).
  void cancel(const std::string& reason) { r_.finish_reason = reason; }

  // The prompt plus the tokens fed back so far: what the sequence's KV cache holds
  // once next()'s token has been fed.
  const std::vector<int32_t>& history() const { return history_; }
  GenerateResult& result() { return r_; }

 private:
  GenerateOptions opt_;
  std::vector<int32_t> history_;
  int64_t max_ctx_;
  Sampler sampler_;
  TextStream stream_;
  GenerateResult r_;
  int n_ = 0;  // tokens sampled
};

// Brings the session to `context` (reusing the cached prefix), then generates.
// on_text returns false to cancel (client gone).
GenerateResult generate(Session& session, std::vector<int32_t>& cached, const std::vector<int32_t>& context,
                        const Tokenizer& tok, const GenerateOptions& opt,
                        const std::function<bool(const std::string&)>& on_text = nullptr);

}  // namespace g4
