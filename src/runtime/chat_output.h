// Splits a Gemma 4 model's output token stream into what OpenAI's chat API returns
// separately (protocols.md §f): the thought channel (<|channel>thought\n...<channel|>)
// as reasoning, <|tool_call>call:NAME{...}<tool_call|> spans as tool calls, and the rest
// as content. Works token by token, so a stream can send each part as it arrives.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace g4 {

class TextStream;

struct ParsedToolCall {
  std::string name;
  json arguments;  // an object
};

struct ChatDelta {
  std::string reasoning, content;
  std::vector<ParsedToolCall> tool_calls;  // calls completed by this token
  std::vector<std::string> warnings;       // malformed calls (returned as content instead)
  bool empty() const { return reasoning.empty() && content.empty() && tool_calls.empty(); }
};

class ChatOutputParser {
 public:
  // stops: stop strings, applied to the content (not to thoughts or tool arguments).
  ChatOutputParser(const Tokenizer& tok, std::vector<std::string> stops);
  ~ChatOutputParser();
  // One generated token; sets `stopped` when a stop string appeared in the content.
  ChatDelta push(int32_t id, bool& stopped);
  // The end of generation: text held back, and an unfinished tool call (as content).
  ChatDelta finish();
  int tool_call_count() const { return calls_; }

 private:
  enum class Mode { Content, ChannelHeader, Thought, ToolCall };
  void close_call(ChatDelta& d, bool closed);
  const Tokenizer& tok_;
  int32_t channel_open_, channel_close_, call_open_, call_close_;
  Mode mode_ = Mode::Content;
  std::unique_ptr<TextStream> content_, thought_;
  std::string call_text_, header_;
  int calls_ = 0;
};

}  // namespace g4
