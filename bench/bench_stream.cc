// Decode's weight streams from DRAM, where the README's bandwidth fractions come from:
//   build/bench/g4_bench --benchmark_filter='Dram|StreamCompute'
// - BM_DecodeFromDram/rows/cols: 1-token packed matmuls over rows x cols matrices (6144 x 1536:
//   e2b's ffn_gate; 3840 x 15360: 12b's ffn_down) cycled through 1.2 GB (no cache holds them),
//   GB/s of weights read per type. AMD EPYC Zen 4 VM (stop 46), 1 thread, one group per item,
//   6144 x 1536 / 3840 x 15360: Q4_K 21.9-25.9 / 21.7-22.9, Q6_K 21.2-26.3 / 18.4-20.5, Q5_K
//   21.5-21.9 (not tuned on this CPU).
// - BM_StreamCompute/dram/R: a plain read of the same amount with R independent int8 dot
//   products (vpdpbusd) per 64-byte line, every line software-prefetched 1 KiB ahead; l2/R: the
//   same loop over one 1 MiB buffer (its arithmetic rate). Measured on the 2-core Sapphire Rapids
//   VM, 1 thread: dram/0 17.7 GB/s, dram/6 16.1 with l2/6 at 54 GB/s, while the packed kernels
//   read Q4_0 15.7, Q8_0 16.2, Q4_K 13.2, Q6_K 12.8 (their own L2 rates 37-100 GB/s): arithmetic
//   at Q4_K's rate costs a plain stream 9%, the Q4_K and Q6_K kernels lost 25-28%. With their
//   units laid out in reading order and a decode body that fits the uop cache (stop 35), another
//   run: dram/0 15.2, Q4_0 14.3 (94%), Q8_0 14.7 (97%), Q4_K 12.6 (83%), Q6_K 12.0 (79%).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "formats/dtype.h"
#include "kernels/fast.h"
#include "kernels/quantize.h"
#include "util/huge_pages.h"

#if defined(__x86_64__)
#include <immintrin.h>
// GCC 12 warns that the pass-through of unmasked AVX-512 intrinsics (_mm512_undefined_*) is
// uninitialized: a false positive, it is never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace {

constexpr double kSpan = 1.2e9;  // bytes cycled through: far past every cache

void BM_DecodeFromDram(benchmark::State& state, g4::DType t) {
  const int64_t rows = state.range(0), cols = state.range(1);
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.0f, 0.02f);
  std::vector<float> f(static_cast<size_t>(rows * cols)), x(cols), y(rows);
  for (auto& v : f) v = g(rng);
  for (auto& v : x) v = g(rng);
  const auto bytes = g4::quantize_rows(t, f.data(), rows, cols);
  // fast_pack keeps one pack per tensor address: every matrix needs its own copy of the blocks.
  std::vector<std::vector<uint8_t>> copies(static_cast<size_t>(kSpan / static_cast<double>(bytes.size())), bytes);
  std::vector<std::shared_ptr<const g4::PackedMatrix>> packs;
  for (auto& c : copies) {
    g4::TensorView tv;
    tv.dtype = t;
    tv.shape = {rows, cols};
    tv.data = c.data();
    tv.nbytes = static_cast<int64_t>(c.size());
    tv.name = "w";
    packs.push_back(g4::fast_pack(tv));
    if (!packs.back()) return state.SkipWithError("no packed layout for this type on this CPU");
  }
  size_t i = 0;
  for (auto _ : state) {
    g4::fast_matmul_packed(*packs[i], x.data(), 1, cols, rows, y.data());
    i = (i + 1) % packs.size();
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes.size()) * static_cast<double>(state.iterations()),
                                              benchmark::Counter::kIsRate);
}
BENCHMARK_CAPTURE(BM_DecodeFromDram, Q4_0, g4::DType::Q4_0)->Args({6144, 1536})->Args({3840, 15360})->UseRealTime()->MinTime(1.0);
BENCHMARK_CAPTURE(BM_DecodeFromDram, Q8_0, g4::DType::Q8_0)->Args({6144, 1536})->Args({3840, 15360})->UseRealTime()->MinTime(1.0);
BENCHMARK_CAPTURE(BM_DecodeFromDram, Q4_K, g4::DType::Q4_K)->Args({6144, 1536})->Args({3840, 15360})->UseRealTime()->MinTime(1.0);
BENCHMARK_CAPTURE(BM_DecodeFromDram, Q6_K, g4::DType::Q6_K)->Args({6144, 1536})->Args({3840, 15360})->UseRealTime()->MinTime(1.0);
BENCHMARK_CAPTURE(BM_DecodeFromDram, Q5_K, g4::DType::Q5_K)->Args({6144, 1536})->Args({3840, 15360})->UseRealTime()->MinTime(1.0);

