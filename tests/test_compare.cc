// `g4 compare` judged against what the quant types explain (forensics' model): a healthy
// Q4_K_M file is "within expected quantization error" although its hidden states differ
// from the first layer on; one with a damaged layer names that layer.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include "forensics_util.h"
#include "test_util.h"
#include "tools/compare.h"
#include "tools/forensics.h"

namespace g4 {
namespace {

std::vector<int32_t> tokens(int n) {
  test::Gold gold(test::fixture("brown-mini/gold.safetensors"));
  const auto ids = gold.i32("heldout_chunk0_ids");
  return std::vector<int32_t>(ids.begin(), ids.begin() + n);
}

CompareReport explained_compare(const Model& b) {
  const Model& a = test::brown_mini();
  CompareReport r = compare_models(a, b, tokens(64), {Precision::F64}, {Precision::F64});
  explain_compare(r, run_forensics(b, a));
  return r;
}

TEST(Compare, HealthyQ4KMIsWithinExpectedQuantizationError) {
  Model b = load_model(test::fixture("gguf/brown-mini-Q4_K_M.gguf"));
  const CompareReport r = explained_compare(b);
  std::printf("%s", format_compare(r, "brown-mini", "brown-mini-Q4_K_M.gguf").c_str());
  // The raw hidden states differ from layer 0 on (what compare used to report as "divergence
  // starts at layer 0"), yet every layer is within what Q4_K/Q6_K explain.
  EXPECT_EQ(r.divergence_layer, 0);
  EXPECT_TRUE(r.within_expected()) << r.verdict;
  EXPECT_EQ(r.first_bad_layer, -1);
  EXPECT_NE(r.verdict.find("within expected quantization error"), std::string::npos) << r.verdict;
  double worst = 0;
  for (double s : r.layer_severity) worst = std::max(worst, s);
  std::printf("worst layer error / explained: %.3f\n", worst);
  EXPECT_LE(worst, 2.0);  // forensics' flag threshold
}

TEST(Compare, DamagedQ4KMNamesItsFirstBadLayer) {
  // The damage suite's generator: brown-mini through g4's q4_k_m recipe, with noise of 30%
  // of the RMS on layer 3's ffn_down (layers 0-2 untouched).
  test::ScratchDir d;
  const std::string path = test::quantized(d, "l3.gguf", std::nullopt, "q4_k_m", [](const std::string& name, std::vector<float>& x) {
    if (name == "blk.3.ffn_down.weight") test::add_noise(x, 0.3, 7);
  });
  Model b = load_model(path);
  const CompareReport r = explained_compare(b);
  std::printf("%s", format_compare(r, "brown-mini", "q4_k_m, layer 3 damaged").c_str());
  EXPECT_FALSE(r.within_expected());
  EXPECT_EQ(r.first_bad_layer, 3) << r.verdict;
  EXPECT_EQ(r.bad_layers, std::vector<int>({3}));
  EXPECT_NE(r.first_bad_why.find("blk.3.ffn_down.weight"), std::string::npos) << r.first_bad_why;
  EXPECT_NE(r.verdict.find("first bad layer 3"), std::string::npos) << r.verdict;
  // The hidden states show it: the NMSE jumps across layer 3 (entries 3 -> 4).
  const double jump = r.hidden[4].nmse / r.hidden[3].nmse;
  std::printf("hidden-state NMSE across layer 3: %.3e -> %.3e (x%.1f); layer 3 error/explained %.1f\n", r.hidden[3].nmse,
              r.hidden[4].nmse, jump, r.layer_severity[3]);
  EXPECT_GT(jump, 1.6);                   // 2.2 measured (a healthy layer 3: 1.2)
  EXPECT_GT(r.layer_severity[3], 3.0);    // 4.3 measured: 30% noise over Q4_K's own 7%
  for (int l : {0, 1, 2, 4, 5}) EXPECT_LT(r.layer_severity[l], 1.1) << l;
}

TEST(Compare, CliSaysWithinExpectedForAHealthyQuant) {
  test::ScratchDir d;
  const std::string out = d.str("out.txt");
  const std::string cmd = std::string(G4_BINARY) + " compare -m " + test::model_dir("brown-mini") + " -m " +
                          test::fixture("gguf/brown-mini-Q4_K_M.gguf") + " -f " + test::fixture("brown-heldout.txt") +
                          " -c 32 -t 1 > " + out;
  const int rc = std::system(cmd.c_str());
  const std::string text = read_text_file(out);
  std::printf("%s", text.c_str());
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
  EXPECT_NE(text.find("verdict: within expected quantization error"), std::string::npos);
  EXPECT_EQ(text.find("divergence starts at layer 0"), std::string::npos);
}

}  // namespace
}  // namespace g4
