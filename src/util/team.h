// A team of spinning threads for the parallel regions of one-token steps (decode).
//
// A decode step of e2b runs ~360 parallel regions of ~120 us each, and between them the
// main thread alone runs the small ops (norms, RoPE, attention's softmax) for ~9 us while
// the other threads wait and the memory bus idles: 3.4 ms of a 47 ms token at 2 threads.
// OpenMP's workers wait inside libgomp, where nothing can be given to them. This team's
// workers wait in a loop of ours: each region may name the bytes the next one will stream
// (Team::Job::next), and a waiting worker reads the head of its share of them into its
// caches, so the next region starts with them there. It also forks and joins on one cache
// line each instead of libgomp's barrier.
//
// Which regions use it is the caller's choice (TeamScope); OpenMP keeps everything else. The
// two must not be busy at the same time: both spin, and two spinning pools on the same cores
// take turns by the scheduler's clock. Workers spin for ~2 ms after their last job, then
// sleep until woken.
#pragma once
#include <cstddef>
#include <cstdint>

namespace g4 {

class Team {
 public:
  // One region: call(ctx, me, threads) on every thread (me = 0 is the caller).
  struct Job {
    void (*call)(void* ctx, int me, int threads) = nullptr;
    void* ctx = nullptr;
    int threads = 0;  // threads that take part (me < threads), at most the team's; 0: all
    // What the next region will stream, split as parallel_stream splits it (worker me reads
    // from next + next_bytes * me / threads first): while they wait, workers read up to
    // kPrefetch bytes of their share.
    const uint8_t* next = nullptr;
    size_t next_bytes = 0;
  };
  static constexpr size_t kPrefetch = size_t{512} << 10;  // well within a core's 2 MiB L2

  // The team of `threads` threads (the caller is one; a new count restarts it), locked for the
  // calling thread; nullptr when another thread holds it, threads < 2, or the calling thread is
  // one of its threads.
  static Team* lock(int threads);
  void unlock();

  // Runs the job on the team and returns when every thread is done with it.
  void run(const Job& job);
  // Inside a job: returns when every thread of the team has reached it.
  void barrier();
  int threads() const { return threads_; }

  // The team, while a thread holds it (inside a job).
  static Team* current();
  // True on the team's threads while they run a job (a nested region runs serially).
  static bool in_job();

 private:
  friend class TeamScope;
  Team() = default;
  void start(int threads);
  void stop();
  void worker(int me);

  int threads_ = 0;
  struct State;
  State* st_ = nullptr;
};

// Within its lifetime, on the calling thread, parallel_stream runs on the Team when `on`
// (and the team is free). Scopes nest; the innermost one decides.
class TeamScope {
 public:
  explicit TeamScope(bool on);
  ~TeamScope();
  TeamScope(const TeamScope&) = delete;
  TeamScope& operator=(const TeamScope&) = delete;
  static bool active();
  // The bytes the next region on this thread will stream (Team::Job::next); taken by that
  // region's parallel_stream, which passes it to the workers to read while they wait after it.
  static void set_next(const uint8_t* data, size_t bytes);
  static void take_next(const uint8_t*& data, size_t& bytes);

 private:
  bool prev_;
};

}  // namespace g4