// One decode token through a 26B-A4B MoE layer's routed experts as the session runs them
// (arg 0): 8 of 128 experts drawn at random per iteration, a gate and an up slice per expert
// in one fast_matmul_slices_packed call, then their down rows in another. Arg 1: one slice
// per expert for its adjacent gate and up rows. The layer's 2 x 285 MB (Q4_0) is far past
// every cache. GB/s of expert weights read. On the AMD EPYC Zen 4 VM (stop 45), 1 thread,
// two groups per decode item: dense BM_DecodeFromDram/Q4_0 18.5, arg 0 16.2-18.6, arg 1
// 15.3-18.0 (2 threads: 28.8-35.0 both): arg 1 and a slice's last item prefetching the next slice's start were level with arg 0 in
// the model too (26B-A4B shape Q4_0 tg64, 3 ABBA rounds: 1 thread 25.8 against 26.0 t/s, 2
// threads 43.0 against 43.3), so the session keeps two slices per expert.
void BM_MoeDecodeFromDram(benchmark::State& state, g4::DType t) {
  const int64_t E = 128, K = 8, H = 2816, Ie = 704;
  const bool joined = state.range(0) == 1;
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.0f, 0.02f);
  // One expert's weights quantized, copied into every expert (the bytes read are what counts);
  // the copies outlive the packs (fast_pack keeps one pack per tensor address).
  std::vector<std::vector<uint8_t>> stored;
  double bytes = 0;  // per iteration
  auto experts = [&](int64_t rows, int64_t cols) {
    std::vector<float> f(static_cast<size_t>(rows * cols));
    for (auto& v : f) v = g(rng);
    const auto one = g4::quantize_rows(t, f.data(), rows, cols);
    bytes += static_cast<double>(K) * static_cast<double>(one.size());
    auto& all = stored.emplace_back();
    for (int64_t e = 0; e < E; ++e) all.insert(all.end(), one.begin(), one.end());
    g4::TensorView tv;
    tv.dtype = t;
    tv.shape = {E * rows, cols};
    tv.data = all.data();
    tv.nbytes = static_cast<int64_t>(all.size());
    tv.name = "experts";
    return g4::fast_pack(tv);
  };
  stored.reserve(2);
  const auto gate_up = experts(2 * Ie, H), down = experts(H, Ie);
  if (!gate_up || !down) return state.SkipWithError("no packed layout for this type on this CPU");
  std::vector<float> x(static_cast<size_t>(H)), gu(static_cast<size_t>(2 * K * Ie)), act(static_cast<size_t>(K * Ie)),
      y(static_cast<size_t>(K * H));
  for (auto& v : x) v = g(rng);
  for (auto& v : act) v = g(rng);
  std::vector<int> ids(static_cast<size_t>(E));
  std::vector<int64_t> s_gu, s_down(static_cast<size_t>(K));
  for (auto _ : state) {
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    s_gu.clear();
    for (int64_t k = 0; k < K; ++k) s_gu.push_back(ids[static_cast<size_t>(k)] * 2 * Ie);
    if (!joined)
      for (int64_t k = 0; k < K; ++k) s_gu.push_back(ids[static_cast<size_t>(k)] * 2 * Ie + Ie);
    for (int64_t k = 0; k < K; ++k) s_down[static_cast<size_t>(k)] = ids[static_cast<size_t>(k)] * H;
    g4::fast_matmul_slices_packed(*gate_up, x.data(), 1, H, joined ? 2 * Ie : Ie, gu.data(), s_gu);
    g4::fast_matmul_slices_packed(*down, act.data(), K, Ie, H, y.data(), s_down);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GB/s"] = benchmark::Counter(bytes * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK_CAPTURE(BM_MoeDecodeFromDram, Q4_0, g4::DType::Q4_0)->Arg(0)->Arg(1)->UseRealTime()->MinTime(2.0);

#if defined(__x86_64__)
// One pass over n bytes at p with R dot products per line; returns a value that depends on all.
template <int R>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) int32_t stream(const uint8_t* p, size_t n) {
  __m512i acc[8];
  for (auto& a : acc) a = _mm512_setzero_si512();
  const __m512i x = _mm512_set1_epi32(0x01020304);
  for (size_t k = 0; k < n; k += 512) {
    for (int l = 0; l < 8; ++l) _mm_prefetch(reinterpret_cast<const char*>(p) + k + 1024 + 64 * l, _MM_HINT_T0);
#pragma GCC unroll 8
    for (int l = 0; l < 8; ++l) {
      const __m512i v = _mm512_loadu_si512(p + k + 64 * l);
      if constexpr (R == 0) acc[l] = _mm512_add_epi32(acc[l], v);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[(l + r) & 7] = _mm512_dpbusd_epi32(acc[(l + r) & 7], v, x);
    }
  }
  __m512i s = acc[0];
  for (int l = 1; l < 8; ++l) s = _mm512_add_epi32(s, acc[l]);
  return _mm512_reduce_add_epi32(s);
}

