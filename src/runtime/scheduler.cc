#include "runtime/scheduler.h"

#include <omp.h>

#include <algorithm>

#include "util/error.h"

namespace g4 {

using Clock = std::chrono::steady_clock;

namespace {
constexpr double kRateWindowS = 5;  // tokens/s figures cover the last few seconds
}

bool BatchRequest::wait(std::vector<BatchEvent>& events, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait_for(l, timeout, [&] { return done_ || !events_.empty(); });
  for (auto& e : events_) events.push_back(std::move(e));
  events_.clear();
  return done_;
}

bool BatchRequest::wait(std::string& text, std::chrono::milliseconds timeout) {
  std::vector<BatchEvent> events;
  const bool done = wait(events, timeout);
  for (const auto& e : events) text += e.text;
  return done;
}

void BatchRequest::cancel() { cancel_ = true; }

bool BatchRequest::finished() const {
  std::lock_guard<std::mutex> l(mu_);
  return done_;
}

Scheduler::Scheduler(Session& session, const Tokenizer& tok, const SchedulerOptions& opt)
    : session_(session), tok_(tok), opt_(opt) {
  if (opt_.max_active < 1) fail("the scheduler needs at least one active sequence (--parallel), got {}", opt_.max_active);
  const int64_t cap = session.options().n_batch;
  if (opt_.n_batch < 1 || opt_.n_batch > cap)
    fail("scheduler step budget {} tokens is outside [1, the session's n_batch = {}]", opt_.n_batch, cap);
  if (opt_.max_active > opt_.n_batch)
    fail("{} sequences decoding at once need a step budget of at least {} tokens, got {} (raise --batch-size)",
         opt_.max_active, opt_.max_active, opt_.n_batch);
  opt_.max_chunk = std::clamp<int64_t>(opt_.max_chunk, 1, opt_.n_batch);
  opt_.max_cached = std::max(0, opt_.max_cached);
  opt_.max_queue = std::max(0, opt_.max_queue);
  active_.reserve(static_cast<size_t>(opt_.max_active));
  batch_.reserve(static_cast<size_t>(opt_.max_active));
  batch_who_.reserve(static_cast<size_t>(opt_.max_active));
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::shared_ptr<BatchRequest> Scheduler::submit(std::vector<int32_t> prompt, const GenerateOptions& opt) {
  const ModelSpec& s = session_.model().spec;
  if (prompt.empty()) fail("empty prompt");
  if (static_cast<int64_t>(prompt.size()) >= s.max_ctx)
    fail("the prompt has {} tokens; the model's context is {}", prompt.size(), s.max_ctx);
  for (size_t i = 0; i < prompt.size(); ++i)  // a bad id would fail the whole batch's step
    if (prompt[i] < 0 || prompt[i] >= s.vocab || (s.ple_dim > 0 && prompt[i] >= s.ple_vocab))
      fail("prompt token {} at position {} is outside the vocabulary [0, {})", prompt[i], i,
           s.ple_dim > 0 ? std::min(s.vocab, s.ple_vocab) : s.vocab);
  auto r = std::make_shared<BatchRequest>();
  r->prompt_ = std::move(prompt);
  r->opt_ = opt;
  r->t_submit_ = Clock::now();
  {
    std::lock_guard<std::mutex> l(mu_);
    const int free_places = std::max(0, opt_.max_active - n_active_.load());
    if (static_cast<int>(waiting_.size()) + 1 > opt_.max_queue + free_places) return nullptr;
    waiting_.push_back(r);
    stats_.waiting = static_cast<int>(waiting_.size());
  }
  cv_.notify_all();
  return r;
}

Scheduler::Stats Scheduler::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  Stats s = stats_;
  s.active = n_active_.load();
  s.cached = n_cached_.load();
  int64_t p = 0, g = 0;
  const auto now = Clock::now();
  for (const Tick& t : recent_)
    if (std::chrono::duration<double>(now - t.t).count() <= kRateWindowS) p += t.prompt, g += t.generated;
  s.prompt_tps = static_cast<double>(p) / kRateWindowS;
  s.generated_tps = static_cast<double>(g) / kRateWindowS;
  return s;
}

// Hands what a token added to the request's owner.
void Scheduler::post(BatchRequest& r, const Generation::Next& x) {
  if (!x.any()) return;
  {
    std::lock_guard<std::mutex> l(r.mu_);
    r.events_.push_back({x.text, x.reasoning, x.tool_calls, x.logprob ? std::optional<TokenLogprob>(*x.logprob) : std::nullopt});
  }
  r.cv_.notify_all();
}

// Ends a request: what was held back, the result, the error; wakes its owner.
void Scheduler::complete(BatchRequest& r, GenerateResult res, std::exception_ptr err, const Generation::Next& rest) {
  {
    std::lock_guard<std::mutex> l(r.mu_);
    if (rest.any())
      r.events_.push_back({rest.text, rest.reasoning, rest.tool_calls, std::nullopt});
    r.result_ = std::move(res);
    r.error_ = err;
    r.done_ = true;
  }
  r.cv_.notify_all();
}

void Scheduler::finish(Active& a, std::exception_ptr err) {
  BatchRequest& r = *a.req;
  const bool cancelled = a.gen->result().finish_reason == "cancelled";
  const Generation::Next rest = err || cancelled ? Generation::Next{} : a.gen->finish_parts();
  n_active_--;  // before the owner wakes: its place is free for the next submit()
  GenerateResult res = std::move(a.gen->result());
  if (err) {
    session_.free_sequence(a.kv);  // mid-step state: start over rather than keep it
  } else {
    // Its KV cache becomes a prompt-cache entry: what it holds is the history's prefix.
    const auto& h = a.gen->history();
    const auto n = static_cast<size_t>(std::min<int64_t>(session_.n_past(a.kv), static_cast<int64_t>(h.size())));
    cache_.push_back({a.kv, std::vector<int32_t>(h.begin(), h.begin() + static_cast<std::ptrdiff_t>(n)), ++clock_});
    while (static_cast<int>(cache_.size()) > opt_.max_cached) {
      auto lru = std::min_element(cache_.begin(), cache_.end(), [](const Cached& x, const Cached& y) { return x.used < y.used; });
      session_.free_sequence(lru->kv);
      cache_.erase(lru);
    }
  }
  n_cached_ = static_cast<int>(cache_.size());
  complete(r, std::move(res), err, rest);
  a.kv = -1;
  a.gen.reset();
  a.req.reset();
}

void Scheduler::admit(std::shared_ptr<BatchRequest> r) {
  const std::vector<int32_t>& prompt = r->prompt_;
  // Common prefix with a cache entry; one prompt token is always left to evaluate so
  // there are logits to sample from.
  auto common_with = [&](const Cached& c) {
    size_t n = 0;
    while (n < c.tokens.size() && n < prompt.size() && c.tokens[n] == prompt[n]) ++n;
    return std::min(n, prompt.size() - 1);
  };
  // The entry sharing the longest prefix is taken over when it shares at least half of
  // what it holds (a follow-up turn, the same prompt again); a mere shared opening (BOS,
  // a system prompt shorter than the rest) is not worth losing another request's cache:
  // then a new sequence, or the least recently used entry when the cache is full.
  auto best = cache_.end();
  size_t common = 0;
  for (auto it = cache_.begin(); it != cache_.end(); ++it)
    if (const size_t c = common_with(*it); c > common) best = it, common = c;
  if (best == cache_.end() || 2 * common < best->tokens.size()) {
    best = cache_.end();
    common = 0;
    if (static_cast<int>(active_.size() + cache_.size()) >= opt_.max_active + opt_.max_cached) {
      best = std::min_element(cache_.begin(), cache_.end(), [](const Cached& x, const Cached& y) { return x.used < y.used; });
      common = common_with(*best);
    }
  }
  int kv = -1;
  if (best != cache_.end()) {
    kv = best->kv;
    cache_.erase(best);
    if (!session_.truncate(static_cast<int64_t>(common), kv)) {  // the sliding rings cannot rewind that far
      session_.reset(kv);
      common = 0;
    }
  } else {
    kv = session_.add_sequence(opt_.max_chunk);
  }
  n_cached_ = static_cast<int>(cache_.size());
  Active a;
  a.req = std::move(r);
  a.kv = kv;
  a.gen = std::make_unique<Generation>(tok_, a.req->opt_, a.req->prompt_, session_.model().spec.max_ctx);
  a.gen->result().prompt_tokens = static_cast<int64_t>(prompt.size() - common);
  a.req->queued_s_ = std::chrono::duration<double>(Clock::now() - a.req->t_submit_).count();
  active_.push_back(std::move(a));
}

void Scheduler::run_step() {
  // 1. Sequences leave (cancelled) and join (admitted) between steps.
  for (Active& a : active_)
    if (a.req->cancel_) {
      a.gen->cancel("cancelled");
      finish(a, nullptr);
    }
  std::erase_if(active_, [](const Active& a) { return !a.req; });
  for (;;) {
    std::shared_ptr<BatchRequest> r;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (waiting_.empty() || static_cast<int>(active_.size()) >= opt_.max_active) break;
      r = std::move(waiting_.front());
      waiting_.pop_front();
      stats_.waiting = static_cast<int>(waiting_.size());
      n_active_++;  // with the pop, so that submit() never sees the place free twice
    }
    if (r->cancel_) {  // left while queued
      n_active_--;
      GenerateResult res;
      res.finish_reason = "cancelled";
      complete(*r, std::move(res), nullptr, {});
      continue;
    }
    admit(std::move(r));
  }
  if (active_.empty()) return;

