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

Generation::Generation(const Tokenizer& tok, const GenerateOptions& opt, std::vector<int32_t> history,
                       int64_t max_ctx)
    : opt_(opt), history_(std::move(history)), max_ctx_(max_ctx), sampler_(opt.sampling), stream_(tok, opt.stop_strings) {
  r_.finish_reason = "length";
}

Generation::Next Generation::next(std::span<const float> logits) {
  Next x;
  if (n_ >= opt_.max_tokens) {
    x.done = true;
    return x;
  }
  ++n_;
  const int32_t id = sampler_.sample(logits, history_);
  if (std::find(opt_.stop_ids.begin(), opt_.stop_ids.end(), id) != opt_.stop_ids.end()) {
    r_.finish_reason = "stop";
    x.done = true;
    return x;
  }
  r_.tokens.push_back(id);
  bool stopped = false;
  x.text = stream_.push(id, stopped);
  r_.text += x.text;
  if (stopped) r_.finish_reason = "stop";
  x.done = stopped || n_ >= opt_.max_tokens || static_cast<int64_t>(history_.size()) + 1 >= max_ctx_;
  if (!x.done) {
    x.id = id;
    history_.push_back(id);
  }
  return x;
}

std::string Generation::finish() {
  std::string rest = stream_.flush();
  r_.text += rest;
  return rest;
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
  cached.clear();  // until the prompt is in the cache
  std::span<const float> logits = session.decode(std::span(context).subspan(common));
  cached = context;
  Generation gen(tok, opt, context, max_ctx);
  gen.result().prompt_tokens = static_cast<int64_t>(context.size() - common);
  for (;;) {
    const Generation::Next x = gen.next(logits);
    if (!x.text.empty() && on_text && !on_text(x.text)) {
      gen.cancel("cancelled");
      return std::move(gen.result());
    }
    if (x.done) break;
    logits = session.decode(std::span<const int32_t>(&x.id, 1));
    cached.push_back(x.id);
  }
  if (const std::string rest = gen.finish(); !rest.empty() && on_text) on_text(rest);
  return std::move(gen.result());
}

}  // namespace g4
