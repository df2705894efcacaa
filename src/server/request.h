// The OpenAI request bodies g4 serve accepts, validated field by field: body bytes ->
// UTF-8 -> strict JSON -> typed fields -> prompt token ids. No model is needed, so the
// whole path is fuzzed (fuzz/fuzz_request.cc).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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
};

struct CompletionRequest {
  std::vector<int32_t> prompt;
  GenerateOptions gen;
  bool stream = false, include_usage = false;
};

// Parses a /v1/completions (chat = false) or /v1/chat/completions body. Throws ApiError
// (400, or 404 for an unknown model) naming the field, the expected type and what was found.
CompletionRequest parse_completion_request(std::string_view body, bool chat, const RequestContext& ctx);

// Byte offset of the first byte that does not belong to well-formed UTF-8 (overlong forms,
// surrogates and code points above U+10FFFF included), or npos.
size_t invalid_utf8_offset(std::string_view s);

}  // namespace g4
