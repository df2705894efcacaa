// The reference forward pass against the HF gold (fixtures README), every variant.
#include <gtest/gtest.h>

#include "model/gemma4.h"
#include "test_util.h"
#include "tools/metrics.h"

namespace g4 {
namespace {

using test::Gold;

struct Case {
  std::string name;
  std::string model;   // directory under fixtures/ or a .gguf
  std::string gold;    // gold.safetensors
};

class TinyForward : public ::testing::TestWithParam<std::string> {};

EvalOutput run(const Model& m, const std::vector<int32_t>& ids, Precision p, bool hidden, bool step = false,
               bool bf16_scale = false) {
  Session s(m, {p, bf16_scale});
  if (!step) return s.eval(ids, hidden);
  EvalOutput all;
  for (size_t t = 0; t < ids.size(); ++t) {
    auto r = s.eval(std::span<const int32_t>(&ids[t], 1));
    all.logits.insert(all.logits.end(), r.logits.begin(), r.logits.end());
  }
  return all;
}

TEST_P(TinyForward, F64MatchesGoldLogitsAndHiddenStates) {
  const std::string v = GetParam();
  Model m = load_model(test::model_dir(v));
  Gold gold(test::fixture(v + "/gold.safetensors"));
  const auto ids = gold.i32("input_ids");
  auto out = run(m, ids, Precision::F64, true);
  auto st = compare_arrays(out.logits, gold.f32("logits_f64"), m.spec.vocab);
  std::printf("[%s] f64 vs logits_f64: %s\n", v.c_str(), st.summary().c_str());
  EXPECT_LE(st.nmse, 1e-11);
  EXPECT_EQ(st.argmax_equal, st.rows);
  const auto hs = gold.f32("hidden_states_f64");
  const int64_t per = static_cast<int64_t>(ids.size()) * m.spec.hidden;
  ASSERT_EQ(out.hidden.size(), hs.size());
  for (int64_t e = 0; e <= m.spec.n_layers; ++e) {
    auto hst = compare_arrays(std::span(out.hidden).subspan(e * per, per), std::span(hs).subspan(e * per, per), m.spec.hidden);
    std::printf("[%s]   hidden[%ld]: %s\n", v.c_str(), static_cast<long>(e), hst.summary().c_str());
    EXPECT_LE(hst.nmse, 1e-11) << "hidden state entry " << e;
  }
}

TEST_P(TinyForward, F64b_Bf16EmbedScaleMatchesGold) {
  const std::string v = GetParam();
  Model m = load_model(test::model_dir(v));
  Gold gold(test::fixture(v + "/gold.safetensors"));
  auto out = run(m, gold.i32("input_ids"), Precision::F64, false, false, true);
  auto st = compare_arrays(out.logits, gold.f32("logits_f64b"), m.spec.vocab);
  std::printf("[%s] f64 bf16-scale vs logits_f64b: %s\n", v.c_str(), st.summary().c_str());
  EXPECT_LE(st.nmse, 1e-11);
}

TEST_P(TinyForward, F32MatchesGold) {
  const std::string v = GetParam();
  Model m = load_model(test::model_dir(v));
  Gold gold(test::fixture(v + "/gold.safetensors"));
  auto out = run(m, gold.i32("input_ids"), Precision::F32, false);
  auto st = compare_arrays(out.logits, gold.f32("logits_f64"), m.spec.vocab);
  auto st32 = compare_arrays(out.logits, gold.f32("logits_f32"), m.spec.vocab);
  auto stbf = compare_arrays(out.logits, gold.f32("logits_bf16"), m.spec.vocab);
  std::printf("[%s] f32 vs logits_f64: %s\n[%s] f32 vs logits_f32: %s\n[%s] f32 vs logits_bf16: %s\n", v.c_str(),
              st.summary().c_str(), v.c_str(), st32.summary().c_str(), v.c_str(), stbf.summary().c_str());
  EXPECT_LE(st.nmse, 1e-8);
  EXPECT_EQ(st.argmax_equal, st.rows);
}

TEST_P(TinyForward, KvCacheStepMatchesGold) {
  const std::string v = GetParam();
  Model m = load_model(test::model_dir(v));
  Gold gold(test::fixture(v + "/gold.safetensors"));
  auto out = run(m, gold.i32("input_ids"), Precision::F64, false, true);
  auto st = compare_arrays(out.logits, gold.f32("logits_f64"), m.spec.vocab);
  std::printf("[%s] f64 --step vs logits_f64: %s\n", v.c_str(), st.summary().c_str());
  EXPECT_LE(st.nmse, 1e-11);
  EXPECT_EQ(st.argmax_equal, st.rows);
}

TEST_P(TinyForward, GreedyGenerationMatchesGold) {
  const std::string v = GetParam();
  Model m = load_model(test::model_dir(v));
  Gold gold(test::fixture(v + "/gold.safetensors"));
  const auto prompt = gold.i32("greedy_prompt");
  const auto want = gold.i32("greedy_tokens");
  Session s(m, {Precision::F64});
  std::vector<int32_t> got;
  auto r = s.eval(prompt, false, true);
  for (size_t i = 0; i < want.size(); ++i) {
    const auto best = std::max_element(r.logits.begin(), r.logits.end()) - r.logits.begin();
    got.push_back(static_cast<int32_t>(best));
    const int32_t tok = got.back();
    r = s.eval(std::span<const int32_t>(&tok, 1), false, true);
  }
  EXPECT_EQ(got, want);
}

INSTANTIATE_TEST_SUITE_P(Variants, TinyForward, ::testing::Values("tiny-e", "tiny-dense", "tiny-moe"));

}  // namespace
}  // namespace g4
