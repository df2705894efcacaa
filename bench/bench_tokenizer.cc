// Tokenizer throughput: brown-heldout (235 KB) repeated to ~5 MB, real Gemma 3
// tokenizer, one thread. Reports bytes/s; also the tokenizer.json load time.
#include <benchmark/benchmark.h>

#include "tokenizer/tokenizer.h"
#include "util/mapped_file.h"

namespace {

const g4::Tokenizer& gemma3() {
  static g4::Tokenizer t = g4::Tokenizer::from_hf_file(G4_GEMMA3_TOKENIZER);
  return t;
}

void BM_LoadGemma3TokenizerJson(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(g4::Tokenizer::from_hf_file(G4_GEMMA3_TOKENIZER));
}
BENCHMARK(BM_LoadGemma3TokenizerJson)->Unit(benchmark::kMillisecond)->Iterations(3);

void BM_EncodeBrownHeldout(benchmark::State& st) {
  const std::string one = g4::read_text_file(std::string(G4_FIXTURES) + "/brown-heldout.txt");
  std::string text;
  while (text.size() < 5'000'000) text += one;
  const auto& tok = gemma3();
  size_t n_tokens = 0;
  for (auto _ : st) n_tokens = tok.encode(text, true).size();
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * text.size()));
  st.counters["tokens"] = static_cast<double>(n_tokens);
}
BENCHMARK(BM_EncodeBrownHeldout)->Unit(benchmark::kMillisecond)->Iterations(3);

// One pass over brown-heldout (235 KB): no repetition for the word cache to exploit.
void BM_EncodeBrownHeldoutOnce(benchmark::State& st) {
  const std::string text = g4::read_text_file(std::string(G4_FIXTURES) + "/brown-heldout.txt");
  const auto& tok = gemma3();
  for (auto _ : st) benchmark::DoNotOptimize(tok.encode(text, true));
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * text.size()));
}
BENCHMARK(BM_EncodeBrownHeldoutOnce)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
