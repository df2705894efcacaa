// Needle in a haystack: prompt construction (exact lengths, needle placement at sentence
// boundaries), scoring, the answer's log-probability and determinism. brown-mini cannot
// retrieve anything; what is tested is the instrument, not the model.
#include <gtest/gtest.h>

#include <cmath>

#include "tools/niah.h"
#include "tools/token_input.h"
#include "test_util.h"
#include "util/mapped_file.h"

namespace g4 {
namespace {

struct Brown {
  Model m = load_model(test::model_dir("brown-mini"));
  Tokenizer tok = load_tokenizer(m);
  std::string text = read_text_file(test::fixture("brown-heldout.txt")).substr(0, 6000);
};

TEST(Niah, PromptsHaveExactLengthsAndTheNeedleAtASentenceBoundary) {
  Brown b;
  for (bool chat : {false, true}) {
    const NiahPieces p = niah_pieces(b.tok, b.text, "The secret number is 4242.", "What is the secret number?", chat);
    ASSERT_FALSE(p.needle.empty());
    int checked = 0;
    // 3000 tokens: longer than the filler, which then repeats.
    for (int64_t len : {64, 200, 777, 3000})
      for (double d : {0.0, 0.1, 0.5, 0.9, 1.0}) {
        const NiahPrompt q = build_niah_prompt(p, len, d);
        ASSERT_EQ(static_cast<int64_t>(q.ids.size()), len) << "chat " << chat << " depth " << d;
        // The needle's tokens are where the prompt says, once.
        for (size_t j = 0; j < p.needle.size(); ++j) ASSERT_EQ(q.ids[q.needle_pos + j], p.needle[j]);
        // Prefix, question and template suffix frame the haystack.
        for (size_t j = 0; j < p.prefix.size(); ++j) ASSERT_EQ(q.ids[j], p.prefix[j]);
        ASSERT_EQ(q.haystack_begin, static_cast<int64_t>(p.prefix.size()));
        ASSERT_EQ(q.ids.back(), (p.suffix.empty() ? p.question : p.suffix).back());
        // Placement: at a boundary (after a sentence's end; the haystack's ends and the
        // start of a filler repeat count as boundaries) and near the requested depth.
        const int64_t a = q.needle_pos - q.haystack_begin, F_ = q.haystack_len - q.needle_len;
        if (a > 0 && a < F_ && a % static_cast<int64_t>(p.filler.size()) != 0) {
          const std::string before = b.tok.token_text(q.ids[q.needle_pos - 1]);
          EXPECT_NE(before.find_last_of(".!?"), std::string::npos) << "needle after '" << before << "'";
        }
        const double F = static_cast<double>(q.haystack_len - q.needle_len);
        EXPECT_NEAR(q.depth, a / F, 1e-12);
        EXPECT_LE(std::fabs(q.depth - d), std::max(0.05, 60.0 / F)) << len << " " << d;
        if (d == 0.0) EXPECT_EQ(a, 0);
        if (d == 1.0) EXPECT_EQ(a, static_cast<int64_t>(F));
        ++checked;
      }
    std::printf("[niah] %s: %d prompts of exact length, needle %zu tokens, question %zu, template %zu+%zu\n",
                chat ? "chat" : "raw", checked, p.needle.size(), p.question.size(), p.prefix.size(), p.suffix.size());
    EXPECT_NE(test::error_of([&] { build_niah_prompt(p, 8, 0.5); }).find("no room for filler"), std::string::npos);
  }
}

TEST(Niah, HitsAreWholeWordsCaseInsensitive) {
  EXPECT_TRUE(niah_hit("The secret number is 7481.", "7481"));
  EXPECT_TRUE(niah_hit("7481", "7481"));
  EXPECT_FALSE(niah_hit("74812", "7481"));
  EXPECT_FALSE(niah_hit("17481 and 74810", "7481"));
  EXPECT_TRUE(niah_hit("17481 and then 7481", "7481"));
  EXPECT_TRUE(niah_hit("It is PARIS!", "Paris"));
  EXPECT_FALSE(niah_hit("Parisian", "Paris"));
  EXPECT_FALSE(niah_hit("anything", ""));
}

// The grid runs deterministically, and each cell's answer log-probability equals one
// computed independently from a fresh session's logits.
TEST(Niah, GridIsDeterministicAndTheLogProbIsTheModels) {
  Brown b;
  NiahOptions o;
  o.lengths = {48, 96};
  o.depths = {0, 0.5, 1};
  o.max_tokens = 4;
  const NiahResult r1 = run_niah(b.m, b.tok, b.text, o), r2 = run_niah(b.m, b.tok, b.text, o);
  ASSERT_EQ(r1.cells.size(), 6u);
  EXPECT_TRUE(r1.chat);  // brown-mini's tokenizer has <|turn>/<turn|>
  EXPECT_EQ(r1.answer.size(), 4u);
  for (size_t i = 0; i < r1.cells.size(); ++i) {
    EXPECT_EQ(r1.cells[i].output, r2.cells[i].output);
    EXPECT_EQ(r1.cells[i].answer_logprob, r2.cells[i].answer_logprob);
    EXPECT_EQ(r1.cells[i].tokens, r1.cells[i].length);
    EXPECT_LT(r1.cells[i].answer_logprob, 0);
  }
  // Independent check of one cell: the answer after the prompt, in one fresh pass.
  const NiahPieces p = niah_pieces(b.tok, b.text, "The secret number is " + r1.answer + ".", o.question, true);
  const NiahPrompt q = build_niah_prompt(p, 96, 0.5);
  const auto ans = b.tok.encode_untrusted(r1.answer);
  std::vector<int32_t> all = q.ids;
  all.insert(all.end(), ans.begin(), ans.end());
  const auto V = static_cast<size_t>(b.m.spec.vocab);
  const auto logits = Session(b.m, {Precision::Fast}).eval(all, {false, static_cast<int64_t>(q.ids.size()) - 1}).logits;
  double lp = 0;
  for (size_t j = 0; j < ans.size(); ++j) {
    const float* row = &logits[j * V];
    double mx = row[0], z = 0;
    for (size_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
    for (size_t v = 0; v < V; ++v) z += std::exp(row[v] - mx);
    lp += row[ans[j]] - mx - std::log(z);
  }
  std::printf("[niah] length 96 depth 0.5: answer log-prob %.6f (grid) vs %.6f (fresh pass)\n", r1.cells[4].answer_logprob, lp);
  EXPECT_NEAR(r1.cells[4].answer_logprob, lp, 1e-4);
  const std::string svg = niah_svg(r1, "brown-mini");
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  size_t cells = 0;
  for (size_t at = svg.find("class=\"cell\""); at != std::string::npos; at = svg.find("class=\"cell\"", at + 1)) ++cells;
  EXPECT_EQ(cells, 6u);
}

}  // namespace
}  // namespace g4
