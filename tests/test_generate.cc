// Generation runtime: greedy decoding equals the gold, sampling is seeded, text is
// streamed in whole UTF-8 characters, stop strings and end-of-generation tokens stop.
#include <gtest/gtest.h>

#include <algorithm>

#include "runtime/generate.h"
#include "test_util.h"
#include "tools/metrics.h"
#include "tools/token_input.h"

namespace g4 {
namespace {

TEST(Generate, GreedyEqualsGoldContinuationsWithCacheReuse) {
  Model m = load_model(test::model_dir("brown-mini"));
  Tokenizer tok = load_tokenizer(m);
  test::Gold gold(test::fixture("brown-mini/gold.safetensors"));
  Session s(m, {Precision::F64});
  std::vector<int32_t> cached;
  GenerateOptions go;
  go.max_tokens = 32;
  go.sampling.temp = 0;
  for (int p = 0; p < 3; ++p) {
    const auto prompt = gold.i32("prompt" + std::to_string(p) + "_ids");
    auto r = generate(s, cached, prompt, tok, go);
    EXPECT_EQ(r.tokens, gold.i32("prompt" + std::to_string(p) + "_greedy")) << "prompt " << p;
    EXPECT_EQ(r.text, tok.decode(r.tokens));
    EXPECT_EQ(r.finish_reason, "length");
  }
  // Same prompt again: the cached prefix is reused (only the last token is evaluated).
  const auto prompt = gold.i32("prompt2_ids");
  auto again = generate(s, cached, prompt, tok, go);
  EXPECT_EQ(again.tokens, gold.i32("prompt2_greedy"));
  EXPECT_EQ(again.prompt_tokens, 1);
}

TEST(Generate, SeededSamplingIsReproducibleAndTopK1IsGreedy) {
  Model m = load_model(test::model_dir("brown-mini"));
  Tokenizer tok = load_tokenizer(m);
  const auto prompt = tok.encode("The committee said", true);
  auto run = [&](SamplingParams sp) {
    Session s(m, {Precision::F32});
    std::vector<int32_t> cached;
    GenerateOptions go;
    go.max_tokens = 20;
    go.sampling = sp;
    return generate(s, cached, prompt, tok, go).tokens;
  };
  SamplingParams a;
  a.temp = 1.0f;
  a.seed = 1234;
  EXPECT_EQ(run(a), run(a));
  SamplingParams b = a;
  b.seed = 99;
  EXPECT_NE(run(a), run(b));
  SamplingParams k1 = a;
  k1.top_k = 1;
  SamplingParams greedy;
  greedy.temp = 0;
  EXPECT_EQ(run(k1), run(greedy));
}

TEST(Generate, StopsAtEndOfGenerationTokensAndStopStrings) {
  Model m = load_model(test::model_dir("brown-mini"));
  Tokenizer tok = load_tokenizer(m);
  test::Gold gold(test::fixture("brown-mini/gold.safetensors"));
  const auto prompt = gold.i32("prompt0_ids");
  const auto greedy = gold.i32("prompt0_greedy");
  Session s(m, {Precision::F64});
  std::vector<int32_t> cached;
  GenerateOptions go;
  go.max_tokens = 32;
  go.sampling.temp = 0;
  // The first greedy token not seen before acts as end-of-generation.
  size_t at = 3;
  while (std::find(greedy.begin(), greedy.begin() + static_cast<std::ptrdiff_t>(at), greedy[at]) != greedy.begin() + static_cast<std::ptrdiff_t>(at)) ++at;
  go.stop_ids = {greedy[at]};
  auto r = generate(s, cached, prompt, tok, go);
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_EQ(r.tokens, std::vector<int32_t>(greedy.begin(), greedy.begin() + static_cast<std::ptrdiff_t>(at)));
  GenerateOptions gs;
  gs.max_tokens = 32;
  gs.sampling.temp = 0;
  const std::string full = tok.decode(greedy);
  const std::string stop = full.substr(10, 4);
  gs.stop_strings = {stop};
  std::string streamed;
  auto r2 = generate(s, cached, prompt, tok, gs, [&](const std::string& piece) { streamed += piece; return true; });
  EXPECT_EQ(r2.finish_reason, "stop");
  EXPECT_EQ(r2.text, full.substr(0, full.find(stop)));
  EXPECT_EQ(streamed, r2.text);
}

TEST(Generate, TextStreamHoldsBackIncompleteUtf8) {
  Tokenizer tok = Tokenizer::from_hf_file(test::fixture("tiny-e/tokenizer.json"));
  const auto ids = tok.encode("日本", false);  // byte-fallback tokens: 6 bytes
  TextStream ts(tok, {});
  std::string out;
  bool stopped = false;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string piece = ts.push(ids[i], stopped);
    for (unsigned char c : piece) EXPECT_TRUE(c < 0x80 || piece.size() >= 3);  // never a partial character
    out += piece;
  }
  out += ts.flush();
  EXPECT_EQ(out, "日本");
}

}  // namespace
}  // namespace g4

namespace g4 {
namespace {
// Rewinding the KV cache (past the sliding window) then continuing equals a fresh pass.
TEST(Generate, KvCacheTruncateEqualsFreshEvaluation) {
  Model m = load_model(test::model_dir("brown-mini"));
  test::Gold gold(test::fixture("brown-mini/gold.safetensors"));
  const auto ids = gold.i32("heldout_chunk0_ids");  // 128 tokens; window 64
  Session s(m, {Precision::F64});
  s.eval(std::span(ids).subspan(0, 120));
  ASSERT_TRUE(s.truncate(70));
  auto rest = s.eval(std::span(ids).subspan(70));
  const auto want = gold.f32("heldout_chunk0_logits_f64");
  std::vector<float> tail(want.begin() + 70 * m.spec.vocab, want.end());
  EXPECT_LT(compare_arrays(rest.logits, tail, m.spec.vocab).nmse, 1e-11);
  EXPECT_FALSE(s.truncate(129));
}
}  // namespace
}  // namespace g4
