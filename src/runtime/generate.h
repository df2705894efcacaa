// Generation: prompt in, tokens out through a Session's KV cache, streamed as text.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/chat_output.h"
#include "runtime/constraint.h"
#include "runtime/session.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

namespace g4 {

// A token's log-probability under the model (log-softmax of the raw logits, before any
// bias, penalty or constraint) and the most likely alternatives.
struct TokenLogprob {
  int32_t id = -1;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // best first
};
TokenLogprob token_logprob(std::span<const float> logits, int32_t id, int top_n);

struct GenerateOptions {
  int max_tokens = 128;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;          // end-of-generation tokens
  std::vector<std::string> stop_strings;  // text that ends generation (not included)
  // Constrained decoding: tokens the grammar rejects are masked before sampling.
  std::shared_ptr<const Grammar> grammar;
  std::shared_ptr<const TokenTrie> trie;
  int logprobs = -1;       // >= 0: report each token's logprob and this many alternatives
  bool parse_chat = false;  // split thoughts and tool calls from the content (ChatOutputParser)
  std::vector<int32_t> forced;  // testing: emit these tokens instead of sampling, then stop
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (the stop token excluded)
  std::string text;             // the content (with parse_chat: without thoughts and tool calls)
  std::string reasoning;        // parse_chat: the thought channel
  std::vector<ParsedToolCall> tool_calls;
  std::vector<std::string> warnings;  // malformed tool calls, returned as text
  std::vector<TokenLogprob> logprobs;
  std::string finish_reason;    // "stop", "length" or "tool_calls"
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
    // With parse_chat: thought text and tool calls completed by this token (text is then
    // the content only).
    std::string reasoning;
    std::vector<ParsedToolCall> tool_calls;
    const TokenLogprob* logprob = nullptr;  // with logprobs >= 0 (valid while the Generation lives)
    bool any() const { return !text.empty() || !reasoning.empty() || !tool_calls.empty() || logprob; }
  };
  // The next token from the logits after the last token of history(): constraint mask,
  // sampling (or the forced output), logprob, then text/thought/tool-call parsing.
  Next next(std::span<const float> logits);
  // Text held back (a possible stop-string prefix, unfinished UTF-8), at the end.
  std::string finish();
  // The same with the thought text and an unfinished tool call (as text) held back.
  Next finish_parts();
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
  std::unique_ptr<ChatOutputParser> parser_;  // parse_chat
  std::unique_ptr<Constraint> constraint_;    // grammar
  std::vector<float> masked_;                 // the logits under the constraint's mask
  GenerateResult r_;
  int n_ = 0;  // tokens sampled
  void take(const ChatDelta& d, Next& x);
};

// Brings the session to `context` (reusing the cached prefix), then generates.
// on_text returns false to cancel (client gone).
GenerateResult generate(Session& session, std::vector<int32_t>& cached, const std::vector<int32_t>& context,
                        const Tokenizer& tok, const GenerateOptions& opt,
                        const std::function<bool(const std::string&)>& on_text = nullptr);
// The same, reporting every token that added something (text, thoughts, tool calls, a
// logprob); on_next returns false to cancel.
GenerateResult generate_events(Session& session, std::vector<int32_t>& cached, const std::vector<int32_t>& context,
                               const Tokenizer& tok, const GenerateOptions& opt,
                               const std::function<bool(const Generation::Next&)>& on_next);

}  // namespace g4
