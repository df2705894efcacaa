// The block layouts of kernels/blocks.h: sizes against the dtype table, and every SIMD
// block decoder (AVX2, AVX-512, NEON, whichever this build and CPU run) and the scalar
// kernels' unpack_row against the scalar decoders, bit for bit, on random and edge-case
// blocks: d = 0, +-inf and NaN scales and minimums, subnormal and largest f16, all-0x00 and
// all-0xFF quants, minimum and maximum 6-bit scales, all-0x00 and all-0xFF blocks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/blocks.h"
#include "kernels/dequant.h"
#include "kernels/fast.h"
#include "kernels/fast_internal.h"
#include "util/half.h"

namespace g4 {
namespace {

using namespace blocks;

TEST(Blocks, StructSizesMatchTheDtypeTable) {
  int n = 0;
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K,
                  DType::Q5_K, DType::Q6_K}) {
    const bool known = visit_block_type(t, [&](auto blk) {
      using B = decltype(blk);
      EXPECT_EQ(static_cast<int64_t>(sizeof(B)), dtype_info(t).block_bytes) << dtype_name(t);
      EXPECT_EQ(B::kElems, dtype_info(t).block_elems) << dtype_name(t);
      EXPECT_EQ(B::kType, t);
      ++n;
    });
    EXPECT_TRUE(known) << dtype_name(t);
  }
  EXPECT_EQ(n, 10);
}

TEST(Blocks, HalfLoadersAgreeOnEveryValue) {
  int64_t checked = 0, bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    uint8_t b[2];
    const uint16_t v = static_cast<uint16_t>(h);
    std::memcpy(b, &v, 2);
    const float f = load_f16(b);
    if (!std::isnan(f)) {
      uint8_t back[2];
      store_f16(back, f);
      bad += std::memcmp(back, b, 2) != 0;  // every non-NaN f16 survives the round trip
    }
#if defined(__x86_64__)
    if (__builtin_cpu_supports("f16c")) {
      const float hw = load_f16_f16c(b);
      bad += !(std::isnan(f) ? std::isnan(hw) : std::memcmp(&f, &hw, 4) == 0);
    }
#endif
    ++checked;
  }
  std::printf("f16 loaders: %lld values, %lld disagreements\n", static_cast<long long>(checked), static_cast<long long>(bad));
  EXPECT_EQ(bad, 0);
}

// Edge cases, applied to one block of layout B.
template <class B>
void set_f16(uint8_t* field, uint16_t v) {
  std::memcpy(field, &v, 2);
}

// The block scale: an f16 d where the layout has one (MXFP4 has an E8M0 exponent, set to the f16's
// high byte; IQ1_M spreads its f16 over the scale words, which the quants' random bytes cover).
template <class B>
void set_d(B& b, uint16_t v) {
  if constexpr (requires { b.d; }) set_f16<B>(b.d, v);
  if constexpr (requires { b.e; }) b.e = static_cast<uint8_t>(v >> 8);
}

template <class B>
void set_min(B& b, uint16_t v) {
  if constexpr (requires { b.dmin; }) set_f16<B>(b.dmin, v);
  if constexpr (requires { b.m; }) set_f16<B>(b.m, v);
}

template <class B>
void fill_quants(B& b, uint8_t v) {
  if constexpr (requires { b.qs; }) std::memset(b.qs, v, sizeof(b.qs));
  if constexpr (requires { b.qh; }) std::memset(b.qh, v, sizeof(b.qh));
  if constexpr (requires { b.ql; }) std::memset(b.ql, v, sizeof(b.ql));
  if constexpr (requires { b.hmask; }) std::memset(b.hmask, v, sizeof(b.hmask));
}

template <class B>
void fill_scales(B& b, uint8_t v) {
  if constexpr (requires { b.scales; }) std::memset(b.scales, v, sizeof(b.scales));
}

constexpr int kCases = 16;
const char* const kCaseNames[kCases] = {
    "random, small d", "random, any f16 d", "d = 0",        "d = -0",          "d = +inf",        "d = -inf",
    "d = NaN",        "min = inf/NaN",     "d subnormal",  "d = 65504",       "quants all 0x00", "quants all 0xFF",
    "scales all 0xFF", "scales all 0x00",  "block 0x00",   "block 0xFF"};

