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

GenerateResult generate(Session& session, std::vector<int32_t>& cached, const std::vector<int32_t>& context,
                        const Tokenizer& tok, const GenerateOptions& opt,
                        const std::function<bool(const std::string&)>& on_text) {
  return generate_events(session, cached, context, tok, opt, [&](const TokenEvent& e) {
    return e.text.empty() || !on_text || on_text(e.text);
  });
}

GenerateResult generate_events(Session& session, std::vector<int32_t>& cached, const std::vector<int32_t>& context,
                               const Tokenizer& tok, const GenerateOptions& opt,
                               const std::function<bool(const TokenEvent&)>& on_event) {
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
  std::unique_ptr<ChatOutputParser> parser;
  if (opt.parse_chat) parser = std::make_unique<ChatOutputParser>(tok, opt.stop_strings);
  std::unique_ptr<Constraint> constraint;
  if (opt.grammar) {
    if (!opt.trie) fail("constrained decoding needs the vocabulary trie");
    constraint = std::make_unique<Constraint>(opt.grammar, opt.trie, opt.stop_ids);
  }
  std::vector<float> masked;
  TokenEvent ev;
  auto emit = [&](TokenEvent& e) {
    r.text += e.text;
    r.reasoning += e.reasoning;
    r.tool_calls.insert(r.tool_calls.end(), e.tool_calls.begin(), e.tool_calls.end());
    const bool any = !e.text.empty() || !e.reasoning.empty() || !e.tool_calls.empty() || e.logprob;
    return !any || !on_event || on_event(e);
  };
  auto take = [&](const ChatDelta& d, TokenEvent& e) {
    e.text += d.content;
    e.reasoning += d.reasoning;
    e.tool_calls.insert(e.tool_calls.end(), d.tool_calls.begin(), d.tool_calls.end());
    r.warnings.insert(r.warnings.end(), d.warnings.begin(), d.warnings.end());
  };
  r.finish_reason = "length";
  r.logprobs.reserve(opt.logprobs >= 0 ? static_cast<size_t>(opt.max_tokens) : 0);
  for (int i = 0; i < opt.max_tokens; ++i) {
    int32_t id;
    if (!opt.forced.empty()) {
      if (static_cast<size_t>(i) >= opt.forced.size()) { r.finish_reason = "stop"; break; }
      id = opt.forced[static_cast<size_t>(i)];
    } else if (constraint) {
      masked = logits;
      if (constraint->apply(masked) == 0) { r.finish_reason = "stop"; break; }
      id = sampler.sample(masked, cached);
    } else {
      id = sampler.sample(logits, cached);
    }
    if (constraint && !constraint->accept(id)) fail("constrained decoding: token {} is not allowed here", id);
    ev = TokenEvent{};
    ev.id = id;
    if (opt.logprobs >= 0) {
      r.logprobs.push_back(token_logprob(logits, id, opt.logprobs));
      ev.logprob = &r.logprobs.back();
    }
    if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), id) != opt.stop_ids.end()) {
      r.finish_reason = "stop";
      if (opt.logprobs >= 0) r.logprobs.pop_back();
      break;
    }
    r.tokens.push_back(id);
    bool stopped = false;
    if (parser) take(parser->push(id, stopped), ev);
    else ev.text = stream.push(id, stopped);
    if (!emit(ev)) { r.finish_reason = "cancelled"; return r; }
    if (stopped) { r.finish_reason = "stop"; break; }
    if (constraint && constraint->finished()) { r.finish_reason = "stop"; break; }
    if (i + 1 == opt.max_tokens || static_cast<int64_t>(cached.size()) + 1 >= max_ctx) break;
    logits = session.eval_last(std::span<const int32_t>(&id, 1));
    cached.push_back(id);
  }
  // Text held back as a possible stop-string prefix (or an unfinished UTF-8 sequence).
  ev = TokenEvent{};
  if (parser) take(parser->finish(), ev);
  else ev.text = stream.flush();
  emit(ev);
  if (!r.tool_calls.empty() && r.finish_reason == "stop") r.finish_reason = "tool_calls";
  return r;
}

}  // namespace g4
