#include "runtime/generate.h"

#include <algorithm>

#include "util/error.h"

namespace g4 {
namespace {

// Length of the longest prefix of s that is complete UTF-8 (an incomplete sequence at
// the end is held back until its continuation bytes arrive).
size_t complete_utf8_prefix(const std::string& s) {
  size_t i = s.size();
  int back = 0;
  while (i > 0 && back < 4) {
    const auto c = static_cast<uint8_t>(s[i - 1]);
    ++back;
    --i;
    if ((c & 0xC0) != 0x80) {  // a lead byte (or ASCII)
      const int need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
      return need <= back ? s.size() : i;
    }
  }
  return s.size();
}

}  // namespace

std::string TextStream::push(int32_t id, bool& stopped) {
  pending_ += tok_.token_text(id);
  // Cut at the earliest match of any stop string (OpenAI's rule), not at the first listed.
  size_t at = std::string::npos;
  for (const auto& stop : stops_)
    if (!stop.empty()) at = std::min(at, pending_.find(stop));
  if (at != std::string::npos) {
    stopped = true;
    std::string out = pending_.substr(0, at);
    pending_.clear();
    return out;
  }
  // Hold back a tail that could still become a stop string.
  size_t hold = 0;
  for (const auto& stop : stops_)
    for (size_t n = std::min(stop.size() - 1, pending_.size()); n > hold; --n)
      if (pending_.compare(pending_.size() - n, n, stop, 0, n) == 0) { hold = n; break; }
  const size_t emit = std::min(complete_utf8_prefix(pending_), pending_.size() - hold);
  std::string out = pending_.substr(0, emit);
  pending_.erase(0, emit);
  return out;
}

std::string TextStream::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

GenerateResult generate(Session& session, std::vector<int32_t>& cached, const std::vector<int32_t>& context,
                        const Tokenizer& tok, const GenerateOptions& opt,
                        const std::function<bool(const std::string&)>& on_text) {
  if (context.empty()) fail("empty prompt");
  const int64_t max_ctx = session.model().spec.max_ctx;
  if (static_cast<int64_t>(context.size()) >= max_ctx)
    fail("the prompt has {} tokens; the model's context is {}", context.size(), max_ctx);
  // Reuse the longest cached prefix (multi-turn chat, repeated prompts); keep at least
  // one token to evaluate so there are logits to sample from.
  size_t common = 0;
  while (common < cached.size() && common < context.size() && cached[common] == context[common]) ++common;
  if (common == context.size()) --common;
  if (static_cast<size_t>(session.n_past()) != cached.size() ||
      (common < cached.size() && !session.truncate(static_cast<int64_t>(common)))) {
    session.reset();
    cached.clear();
    common = 0;
  }
  GenerateResult r;
  r.prompt_tokens = static_cast<int64_t>(context.size() - common);
  std::vector<float> logits = session.eval_last(std::span(context).subspan(common));
  cached = context;
  Sampler sampler(opt.sampling);
  TextStream stream(tok, opt.stop_strings);
  r.finish_reason = "length";
  for (int i = 0; i < opt.max_tokens; ++i) {
    const int32_t id = sampler.sample(logits, cached);
    if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), id) != opt.stop_ids.end()) {
      r.finish_reason = "stop";
      break;
    }
    r.tokens.push_back(id);
    bool stopped = false;
    const std::string piece = stream.push(id, stopped);
    r.text += piece;
    if (!piece.empty() && on_text && !on_text(piece)) { r.finish_reason = "cancelled"; return r; }
    if (stopped) { r.finish_reason = "stop"; break; }
    if (i + 1 == opt.max_tokens || static_cast<int64_t>(cached.size()) + 1 >= max_ctx) break;
    logits = session.eval_last(std::span<const int32_t>(&id, 1));
    cached.push_back(id);
  }
  // Text held back as a possible stop-string prefix (or an unfinished UTF-8 sequence).
  if (const std::string rest = stream.flush(); !rest.empty()) {
    r.text += rest;
    if (on_text) on_text(rest);
  }
  return r;
}

}  // namespace g4
