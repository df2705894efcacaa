// Continuous batching (runtime/scheduler.h): requests generating together in one batch
// produce exactly what each produces alone, whatever joins, leaves or is cancelled.
#include <gtest/gtest.h>

#include <algorithm>
#include <thread>

#include "runtime/scheduler.h"
#include "tools/token_input.h"
#include "test_util.h"

namespace g4 {
namespace {

// Prompts of different lengths and contents; the longest span several chunks.
std::vector<int32_t> prompt_of(const Model& m, int n, int salt) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 7919 + 3 + 131 * salt) % m.spec.vocab);
  ids[0] = m.spec.bos_id;
  return ids;
}

// Per-request sampling: greedy, seeded top-k, seeded with a repetition penalty.
GenerateOptions options_of(const Tokenizer& tok, const Model& m, int i) {
  GenerateOptions o;
  o.max_tokens = 12 + 5 * i;
  o.stop_ids = tok.eog_ids(m.spec.eos_ids);
  o.sampling.seed = 1234 + i;
  o.sampling.temp = i % 3 == 0 ? 0.f : 0.7f + 0.1f * i;
  o.sampling.top_k = i % 3 == 1 ? 5 : 40;
  o.sampling.repeat_penalty = i % 3 == 2 ? 1.3f : 1.f;
  return o;
}

GenerateResult finish(BatchRequest& r, std::string text = "") {
  while (!r.wait(text, std::chrono::milliseconds(1000))) {}
  if (r.error()) std::rethrow_exception(r.error());
  EXPECT_EQ(text, r.result().text);  // streamed pieces add up to the result
  return r.result();
}

GenerateResult solo(const Model& m, const Tokenizer& tok, Precision p, const std::vector<int32_t>& prompt,
                    const GenerateOptions& o) {
  Session s(m, {p});
  std::vector<int32_t> cached;
  return generate(s, cached, prompt, tok, o);
}

class Scheduling : public ::testing::TestWithParam<std::string> {};

TEST_P(Scheduling, InterleavedRequestsEqualSoloGenerations) {
  Model m = load_model(test::fixture(GetParam()));
  Tokenizer tok = load_tokenizer(m);
  const int kReq = 7;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < kReq; ++i) prompts.push_back(prompt_of(m, 3 + 9 * i, i));
  for (Precision p : {Precision::F64, Precision::Fast}) {
    std::vector<GenerateResult> ref;
    for (int i = 0; i < kReq; ++i) ref.push_back(solo(m, tok, p, prompts[i], options_of(tok, m, i)));
    ForwardOptions fo{p};
    fo.n_batch = 16;
    Session s(m, fo);
    // Three at once in steps of 16 tokens, prompts in chunks of at most 8: requests queue,
    // join while others decode, and long prompts are split across steps.
    SchedulerOptions so;
    so.max_active = 3;
    so.n_batch = 16;
    so.max_chunk = 8;
    so.max_cached = 0;
    Scheduler sched(s, tok, so);
    std::vector<std::shared_ptr<BatchRequest>> reqs;
    for (int i = 0; i < kReq; ++i) {
      reqs.push_back(sched.submit(prompts[i], options_of(tok, m, i)));
      ASSERT_TRUE(reqs.back());
      if (i == 2) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the first ones start decoding
    }
    size_t tokens = 0;
    for (int i = 0; i < kReq; ++i) {
      const GenerateResult g = finish(*reqs[i]);
      EXPECT_EQ(g.tokens, ref[i].tokens) << "request " << i;
      EXPECT_EQ(g.text, ref[i].text) << "request " << i;
      EXPECT_EQ(g.finish_reason, ref[i].finish_reason) << "request " << i;
      EXPECT_EQ(g.prompt_tokens, static_cast<int64_t>(prompts[i].size()));
      tokens += g.tokens.size();
    }
    const Scheduler::Stats st = sched.stats();
    std::printf("[%s %s] %d requests, %zu generated tokens equal to solo runs; %llu steps, %llu prompt tokens\n",
                GetParam().c_str(), precision_name(p), kReq, tokens, static_cast<unsigned long long>(st.steps),
                static_cast<unsigned long long>(st.prompt_tokens));
    EXPECT_EQ(st.generated_tokens, tokens);
    // Batching happened: fewer steps than one per token and prompt chunk.
    EXPECT_LT(st.steps, tokens + st.prompt_tokens / 8);
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, Scheduling, ::testing::Values("tiny-e", "tiny-dense", "tiny-moe"));

