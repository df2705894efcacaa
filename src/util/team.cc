#include "util/team.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <mutex>
#include <thread>
#include <vector>

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace g4 {
namespace {

inline void pause() {
#if defined(__x86_64__)
  _mm_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

// Waits are spins, but past `patience` rounds each round gives the CPU away: when the threads
// outnumber the cores (or another process runs), the thread waited for may be the one
// descheduled, and a pure spin waits for the scheduler's tick (a decode test on 3 threads and 2
// cores took 493 s instead of 5).
inline void wait_round(unsigned& round, unsigned patience) {
  if (++round < patience) pause();
  else sched_yield();
}

// Sleeping and waking on the generation word: Linux's futex, called only when a worker sleeps.
void futex_wait(std::atomic<uint32_t>& w, uint32_t seen) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&w), FUTEX_WAIT_PRIVATE, seen, nullptr, nullptr, 0);
}
void futex_wake_all(std::atomic<uint32_t>& w) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&w), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
}

thread_local bool t_in_job = false;
thread_local bool t_scope = false;
thread_local const uint8_t* t_next = nullptr;
thread_local size_t t_next_bytes = 0;

// How long a worker spins after its last job before it sleeps: far longer than the gaps between
// a decode step's regions (~10 us), short enough that an idle server or an OpenMP prefill that
// follows gets the cores back soon.
constexpr auto kSpin = std::chrono::microseconds(2000);

}  // namespace

struct Team::State {
  alignas(64) std::atomic<uint32_t> gen{0};  // a new job (or stop) is published by incrementing it
  alignas(64) std::atomic<int> done{0};      // workers finished with the current job
  alignas(64) std::atomic<int> arrived{0};   // barrier
  std::atomic<uint64_t> phase{0};
  alignas(64) std::atomic<int> sleepers{0};
  Job job;
  bool stopping = false;
  unsigned patience = 0;  // spin rounds before a wait starts yielding

  std::vector<std::thread> workers;
};

namespace {
std::mutex g_mutex;      // held by the thread the team works for
Team* g_team = nullptr;  // never destroyed: workers may still be waiting at exit
}  // namespace

Team* Team::lock(int threads) {
  if (threads < 2 || t_in_job) return nullptr;
  if (!g_mutex.try_lock()) return nullptr;
  if (!g_team) g_team = new Team();
  if (g_team->threads_ != threads) {
    g_team->stop();
    g_team->start(threads);
  }
  return g_team;
}

void Team::unlock() { g_mutex.unlock(); }

bool Team::in_job() { return t_in_job; }
Team* Team::current() { return g_team; }

void Team::start(int threads) {
  threads_ = threads;
  st_ = new State();
  // ~20 us of pause rounds on cores of our own; a few when threads outnumber them.
  cpu_set_t set;
  const int cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  st_->patience = threads <= cores ? 512 : 8;
  for (int me = 1; me < threads; ++me) st_->workers.emplace_back([this, me] { worker(me); });
}

void Team::stop() {
  if (!st_) return;
  st_->stopping = true;
  st_->gen.fetch_add(1, std::memory_order_seq_cst);
  futex_wake_all(st_->gen);
  for (auto& w : st_->workers) w.join();
  delete st_;
  st_ = nullptr;
  threads_ = 0;
}

void Team::run(const Job& job) {
  State& s = *st_;
  s.job = job;
  s.job.threads = job.threads > 0 ? std::min(job.threads, threads_) : threads_;
  s.done.store(0, std::memory_order_relaxed);
  s.gen.fetch_add(1, std::memory_order_seq_cst);  // publishes job; seq_cst pairs with a sleeper's count
  if (s.sleepers.load(std::memory_order_seq_cst) > 0) futex_wake_all(s.gen);
  t_in_job = true;
  job.call(job.ctx, 0, s.job.threads);
  t_in_job = false;
  for (unsigned r = 0; s.done.load(std::memory_order_acquire) != threads_ - 1;) wait_round(r, s.patience);
}

void Team::barrier() {
  State& s = *st_;
  const uint64_t phase = s.phase.load(std::memory_order_acquire);
  if (s.arrived.fetch_add(1, std::memory_order_acq_rel) == s.job.threads - 1) {
    s.arrived.store(0, std::memory_order_relaxed);
    s.phase.store(phase + 1, std::memory_order_release);
    return;
  }
  for (unsigned r = 0; s.phase.load(std::memory_order_acquire) == phase;) wait_round(r, s.patience);
}

void Team::worker(int me) {
  State& s = *st_;
  uint32_t seen = 0;  // the state's first generation: run() may publish a job before this thread starts
  const uint8_t *pf = nullptr, *pf_end = nullptr;  // the bytes still to read while waiting
  unsigned sink = 0;
  for (;;) {
    auto idle_since = std::chrono::steady_clock::now();
    for (unsigned spins = 0; s.gen.load(std::memory_order_acquire) == seen;) {
      if (pf < pf_end) {
        // Eight lines between checks: a new job waits at most for eight loads.
        for (int i = 0; i < 8 && pf < pf_end; ++i, pf += 64) sink += *reinterpret_cast<const volatile uint8_t*>(pf);
        continue;
      }
      wait_round(spins, s.patience);
      if (spins % 256 == 0 && std::chrono::steady_clock::now() - idle_since > kSpin) {
        s.sleepers.fetch_add(1, std::memory_order_seq_cst);
        if (s.gen.load(std::memory_order_seq_cst) == seen) futex_wait(s.gen, seen);
        s.sleepers.fetch_sub(1, std::memory_order_seq_cst);
        idle_since = std::chrono::steady_clock::now();
      }
    }
    seen = s.gen.load(std::memory_order_acquire);
    if (s.stopping) break;
    const Job job = s.job;
    if (me < job.threads) {
      t_in_job = true;
      job.call(job.ctx, me, job.threads);
      t_in_job = false;
    }
    pf = pf_end = nullptr;  // a job without `next` ends reading: the bytes may be freed after it
    if (job.next && job.next_bytes) {
      const size_t share = job.next_bytes / static_cast<size_t>(threads_);
      pf = job.next + job.next_bytes * static_cast<size_t>(me) / static_cast<size_t>(threads_);
      pf_end = pf + std::min(share, kPrefetch);
      pf = reinterpret_cast<const uint8_t*>(reinterpret_cast<uintptr_t>(pf) & ~uintptr_t{63});
    }
    s.done.fetch_add(1, std::memory_order_release);
  }
  static std::atomic<unsigned> keep;  // the loads above must not be optimized away
  keep.fetch_add(sink, std::memory_order_relaxed);
}

TeamScope::TeamScope(bool on) : prev_(t_scope) { t_scope = on; }
TeamScope::~TeamScope() {
  // The workers may still be reading what the last region named as next: an empty job stops
  // them before the caller can free it.
  if (t_scope && !prev_ && g_team && !t_in_job) {
    const std::lock_guard<std::mutex> lock(g_mutex);
    if (g_team->st_) g_team->run(Team::Job{[](void*, int, int) {}});
  }
  t_next = nullptr;
  t_next_bytes = 0;
  t_scope = prev_;
}
bool TeamScope::active() { return t_scope; }
void TeamScope::set_next(const uint8_t* data, size_t bytes) {
  t_next = data;
  t_next_bytes = bytes;
}
void TeamScope::take_next(const uint8_t*& data, size_t& bytes) {
  data = t_next;
  bytes = t_next_bytes;
  t_next = nullptr;
  t_next_bytes = 0;
}

}  // namespace g4
