// The OpenAI request bodies g4 serve accepts, validated field by field: body bytes ->
// UTF-8 -> strict JSON -> typed fields -> prompt token ids. No model is needed, so the
// whole path is fuzzed (fuzz/fuzz_request.cc).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/constraint.h"
#include "runtime/generate.h"
#include "tokenizer/tokenizer.h"

namespace g4 {

// An OpenAI-style error: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int status;
  std::string message, type, param, code;
};
[[noreturn]] void api_fail(int status, std::string message, std::string param = "", std::string code = "");
std::string api_error_body(const ApiError& e);

// What parsing needs to know about the served model.
struct RequestContext {
  const Tokenizer* tok = nullptr;
  std::string model_id, model_path;  // a request's "model" must be one of these
  int64_t vocab = 0;
  int64_t ctx_limit = 0;             // prompt + completion
  int max_tokens_limit = 4096;
  SamplingParams defaults;
  std::vector<int32_t> eog;          // end-of-generation ids
  bool empty_thought_channel = false;
  std::string reasoning = "auto";    // --reasoning: on (default on), off (never), auto (the request decides; off)
  std::shared_ptr<const TokenTrie> trie;  // for constrained decoding; null: response_format/tool_choice are refused
  bool allow_inject = false;         // testing (--debug-inject): honour "g4_debug_output"
};

struct CompletionRequest {
  std::vector<int32_t> prompt;
  GenerateOptions gen;
  bool stream = false, include_usage = false;
  // Chat: thinking, tools, structured output.
  bool chat = false, thinking = false;
  json tools = json::array();          // rendered in the system turn (empty when tool_choice is "none")
  std::string tool_choice = "auto";    // none, auto, required, or the named function
  std::shared_ptr<const Grammar> grammar;  // response_format json_*, tool_choice required/named
  std::string grammar_kind;            // "json" or "tools": what the grammar produces
  // Scores: log-probabilities of the sampled tokens and the top alternatives.
  bool logprobs = false;
  int top_logprobs = 0;
  bool echo = false;                   // completions: the prompt comes back first (with its logprobs)
};

// Parses a /v1/completions (chat = false) or /v1/chat/completions body. Throws ApiError
// (400, or 404 for an unknown model) naming the field, the expected type and what was found.
CompletionRequest parse_completion_request(std::string_view body, bool chat, const RequestContext& ctx);

// Byte offset of the first byte that does not belong to well-formed UTF-8 (overlong forms,
// surrogates and code points above U+10FFFF included), or npos.
size_t invalid_utf8_offset(std::string_view s);

}  // namespace g4
