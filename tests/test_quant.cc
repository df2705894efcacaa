// Quantization: bit-exactness with llama.cpp's files made from the same weights,
// K-quant accuracy side by side, the GGUF writer round trip, and the verify gate.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "formats/gguf.h"
#include "kernels/quantize.h"
#include "runtime/session.h"
#include "test_util.h"
#include "tools/metrics.h"
#include "tools/perplexity.h"
#include "tools/quantize.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace g4 {
namespace {

double rms_error(const std::vector<float>& a, const std::vector<float>& ref) {
  double e = 0, n = 0;
  for (size_t i = 0; i < ref.size(); ++i) { e += (a[i] - ref[i]) * (a[i] - ref[i]); n += ref[i] * ref[i]; }
  return std::sqrt(e / ref.size());
}

// Quantizes each brown-mini tensor to the type llama.cpp chose in `file` and compares bytes.
void compare_with_llama_cpp(const std::string& file, bool require_identical_all) {
  Model src = load_model(test::model_dir("brown-mini"));
  GgufFile lc = read_gguf(test::fixture("gguf/" + file));
  std::map<std::string, std::string> gguf_to_hf;
  for (const auto& s : expected_tensors(src.spec, FileFormat::GGUF)) gguf_to_hf[s.gguf] = s.hf;
  std::map<std::string, std::pair<int, int>> identical;  // type -> (identical, total)
  std::map<std::string, std::pair<double, double>> rmse;  // type -> (g4, llama.cpp) summed
  for (const auto& t : lc.tensors) {
    if (t.dtype == DType::F32 || gguf_to_hf[t.name].empty()) continue;
    const auto ref = dequantize_all(src.by_hf_name.at(gguf_to_hf[t.name]));
    const int64_t cols = t.shape.back();
    const auto mine = quantize_rows(t.dtype, ref.data(), static_cast<int64_t>(ref.size()) / cols, cols);
    const std::string type(dtype_name(t.dtype));
    const bool same = mine.size() == static_cast<size_t>(t.nbytes) && std::memcmp(mine.data(), t.data, mine.size()) == 0;
    identical[type].first += same;
    identical[type].second += 1;
    TensorView mv = t;
    mv.data = mine.data();
    rmse[type].first += rms_error(dequantize_all(mv), ref);
    rmse[type].second += rms_error(dequantize_all(t), ref);
    if (require_identical_all) EXPECT_TRUE(same) << file << ": " << t.name << " (" << type << ") differs from llama.cpp";
  }
  for (const auto& [type, c] : identical) {
    const auto [mine, theirs] = rmse[type];
    std::printf("[%s] %s: %d/%d tensors byte-identical to llama.cpp; mean RMSE g4 %.6e vs llama.cpp %.6e\n", file.c_str(),
                type.c_str(), c.first, c.second, mine / c.second, theirs / c.second);
    EXPECT_LE(mine, theirs * (1 + 1e-6)) << type << ": g4's quantization must be at least as accurate as llama.cpp's";
  }
}

TEST(Quantize, Q8_0BitExactWithLlamaCpp) { compare_with_llama_cpp("brown-mini-Q8_0.gguf", true); }
TEST(Quantize, Q4_0BitExactWithLlamaCpp) { compare_with_llama_cpp("brown-mini-Q4_0.gguf", true); }
TEST(Quantize, KQuantsAtLeastAsAccurateAsLlamaCpp) {
  compare_with_llama_cpp("brown-mini-Q4_K_M.gguf", false);
  compare_with_llama_cpp("brown-mini-Q6_K.gguf", false);
}

TEST(Quantize, ReferenceQuantizersEdgeCases) {
  std::vector<float> zeros(32, 0.0f);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1}) {
    std::vector<uint8_t> b(static_cast<size_t>(*row_bytes(t, 32)));
    quantize_row(t, zeros.data(), 32, b.data());
    TensorView v;
    v.dtype = t;
    v.shape = {32};
    v.data = b.data();
    for (float y : dequantize_all(v)) EXPECT_EQ(y, 0.0f) << dtype_name(t);
  }
  // Q4_0: the element of largest magnitude maps to quant 0, i.e. exactly -8 d = mx.
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = std::sin(0.3f * i) * (i == 7 ? 3.0f : 1.0f);
  std::vector<uint8_t> b(18);
  quantize_row(DType::Q4_0, x.data(), 32, b.data());
  EXPECT_EQ(b[2 + 7] & 0x0f, 0);
}

