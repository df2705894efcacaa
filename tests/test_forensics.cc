// Forensics, compare, restore and grade on artifacts the tests damage themselves.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <regex>

#include "forensics_util.h"
#include "test_util.h"
#include "formats/safetensors.h"
#include "tools/compare.h"
#include "tools/forensics.h"
#include "tools/grade.h"
#include "tools/quantize.h"
#include "tools/synth.h"
#include "tools/token_input.h"
#include "util/mapped_file.h"

namespace g4 {
namespace {

using test::add_noise;
using test::layer_of;
const Model& ref_model() { return test::brown_mini(); }

// brown-mini written as `type`, with `edit` applied to the source values first.
std::string artifact(const test::ScratchDir& d, const std::string& name, DType type,
                     std::function<void(const std::string&, std::vector<float>&)> edit = nullptr) {
  return test::quantized(d, name, type, "", std::move(edit));
}

TEST(Forensics, CleanQ8_0AndF16ArtifactsPass) {
  test::ScratchDir d;
  for (DType t : {DType::Q8_0, DType::F16}) {
    Model a = open_model(artifact(d, std::string(dtype_name(t)) + ".gguf", t));
    auto r = run_forensics(a, ref_model());
    EXPECT_TRUE(r.clean()) << format_forensics(r);
    EXPECT_TRUE(r.permutations.empty());
    EXPECT_FALSE(r.periodic.has_value());
  }
}

TEST(Forensics, PeriodicDamageFoundWithPeriodAndPhase) {
  // Damage every 2-D tensor of the layers = 2 mod 3 (the 6-layer analogue of the
  // seeds' "layers not 0,1 mod 6" signature).
  test::ScratchDir d;
  Model a = open_model(artifact(d, "periodic.gguf", DType::Q8_0, [](const std::string& name, std::vector<float>& x) {
    const int l = layer_of(name);
    if (l >= 0 && l % 3 == 2 && x.size() > 256) add_noise(x, 0.6, static_cast<uint32_t>(l));
  }));
  auto r = run_forensics(a, ref_model());
  std::printf("%s", format_forensics(r).c_str());
  ASSERT_TRUE(r.periodic.has_value());
  EXPECT_EQ(r.periodic->period, 3);
  EXPECT_EQ(r.periodic->damaged_phases, std::vector<int>({2}));
  EXPECT_EQ(r.periodic->clean_phases, std::vector<int>({0, 1}));
  EXPECT_EQ(r.damaged_layers, std::vector<int>({2, 5}));
}

TEST(Forensics, SwappedLayersAreAPermutation) {
  test::ScratchDir d;
  // Layers 0 and 3 have the same geometry (sliding, own KV, ff 768): swap all their tensors.
  Model a = open_model(artifact(d, "swapped.gguf", DType::Q8_0, [](const std::string& name, std::vector<float>& x) {
    const int l = layer_of(name);
    if (l != 0 && l != 3) return;
    std::string other = name;
    const std::string from = "blk." + std::to_string(l) + ".";
    other.replace(other.find(from), from.size(), "blk." + std::to_string(l == 0 ? 3 : 0) + ".");
    for (const auto& s : expected_tensors(ref_model().spec, FileFormat::GGUF))
      if (s.gguf == other) x = dequantize_all(ref_model().by_hf_name.at(s.hf));
  }));
  auto r = run_forensics(a, ref_model());
  std::set<std::pair<int, int>> pairs;
  for (const auto& p : r.permutations) pairs.insert({p.artifact_layer, p.looks_like_ref_layer});
  EXPECT_TRUE(pairs.count({0, 3}) && pairs.count({3, 0})) << format_forensics(r);
  for (const auto& p : pairs) EXPECT_TRUE(p == std::make_pair(0, 3) || p == std::make_pair(3, 0));
}

TEST(Forensics, ScaledLayerScalarsAndNormsAreNamedAndRestoreRanksThemFirst) {
  test::ScratchDir d;
  Model a = open_model(artifact(d, "scalars.gguf", DType::Q8_0, [](const std::string& name, std::vector<float>& x) {
    if (name.find("layer_output_scale") != std::string::npos) for (auto& v : x) v *= 1.6f;
  }));
  auto r = run_forensics(a, ref_model());
  ASSERT_FALSE(r.damaged_classes.empty());
  EXPECT_EQ(r.damaged_classes.front(), "layer_output_scale") << format_forensics(r);
  EXPECT_EQ(r.damaged_classes.size(), 1u);

  const std::string text = read_text_file(test::fixture("brown-heldout.txt"));
  const auto toks = load_tokenizer(ref_model()).encode(text, true, false);
  PerplexityOptions po;
  po.n_ctx = 128;
  po.max_chunks = 3;
  po.forward.precision = Precision::F32;
  auto rr = run_restore(a, ref_model(), "auto", toks, po, &r).rows;
  for (const auto& x : rr) std::printf("%s %.4f %.3f\n", x.what.c_str(), x.ppl, x.gap_closed);
  ASSERT_GE(rr.size(), 3u);  // artifact, reference, then the damaged classes and layer groups
  EXPECT_EQ(rr[2].what, "class layer_output_scale");
  EXPECT_GT(rr[2].gap_closed, 0.9);

  Model n = open_model(artifact(d, "norms.gguf", DType::Q8_0, [](const std::string& name, std::vector<float>& x) {
    if (name.find("attn_norm") != std::string::npos) for (auto& v : x) v *= 1.3f;
  }));
  auto rn = run_forensics(n, ref_model());
  ASSERT_FALSE(rn.damaged_classes.empty());
  EXPECT_EQ(rn.damaged_classes.front(), "attn_norm") << format_forensics(rn);
}

TEST(Forensics, CompareNamesTheLayerWhereDivergenceStarts) {
  test::ScratchDir d;
  Model a = load_model(artifact(d, "l3.gguf", DType::F32, [](const std::string& name, std::vector<float>& x) {
    if (name == "blk.3.ffn_down.weight") add_noise(x, 0.3, 7);
  }));
  test::Gold gold(test::fixture("brown-mini/gold.safetensors"));
  const auto ids = gold.i32("heldout_chunk0_ids");
  auto r = compare_models(ref_model(), a, std::vector<int32_t>(ids.begin(), ids.begin() + 48), {Precision::F64}, {Precision::F64});
  std::printf("%s", format_compare(r, "brown-mini", "damaged layer 3").c_str());
  EXPECT_EQ(r.divergence_layer, 3);
  EXPECT_LT(r.hidden[3].nmse, 1e-20);  // the first three layers are untouched (F32 of bf16 is exact)
  EXPECT_GT(r.kld_mean, 0);
}

TEST(Forensics, MissingAndExtraTensorsAreReported) {
  test::ScratchDir d;
  const std::string dir = d.str("noPLE");
  std::filesystem::create_directories(dir);
  auto f = read_safetensors(test::model_dir("brown-mini") + "/model-00001-of-00002.safetensors");
  std::vector<SafetensorsOut> out;
  for (const auto& name : {std::string("model-00001-of-00002.safetensors"), std::string("model-00002-of-00002.safetensors")}) {
    for (const auto& t : read_safetensors(test::model_dir("brown-mini") + "/" + name).tensors)
      if (t.name.find("per_layer_projection.weight") == std::string::npos || t.name.find("layers.2.") == std::string::npos)
        out.push_back({t.name, std::string(dtype_name(t.dtype)), t.shape, std::vector<uint8_t>(t.data, t.data + t.nbytes)});
  }
  out.push_back({"model.language_model.extra_thing.weight", "F32", {2}, std::vector<uint8_t>(8)});
  write_safetensors(dir + "/model.safetensors", out);
  std::filesystem::copy(test::model_dir("brown-mini") + "/config.json", dir + "/config.json");
  Model a = open_model(dir, LoadOptions{true});
  auto r = run_forensics(a, ref_model());
  EXPECT_EQ(r.missing, std::vector<std::string>({"blk.2.proj.weight"}));
  EXPECT_EQ(r.extra, std::vector<std::string>({"model.language_model.extra_thing.weight"}));
  EXPECT_FALSE(r.clean());
}

TEST(Grade, CleanArtifactPassesDamagedFailsWithRestoreRanking) {
  test::ScratchDir d;
  GradeOptions go;
  go.text = read_text_file(test::fixture("brown-heldout.txt"));
  go.text_name = "brown-heldout.txt";
  go.n_ctx = 128;
  go.chunks = 6;
  go.restore_chunks = 2;
  Model clean = open_model(artifact(d, "q8.gguf", DType::Q8_0));
  auto g = grade(clean, ref_model(), go);
  std::printf("%s\n", g.markdown.c_str());
  EXPECT_TRUE(g.pass);
  Model bad = open_model(artifact(d, "bad.gguf", DType::Q8_0, [](const std::string& name, std::vector<float>& x) {
    const int l = layer_of(name);
    if (l >= 0 && l % 3 == 2 && x.size() > 256) add_noise(x, 0.6, static_cast<uint32_t>(l));
  }));
  go.html_out = d.str("report.html");
  go.build = "g4 test build";
  auto gb = grade(bad, ref_model(), go);
  std::printf("%s\n", gb.markdown.c_str());
  EXPECT_FALSE(gb.pass);
  EXPECT_NE(gb.markdown.find("Restore ranking"), std::string::npos);
  EXPECT_NE(gb.markdown.find("PERIODIC damage: period 3"), std::string::npos);
  // The report: reasons first, every plot present with data in it, provenance, PNG, card.
  const std::string html = read_text_file(d.str("report.html"));
  auto plot = [&](const std::string& cls) {
    const size_t at = html.find("<svg class=\"" + cls + "\"");
    if (at == std::string::npos) return std::string();
    return html.substr(at, html.find("</svg>", at) - at);
  };
  auto count = [](const std::string& s, const std::string& what) {
    size_t n = 0;
    for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
    return n;
  };
  const std::vector<std::pair<std::string, std::string>> plots = {
      {"plot-layers", "class=\"point\""}, {"plot-heatmap", "class=\"cell\""}, {"plot-ppl", "class=\"bar\""},
      {"plot-kld", "class=\"bar\""},      {"plot-top1", "class=\"bar\""},     {"plot-restore", "class=\"bar\""}};
  for (const auto& [cls, mark] : plots) {
    const std::string svg = plot(cls);
    std::printf("[report] %-13s %6zu bytes, %4zu data marks\n", cls.c_str(), svg.size(), count(svg, mark));
    EXPECT_GT(count(svg, mark), 0u) << cls << " is missing or empty";
  }
  EXPECT_GT(count(plot("plot-heatmap"), "class=\"colorbar\""), 0u);
  EXPECT_GE(count(plot("plot-ppl"), "class=\"bar\""), 3u);  // reference, artifact, hybrids
  EXPECT_LT(html.find("class=\"reasons\""), html.find("<svg"));
  EXPECT_NE(html.find("<li><span class=\"fail\">FAIL</span> <b>tensor errors</b>"), std::string::npos);
  // bad.gguf; brown-mini's config.json, tokenizer.json and two shards; the text.
  EXPECT_EQ(count(html, "sha256 <code>"), 6u);
  EXPECT_NE(html.find("g4 test build"), std::string::npos);
  const std::string png = read_text_file(d.str("report.png"));
  ASSERT_GT(png.size(), 1000u);
  EXPECT_EQ(png.substr(1, 3), "PNG");
  EXPECT_EQ(read_text_file(d.str("report.md")), gb.markdown);
  // The >= 8-bit check looks at weight matrices only.
  for (const auto& c : g.checks)
    if (c.name == ">= 8-bit matrices") EXPECT_NE(c.measured.find("matrices: min cosine"), std::string::npos) << c.measured;
}


// Peak-RSS figures of this process from /proc/self/status (kB); VmHWM is reset by
// writing 5 to /proc/self/clear_refs (Linux >= 4.0), so a peak can be measured per step.
int64_t status_kb(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(std::string(key).size()));
  return -1;
}

TEST(Forensics, StreamsWithMemoryBoundedByBlocksNotTensors) {
  // A synth e2b cut to 2 layers with a 65536-token vocabulary: its largest tensor, the
  // token embedding, is 65536 x 1536 (201 MB in BF16, 107 MB in Q8_0). Forensics streams
  // it a block of rows at a time and drops the pages it has read, so the resident set
  // must grow by far less than that tensor (it used to grow by the whole model, then by
  // the largest tensor pair).
  test::ScratchDir d;
  SynthOptions o;
  o.variant = "e2b";
  o.layers = 2;
  o.vocab = 65536;
  o.format = "safetensors";
  synth_model(o, d.str("ref"));
  o.format = "gguf";
  o.quant.type = DType::Q8_0;
  synth_model(o, d.str("q8.gguf"));
  Model a = open_model(d.str("q8.gguf")), r = open_model(d.str("ref"));
  int64_t largest = 0;
  for (const auto& [hf, t] : r.by_hf_name) largest = std::max(largest, t.nbytes);
  {
    std::ofstream clear("/proc/self/clear_refs");
    clear << "5";
  }
  const int64_t before = status_kb("VmRSS:"), reset_peak = status_kb("VmHWM:");
  if (before < 0 || reset_peak > before + 1024) GTEST_SKIP() << "no /proc/self/clear_refs peak reset here";
  const auto f = run_forensics(a, r);
  const int64_t peak = status_kb("VmHWM:");
  const double growth_mb = static_cast<double>(peak - before) / 1024, largest_mb = static_cast<double>(largest) / 1e6;
  std::printf("[rss] largest tensor %.1f MB (BF16), %.2f GB of tensors read; resident %.1f MB before, peak growth %.1f MB (%.2f of the largest tensor)\n",
              largest_mb, static_cast<double>(f.bytes_read) / 1e9, static_cast<double>(before) / 1024, growth_mb,
              growth_mb / largest_mb);
  EXPECT_TRUE(f.tensors_clean()) << format_forensics(f);
  // synth writes the GGUF's vocabulary beside the safetensors too (grade needs one).
  EXPECT_TRUE(f.vocab.same()) << format_forensics(f);
  EXPECT_GT(largest, int64_t{190} << 20);
  EXPECT_LT(growth_mb, 0.25 * largest_mb) << "forensics holds tensors whole";
}

}  // namespace
}  // namespace g4