template <class B>
void make_block(B& b, int c, std::mt19937& rng) {
  auto* bytes = reinterpret_cast<uint8_t*>(&b);
  for (size_t i = 0; i < sizeof(B); ++i) bytes[i] = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> u(-0.1f, 0.1f);
  const uint16_t small = f32_to_f16(u(rng)), small_min = f32_to_f16(u(rng));
  if (c != 1) {  // sane scales unless the case says otherwise
    set_d(b, small);
    set_min(b, small_min);
  }
  switch (c) {
    case 2: set_d(b, 0x0000); break;
    case 3: set_d(b, 0x8000); break;
    case 4: set_d(b, 0x7c00); break;
    case 5: set_d(b, 0xfc00); break;
    case 6: set_d(b, rng() % 2 ? 0x7e00 : 0x7d01); break;  // quiet and signalling
    case 7: set_min(b, rng() % 2 ? 0x7c00 : 0xfe00); break;
    case 8: set_d(b, static_cast<uint16_t>(1 + rng() % 0x3ff)); break;
    case 9: set_d(b, 0x7bff); break;
    case 10: fill_quants(b, 0x00); break;
    case 11: fill_quants(b, 0xff); break;
    case 12: fill_scales(b, 0xff); break;
    case 13: fill_scales(b, 0x00); break;
    case 14: std::memset(bytes, 0x00, sizeof(B)); break;
    case 15: std::memset(bytes, 0xff, sizeof(B)); break;
    default: break;
  }
}

bool same(float a, float b) { return std::isnan(a) ? std::isnan(b) : std::memcmp(&a, &b, 4) == 0; }

// The scalar kernels' unpack_row as floats (exact for every type but Q2_K/Q3_K, which it
// re-quantizes to int8 per 16).
void unpack_as_floats(DType t, const uint8_t* row, int64_t n, float* y) {
  fast_detail::UnpackedRow u;
  fast_detail::unpack_row(t, row, n, u);
  for (int64_t i = 0; i < n; ++i) {
    const float q = static_cast<float>(u.q[i]), s = u.s[i / 16];
    y[i] = u.has_offset ? s * q + u.c[i / 16] : q * s;
  }
}

TEST(Blocks, SimdDecodersMatchTheScalarDecodersBitForBit) {
  constexpr int64_t kN = 512;  // elements per row: AVX-512 decodes chunks of 64
  constexpr int kRows = 64;
  using Decoder = bool (*)(DType, const uint8_t*, int64_t, float*);
  const struct {
    const char* name;
    Decoder fn;
  } decoders[] = {{"avx2", fast_detail::decode_row_avx2},
                  {"avx512", fast_detail::decode_row_avx512},
                  {"neon", fast_detail::decode_row_neon},
                  {"unpack_row", [](DType t, const uint8_t* r, int64_t n, float* y) {
                     if (t == DType::Q2_K || t == DType::Q3_K) return false;
                     unpack_as_floats(t, r, n, y);
                     return true;
                   }}};
  std::mt19937 rng(24);
  int64_t compared = 0;
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K,
                  DType::Q5_K, DType::Q6_K, DType::IQ4_NL, DType::IQ4_XS, DType::MXFP4, DType::IQ2_XXS, DType::IQ2_XS,
                  DType::IQ2_S, DType::IQ3_XXS, DType::IQ3_S, DType::IQ1_S, DType::IQ1_M, DType::TQ1_0, DType::TQ2_0}) {
    visit_block_type(t, [&](auto proto) {
      using B = decltype(proto);
      constexpr int64_t kBlocks = kN / B::kElems;
      std::vector<B> row(kBlocks);
      std::vector<float> ref(kN), got(kN);
      std::string ran;
      for (int r = 0; r < kRows; ++r) {
        int cases[kBlocks];
        for (int64_t b = 0; b < kBlocks; ++b) {
          cases[b] = r < kCases ? r : static_cast<int>(rng() % kCases);  // each case whole-row once, then mixed
          make_block(row[b], cases[b], rng);
        }
        const auto* bytes = reinterpret_cast<const uint8_t*>(row.data());
        dequant_row(t, bytes, kN, ref.data());
        for (const auto& d : decoders) {
          std::fill(got.begin(), got.end(), 12345.0f);
          if (!d.fn(t, bytes, kN, got.data())) continue;
          if (r == 0) ran += std::string(" ") + d.name;
          int64_t bad = 0, first = -1;
          for (int64_t i = 0; i < kN; ++i)
            if (!same(got[i], ref[i])) {
              ++bad;
              if (first < 0) first = i;
            }
          compared += kN;
          if (bad) {
            const int64_t blk = first / B::kElems;
            ADD_FAILURE() << dtype_name(t) << " " << d.name << ": " << bad << " of " << kN << " elements differ, first at "
                          << first << " (block " << blk << ", case '" << kCaseNames[cases[blk]] << "'): " << got[first]
                          << " vs scalar " << ref[first];
          }
        }
      }
      std::printf("[%s] decoders checked against the scalar decoder:%s\n", std::string(dtype_name(t)).c_str(), ran.c_str());
    });
  }
#if defined(__aarch64__)
  std::printf("NEON kernels built with %s\n", fast_detail::neon_dot_kind());
#endif
  std::printf("block decoders: %lld elements compared (%d rows x %lld elements per type and decoder, %d edge cases)\n",
              static_cast<long long>(compared), kRows, static_cast<long long>(kN), kCases);
}

}  // namespace
}  // namespace g4
