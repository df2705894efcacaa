// The backend seam: the one forward on every backend, step splitting, non-finite
// detection, and Model's ownership rules.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "runtime/session.h"
#include "test_util.h"

namespace g4 {
namespace {

std::vector<int32_t> ids_of(const Model& m, int n) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 7919 + 3) % m.spec.vocab);
  ids[0] = m.spec.bos_id;
  return ids;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(double(a[i]) - double(b[i])));
  return d;
}

// A long input runs in steps of n_batch tokens; each step sees the earlier steps'
// keys through the KV cache (including the sliding ring), so the logits equal one pass.
class StepSplit : public ::testing::TestWithParam<std::string> {};

TEST_P(StepSplit, SmallStepsEqualOnePass) {
  Model m = load_model(test::fixture(GetParam()));
  const auto ids = ids_of(m, 40);
  for (Precision p : {Precision::F64, Precision::Fast}) {
    ForwardOptions one{p}, small{p};
    small.n_batch = 3;
    const auto a = Session(m, one).eval(ids).logits;
    const auto b = Session(m, small).eval(ids).logits;
    const double d = max_abs_diff(a, b);
    std::printf("[%s %s] n_batch 3 vs 512: max|diff| %.3g\n", GetParam().c_str(), precision_name(p), d);
    // The same sums in the same order: bit-identical (the tiny models have float
    // weights, so the fast path takes the f32 FMA kernel at every step size).
    EXPECT_EQ(d, 0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, StepSplit, ::testing::Values("tiny-e", "tiny-dense", "tiny-moe"));

// decode() and eval_last() agree with eval() on the last row.
TEST(Backend, DecodeEqualsEvalLastRow) {
  Model m = load_model(test::fixture("tiny-e"));
  const auto ids = ids_of(m, 12);
  Session a(m, {Precision::Fast}), b(m, {Precision::Fast});
  const auto all = a.eval(ids).logits;
  const auto last = b.decode(ids);
  const size_t V = static_cast<size_t>(m.spec.vocab);
  ASSERT_EQ(last.size(), V);
  for (size_t j = 0; j < V; ++j) ASSERT_EQ(last[j], all[all.size() - V + j]) << j;
  EXPECT_EQ(b.n_past(), 12);
}

// A NaN in one layer's weights stops the forward with the layer named, on every backend.
TEST(Backend, NonFiniteHiddenStateNamesTheFirstLayer) {
  Model m = load_model(test::fixture("tiny-dense"));
  const std::string name = "layers.2.mlp.down_proj.weight";
  TensorView& t = m.by_hf_name.at(name);
  ASSERT_EQ(t.dtype, DType::BF16);
  std::vector<uint16_t> poisoned(static_cast<size_t>(t.numel()));
  std::memcpy(poisoned.data(), t.data, static_cast<size_t>(t.nbytes));
  poisoned[5] = 0x7FC0;  // bf16 quiet NaN
  t.data = reinterpret_cast<const uint8_t*>(poisoned.data());
  const auto ids = ids_of(m, 6);
  for (Precision p : {Precision::F64, Precision::F32, Precision::Fast}) {
    const std::string err = test::error_of([&] { Session(m, {p}).eval(ids); });
    std::printf("[%s] %s\n", precision_name(p), err.c_str());
    EXPECT_NE(err.find("after layer 2 "), std::string::npos) << err;
  }
  ForwardOptions off{Precision::Fast};
  off.check_finite = false;
  const auto logits = Session(m, off).eval(ids).logits;
  EXPECT_TRUE(std::isnan(logits.back()));
}

// Model is move-only (its weight bindings point into itself); clone() rebinds.
TEST(Backend, ModelMovesAndClones) {
  static_assert(!std::is_copy_constructible_v<Model>);
  static_assert(std::is_nothrow_move_constructible_v<Model>);
  Model m = load_model(test::fixture("tiny-e"));
  Model moved = std::move(m);
  Model copy = moved.clone();
  EXPECT_EQ(copy.w.embed, &copy.by_hf_name.at("embed_tokens.weight"));
  EXPECT_EQ(moved.w.embed, &moved.by_hf_name.at("embed_tokens.weight"));
  const auto ids = ids_of(moved, 5);
  EXPECT_EQ(Session(moved, {Precision::F64}).eval(ids).logits, Session(copy, {Precision::F64}).eval(ids).logits);
}

}  // namespace
}  // namespace g4
