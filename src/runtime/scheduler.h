// Continuous batching: many requests generate at once through one Session. Each step is
// ONE forward (Session::step) over a decode token of every active sequence plus prompt
// chunks of newly admitted ones, under a token budget, so the weights are read once per
// step for the whole batch and a long prompt never stalls the others for more than a chunk.
// Sequences join and leave between steps; each has its own KV cache. Every per-token
// decision (sampling, stops, text) is the sequence's Generation, as in generate().
// Finished sequences keep their KV caches as a prompt cache (longest common prefix wins;
// least recently used evicted), so a follow-up request re-evaluates only what is new.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "runtime/generate.h"
#include "runtime/session.h"
#include "tokenizer/tokenizer.h"

namespace g4 {

struct SchedulerOptions {
  int max_active = 4;     // sequences generating at once (--parallel)
  int64_t n_batch = 512;  // tokens per step, decode tokens and prompt chunks together (<= the Session's n_batch)
  int64_t max_chunk = 512;  // most prompt tokens of one sequence per step (sizes each KV cache's step buffer)
  int max_cached = 4;     // finished sequences kept as a prompt cache
  int max_queue = 64;     // requests waiting for admission beyond the free places; submit() refuses more
  // OpenMP threads of the forward, set on the scheduler's own thread (the caller's
  // omp_set_num_threads does not reach it: OpenMP's setting is per thread). 0: all cores.
  int threads = 0;
};

// What one token of a request added (Generation::Next, owned): content text, thought
// text, completed tool calls, the token's log-probability.
struct BatchEvent {
  std::string text, reasoning;
  std::vector<ParsedToolCall> tool_calls;
  std::optional<TokenLogprob> logprob;
};

// One request in the scheduler. The scheduler thread writes; the owner waits and reads.
class BatchRequest {
 public:
  // Waits up to `timeout` for news: appends the new events; true once finished (then
  // result()/error() are final and no more events come).
  bool wait(std::vector<BatchEvent>& events, std::chrono::milliseconds timeout);
  // The same keeping only the content text.
  bool wait(std::string& text, std::chrono::milliseconds timeout);
  // The sequence leaves the batch before the next step (client gone, deadline, shutdown);
  // wait() then reports it finished with finish_reason "cancelled".
  void cancel();
  bool finished() const;
  // Seconds from submit() to admission into the batch; < 0 while waiting.
  double queued_s() const { return queued_s_.load(); }
  const GenerateResult& result() const { return result_; }
  std::exception_ptr error() const { return error_; }  // the step failed (the whole batch's)

 private:
  friend class Scheduler;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<BatchEvent> events_;
  bool done_ = false;
  std::atomic<bool> cancel_{false};
  std::atomic<double> queued_s_{-1};
  GenerateResult result_;
  std::exception_ptr error_;
  // Set at submit, read by the scheduler thread only.
  std::vector<int32_t> prompt_;
  GenerateOptions opt_;
  std::chrono::steady_clock::time_point t_submit_;
};

class Scheduler {
 public:
  Scheduler(Session& session, const Tokenizer& tok, const SchedulerOptions& opt);
  ~Scheduler();  // cancels what is left and joins the loop thread
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request; nullptr when the queue is full (more than max_queue waiting beyond
  // the free places). Throws g4::Error for a prompt the model cannot take.
  std::shared_ptr<BatchRequest> submit(std::vector<int32_t> prompt, const GenerateOptions& opt);

  struct Stats {
    int active = 0, waiting = 0, cached = 0;
    int last_batch_seqs = 0;    // sequences in the last step
    int64_t last_batch_tokens = 0;
    uint64_t steps = 0, prompt_tokens = 0, generated_tokens = 0;  // totals
    double prompt_tps = 0, generated_tps = 0;  // over the last few seconds
  };
  Stats stats() const;
  const SchedulerOptions& options() const { return opt_; }
  // OpenMP threads the forward runs with on the scheduler's thread (0 until it started).
  int forward_threads() const { return forward_threads_.load(); }

 private:
  struct Active {
    std::shared_ptr<BatchRequest> req;
    int kv = -1;
    std::unique_ptr<Generation> gen;
  };
  struct Cached {
    int kv = -1;
    std::vector<int32_t> tokens;  // what its KV cache holds
    uint64_t used = 0;            // LRU clock
  };
  void loop();
  void admit(std::shared_ptr<BatchRequest> r);
  void finish(Active& a, std::exception_ptr err);
  static void complete(BatchRequest& r, GenerateResult res, std::exception_ptr err, const Generation::Next& rest);
  static void post(BatchRequest& r, const Generation::Next& x);
  void run_step();

  Session& session_;
  const Tokenizer& tok_;
  SchedulerOptions opt_;
  mutable std::mutex mu_;  // waiting_, stop_, stats
  std::condition_variable cv_;
  std::deque<std::shared_ptr<BatchRequest>> waiting_;
  std::atomic<int> n_active_{0}, n_cached_{0};
  bool stop_ = false;
  // Scheduler thread only.
  std::vector<Active> active_;
  std::vector<Cached> cache_;
  uint64_t clock_ = 0;
  std::vector<Session::SeqTokens> batch_;
  std::vector<size_t> batch_who_;  // active_ index per batch entry with logits
  // Stats (under mu_).
  Stats stats_;
  struct Tick {
    std::chrono::steady_clock::time_point t;
    int64_t prompt, generated;
  };
  std::deque<Tick> recent_;
  std::atomic<int> forward_threads_{0};
  std::thread thread_;
};

}  // namespace g4