int32_t stream_r(int r, const uint8_t* p, size_t n) {
  switch (r) {
    case 0: return stream<0>(p, n);
    case 1: return stream<1>(p, n);
    case 2: return stream<2>(p, n);
    case 4: return stream<4>(p, n);
    case 6: return stream<6>(p, n);
    default: return stream<8>(p, n);
  }
}

void BM_StreamCompute(benchmark::State& state, bool dram) {
  const int r = static_cast<int>(state.range(0));
  if (!__builtin_cpu_supports("avx512vnni")) return state.SkipWithError("no AVX-512 VNNI on this CPU");
  constexpr size_t kBuf = size_t{1} << 20;
  const size_t n_bufs = dram ? static_cast<size_t>(kSpan) / kBuf : 1;
  std::vector<uint8_t*> bufs;
  for (size_t i = 0; i < n_bufs; ++i) {
    auto* b = static_cast<uint8_t*>(g4::huge_pool_alloc(kBuf));
    if (!b) {
      for (auto* q : bufs) g4::huge_pool_free(q);
      return state.SkipWithError("cannot allocate the buffers");
    }
    for (size_t j = 0; j < kBuf; ++j) b[j] = static_cast<uint8_t>(j * 7 + i);
    bufs.push_back(b);
  }
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(stream_r(r, bufs[i], kBuf));
    i = (i + 1) % bufs.size();
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(kBuf) * static_cast<double>(state.iterations()),
                                              benchmark::Counter::kIsRate);
  for (auto* b : bufs) g4::huge_pool_free(b);
}
BENCHMARK_CAPTURE(BM_StreamCompute, l2, false)->DenseRange(0, 8, 2)->Arg(1)->UseRealTime()->MinTime(0.5);
BENCHMARK_CAPTURE(BM_StreamCompute, dram, true)->DenseRange(0, 8, 2)->Arg(1)->UseRealTime()->MinTime(1.0);
#endif

}  // namespace