TEST(Quantize, F32RoundTripGivesIdenticalLogits) {
  test::ScratchDir d;
  Model src = load_model(test::fixture("tiny-e"));
  QuantizeOptions qo;
  qo.type = DType::F32;
  auto rep = quantize_model(src, d.str("tiny-e-f32.gguf"), qo);
  ASSERT_TRUE(rep.passed()) << rep.table();
  Model g = load_model(d.str("tiny-e-f32.gguf"));
  test::Gold gold(test::fixture("tiny-e/gold.safetensors"));
  const auto ids = gold.i32("input_ids");
  const auto a = Session(src, {Precision::F64}).eval(ids).logits;
  const auto b = Session(g, {Precision::F64}).eval(ids).logits;
  EXPECT_TRUE(a == b) << "safetensors -> GGUF F32 must not change a single logit";
  // The tokenizer travels too.
  EXPECT_EQ(Tokenizer::from_gguf(*g.gguf).encode("Hello world <|turn> x", true),
            Tokenizer::from_hf_file(test::fixture("tiny-e/tokenizer.json")).encode("Hello world <|turn> x", true));
  // And the metadata equals llama.cpp's conversion of the same checkpoint.
  GgufFile lc = read_gguf(test::fixture("gguf/tiny-e-f32.gguf"));
  for (const auto& [k, v] : lc.kv) {
    if (k.rfind("gemma4.", 0) != 0) continue;
    const auto* mine = g.gguf->find(k);
    ASSERT_NE(mine, nullptr) << k;
    EXPECT_EQ(mine->i, v.i) << k;
    EXPECT_EQ(mine->ai, v.ai) << k;
    EXPECT_NEAR(mine->f, v.f, 1e-6 * std::abs(v.f)) << k;
  }
}

TEST(Quantize, MoEAndDenseWriteAndVerify) {
  test::ScratchDir d;
  for (const std::string v : {"tiny-moe", "tiny-dense"}) {
    Model src = load_model(test::fixture(v));
    QuantizeOptions qo;
    qo.type = DType::Q8_0;
    auto rep = quantize_model(src, d.str(v + ".gguf"), qo);
    EXPECT_TRUE(rep.passed()) << rep.table();
    Model g = load_model(d.str(v + ".gguf"));
    test::Gold gold(test::fixture(v + "/gold.safetensors"));
    auto st = compare_arrays(Session(g, {Precision::F64}).eval(gold.i32("input_ids")).logits, gold.f32("logits_f64"), g.spec.vocab);
    std::printf("[%s Q8_0 by g4] vs logits_f64: %s\n", v.c_str(), st.summary().c_str());
    // Random-weight tiny models are fragile (the gold's own bf16 run is at 5e-4 / 1.4e-2
    // NMSE for dense / MoE): an 8-bit copy must stay in that range, argmax intact.
    EXPECT_LT(st.nmse, 5e-2);
    EXPECT_GE(st.argmax_equal, st.rows * 9 / 10);
  }
}

TEST(Quantize, VerifyGateRejectsACorruptedTensorAndWritesNothing) {
  test::ScratchDir d;
  Model src = load_model(test::model_dir("brown-mini"));
  QuantizeOptions qo;
  qo.recipe = "q8_0";
  qo.mutate_for_test = [](const std::string& name, std::vector<uint8_t>& bytes) {
    if (name == "blk.3.ffn_up.weight") for (size_t i = 1000; i < 1400; ++i) bytes[i] ^= 0x5a;
  };
  auto rep = quantize_model(src, d.str("bad.gguf"), qo);
  EXPECT_FALSE(rep.passed());
  EXPECT_FALSE(std::filesystem::exists(d.str("bad.gguf")));
  EXPECT_FALSE(std::filesystem::exists(d.str("bad.gguf.tmp")));
  EXPECT_NE(rep.table().find("FAIL blk.3.ffn_up.weight"), std::string::npos) << rep.table();
  qo.mutate_for_test = nullptr;
  EXPECT_TRUE(quantize_model(src, d.str("good.gguf"), qo).passed());
  EXPECT_TRUE(std::filesystem::exists(d.str("good.gguf")));
}

