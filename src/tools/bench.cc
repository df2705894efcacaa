#include "tools/bench.h"

#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "kernels/fast.h"
#include "util/error.h"
#include "util/huge_pages.h"

namespace g4 {
namespace {

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / v.size();
}
double stddev(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / (v.size() - 1));
}

}  // namespace

int64_t decode_bytes_per_token(const Model& m) {
  int64_t b = m.w.embed->nbytes;  // the tied LM head reads the whole matrix
  if (m.w.ple_model_proj) b += m.w.ple_model_proj->nbytes;
  for (size_t i = 0; i < m.w.layers.size(); ++i) {
    const auto& l = m.w.layers[i];
    for (const TensorView* t : {l.q, l.k, l.v, l.o, l.gate, l.up, l.down, l.ple_gate, l.ple_proj, l.router_proj})
      if (t) b += t->nbytes;
    if (l.experts_gate_up) {
      const double frac = static_cast<double>(m.spec.top_k) / m.spec.n_experts;
      b += static_cast<int64_t>(frac * (l.experts_gate_up->nbytes + l.experts_down->nbytes));
    }
  }
  return b;
}

double measure_read_bandwidth_gbps() {
  // 1 GiB read by every thread's share in parallel. Integer sums over 8 independent lanes, so
  // the loop is bound by loads (a float sum in order would measure the add latency instead),
  // in huge pages as the packed weights (with 4 KiB pages it read 28.0 GB/s where it now reads
  // 36.5). The best of reads with a software prefetch as far ahead as decode's
  // (fast_decode_prefetch_bytes(); without it a Sapphire Rapids VM read 22.7 GB/s where Q8_0
  // decode read 27.9), and without (an AMD EPYC VM: 25.0-25.4 GB/s without, 24.1-24.5 with 2 KiB,
  // 1 thread), so that no plain read beats the probe.
  const size_t n = size_t{1} << 27;  // uint64 words: 1 GiB
  const int64_t ahead = fast_decode_prefetch_bytes() / 8;  // words
  std::vector<uint64_t, HugePageAllocator<uint64_t>> buf(n, 1);
  double best = 0;
  for (int rep = 0; rep < 6; ++rep) {
    const bool prefetch = ahead > 0 && rep % 2 == 0;
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (int64_t i = 0; i < static_cast<int64_t>(n); i += 64) {
      if (prefetch)
        for (int64_t k = ahead; k < ahead + 64; k += 8)  // the 8 cache lines that far ahead
          __builtin_prefetch(&buf[static_cast<size_t>(std::min<int64_t>(i + k, static_cast<int64_t>(n) - 1))]);
      uint64_t s[8] = {};
      for (int k = 0; k < 64; k += 8)
        for (int l = 0; l < 8; ++l) s[l] += buf[static_cast<size_t>(i + k + l)];
      for (uint64_t v : s) total += v;
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (total != n) fail("bench: the bandwidth probe summed {} words, expected {}", total, n);
    best = std::max(best, static_cast<double>(n * sizeof(uint64_t)) / secs / 1e9);
  }
  return best;
}

BenchResult run_bench(const Model& m, const BenchOptions& opt) {
  if (opt.n_prompt < 0 || opt.n_gen < 0 || opt.reps < 1) fail("bench: -p, -n must be >= 0 and -r >= 1");
  if (opt.depth < 0) fail("bench: -d must be >= 0");
  if (opt.depth + opt.n_prompt + 1 > m.spec.max_ctx || opt.depth + opt.n_gen + 1 > m.spec.max_ctx)
    fail("bench: -d + -p/-n exceed the model's context ({})", m.spec.max_ctx);
  for (int n : opt.n_parallel)
    if (n < 1 || n > 512) fail("bench: -npl values must be in 1..512 (got {})", n);
  BenchResult r;
  for (const auto& t : m.file_tensors) { r.n_params += t.numel(); r.n_bytes += t.nbytes; }
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> tok(5, m.spec.vocab - 1);
  ForwardOptions fo{opt.precision};
  fo.n_ctx = opt.depth + std::max(opt.n_prompt, opt.n_gen) + 1;  // KV reserved up front, as -c does
  Session s(m, fo);
  std::vector<int32_t> context(static_cast<size_t>(opt.depth));
  for (auto& t : context) t = tok(rng);
  // Each run starts from a cache holding `depth` tokens (untimed).
  auto fill = [&] {
    s.reset();
    if (!context.empty()) s.decode(context);
  };
  std::vector<double> pp, tg;
  // One warm-up of each (page in the weights), then the timed repetitions.
  const int first = opt.warmup ? -1 : 0;
  for (int rep = first; rep < opt.reps; ++rep) {
    if (opt.n_prompt > 0) {
      std::vector<int32_t> prompt(static_cast<size_t>(opt.n_prompt));
      for (auto& t : prompt) t = tok(rng);
      fill();
      const auto t0 = std::chrono::steady_clock::now();
      s.decode(prompt);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (rep >= 0) pp.push_back(opt.n_prompt / secs);
    }
    if (opt.n_gen > 0) {
      fill();
      int32_t t = 2;
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < opt.n_gen; ++i) {
        s.decode(std::span<const int32_t>(&t, 1));
        t = tok(rng);
      }
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (rep >= 0) tg.push_back(opt.n_gen / secs);
    }
  }
  // Batched decode: sequence 0 plus N-1 added ones, one token each per step.
  for (int n_seq : opt.n_parallel) {
    if (opt.n_gen <= 0) break;
    std::vector<int> seqs{0};
    for (int i = 1; i < n_seq; ++i) seqs.push_back(s.add_sequence(1));
    std::vector<int32_t> toks(static_cast<size_t>(n_seq));
    std::vector<Session::SeqTokens> batch(static_cast<size_t>(n_seq));
    std::vector<double> rate;
    for (int rep = first; rep < opt.reps; ++rep) {
      for (int q : seqs) s.reset(q);
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < opt.n_gen; ++i) {
        for (int k = 0; k < n_seq; ++k) {
          toks[static_cast<size_t>(k)] = i == 0 ? 2 : tok(rng);
          batch[static_cast<size_t>(k)] = {seqs[static_cast<size_t>(k)], std::span<const int32_t>(&toks[static_cast<size_t>(k)], 1), true};
        }
        s.step(batch);
      }
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (rep >= 0) rate.push_back(static_cast<double>(n_seq) * opt.n_gen / secs);
    }
    for (size_t i = 1; i < seqs.size(); ++i) s.free_sequence(seqs[i]);
    r.batched.push_back({n_seq, mean(rate), stddev(rate)});
  }
  r.pp_tps = mean(pp);
  r.pp_std = stddev(pp);
  r.tg_tps = mean(tg);
  r.tg_std = stddev(tg);
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  r.peak_rss_gb = ru.ru_maxrss / 1e6;  // KiB -> ~GB
  r.bytes_per_token_gb = decode_bytes_per_token(m) / 1e9;
  r.decode_gbps = r.bytes_per_token_gb * r.tg_tps;
  return r;
}

}  // namespace g4