TEST(Scheduler, PromptCacheReusesTheLongestCommonPrefix) {
  Model m = load_model(test::fixture("tiny-e"));
  Tokenizer tok = load_tokenizer(m);
  ForwardOptions fo{Precision::Fast};
  fo.n_batch = 32;
  Session s(m, fo);
  SchedulerOptions so;
  so.max_active = 2;
  so.n_batch = 32;
  so.max_cached = 2;
  Scheduler sched(s, tok, so);
  GenerateOptions o = options_of(tok, m, 0);
  o.stop_ids.clear();
  const auto a = prompt_of(m, 40, 1), b = prompt_of(m, 30, 2);
  const GenerateResult ga = finish(*sched.submit(a, o));
  const GenerateResult gb = finish(*sched.submit(b, o));
  // A follow-up of `a` (its prompt, what it generated, a new turn) evaluates only what is new.
  std::vector<int32_t> follow = a;
  follow.insert(follow.end(), ga.tokens.begin(), ga.tokens.end() - 1);  // the last token never entered the cache
  const auto turn = prompt_of(m, 6, 3);
  follow.insert(follow.end(), turn.begin() + 1, turn.end());
  const GenerateResult gf = finish(*sched.submit(follow, o));
  const GenerateResult ref = solo(m, tok, Precision::Fast, follow, o);
  std::printf("follow-up of %zu tokens: %lld evaluated (a: %lld, b: %lld)\n", follow.size(),
              static_cast<long long>(gf.prompt_tokens), static_cast<long long>(ga.prompt_tokens),
              static_cast<long long>(gb.prompt_tokens));
  EXPECT_EQ(gf.prompt_tokens, static_cast<int64_t>(turn.size() - 1));
  EXPECT_EQ(gf.tokens, ref.tokens);
  // The same prompt again: one token evaluated, same output.
  const GenerateResult again = finish(*sched.submit(b, o));
  EXPECT_EQ(again.prompt_tokens, 1);
  EXPECT_EQ(again.tokens, gb.tokens);
  EXPECT_EQ(sched.stats().cached, 2);
}

TEST(Scheduler, CancelledSequenceLeavesWithoutDisturbingTheOthers) {
  Model m = load_model(test::fixture("tiny-dense"));
  Tokenizer tok = load_tokenizer(m);
  ForwardOptions fo{Precision::Fast};
  fo.n_batch = 16;
  Session s(m, fo);
  SchedulerOptions so;
  so.max_active = 4;
  so.n_batch = 16;
  so.max_queue = 1;
  Scheduler sched(s, tok, so);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<GenerateOptions> opts;
  for (int i = 0; i < 3; ++i) {
    prompts.push_back(prompt_of(m, 5 + 4 * i, i));
    opts.push_back(options_of(tok, m, i));
    opts.back().stop_ids.clear();
    opts.back().max_tokens = 200;
  }
  std::vector<std::shared_ptr<BatchRequest>> reqs;
  for (int i = 0; i < 3; ++i) reqs.push_back(sched.submit(prompts[i], opts[i]));
  // The middle one goes once it has produced some text.
  std::string text;
  while (text.size() < 8 && !reqs[1]->wait(text, std::chrono::milliseconds(100))) {}
  reqs[1]->cancel();
  const GenerateResult cut = finish(*reqs[1], text);
  std::printf("cancelled after %zu of 200 tokens\n", cut.tokens.size());
  EXPECT_EQ(cut.finish_reason, "cancelled");
  EXPECT_LT(cut.tokens.size(), 200u);
  for (int i : {0, 2}) EXPECT_EQ(finish(*reqs[i]).tokens, solo(m, tok, Precision::Fast, prompts[i], opts[i]).tokens) << i;
  // Queue bound: places are max_active free + max_queue waiting.
  std::vector<std::shared_ptr<BatchRequest>> burst;
  for (int i = 0; i < 8; ++i) burst.push_back(sched.submit(prompts[0], opts[0]));
  const auto accepted = std::count_if(burst.begin(), burst.end(), [](const auto& r) { return r != nullptr; });
  std::printf("burst of 8: %ld accepted\n", static_cast<long>(accepted));
  EXPECT_EQ(accepted, 5);
  std::erase(burst, nullptr);
  for (auto& r : burst) r->cancel();
  for (auto& r : burst) EXPECT_EQ(finish(*r).finish_reason, "cancelled");
  EXPECT_THROW(sched.submit({static_cast<int32_t>(m.spec.vocab)}, opts[0]), Error);
}

}  // namespace
}  // namespace g4
