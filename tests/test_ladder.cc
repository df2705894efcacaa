// g4 ladder: every rung against f64 on the same positions, consistent with perplexity.
#include <gtest/gtest.h>

#include <cstdio>

#include "test_util.h"
#include "tools/ladder.h"
#include "tools/perplexity.h"
#include "util/mapped_file.h"

namespace g4 {
namespace {

TEST(Ladder, RungsAgainstF64OnTinyDense) {
  Model m = load_model(test::fixture("tiny-dense"));
  const std::string text = read_text_file(test::fixture("brown-heldout.txt"));
  LadderOptions lo;
  lo.n_ctx = 64;
  lo.max_chunks = 2;
  const LadderResult r = run_ladder(m, text, lo);
  std::printf("%s", format_ladder(r, "tiny-dense").c_str());
  ASSERT_EQ(r.rungs.size(), 6u);
  auto rung = [&](const std::string& name) {
    for (const auto& g : r.rungs)
      if (g.name == name) return g;
    ADD_FAILURE() << "no rung " << name;
    return LadderRung{};
  };
  // The reference against itself.
  EXPECT_EQ(rung("f64").nmse, 0.0);
  EXPECT_EQ(rung("f64").kld, 0.0);
  EXPECT_EQ(rung("f64").top1, 1.0);
  // sqrt(64) = 8 is exact in bf16: the rounded constants change nothing here.
  EXPECT_EQ(rung("f64 bf16-const").nmse, 0.0);
  // The weights are bf16 already: bf16 weights with f32 activations is f32 up to the
  // matmul's accumulation (observed 1e-13).
  EXPECT_LE(rung("f32").nmse, 1e-10);
  EXPECT_LE(rung("bf16 weights").nmse, 1e-10);
  // bf16 activations cost orders of magnitude more (HF's own bf16 gap on this model: 4.9e-4).
  EXPECT_GE(rung("bf16").nmse, 1e-5);
  EXPECT_LE(rung("bf16").nmse, 5e-3);
  EXPECT_LE(rung("fast").nmse, 1e-10);
  // Drift by position over the scored positions 31..62: buckets 0-63 of 64 pool to the mean.
  for (const auto& g : r.rungs) {
    ASSERT_EQ(g.by_position.size(), 1u) << g.name;
    EXPECT_EQ(g.by_position[0].n, 2 * 32);
    EXPECT_NEAR(g.by_position[0].kld(), g.kld, 1e-12 * g.kld + 1e-300) << g.name;
    EXPECT_EQ(g.by_position[0].top1(), g.top1) << g.name;
  }

  // The f64 rung's PPL is perplexity's on the same chunks (the same protocol).
  PerplexityOptions po;
  po.n_ctx = lo.n_ctx;
  po.max_chunks = lo.max_chunks;
  const PerplexityResult p = run_perplexity(m, text, po);
  std::printf("perplexity f64: %.6f, ladder f64: %.6f\n", p.ppl, rung("f64").ppl);
  EXPECT_NEAR(rung("f64").ppl, p.ppl, 1e-9 * p.ppl);
}

TEST(Ladder, RejectsBadContext) {
  Model m = load_model(test::fixture("tiny-dense"));
  LadderOptions lo;
  lo.n_ctx = 7;
  EXPECT_NE(test::error_of([&] { run_ladder(m, "some text", lo); }).find("must be even"), std::string::npos);
}

}  // namespace
}  // namespace g4
