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

// Brings the session to `context` (reusing the cached prefix), then generates.
// on_text returns false to cancel (client gone).
GenerateResult generate(Session& session, std::vector<int32_t>& cached, const std::vector<int32_t>& context,
                        const Tokenizer& tok, const GenerateOptions& opt,
                        const std::function<bool(const std::string&)>& on_text = nullptr);

}  // namespace g4
