// The fast path against the reference: every kernel on random data (AVX2 and scalar),
// float weights to 1e-6 NMSE on the gold, quantized GGUFs to 0.5% PPL.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>

#include <fmt/ranges.h>

#include "kernels/fast.h"
#include "kernels/fast_internal.h"
#include "kernels/ops.h"
#include "kernels/quantize.h"
#include "runtime/session.h"
#include "test_util.h"
#include "tools/metrics.h"
#include "tools/perplexity.h"
#include "util/mapped_file.h"

namespace g4 {
namespace {

// Q2_K/Q3_K have no quantizer here: random blocks with sane f16 scales at the end
// (Q2_K: d, dmin; Q3_K: d) are valid blocks.
std::vector<uint8_t> random_k_blocks(DType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  const auto& info = dtype_info(t);
  std::vector<uint8_t> bytes(static_cast<size_t>(rows * cols / 256 * info.block_bytes));
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  const uint16_t small = 0x2000;  // f16 0.0078
  for (size_t o = 0; o < bytes.size(); o += static_cast<size_t>(info.block_bytes)) {
    const int64_t tail = t == DType::Q2_K ? 4 : 2;
    for (int64_t k = 0; k < tail; k += 2) std::memcpy(&bytes[o + static_cast<size_t>(info.block_bytes - tail + k)], &small, 2);
  }
  return bytes;
}

// The IQ, ternary and MXFP4 types: random blocks with a sane scale (f16 0.0078; MXFP4 exponent
// 2^-8; IQ1_M's f16 spread over the top nibbles of its scale words).
std::vector<uint8_t> random_iq_blocks(DType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  const auto& info = dtype_info(t);
  const int64_t bb = info.block_bytes;
  std::vector<uint8_t> bytes(static_cast<size_t>(rows * cols / info.block_elems * bb));
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  const uint16_t small = 0x2000;
  for (size_t o = 0; o < bytes.size(); o += static_cast<size_t>(bb)) {
    uint8_t* blk = &bytes[o];
    if (t == DType::MXFP4) {
      blk[0] = 120;
    } else if (t == DType::IQ1_M) {
      for (int w = 0; w < 4; ++w) blk[48 + 2 * w + 1] = static_cast<uint8_t>((blk[48 + 2 * w + 1] & 0x0f) | (((small >> (4 * w)) & 0xf) << 4));
    } else if (t == DType::TQ1_0 || t == DType::TQ2_0) {
      std::memcpy(blk + bb - 2, &small, 2);
    } else {
      std::memcpy(blk, &small, 2);
    }
  }
  return bytes;
}

// A tensor "w" of type t over bytes.
TensorView view_of(DType t, const std::vector<uint8_t>& bytes, std::vector<int64_t> shape) {
  TensorView tv;
  tv.name = "w";
  tv.dtype = t;
  tv.shape = std::move(shape);
  tv.data = bytes.data();
  tv.nbytes = static_cast<int64_t>(bytes.size());
  return tv;
}

TEST(FastKernels, EveryTypeMatchesTheReferenceMatmul) {
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0, 1);
  const int64_t in = 512, out = 27;  // 27 rows: full and partial 8- and 16-row panels
  std::vector<float> w(static_cast<size_t>(in * out)), x(static_cast<size_t>(11 * in));
  for (auto& v : w) v = 0.05f * n(rng);
  for (auto& v : x) v = n(rng);
  for (const std::string& isa : fast_available_isas()) {
    fast_force_isa(isa);
    double worst = 0, worst_float = 0;
    for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                    DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::IQ4_NL, DType::IQ4_XS,
                    DType::MXFP4, DType::IQ2_XXS, DType::IQ2_XS, DType::IQ2_S, DType::IQ3_XXS, DType::IQ3_S, DType::IQ1_S,
                    DType::IQ1_M, DType::TQ1_0, DType::TQ2_0}) {
      const bool iq = static_cast<int>(t) >= static_cast<int>(DType::IQ2_XXS) && t != DType::BF16;
      auto bytes = t == DType::Q2_K || t == DType::Q3_K ? random_k_blocks(t, out, in, rng)
                   : iq                                 ? random_iq_blocks(t, out, in, rng)
                                                        : quantize_rows(t, w.data(), out, in);
      const TensorView tv = view_of(t, bytes, {out, in});
      for (int64_t ntok : {1, 2, 5, 11}) {  // decode, and batches (token tiles + remainder)
        std::vector<float> ref(static_cast<size_t>(ntok * out)), fast(ref.size());
        ops::matmul(tv, x.data(), ntok, in, out, ref.data());
        fast_matmul(tv, x.data(), ntok, in, out, fast.data());
        const auto st = compare_arrays(fast, ref, out);
        // Float weights: f32 FMA (order only; observed 3e-13); quantized: 8-bit activations (observed 7e-5).
        const bool is_float = t == DType::F32 || t == DType::F16 || t == DType::BF16;
        EXPECT_LT(st.nmse, is_float ? 3e-11 : 2e-4) << dtype_name(t) << " " << isa << " ntok " << ntok;
        (is_float ? worst_float : worst) = std::max(is_float ? worst_float : worst, st.nmse);
      }
    }
    std::printf("fast kernels %s: worst NMSE vs the reference matmul: quantized types %.2e (bound 2e-4), float types %.2e "
                "(bound 3e-11)\n",
                isa.c_str(), worst, worst_float);
  }
  fast_force_isa("");
}

