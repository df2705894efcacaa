#include "runtime/chat_output.h"

#include "runtime/generate.h"
#include "tokenizer/gemma4_format.h"

namespace g4 {

ChatOutputParser::ChatOutputParser(const Tokenizer& tok, std::vector<std::string> stops)
    : tok_(tok),
      channel_open_(tok.find("<|channel>")),
      channel_close_(tok.find("<channel|>")),
      call_open_(tok.find("<|tool_call>")),
      call_close_(tok.find("<tool_call|>")),
      content_(std::make_unique<TextStream>(tok, std::move(stops))),
      thought_(std::make_unique<TextStream>(tok, std::vector<std::string>{})) {}

ChatOutputParser::~ChatOutputParser() = default;

void ChatOutputParser::close_call(ChatDelta& d, bool closed) {
  ParsedToolCall c;
  std::string err = "cut off before <tool_call|>";
  if (closed && parse_gemma_call(call_text_, c.name, c.arguments, err)) {
    d.tool_calls.push_back(std::move(c));
    ++calls_;
  } else {
    // Never an error for the client: the text goes back as content, the log says why.
    d.warnings.push_back("malformed tool call from the model (" + err + "): " + call_text_);
    d.content += "<|tool_call>" + call_text_ + (closed ? "<tool_call|>" : "");
  }
  call_text_.clear();
}

ChatDelta ChatOutputParser::push(int32_t id, bool& stopped) {
  ChatDelta d;
  switch (mode_) {
    case Mode::Content:
      if (id >= 0 && id == channel_open_) { d.content += content_->flush(); mode_ = Mode::ChannelHeader; header_.clear(); }
      else if (id >= 0 && id == call_open_) { d.content += content_->flush(); mode_ = Mode::ToolCall; }
      else d.content += content_->push(id, stopped);
      break;
    case Mode::ChannelHeader: {  // "thought\n": the channel's name, up to the first newline
      if (id == channel_close_) { mode_ = Mode::Content; break; }
      header_ += tok_.token_text(id);
      if (const size_t nl = header_.find('\n'); nl != std::string::npos) {
        mode_ = Mode::Thought;
        // Whatever the token carried after the newline is already thought text.
        d.reasoning += header_.substr(nl + 1);
      }
      break;
    }
    case Mode::Thought:
      if (id == channel_close_) { d.reasoning += thought_->flush(); mode_ = Mode::Content; }
      else { bool ignore = false; d.reasoning += thought_->push(id, ignore); }
      break;
    case Mode::ToolCall:
      if (id == call_close_) { mode_ = Mode::Content; close_call(d, true); }
      else call_text_ += tok_.token_text(id);
      break;
  }
  return d;
}

ChatDelta ChatOutputParser::finish() {
  ChatDelta d;
  d.reasoning += thought_->flush();
  if (mode_ == Mode::ToolCall) {  // cut off (max_tokens) inside a call
    close_call(d, false);
    mode_ = Mode::Content;
  }
  d.content += content_->flush();
  return d;
}

}  // namespace g4
