// Streaming work split over the OpenMP team, balanced by stealing from the end.
//
// Decode is memory-bound: each thread must stream one contiguous range (the hardware
// prefetcher follows a stream; interleaved chunks, OpenMP's dynamic schedule, measured
// 13.6-16.5 t/s against static's 20.7 on e2b Q4_0, 2 threads). But a static split leaves the
// threads waiting on the slowest one: the shares of the memory bus are not equal and a
// thread may wake late (e2b Q4_0 decode, 2 threads: the threads' finishing times differed by
// 2.5 ms per 48 ms token, summed over the matmuls). So each thread starts on its static
// share, in order, and a thread whose share is done takes items one at a time from the end
// of the share with the most left (OpenMP's waits went from 13% to 5% of the samples). Which
// thread computes an item changes no bits.
#pragma once
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <type_traits>

#include "util/team.h"

namespace g4 {

namespace parallel_detail {

// A thread's share [next, end) in one word, so that the owner (taking from the front) and a
// thief (taking from the back) agree with one compare-and-swap.
struct alignas(64) Share {
  std::atomic<uint64_t> v{0};
  static uint64_t pack(uint32_t next, uint32_t end) { return uint64_t{end} << 32 | next; }
  // The owner takes items from the front, an eighth of what is left (at least 1, at most
  // kBatch) per compare-and-swap; a thief takes the back item. Returns the first item and
  // sets n, or returns -1 when the share is empty.
  static constexpr uint32_t kBatch = 8;
  int64_t take(bool front, int64_t& n) {
    uint64_t cur = v.load(std::memory_order_relaxed);
    for (;;) {
      const uint32_t next = static_cast<uint32_t>(cur), end = static_cast<uint32_t>(cur >> 32);
      if (next >= end) return -1;
      const uint32_t k = front ? std::clamp<uint32_t>((end - next) / 8, 1, kBatch) : 1;
      const uint64_t want = front ? pack(next + k, end) : pack(next, end - 1);
      if (v.compare_exchange_weak(cur, want, std::memory_order_relaxed)) {
        n = k;
        return front ? next : end - 1;
      }
    }
  }
  int64_t left() const {
    const uint64_t cur = v.load(std::memory_order_relaxed);
    const uint32_t next = static_cast<uint32_t>(cur), end = static_cast<uint32_t>(cur >> 32);
    return next < end ? end - next : 0;
  }
};

// The calling thread's shares, grown once: a decode step allocates nothing.
inline Share* shares(int threads) {
  thread_local std::unique_ptr<Share[]> store;
  thread_local int capacity = 0;
  if (capacity < threads) {
    store = std::make_unique<Share[]>(static_cast<size_t>(threads));
    capacity = threads;
  }
  return store.get();
}

}  // namespace parallel_detail

// fn(i) for every i in [0, n), over the threads of a new parallel region (the Team's inside an
// active TeamScope, else OpenMP's). fn must not
// depend on which thread runs it or in which order items run. Inside a parallel region, or
// past 2^32 items, it runs them in order on the calling thread. prologue() runs first on
// every thread that may take items (e.g. grows its scratch: which thread takes which item
// varies from call to call, so scratch grown inside fn could grow after a warm-up).
struct NoPrologue {
  void operator()() const {}
};
template <class Fn, class Prologue = NoPrologue>
void parallel_stream(int64_t n, Fn&& fn, Prologue&& prologue = {}) {
  Team::Job job;
  TeamScope::take_next(job.next, job.next_bytes);
  const int threads = static_cast<int>(std::min<int64_t>(omp_get_max_threads(), n));
  if (threads <= 1 || omp_in_parallel() || Team::in_job() || n > int64_t{UINT32_MAX}) {
    if (n > 0) prologue();
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  parallel_detail::Share* shares = parallel_detail::shares(threads);
  for (int t = 0; t < threads; ++t)
    shares[t].v.store(parallel_detail::Share::pack(static_cast<uint32_t>(n * t / threads),
                                                   static_cast<uint32_t>(n * (t + 1) / threads)),
                      std::memory_order_relaxed);
  auto work = [&](int me) {
    prologue();
    int64_t k = 0;
    for (int64_t i; (i = shares[me].take(true, k)) >= 0;)
      for (int64_t j = i; j < i + k; ++j) fn(j);
    for (;;) {
      int victim = -1;
      int64_t most = 0;
      for (int t = 0; t < threads; ++t)
        if (const int64_t l = shares[t].left(); l > most) most = l, victim = t;
      if (victim < 0) break;
      if (const int64_t i = shares[victim].take(false, k); i >= 0) fn(i);
    }
  };
  if (Team* team = TeamScope::active() ? Team::lock(omp_get_max_threads()) : nullptr) {
    job.threads = threads;
    job.ctx = &work;
    job.call = [](void* ctx, int me, int) { (*static_cast<decltype(work)*>(ctx))(me); };
    team->run(job);
    team->unlock();
    return;
  }
#pragma omp parallel num_threads(threads)
  work(omp_get_thread_num());
}

// fn(me, threads, sync) on each thread of a new parallel region of up to `max_threads`
// threads (on the Team inside an active TeamScope, else OpenMP); sync() waits for all of them.
// Inside a parallel region or a team job it runs once, fn(0, 1, no-op).
template <class Fn>
void parallel_region(int max_threads, Fn&& fn) {
  const int threads = std::min(omp_get_max_threads(), max_threads);
  if (threads <= 1 || omp_in_parallel() || Team::in_job()) return fn(0, 1, [] {});
  if (Team* team = TeamScope::active() ? Team::lock(omp_get_max_threads()) : nullptr) {
    Team::Job job;
    job.threads = threads;
    job.ctx = &fn;
    job.call = [](void* ctx, int me, int t) {
      (*static_cast<std::remove_reference_t<Fn>*>(ctx))(me, t, [] { Team::current()->barrier(); });
    };
    team->run(job);
    team->unlock();
    return;
  }
#pragma omp parallel num_threads(threads)
  fn(omp_get_thread_num(), omp_get_num_threads(), [] {
#pragma omp barrier
  });
}

// fn(i) for i in [0, n), each thread taking one contiguous range (OpenMP's static schedule),
// on the Team inside an active TeamScope; serially when !parallel.
template <class Fn>
void parallel_for(int64_t n, Fn&& fn, bool parallel = true) {
  if (!parallel || n < 2) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  parallel_region(static_cast<int>(std::min<int64_t>(n, 1 << 20)), [&](int me, int T, auto&&) {
    for (int64_t i = n * me / T, e = n * (me + 1) / T; i < e; ++i) fn(i);
  });
}

// fn(i, me) for i in [0, n), items handed out one at a time (their costs differ); me < the
// region's threads names the thread, for per-thread scratch.
template <class Fn>
void parallel_dynamic(int64_t n, Fn&& fn) {
  std::atomic<int64_t> next{0};
  parallel_region(static_cast<int>(std::min<int64_t>(n, 1 << 20)), [&](int me, int, auto&&) {
    for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < n;) fn(i, me);
  });
}

}  // namespace g4