// Float weights on AVX-512 (4 rows x 4 tokens per pass) give dot_f32_avx2's bits for every
// row and token count, so a token's result does not depend on the batch it came in.
TEST(FastKernels, FloatWeightsOnAvx512EqualAvx2BitForBit) {
  const auto isas = fast_available_isas();
  if (std::find(isas.begin(), isas.end(), "avx512vnni") == isas.end()) GTEST_SKIP() << "no AVX-512 on this CPU";
  std::mt19937 rng(11);
  std::normal_distribution<float> n(0, 1);
  int64_t compared = 0;
  for (int64_t in : {1536, 40, 7})  // whole 16-float steps, and tails of 8 and 7
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
      const int64_t out = 23;  // blocks of 4 rows and a remainder of 3
      std::vector<float> w(static_cast<size_t>(in * out)), x(static_cast<size_t>(9 * in));
      for (auto& v : w) v = n(rng);
      for (auto& v : x) v = n(rng);
      auto bytes = quantize_rows(t, w.data(), out, in);
      const TensorView tv = view_of(t, bytes, {out, in});
      for (int64_t ntok = 1; ntok <= 9; ++ntok) {
        std::vector<float> a(static_cast<size_t>(ntok * out)), b(a.size());
        fast_force_isa("avx2");
        fast_matmul(tv, x.data(), ntok, in, out, a.data());
        fast_force_isa("avx512vnni");
        fast_matmul(tv, x.data(), ntok, in, out, b.data());
        fast_force_isa("");
        for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << dtype_name(t) << " in " << in << " ntok " << ntok << " at " << i;
        compared += static_cast<int64_t>(a.size());
      }
    }
  std::printf("float weights: %lld outputs of the AVX-512 kernel equal to AVX2's bit for bit\n", static_cast<long long>(compared));
}

