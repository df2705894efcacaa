#include "runtime/generate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

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

TokenLogprob token_logprob(std::span<const float> logits, int32_t id, int top_n) {
  // log-softmax in double: max, then log of the sum of exponentials.
  float mx = -std::numeric_limits<float>::infinity();
  for (float z : logits) mx = std::max(mx, z);
  double sum = 0;
  for (float z : logits) sum += std::exp(static_cast<double>(z) - mx);
  const double lse = mx + std::log(sum);
  TokenLogprob r;
  r.id = id;
  r.logprob = static_cast<float>(logits[static_cast<size_t>(id)] - lse);
  if (top_n > 0) {
    std::vector<int32_t> idx(logits.size());
    std::iota(idx.begin(), idx.end(), 0);
    const size_t k = std::min(idx.size(), static_cast<size_t>(top_n));
    std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(k), idx.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    for (size_t i = 0; i < k; ++i) r.top.push_back({idx[i], static_cast<float>(logits[static_cast<size_t>(idx[i])] - lse)});
  }
  return r;
}

Generation::Generation(const Tokenizer& tok, const GenerateOptions& opt, std::vector<int32_t> history,
                       int64_t max_ctx)
    : opt_(opt), history_(std::move(history)), max_ctx_(max_ctx), sampler_(opt.sampling), stream_(tok, opt.stop_strings) {
  r_.finish_reason = "length";
  if (opt_.parse_chat) parser_ = std::make_unique<ChatOutputParser>(tok, opt_.stop_strings);
  if (opt_.grammar) {
    if (!opt_.trie) fail("constrained decoding needs the vocabulary trie");
    constraint_ = std::make_unique<Constraint>(opt_.grammar, opt_.trie, opt_.stop_ids);
  }
  // Next::logprob points into this vector: it must not reallocate.
  if (opt_.logprobs >= 0) r_.logprobs.reserve(static_cast<size_t>(std::max(opt_.max_tokens, 0)));
}

void Generation::take(const ChatDelta& d, Next& x) {
  x.text += d.content;
  x.reasoning += d.reasoning;
  x.tool_calls.insert(x.tool_calls.end(), d.tool_calls.begin(), d.tool_calls.end());
  r_.warnings.insert(r_.warnings.end(), d.warnings.begin(), d.warnings.end());
}

Generation::Next Generation::next(std::span<const float> logits) {
  Next x;
  if (n_ >= opt_.max_tokens) {
    x.done = true;
    return x;
  }
  ++n_;
  int32_t id;
  if (!opt_.forced.empty()) {  // testing: a scripted output instead of the model's
    if (static_cast<size_t>(n_) > opt_.forced.size()) {
      r_.finish_reason = "stop";
      x.done = true;
      return x;
    }
    id = opt_.forced[static_cast<size_t>(n_ - 1)];
  } else if (constraint_) {
    masked_.assign(logits.begin(), logits.end());
    if (constraint_->apply(masked_) == 0) {  // nothing may follow (no end-of-generation token either)
      r_.finish_reason = "stop";
      x.done = true;
      return x;
    }
    id = sampler_.sample(masked_, history_);
  } else {
    id = sampler_.sample(logits, history_);
  }
  if (constraint_ && !constraint_->accept(id)) fail("constrained decoding: token {} is not allowed here", id);
  if (std::find(opt_.stop_ids.begin(), opt_.stop_ids.end(), id) != opt_.stop_ids.end()) {
    r_.finish_reason = "stop";
    x.done = true;
    return x;
  }
  // Scores come from the model's own distribution, before bias, penalties and masks.
  if (opt_.logprobs >= 0) {
    r_.logprobs.push_back(token_logprob(logits, id, opt_.logprobs));
    x.logprob = &r_.logprobs.back();
  }
  r_.tokens.push_back(id);
  bool stopped = false;
  if (parser_) take(parser_->push(id, stopped), x);
  else x.text = stream_.push(id, stopped);
  r_.text += x.text;
  r_.reasoning += x.reasoning;
  r_.tool_calls.insert(r_.tool_calls.end(), x.tool_calls.begin(), x.tool_calls.end());
  if (constraint_ && constraint_->finished()) stopped = true;  // the grammar allows nothing more
  if (stopped) r_.finish_reason = "stop";
  x.done = stopped || n_ >= opt_.max_tokens || static_cast<int64_t>(history_.size()) + 1 >= max_ctx_;
  if (!x.done) {
    x.id = id;
    history_.push_back(id);
  }
  return x;
}

Generation::Next Generation::finish_parts() {
  Next x;
  x.done = true;
  if (parser_) take(parser_->finish(), x);
  else x.text = stream_.flush();
  r_.text += x.text;
  r_.reasoning += x.reasoning;
  r_.tool_calls.insert(r_.tool_calls.end(), x.tool_calls.begin(), x.tool_calls.end());
  if (!r_.tool_calls.empty() && r_.finish_reason == "stop") r_.finish_reason = "tool_calls";
  return x;
}

std::string Generation::finish() { return finish_parts().text; }

GenerateResult generate(Session& session, std::vector<int32_t>& cached, const std::vector<int32_t>& context,
                        const Tokenizer& tok, const GenerateOptions& opt,
                        const std::function<bool(const std::string&)>& on_text) {
  return generate_events(session, cached, context, tok, opt,
                         [&](const Generation::Next& x) { return x.text.empty() || !on_text || on_text(x.text); });
}

GenerateResult generate_events(Session& session, std::vector<int32_t>& cached, const std::vector<int32_t>& context,
                               const Tokenizer& tok, const GenerateOptions& opt,
                               const std::function<bool(const Generation::Next&)>& on_next) {
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
    if (x.any() && on_next && !on_next(x)) {
      gen.cancel("cancelled");
      return std::move(gen.result());
    }
    if (x.done) break;
    logits = session.decode(std::span<const int32_t>(&x.id, 1));
    cached.push_back(x.id);
  }
  if (const Generation::Next rest = gen.finish_parts(); rest.any() && on_next) on_next(rest);
  return std::move(gen.result());
}

}  // namespace g4
