// The fast path against the reference: every kernel on random data (AVX2 and scalar),
// float weights to 1e-6 NMSE on the gold, quantized GGUFs to 0.5% PPL.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include <fmt/ranges.h>

#include "kernels/fast.h"
#include "kernels/ops.h"
#include "kernels/quantize.h"
#include "model/gemma4.h"
#include "test_util.h"
#include "tools/metrics.h"
#include "tools/perplexity.h"
#include "util/mapped_file.h"

namespace g4 {
namespace {

TEST(FastKernels, EveryTypeMatchesTheReferenceMatmul) {
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0, 1);
  const int64_t in = 512, out = 24;
  std::vector<float> w(static_cast<size_t>(in * out)), x(static_cast<size_t>(11 * in));
  for (auto& v : w) v = 0.05f * n(rng);
  for (auto& v : x) v = n(rng);
  for (const std::string& isa : fast_available_isas()) {
    fast_force_isa(isa);
    for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                    DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
      auto bytes = quantize_rows(t, w.data(), out, in);
      TensorView tv;
      tv.name = "w";
      tv.dtype = t;
      tv.shape = {out, in};
      tv.data = bytes.data();
      tv.nbytes = static_cast<int64_t>(bytes.size());
      for (int64_t ntok : {1, 5, 11}) {  // decode, and batches (4-token tiles + remainder, 16-row panels)
        std::vector<float> ref(static_cast<size_t>(ntok * out)), fast(ref.size());
        ops::matmul(tv, x.data(), ntok, in, out, ref.data());
        fast_matmul(tv, x.data(), ntok, in, out, fast.data());
        const auto st = compare_arrays(fast, ref, out);
        // Float weights: f32 FMA (order only); quantized: 8-bit activations.
        const double tol = (t == DType::F32 || t == DType::F16 || t == DType::BF16) ? 1e-10 : 2e-4;
        EXPECT_LT(st.nmse, tol) << dtype_name(t) << " " << isa << " ntok " << ntok;
      }
    }
  }
  fast_force_isa("");
  std::printf("fast kernels checked: %s\n", fmt::format("{}", fmt::join(fast_available_isas(), ", ")).c_str());
}

TEST(FastKernels, AttentionAndActivationHelpersMatchTheReference) {
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0, 2);
  const int64_t hd = 136, nk = 7;  // hd: 2 register blocks of 64 plus a tail; nk: 4 keys per pass plus 3
  std::vector<float> q(hd), kv(static_cast<size_t>(nk * hd)), g(300), u(300);
  for (auto* v : {&q, &kv, &g, &u})
    for (auto& e : *v) e = n(rng);
  std::vector<const float*> rows;
  for (int64_t j = 0; j < nk; ++j) rows.push_back(&kv[j * hd]);
  for (const std::string& isa : fast_available_isas()) {
    fast_force_isa(isa);
    std::vector<float> s(nk), ref(nk);
    fast_scores(q.data(), rows.data(), nk, hd, s.data());
    for (int64_t j = 0; j < nk; ++j) {
      double d = 0;
      for (int64_t i = 0; i < hd; ++i) d += static_cast<double>(q[i]) * kv[j * hd + i];
      ref[j] = static_cast<float>(d);
      EXPECT_NEAR(s[j], ref[j], 1e-4 * (1 + std::fabs(ref[j]))) << isa;
    }
    std::vector<float> p = s, pref = s;
    fast_softmax(p.data(), nk);
    ops::softmax(pref.data(), nk, false);
    for (int64_t j = 0; j < nk; ++j) EXPECT_NEAR(p[j], pref[j], 1e-6 * (1 + pref[j])) << isa;
    std::vector<float> o(hd);
    fast_weighted_sum(p.data(), rows.data(), nk, hd, o.data());
    for (int64_t i = 0; i < hd; ++i) {
      double d = 0;
      for (int64_t j = 0; j < nk; ++j) d += static_cast<double>(p[j]) * kv[j * hd + i];
      EXPECT_NEAR(o[i], d, 1e-5) << isa;
    }
    std::vector<float> gl = g;
    fast_gelu_tanh_mul(gl.data(), u.data(), 300);
    for (size_t i = 0; i < g.size(); ++i) {
      const double r = ops::gelu_tanh(static_cast<double>(g[i])) * u[i];
      EXPECT_NEAR(gl[i], r, 1e-6 * (1 + std::fabs(r))) << isa << " gelu at " << g[i];
    }
  }
  fast_force_isa("");
}

TEST(FastPath, FloatWeightsWithin1e6OfTheGold) {
  for (const std::string v : {"tiny-e", "tiny-dense", "tiny-moe"}) {
    Model m = load_model(test::fixture("gguf/" + v + "-f32.gguf"));
    test::Gold gold(test::fixture(v + "/gold.safetensors"));
    auto out = Session(m, {Precision::Fast}).eval(gold.i32("input_ids"));
    auto st = compare_arrays(out.logits, gold.f32("logits_f64"), m.spec.vocab);
    std::printf("[%s-f32.gguf] fast vs logits_f64: %s\n", v.c_str(), st.summary().c_str());
    EXPECT_LE(st.nmse, 1e-6);
    EXPECT_EQ(st.argmax_equal, st.rows);
  }
  Model bm = load_model(test::model_dir("brown-mini"));
  test::Gold gold(test::fixture("brown-mini/gold.safetensors"));
  auto out = Session(bm, {Precision::Fast}).eval(gold.i32("heldout_chunk0_ids"));
  auto st = compare_arrays(out.logits, gold.f32("heldout_chunk0_logits_f64"), bm.spec.vocab);
  std::printf("[brown-mini bf16] fast vs logits_f64: %s\n", st.summary().c_str());
  EXPECT_LE(st.nmse, 1e-6);
}

TEST(FastPath, QuantizedPerplexityWithinHalfAPercentOfTheReferencePath) {
  const std::string text = read_text_file(test::fixture("brown-heldout.txt"));
  for (const std::string f : {"Q8_0", "Q4_0", "Q4_K_M", "Q6_K"}) {
    Model m = load_model(test::fixture("gguf/brown-mini-" + f + ".gguf"));
    PerplexityOptions po;
    po.n_ctx = 512;
    po.max_chunks = 8;
    po.forward.precision = Precision::F32;
    const double ref = run_perplexity(m, text, po).ppl;
    po.forward.precision = Precision::Fast;
    const double fast = run_perplexity(m, text, po).ppl;
    std::printf("[brown-mini-%s] PPL reference path %.4f, fast path %.4f (%+.3f%%)\n", f.c_str(), ref, fast, 100 * (fast / ref - 1));
    EXPECT_LT(std::abs(fast / ref - 1), 0.005);
  }
}

}  // namespace
}  // namespace g4