// Packed weights (fast_pack) through VNNI: the same bits as the unpacked panel kernel (which
// runs for 4 tokens and more) for every token count, so decode, batches and prefill agree, and
// a row's result does not depend on which tokens share its call; expert slices (row0) too.
// Through AMX (bf16 tiles for each 16 tokens of 32+ / 64+ token calls, VNNI for the rest): the tail tokens keep VNNI's
// bits, a token's result does not depend on the tokens beside it, and the AMX tokens are
// bounded against the f32 reference matmul, next to VNNI's q8 distance (printed).
TEST(FastKernels, PackedWeightsEqualThePanelKernelForEveryTokenCount) {
  const auto isas = fast_available_isas();
  if (std::find(isas.begin(), isas.end(), "avx512vnni") == isas.end()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  const bool amx = std::find(isas.begin(), isas.end(), "amx") != isas.end();
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0, 1);
  constexpr int64_t kTok = 99;
  const int64_t out = 72;  // 4.5 groups of 16 rows: the AMX pair of groups and a lone last group
  int64_t compared = 0;
  double worst_amx = 0, worst_vnni = 0;
  for (int64_t in : {512, 544})
    for (DType t : {DType::Q4_0, DType::Q5_0, DType::Q8_0, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
      if (in % 256 && (t != DType::Q4_0 && t != DType::Q5_0 && t != DType::Q8_0)) continue;
      std::vector<float> w(static_cast<size_t>(in * out)), x(static_cast<size_t>(kTok * in));
      for (auto& v : w) v = 0.05f * n(rng);
      for (auto& v : x) v = n(rng);
      auto bytes = quantize_rows(t, w.data(), out, in);
      const TensorView tv = view_of(t, bytes, {2, out / 2, in});  // a 3-D (expert) tensor: rows of both experts
      const auto packed = fast_pack(tv);
      ASSERT_TRUE(packed) << dtype_name(t);
      EXPECT_EQ(fast_pack(tv).get(), packed.get()) << "one pack per tensor";
      for (auto [row0, rows] : {std::pair<int64_t, int64_t>{0, out}, {16, 20}, {32, 40}}) {
        std::vector<float> panel(static_cast<size_t>(kTok * rows)), ref(panel.size());
        fast_matmul(tv, x.data(), kTok, in, rows, panel.data(), row0);
        TensorView slice = tv;
        slice.shape = {rows, in};
        slice.data = tv.data + row0 * (tv.nbytes / out);
        ops::matmul(slice, x.data(), kTok, in, rows, ref.data());
        fast_force_isa("avx512vnni");
        for (int64_t ntok : {1, 2, 3, 8, 9, 16, 19, 35}) {
          std::vector<float> y(static_cast<size_t>(ntok * rows));
          ASSERT_TRUE(fast_matmul_packed(*packed, x.data(), ntok, in, rows, y.data(), row0));
          for (int64_t i = 0; i < ntok * rows; ++i)
            ASSERT_EQ(y[i], panel[i]) << dtype_name(t) << " in " << in << " row0 " << row0 << " ntok " << ntok << " at " << i;
          compared += ntok * rows;
        }
        worst_vnni = std::max(worst_vnni, compare_arrays(panel, ref, rows).nmse);
        fast_force_isa("");
        if (!amx) continue;
        std::vector<float> y64(static_cast<size_t>(64 * rows));
        ASSERT_TRUE(fast_matmul_packed(*packed, x.data(), 64, in, rows, y64.data(), row0));
        // AMX in bf16 from 16 tokens (Q4_K, Q6_K), 32 (Q4_0, Q5_0, Q5_K) or 64 (Q8_0); fewer stay on
        // VNNI's bits (Q4_0 at 16-31 and Q8_0 at 16-63 tokens through integer tiles, which keep them too).
        const int64_t amx_from = t == DType::Q4_K || t == DType::Q6_K ? 16 : t == DType::Q8_0 ? 64 : 32;
        for (int64_t ntok : {16, 19, 32, 35, 64, 67, 96, 99}) {
          std::vector<float> y(static_cast<size_t>(ntok * rows));
          ASSERT_TRUE(fast_matmul_packed(*packed, x.data(), ntok, in, rows, y.data(), row0));
          if (ntok < amx_from) {
            for (int64_t i = 0; i < ntok * rows; ++i)
              ASSERT_EQ(y[i], panel[i]) << dtype_name(t) << " below AMX's bf16 size, ntok " << ntok << " at " << i;
            continue;
          }
          for (int64_t i = 0; i < std::min<int64_t>(ntok / 16 * 16, 64) * rows; ++i)
            ASSERT_EQ(y[i], y64[i]) << dtype_name(t) << ": AMX token depends on its neighbours, ntok " << ntok;
          for (int64_t i = ntok / 16 * 16 * rows; i < ntok * rows; ++i) ASSERT_EQ(y[i], panel[i]) << "tail token off VNNI's bits";
          const int64_t n_amx = ntok / 16 * 16 * rows;
          const double e = compare_arrays(std::span(y).first(n_amx), std::span(ref).first(n_amx), rows).nmse;
          // bf16 weights and activations, f32 sums (and q8 on a partial group): observed 1.2e-5 (VNNI: 2.9e-5).
          EXPECT_LT(e, 1e-4) << dtype_name(t) << " in " << in << " row0 " << row0 << " ntok " << ntok;
          worst_amx = std::max(worst_amx, e);
          compared += ntok * rows;
        }
      }
      std::vector<float> y(static_cast<size_t>(out));
      EXPECT_FALSE(fast_matmul_packed(*packed, x.data(), 1, in, 8, y.data(), 8)) << "row0 off the 16-row groups";
      fast_force_isa("avx2");
      EXPECT_FALSE(fast_matmul_packed(*packed, x.data(), 1, in, out, y.data(), 0)) << "another ISA forced";
      EXPECT_FALSE(fast_pack(tv)) << "no pack below AVX-512 VNNI";
      fast_force_isa("");
    }
  std::printf("packed Q4_0/Q5_0/Q8_0/Q4_K/Q5_K/Q6_K: %lld outputs checked; VNNI equal to the panel kernel bit for bit (1..35 "
              "tokens), NMSE vs the f32 reference %.2e; AMX bf16 tiles (16..99 tokens) %s%.2e (bound 1e-4)\n",
              static_cast<long long>(compared), worst_vnni, amx ? "" : "(no AMX on this CPU) ", worst_amx);
}

// Resident bytes of this process's maps of `path` (/proc/self/smaps), or -1 when unreadable.
int64_t resident_bytes_of(const std::string& path) {
  std::ifstream in("/proc/self/smaps");
  if (!in) return -1;
  int64_t kb = 0;
  bool ours = false;
  for (std::string line; std::getline(in, line);) {
    if (line.find('-') < line.find(' ') && line.find(' ') != std::string::npos) ours = line.size() >= path.size() && line.ends_with(path);
    else if (ours && line.rfind("Rss:", 0) == 0) kb += std::stoll(line.substr(4));
  }
  return kb * 1024;
}

// A packed tensor's file pages leave the process (they were held twice: 12b Q8_0 peak RSS
// 24.2 GB for a 12.7 GB file), while the file still reads the same bytes through the map.
TEST(FastKernels, PackingAMappedTensorReleasesItsFilePages) {
  const auto isas = fast_available_isas();
  if (std::find(isas.begin(), isas.end(), "avx512vnni") == isas.end()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  std::mt19937 rng(11);
  std::normal_distribution<float> n(0, 1);
  const int64_t out = 512, in = 1024;  // 544 KiB of Q8_0
  std::vector<float> w(static_cast<size_t>(out * in)), x(static_cast<size_t>(in));
  for (auto& v : w) v = 0.05f * n(rng);
  for (auto& v : x) v = n(rng);
  const auto bytes = quantize_rows(DType::Q8_0, w.data(), out, in);
  const std::string path = ::testing::TempDir() + "g4_release_test.bin";
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  auto file = MappedFile::open(path);
  TensorView tv = view_of(DType::Q8_0, bytes, {out, in});
  tv.data = file->data();
  tv.file = file;
  int64_t sum = 0;
  for (size_t i = 0; i < bytes.size(); i += 4096) sum += file->data()[i];  // every page in
  const int64_t before = resident_bytes_of(path);
  if (before < 0) GTEST_SKIP() << "no /proc/self/smaps";
  const auto packed = fast_pack(tv);
  ASSERT_TRUE(packed);
  const int64_t after = resident_bytes_of(path);
  std::printf("mapped Q8_0 tensor (%zu bytes): resident %lld bytes before packing, %lld after (sum %lld)\n", bytes.size(),
              static_cast<long long>(before), static_cast<long long>(after), static_cast<long long>(sum));
  EXPECT_GE(before, static_cast<int64_t>(bytes.size()) / 4096 * 4096);
  EXPECT_EQ(after, 0) << "every page the tensor touches leaves the process";
  EXPECT_EQ(std::memcmp(file->data(), bytes.data(), bytes.size()), 0) << "the map reads the file's bytes again";
  std::vector<float> y(static_cast<size_t>(out)), ref(y.size());
  ASSERT_TRUE(fast_matmul_packed(*packed, x.data(), 1, in, out, y.data()));
  const auto from_memory = fast_pack(view_of(DType::Q8_0, bytes, {out, in}));
  ASSERT_TRUE(from_memory && fast_matmul_packed(*from_memory, x.data(), 1, in, out, ref.data()));
  EXPECT_EQ(y, ref) << "the pack of the mapped bytes equals the pack of the bytes";
  // An in-memory file keeps its bytes (nothing behind them to read again).
  auto mem = MappedFile::from_memory("mem", std::string(bytes.begin(), bytes.end()));
  mem->release(mem->data(), mem->size());
  EXPECT_EQ(std::memcmp(mem->data(), bytes.data(), bytes.size()), 0);
  std::remove(path.c_str());
}

// Activations must be quantized to the same bits on every ISA.
TEST(FastKernels, ActivationQuantizersAgreeBitForBit) {
#if !defined(__x86_64__)
  GTEST_SKIP() << "one activation quantizer on this target (scalar)";
#else
  const auto isas = fast_available_isas();
  if (std::find(isas.begin(), isas.end(), "avx2") == isas.end()) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(9);
  std::normal_distribution<float> n(0, 3);
  for (int trial = 0; trial < 200; ++trial) {
    float x[32];
    for (float& v : x) v = n(rng);
    if (trial % 4 == 1) for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16) * 0.5f;  // ties at .5
    if (trial % 4 == 2) std::fill(x, x + 32, 0.0f);
    int8_t qs[32], qv[32];
    float ds, dv;
    int32_t ss[2], sv[2];
    fast_detail::quantize_block_scalar(x, qs, ds, ss);
    fast_detail::quantize_block_avx2(x, qv, dv, sv);
    ASSERT_EQ(std::memcmp(qs, qv, 32), 0) << "trial " << trial;
    ASSERT_EQ(ds, dv);
    ASSERT_EQ(ss[0], sv[0]);
    ASSERT_EQ(ss[1], sv[1]);
  }
#endif
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
  std::vector<float> og_avx2, sg_avx2;  // the grouped weighted sum and scores on AVX2: AVX-512's must equal them
  for (const std::string& isa : fast_available_isas()) {
    fast_force_isa(isa);
    double e_scores = 0, e_softmax = 0, e_sum = 0, e_gelu = 0;  // worst error, in the units of each bound
    std::vector<float> s(nk), ref(nk);
    fast_scores(q.data(), rows.data(), nk, hd, s.data());
    for (int64_t j = 0; j < nk; ++j) {
      double d = 0;
      for (int64_t i = 0; i < hd; ++i) d += static_cast<double>(q[i]) * kv[j * hd + i];
      ref[j] = static_cast<float>(d);
      EXPECT_NEAR(s[j], ref[j], 5e-5 * (1 + std::fabs(ref[j]))) << isa;
      e_scores = std::max(e_scores, static_cast<double>(std::fabs(s[j] - ref[j]) / (1 + std::fabs(ref[j]))));
    }
    std::vector<float> p = s, pref = s;
    fast_softmax(p.data(), nk);
    ops::softmax(pref.data(), nk, false);
    for (int64_t j = 0; j < nk; ++j) {
      EXPECT_NEAR(p[j], pref[j], 1e-6 * (1 + pref[j])) << isa;
      e_softmax = std::max(e_softmax, static_cast<double>(std::fabs(p[j] - pref[j]) / (1 + pref[j])));
    }
    std::vector<float> o(hd);
    fast_weighted_sum(p.data(), rows.data(), nk, hd, o.data());
    for (int64_t i = 0; i < hd; ++i) {
      double d = 0;
      for (int64_t j = 0; j < nk; ++j) d += static_cast<double>(p[j]) * kv[j * hd + i];
      EXPECT_NEAR(o[i], d, 3e-6) << isa;
      e_sum = std::max(e_sum, std::fabs(o[i] - d));
    }
    std::vector<float> gl = g;
    fast_gelu_tanh_mul(gl.data(), u.data(), 300);
    for (size_t i = 0; i < g.size(); ++i) {
      const double r = ops::gelu_tanh(static_cast<double>(g[i])) * u[i];
      EXPECT_NEAR(gl[i], r, 1e-6 * (1 + std::fabs(r))) << isa << " gelu at " << g[i];
      e_gelu = std::max(e_gelu, std::fabs(gl[i] - r) / (1 + std::fabs(r)));
    }
    // Grouped-query attention: 6 heads on one KV head (AVX-512 takes 4 at a time) give each
    // head's single-head numbers, and the weighted sums of AVX2 and AVX-512 agree bit for bit.
    {
      constexpr int64_t G = 6;
      std::vector<float> qg(static_cast<size_t>(G * hd)), sg(static_cast<size_t>(G * nk)), og(static_cast<size_t>(G * hd));
      std::mt19937 rq(11);
      for (auto& e : qg) e = n(rq);
      fast_scores_group(qg.data(), hd, G, rows.data(), nk, hd, sg.data(), nk);
      // Keys split over calls at a multiple of 4 (the tiled attention's blocks): one call's bits.
      std::vector<float> split(sg.size());
      fast_scores_group(qg.data(), hd, G, rows.data(), 4, hd, split.data(), nk);
      fast_scores_group(qg.data(), hd, G, rows.data() + 4, nk - 4, hd, split.data() + 4, nk);
      for (size_t i = 0; i < sg.size(); ++i) ASSERT_EQ(split[i], sg[i]) << isa << " scores split at 4, " << i;
      // AVX2 takes 2 heads per pass, AVX-512 4 (and the last 2 alone): the same chains, the same bits.
      if (isa == "avx2") sg_avx2 = sg;
      if ((isa == "avx512vnni" || isa == "amx") && !sg_avx2.empty()) {
        for (size_t i = 0; i < sg.size(); ++i) ASSERT_EQ(sg[i], sg_avx2[i]) << isa << " scores vs avx2 at " << i;
      }
      for (int64_t h = 0; h < G; ++h) fast_softmax(sg.data() + h * nk, nk);
      fast_weighted_sum_group(sg.data(), nk, G, rows.data(), nk, hd, og.data(), hd);
      // Rows split over calls, the second accumulating: one call's bits.
      std::vector<float> acc(og.size(), std::numeric_limits<float>::quiet_NaN());
      fast_weighted_sum_group(sg.data(), nk, G, rows.data(), 3, hd, acc.data(), hd);
      fast_weighted_sum_group(sg.data() + 3, nk, G, rows.data() + 3, nk - 3, hd, acc.data(), hd, /*accumulate=*/true);
      for (size_t i = 0; i < og.size(); ++i) ASSERT_EQ(acc[i], og[i]) << isa << " weighted sum split at 3, " << i;
      if (isa == "avx2") og_avx2 = og;
      if ((isa == "avx512vnni" || isa == "amx") && !og_avx2.empty()) {
        std::vector<float> o2(og.size());
        fast_force_isa("avx2");
        fast_weighted_sum_group(sg.data(), nk, G, rows.data(), nk, hd, o2.data(), hd);
        fast_force_isa(isa);
        for (size_t i = 0; i < og.size(); ++i) ASSERT_EQ(og[i], o2[i]) << isa << " weighted sum vs avx2 at " << i;
      }
      for (int64_t h = 0; h < G; ++h) {
        std::vector<float> s1(nk), o1(hd);
        fast_scores(qg.data() + h * hd, rows.data(), nk, hd, s1.data());
        fast_softmax(s1.data(), nk);
        fast_weighted_sum(s1.data(), rows.data(), nk, hd, o1.data());
        for (int64_t j = 0; j < nk; ++j) EXPECT_EQ(sg[h * nk + j], s1[j]) << isa << " head " << h;
        for (int64_t i = 0; i < hd; ++i) EXPECT_EQ(og[h * hd + i], o1[i]) << isa << " head " << h;
      }
    }
    // Softcap of logits (c = 30) over -1000..1000: absolute error, as logits are compared.
    double e_cap = 0;
    std::vector<float> z(4001);
    for (size_t i = 0; i < z.size(); ++i) z[i] = -1000.0f + 0.5f * static_cast<float>(i) + 0.1f * g[i % g.size()];
    z[17] = std::numeric_limits<float>::quiet_NaN();  // non-finite values must survive (the NaN check downstream)
    z[18] = std::numeric_limits<float>::infinity();
    std::vector<float> zc = z;
    fast_softcap(zc.data(), static_cast<int64_t>(zc.size()), 30.0f);
    EXPECT_TRUE(std::isnan(zc[17])) << isa;
    EXPECT_EQ(zc[18], 30.0f) << isa;
    z[17] = zc[17] = 0.0f;
    for (size_t i = 0; i < z.size(); ++i) {
      const double r = 30.0 * std::tanh(static_cast<double>(z[i]) / 30.0);
      EXPECT_NEAR(zc[i], r, 2e-5) << isa << " softcap at " << z[i];
      e_cap = std::max(e_cap, std::fabs(zc[i] - r));
    }
    std::printf("fast helpers %s: worst error scores %.1e (bound 5e-5), softmax %.1e (1e-6), weighted sum %.1e (3e-6), "
                "gelu*u %.1e (1e-6), softcap %.1e (2e-5 absolute)\n",
                isa.c_str(), e_scores, e_softmax, e_sum, e_gelu, e_cap);
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
    for (const std::string& isa : fast_available_isas()) {
      if (isa == "scalar") continue;  // the scalar kernels are checked above; a PPL run there is slow
      fast_force_isa(isa);
      const double fast = run_perplexity(m, text, po).ppl;
      std::printf("[brown-mini-%s] PPL reference path %.4f, fast path %s %.4f (%+.3f%%)\n", f.c_str(), ref, isa.c_str(), fast,
                  100 * (fast / ref - 1));
      EXPECT_LT(std::abs(fast / ref - 1), 0.005) << isa;
    }
    fast_force_isa("");
  }
}

}  // namespace
}  // namespace g4
