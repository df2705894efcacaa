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

// fn(i) for every i in [0, n), over the threads of a new parallel region. fn must not
// depend on which thread runs it or in which order items run. Inside a parallel region, or
// past 2^32 items, it runs them in order on the calling thread. prologue() runs first on
// every thread that may take items (e.g. grows its scratch: which thread takes which item
// varies from call to call, so scratch grown inside fn could grow after a warm-up).
struct NoPrologue {
  void operator()() const {}
};
template <class Fn, class Prologue = NoPrologue>
void parallel_stream(int64_t n, Fn&& fn, Prologue&& prologue = {}) {
  const int threads = static_cast<int>(std::min<int64_t>(omp_get_max_threads(), n));
  if (threads <= 1 || omp_in_parallel() || n > int64_t{UINT32_MAX}) {
    if (n > 0) prologue();
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  parallel_detail::Share* shares = parallel_detail::shares(threads);
  for (int t = 0; t < threads; ++t)
    shares[t].v.store(parallel_detail::Share::pack(static_cast<uint32_t>(n * t / threads),
                                                   static_cast<uint32_t>(n * (t + 1) / threads)),
                      std::memory_order_relaxed);
#pragma omp parallel num_threads(threads)
  {
    prologue();
    const int me = omp_get_thread_num();
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
  }
}

}  // namespace g4