  // 2. The batch: the next token of every decoding sequence, then prompt chunks of the
  // prefilling ones in arrival order while the budget lasts.
  batch_.clear();
  batch_who_.clear();
  int64_t budget = opt_.n_batch, prompt_tokens = 0;
  std::vector<size_t>& who = batch_who_;
  std::vector<size_t> members;
  members.reserve(active_.size());
  for (int pass = 0; pass < 2; ++pass)
    for (size_t i = 0; i < active_.size(); ++i) {
      const Active& a = active_[i];
      const auto& h = a.gen->history();
      const int64_t fed = session_.n_past(a.kv), todo = static_cast<int64_t>(h.size()) - fed;
      if (todo <= 0 || (pass == 0) != (todo == 1) || budget == 0) continue;
      const int64_t n = std::min({todo, budget, opt_.max_chunk});
      budget -= n;
      if (pass == 1) prompt_tokens += n;
      batch_.push_back({a.kv, std::span<const int32_t>(h).subspan(static_cast<size_t>(fed), static_cast<size_t>(n)), n == todo});
      members.push_back(i);
      if (n == todo) who.push_back(i);
    }

  // 3. One forward for all of them.
  std::span<const float> logits;
  try {
    logits = session_.step(batch_);
  } catch (...) {
    const std::exception_ptr err = std::current_exception();
    for (size_t i : members) finish(active_[i], err);
    std::erase_if(active_, [](const Active& a) { return !a.req; });
    return;
  }