TEST(Quantize, RecipesMixAndRequantizeFromGguf) {
  test::ScratchDir d;
  Model src = load_model(test::model_dir("brown-mini"));
  // q4_k_m reproduces llama.cpp's choice of type for every tensor.
  QuantizeOptions km;
  km.recipe = "q4_k_m";
  GgufFile lc = read_gguf(test::fixture("gguf/brown-mini-Q4_K_M.gguf"));
  for (const auto& p : plan_quantization(src, km))
    for (const auto& t : lc.tensors)
      if (t.name == p.name) EXPECT_EQ(dtype_name(p.type), dtype_name(t.dtype)) << p.name;
  // --tensor-type overrides.
  QuantizeOptions ov;
  ov.recipe = "q4_0";
  ov.overrides.push_back(parse_override("ffn_down=q8_0"));
  for (const auto& p : plan_quantization(src, ov))
    if (p.cls == "ffn_down") EXPECT_EQ(p.type, DType::Q8_0);
  // Requantizing llama.cpp's BF16 GGUF gives the same bytes as quantizing the checkpoint.
  Model bf = load_model(test::fixture("gguf/brown-mini-bf16.gguf"));
  QuantizeOptions q8;
  q8.recipe = "q8_0";
  ASSERT_TRUE(quantize_model(bf, d.str("from-gguf.gguf"), q8).passed());
  ASSERT_TRUE(quantize_model(src, d.str("from-hf.gguf"), q8).passed());
  GgufFile a = read_gguf(d.str("from-gguf.gguf")), b = read_gguf(d.str("from-hf.gguf"));
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_EQ(a.tensors[i].name, b.tensors[i].name);
    EXPECT_EQ(std::memcmp(a.tensors[i].data, b.tensors[i].data, static_cast<size_t>(a.tensors[i].nbytes)), 0) << a.tensors[i].name;
  }
  EXPECT_THROW(parse_override("no-equals"), Error);
  EXPECT_THROW(parse_dtype("Q9_9"), Error);
}

// Quantized brown-mini (llama.cpp's and g4's): PPL on the first chunks next to bf16.
TEST(Quantize, QuantizedBrownMiniPerplexity) {
  test::ScratchDir d;
  const std::string text = read_text_file(test::fixture("brown-heldout.txt"));
  PerplexityOptions po;
  po.n_ctx = 512;
  po.max_chunks = 8;
  po.forward.precision = Precision::F32;
  Model bf16 = load_model(test::model_dir("brown-mini"));
  const double base = run_perplexity(bf16, text, po).ppl;
  std::printf("[brown-mini c=512, 8 chunks, f32] bf16 PPL %.4f\n", base);
  for (const std::string f : {"Q8_0", "Q6_K", "Q4_K_M", "Q4_0"}) {
    Model m = load_model(test::fixture("gguf/brown-mini-" + f + ".gguf"));
    const double ppl = run_perplexity(m, text, po).ppl;
    std::printf("[brown-mini c=512, 8 chunks, f32] llama.cpp %-6s PPL %.4f (%+.2f%%)\n", f.c_str(), ppl, 100 * (ppl / base - 1));
    EXPECT_LT(ppl / base - 1, 0.10) << f;
  }
  for (const std::string r : {"q8_0", "mixed-8-4", "q4_k_m", "q4_0"}) {
    QuantizeOptions qo;
    qo.recipe = r;
    ASSERT_TRUE(quantize_model(bf16, d.str(r + ".gguf"), qo).passed());
    Model m = load_model(d.str(r + ".gguf"));
    const double ppl = run_perplexity(m, text, po).ppl;
    std::printf("[brown-mini c=512, 8 chunks, f32] g4 --recipe %-9s PPL %.4f (%+.2f%%)\n", r.c_str(), ppl, 100 * (ppl / base - 1));
    EXPECT_LT(ppl / base - 1, 0.10) << r;
  }
}

}  // namespace
}  // namespace g4
