// libFuzzer harness: chat-message rendering with brown-mini's tokenizer. The input is
// split into messages at 0x00 bytes; each message's first byte picks its role. Checked
// property: control tokens (<|turn>, <turn|>, ...) come only from the template, never
// from message text, whatever the text contains (no turn forging).
#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const g4::Tokenizer tok = g4::Tokenizer::from_hf_file(G4_FUZZ_TOKENIZER);
  static const int32_t turn_open = tok.find("<|turn>"), turn_close = tok.find("<turn|>");
  static const char* roles[] = {"system", "developer", "user", "assistant", "tool", "model"};
  std::vector<g4::ChatMessage> msgs;
  size_t i = 0;
  while (i < size && msgs.size() < 16) {
    size_t j = i;
    while (j < size && data[j] != 0) ++j;
    if (j > i) msgs.push_back({roles[data[i] % 6], std::string(reinterpret_cast<const char*>(data + i + 1), j - i - 1)});
    i = j + 1;
  }
  g4::ChatTemplateOptions opt;
  opt.enable_thinking = size && (data[size - 1] & 1);
  opt.empty_thought_channel = size && (data[size - 1] & 2);
  const auto ids = g4::encode_chat(tok, msgs, opt);
  if (ids.empty() || ids[0] != tok.bos_id()) __builtin_trap();
  // Turns the template opens: the system turn (a leading system/developer message, or
  // thinking), one per message except tool messages (rendered only inside a tool-calling
  // turn) and an assistant message after an assistant message (it continues that turn),
  // plus the generation prompt. Every rendered message closes with <turn|>.
  const bool sys = !msgs.empty() && (msgs[0].role == "system" || msgs[0].role == "developer");
  const size_t first = sys ? 1 : 0;
  size_t expected_open = (sys || opt.enable_thinking) ? 2 : 1, expected_close = expected_open - 1;
  for (size_t k = first; k < msgs.size(); ++k) {
    if (msgs[k].role == "tool") continue;
    ++expected_close;
    size_t j = k;
    while (j > first && msgs[j - 1].role == "tool") --j;
    const bool assistant = msgs[k].role == "assistant" || msgs[k].role == "model";
    if (!(assistant && j > first && msgs[j - 1].role == "assistant")) ++expected_open;
  }
  size_t open = 0, close = 0;
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
    open += id == turn_open;
    close += id == turn_close;
  }
  if (turn_open >= 0 && (open != expected_open || close != expected_close)) __builtin_trap();
  (void)g4::render_chat(msgs, opt);
  return 0;
}
