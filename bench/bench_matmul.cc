// The fast matmul per weight type and token count, from the file's blocks and packed: GB/s of weights read and integer
// MACs per second, to tell bandwidth-bound decode from compute-bound batches.
//   build/bench/g4_bench --benchmark_filter=Matmul
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "formats/dtype.h"
#include "kernels/fast.h"
#include "kernels/quantize.h"

namespace {

struct Weights {
  g4::TensorView view;
  std::vector<uint8_t> bytes;
};

// A weight matrix of `rows` x `cols` in type t, from Gaussian values (fixed seed).
const Weights& weights(g4::DType t, int64_t rows, int64_t cols) {
  static std::vector<std::unique_ptr<Weights>> cache;
  for (auto& w : cache)
    if (w->view.dtype == t && w->view.shape[0] == rows && w->view.shape[1] == cols) return *w;
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.0f, 0.02f);
  std::vector<float> f(static_cast<size_t>(rows * cols));
  for (auto& v : f) v = g(rng);
  auto w = std::make_unique<Weights>();
  w->bytes = g4::quantize_rows(t, f.data(), rows, cols);
  w->view.dtype = t;
  w->view.shape = {rows, cols};
  w->view.data = w->bytes.data();
  w->view.nbytes = static_cast<int64_t>(w->bytes.size());
  cache.push_back(std::move(w));
  return *cache.back();
}

void BM_Matmul(benchmark::State& state, g4::DType t, bool packed) {
  const int64_t n_tok = state.range(0), rows = state.range(1), cols = state.range(2);
  const Weights& w = weights(t, rows, cols);
  std::vector<float> x(static_cast<size_t>(n_tok * cols)), y(static_cast<size_t>(n_tok * rows));
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (auto& v : x) v = g(rng);
  const auto pack = packed ? g4::fast_pack(w.view) : nullptr;
  if (packed && !pack) return state.SkipWithError("no packed layout for this type on this CPU");
  for (auto _ : state) {
    if (pack) g4::fast_matmul_packed(*pack, x.data(), n_tok, cols, rows, y.data());
    else g4::fast_matmul(w.view, x.data(), n_tok, cols, rows, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(w.bytes.size()) * static_cast<double>(state.iterations()),
                                              benchmark::Counter::kIsRate);
  state.counters["GMAC/s"] = benchmark::Counter(1e-9 * static_cast<double>(rows * cols * n_tok) * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
}

// e2b shapes: the FFN up/gate (6144 x 1536) and down (1536 x 6144).
void shapes(benchmark::internal::Benchmark* b) {
  for (int n : {1, 2, 4, 8, 16, 32, 64, 128})
    for (auto [r, c] : {std::pair{6144, 1536}, std::pair{1536, 6144}}) b->Args({n, r, c});
}

BENCHMARK_CAPTURE(BM_Matmul, Q4_0, g4::DType::Q4_0, false)->Apply(shapes)->UseRealTime()->MinTime(0.3);
BENCHMARK_CAPTURE(BM_Matmul, Q4_0_packed, g4::DType::Q4_0, true)->Apply(shapes)->UseRealTime()->MinTime(0.3);
BENCHMARK_CAPTURE(BM_Matmul, Q5_0_packed, g4::DType::Q5_0, true)->Apply(shapes)->UseRealTime()->MinTime(0.3);
BENCHMARK_CAPTURE(BM_Matmul, Q8_0, g4::DType::Q8_0, false)->Apply(shapes)->UseRealTime()->MinTime(0.3);
BENCHMARK_CAPTURE(BM_Matmul, Q8_0_packed, g4::DType::Q8_0, true)->Apply(shapes)->UseRealTime()->MinTime(0.3);
BENCHMARK_CAPTURE(BM_Matmul, Q4_K, g4::DType::Q4_K, false)->Apply(shapes)->UseRealTime()->MinTime(0.3);
BENCHMARK_CAPTURE(BM_Matmul, Q4_K_packed, g4::DType::Q4_K, true)->Apply(shapes)->UseRealTime()->MinTime(0.3);
BENCHMARK_CAPTURE(BM_Matmul, Q6_K, g4::DType::Q6_K, false)->Apply(shapes)->UseRealTime()->MinTime(0.3);
BENCHMARK_CAPTURE(BM_Matmul, Q6_K_packed, g4::DType::Q6_K, true)->Apply(shapes)->UseRealTime()->MinTime(0.3);

}  // namespace