  // 4. Each sequence with logits takes its next token (and may end).
  const auto V = static_cast<size_t>(session_.model().spec.vocab);
  int64_t generated = 0;
  std::vector<size_t>& ended = members;  // reused: the sequences that end with this step
  ended.clear();
  for (size_t j = 0; j < who.size(); ++j) {
    Active& a = active_[who[j]];
    const size_t before = a.gen->result().tokens.size();
    const Generation::Next x = a.gen->next(logits.subspan(j * V, V));
    generated += static_cast<int64_t>(a.gen->result().tokens.size() - before);
    post(*a.req, x);
    if (x.done) ended.push_back(who[j]);
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    stats_.steps++;
    stats_.last_batch_seqs = static_cast<int>(batch_.size());
    stats_.last_batch_tokens = opt_.n_batch - budget;
    stats_.prompt_tokens += static_cast<uint64_t>(prompt_tokens);
    stats_.generated_tokens += static_cast<uint64_t>(generated);
    const auto now = Clock::now();
    recent_.push_back({now, prompt_tokens, generated});
    while (!recent_.empty() && std::chrono::duration<double>(now - recent_.front().t).count() > kRateWindowS) recent_.pop_front();
  }
  // Owners wake after the step's figures are in the stats.
  for (size_t i : ended) finish(active_[i], nullptr);
  std::erase_if(active_, [](const Active& a) { return !a.req; });
}

void Scheduler::loop() {
  if (opt_.threads > 0) omp_set_num_threads(opt_.threads);
  forward_threads_ = omp_get_max_threads();
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu_);
      // Idle: wake for a new request (or a cancel of a queued one, noticed at admission).
      cv_.wait(l, [&] { return stop_ || !waiting_.empty() || !active_.empty(); });
      if (stop_) break;
    }
    run_step();
  }
  // Stopping: whatever is left ends as cancelled.
  for (Active& a : active_) {
    a.gen->cancel("cancelled");
    finish(a, nullptr);
  }
  active_.clear();
  std::lock_guard<std::mutex> l(mu_);
  for (auto& r : waiting_) {
    GenerateResult res;
    res.finish_reason = "cancelled";
    complete(*r, std::move(res), nullptr, {});
  }
  waiting_.clear();
}

}  // namespace g4
