// AVX2 matmul for quantized weights (no VNNI: uint8 x int8 products with vpmaddubsw).
//
// Decode (few tokens): Q8_0, Q4_0, Q4_K, Q5_K and Q6_K rows are expanded in registers and streamed
// with a software prefetch; the other types are unpacked to int8 row by row.
//
// Prefill: a panel of 8 rows is unpacked and interleaved so that one 32-byte vector holds
// 4 consecutive weights of each of the 8 rows; vpmaddubsw against 4 broadcast activation
// bytes advances 8 row dots at once. Weights are stored as uint8 with a zero point small
// enough (Q4_0 8, Q5_0 16, Q6_K 32) that the int16 pair sums cannot saturate, and several
// slices are summed in int16 before widening. The types with full int8 range (Q8_0, Q2_K,
// Q3_K) stay signed and use |w| x sign(x, w), as llama.cpp does. Tiles are 8 rows x 4 tokens.
//
// x86-64 only (the whole file); block offsets and sizes come from kernels/blocks.h.
#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/blocks.h"
#include "kernels/dequant.h"
#include "kernels/fast_internal.h"
#include "util/half.h"

#define G4_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace g4::fast_detail {
namespace {

using namespace blocks;

G4_AVX2 inline float half_at(const uint8_t* p) { return load_f16_f16c(p); }

// Decode streams weights from DRAM: read 4 KiB ahead (see fast_avx512.cc).
constexpr int kPrefetchBytes = 4096;

G4_AVX2 inline void prefetch(const uint8_t* p) { _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetchBytes, _MM_HINT_T0); }

// Signed int8 dot of 32 pairs, as 8 int32 lanes (lanes 0-3: elements 0-15, 4-7: 16-31).
G4_AVX2 inline __m256i dot_i8_lanes(__m256i w, __m256i x) {
  const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
  return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

G4_AVX2 inline __m256i load32(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// ---- decode: one row against one token ----

// Block decoders of the common types: block b (32 weights) of a row as 32 bytes in element
// order, q + zero_point unsigned (signed for the wide Q8_0), its scale and minimum. The
// decode dots and the panel builder share them.
struct BlockQ4_0 {
  static constexpr DType kType = DType::Q4_0;
  static constexpr bool kMin = false, kWide = false;
  static constexpr int kZeroPoint = 8, kBytes = sizeof(block_q4_0);
  G4_AVX2 static __m256i decode(const uint8_t* row, int64_t b, float& s, float&) {
    const block_q4_0& p = *block_at<block_q4_0>(row, b);
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p.qs)), mask = _mm_set1_epi8(0x0f);
    s = half_at(p.d);
    return _mm256_setr_m128i(_mm_and_si128(raw, mask), _mm_and_si128(_mm_srli_epi16(raw, 4), mask));  // q + 8
  }
};

struct BlockQ8_0 {
  static constexpr DType kType = DType::Q8_0;
  static constexpr bool kMin = false, kWide = true;
  static constexpr int kZeroPoint = 0, kBytes = sizeof(block_q8_0);
  G4_AVX2 static __m256i decode(const uint8_t* row, int64_t b, float& s, float&) {
    const block_q8_0& p = *block_at<block_q8_0>(row, b);
    s = half_at(p.d);
    return load32(p.qs);  // signed (a wide type)
  }
};

// IQ4_NL, MXFP4 (a 16-entry codebook per nibble: one vpshufb per 16 bytes) and IQ4_XS (the same
// codebook as IQ4_NL, a 6-bit scale per 32 in a 256-block). Signed values (wide: IQ4's reach -127).
G4_AVX2 inline __m256i decode_nibbles_lut(const uint8_t* qs, const int8_t* lut) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)), mask = _mm_set1_epi8(0x0f);
  const __m128i table = _mm_loadu_si128(reinterpret_cast<const __m128i*>(lut));
  return _mm256_setr_m128i(_mm_shuffle_epi8(table, _mm_and_si128(raw, mask)),
                           _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(raw, 4), mask)));
}

struct BlockIQ4_NL {
  static constexpr DType kType = DType::IQ4_NL;
  static constexpr bool kMin = false, kWide = true;
  static constexpr int kZeroPoint = 0, kBytes = sizeof(block_iq4_nl);
  G4_AVX2 static __m256i decode(const uint8_t* row, int64_t b, float& s, float&) {
    const block_iq4_nl& p = *block_at<block_iq4_nl>(row, b);
    s = half_at(p.d);
    return decode_nibbles_lut(p.qs, kvalues_iq4nl);
  }
};

struct BlockMXFP4 {
  static constexpr DType kType = DType::MXFP4;
  static constexpr bool kMin = false, kWide = true;
  static constexpr int kZeroPoint = 0, kBytes = sizeof(block_mxfp4);
  G4_AVX2 static __m256i decode(const uint8_t* row, int64_t b, float& s, float&) {
    const block_mxfp4& p = *block_at<block_mxfp4>(row, b);
    s = e8m0_to_fp32_half(p.e);
    return decode_nibbles_lut(p.qs, kvalues_mxfp4);
  }
};

struct BlockIQ4_XS {
  static constexpr DType kType = DType::IQ4_XS;
  static constexpr bool kMin = false, kWide = true;
  static constexpr int kZeroPoint = 0, kBytes = sizeof(block_iq4_xs) / 8;
  G4_AVX2 static __m256i decode(const uint8_t* row, int64_t b, float& s, float&) {
    const block_iq4_xs& p = *block_at<block_iq4_xs>(row, b / 8);
    const int j = static_cast<int>(b % 8);
    s = half_at(p.d) * static_cast<float>(iq4_xs_scale(p, j) - 32);
    return decode_nibbles_lut(p.qs + 16 * j, kvalues_iq4nl);
  }
};

// Q4_K and Q5_K: unsigned 4/5-bit values, a 6-bit scale and minimum per 32 (Q5_K: the
// fifth bit of element l of block j is bit j of qh[l]).
template <bool kFive>
struct BlockQK {
  using B = std::conditional_t<kFive, block_q5_k, block_q4_k>;
  static constexpr DType kType = B::kType;
  static constexpr bool kMin = true, kWide = false;
  static constexpr int kZeroPoint = 0, kBytes = sizeof(B) / 8;
  G4_AVX2 static __m256i decode(const uint8_t* row, int64_t b, float& s, float& m) {
    const B& p = *block_at<B>(row, b / 8);
    const int j = static_cast<int>(b % 8);
    uint8_t ls, lm;
    scale_min_k4(j, p.scales, ls, lm);
    s = half_at(p.d) * ls;
    m = -half_at(p.dmin) * lm;
    const __m256i raw = load32(p.qs + 32 * (j / 2));
    __m256i q = _mm256_and_si256(j % 2 ? _mm256_srli_epi16(raw, 4) : raw, _mm256_set1_epi8(0x0f));
    if constexpr (kFive) {
      const __m256i bit = _mm256_set1_epi8(static_cast<char>(1 << j));
      q = _mm256_or_si256(q, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(load32(p.qh), bit), bit),
                                              _mm256_set1_epi8(16)));
    }
    return q;
  }
};

// One row against token t, block by block (the activations carry -zp * sum(x) in corr).
template <class D>
G4_AVX2 float dot_blocks(const uint8_t* row, const Acts& a, int64_t t) {
  __m256 acc = _mm256_setzero_ps();
  float off = 0;
  const int8_t* x = a.tok(t);
  for (int64_t b = 0; b < a.n_in / QK; ++b) {
    prefetch(row + b * D::kBytes);
    float s = 0, m = 0;
    const __m256i w = D::decode(row, b, s, m), xb = load32(x + QK * b);
    __m256i p32;
    if constexpr (D::kWide) {
      p32 = dot_i8_lanes(w, xb);
    } else {
      p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(w, xb), _mm256_set1_epi16(1));  // w is unsigned
      if constexpr (D::kZeroPoint != 0) p32 = _mm256_add_epi32(p32, _mm256_zextsi128_si256(_mm_cvtsi32_si128(a.corr[a.at(t, b)])));
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_set1_ps(s * a.d[a.at(t, b)]), acc);
    if constexpr (D::kMin) off += m * a.sx[a.at(t, b)];
  }
  return hsum256(acc) + off;
}

// Q6_K: 6-bit values from a low nibble (ql) and 2 high bits (qh), a signed scale per 16.
// Half n (128 elements) of a block as 4 vectors of 32 signed values: elements 0-31, 32-63,
// 64-95, 96-127 are the low nibbles of ql[0..31], ql[32..63], then the high nibbles, with qh
// bits 0-1, 2-3, 4-5, 6-7.
G4_AVX2 inline void decode_q6_k_half(const block_q6_k& blk, int n, __m256i q[4]) {
  const __m256i nib = _mm256_set1_epi8(0x0f), two = _mm256_set1_epi8(3), bias = _mm256_set1_epi8(32);
  const __m256i ql0 = load32(blk.ql + 64 * n), ql1 = load32(blk.ql + 64 * n + 32), qh = load32(blk.qh + 32 * n);
  const __m256i lo[4] = {_mm256_and_si256(ql0, nib), _mm256_and_si256(ql1, nib),
                         _mm256_and_si256(_mm256_srli_epi16(ql0, 4), nib), _mm256_and_si256(_mm256_srli_epi16(ql1, 4), nib)};
  for (int i = 0; i < 4; ++i) {
    const __m256i hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * i), two), 4);
    q[i] = _mm256_sub_epi8(_mm256_or_si256(lo[i], hi), bias);
  }
}

G4_AVX2 float dot_q6_k(const uint8_t* w, const Acts& a, int64_t t) {
  __m256 acc = _mm256_setzero_ps();
  const int8_t* x = a.tok(t);
  for (int64_t sb = 0; sb < a.n_in / QK_K; ++sb, w += sizeof(block_q6_k)) {
    for (int k = 0; k < 4; ++k) prefetch(w + 64 * k);
    const block_q6_k& qb = *block_at<block_q6_k>(w, 0);
    const float d = half_at(qb.d);
    const int8_t* sc = qb.scales;
    for (int n = 0; n < 2; ++n) {  // two halves of 128 elements
      __m256i qv[4];
      decode_q6_k_half(qb, n, qv);
      for (int i = 0; i < 4; ++i) {
        const __m256i q = qv[i];
        const int64_t blk = sb * 8 + 4 * n + i;
        const int g = 8 * n + 2 * i;  // the 16-element groups of this 32-block
        const __m256 scale = _mm256_mul_ps(_mm256_set1_ps(d * a.d[a.at(t, blk)]),
                                           _mm256_setr_m128(_mm_set1_ps(sc[g]), _mm_set1_ps(sc[g + 1])));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_i8_lanes(q, load32(x + QK * blk))), scale, acc);
      }
    }
  }
  return hsum256(acc);
}

// Any unpacked row (scales per 16, offsets per 32) against one token.
G4_AVX2 float dot_unpacked(const UnpackedRow& u, const Acts& a, int64_t t) {
  __m256 acc = _mm256_setzero_ps();
  float off = 0;
  const int8_t* x = a.tok(t);
  for (int64_t b = 0; b < a.n_in / QK; ++b) {
    const __m256i p32 = dot_i8_lanes(load32(u.q.data() + QK * b), load32(x + QK * b));
    const __m256 scale = _mm256_mul_ps(_mm256_set1_ps(a.d[a.at(t, b)]),
                                       _mm256_setr_m128(_mm_set1_ps(u.s[2 * b]), _mm_set1_ps(u.s[2 * b + 1])));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), scale, acc);
    if (u.has_offset) off += u.c[2 * b] * a.sx[a.at(t, b)];
  }
  return hsum256(acc) + off;
}

using FusedDot = float (*)(const uint8_t*, const Acts&, int64_t);

FusedDot fused_dot(DType t) {
  switch (t) {
    case DType::Q8_0: return dot_blocks<BlockQ8_0>;
    case DType::Q4_0: return dot_blocks<BlockQ4_0>;
    case DType::Q4_K: return dot_blocks<BlockQK<false>>;
    case DType::Q5_K: return dot_blocks<BlockQK<true>>;
    case DType::Q6_K: return dot_q6_k;
    case DType::IQ4_NL: return dot_blocks<BlockIQ4_NL>;
    case DType::IQ4_XS: return dot_blocks<BlockIQ4_XS>;
    case DType::MXFP4: return dot_blocks<BlockMXFP4>;
    default: return nullptr;
  }
}

// ---- prefill: 8-row panels ----

// The uint8 weight is q + zero_point (see the file comment); the activations carry -zp * sum(x).
constexpr int zero_point(DType t) {
  switch (t) {
    case DType::Q4_0: return 8;
    case DType::Q5_0: return 16;
    case DType::Q6_K: return 32;
    default: return 0;  // types with a minimum are unsigned already; the wide types stay signed
  }
}

static_assert(BlockQ4_0::kZeroPoint == zero_point(DType::Q4_0) && BlockQK<false>::kZeroPoint == zero_point(DType::Q4_K) &&
              BlockQK<true>::kZeroPoint == zero_point(DType::Q5_K) && BlockQ8_0::kZeroPoint == zero_point(DType::Q8_0));

// Full int8 range: |w| * 127 * 2 would saturate vpmaddubsw's int16 pair sums as uint8. The IQ,
// ternary and MXFP4 types are signed codebook values without a zero point: the same path.
constexpr bool is_wide(DType t) {
  return t == DType::Q8_0 || t == DType::Q2_K || t == DType::Q3_K ||
         (is_quantized(t) && !has_min(t) && zero_point(t) == 0 && t != DType::Q4_1 && t != DType::Q5_1);
}

// Slices (4 weights per row) whose int16 pair sums can be added before widening to int32:
// each pair sum is at most 2 * 127 * max(q + zp).
constexpr int int16_group(DType t) {
  if (is_wide(t)) return 1;
  const int max_q = t == DType::Q6_K ? 63 : (t == DType::Q5_0 || t == DType::Q5_1 || t == DType::Q5_K) ? 31 : 15;
  const int slices = t == DType::Q6_K ? 4 : 8;  // per scale block
  return std::min(32767 / (2 * 127 * max_q), slices);
}

constexpr int kPanelRows = 8;
constexpr int kTileTokens = 4;

// Per scale block: bs/4 vectors of 32 bytes (lane r: 4 consecutive weights of row r),
// 8 scales, and (types with a minimum) 8 minimums.
int64_t panel_unit(int bs, bool min) { return bs / 4 * 32 + 32 + (min ? 32 : 0); }

void build_panel(DType t, const uint8_t* rows_src, int64_t row_bytes, int64_t rows, int64_t n_in, UnpackedRow& u,
                 uint8_t* panel) {
  const int bs = scale_block(t);
  const bool min = has_min(t);
  const int64_t unit = panel_unit(bs, min), n_blocks = n_in / bs;
  const int zp = zero_point(t);
  if (rows < kPanelRows) std::memset(panel, 0, static_cast<size_t>(n_blocks * unit));
  for (int64_t r = 0; r < rows; ++r) {
    unpack_row(t, rows_src + r * row_bytes, n_in, u);
    for (int64_t b = 0; b < n_blocks; ++b) {
      uint8_t* p = panel + b * unit;
      const int8_t* q = u.q.data() + b * bs;
      for (int sl = 0; sl < bs / 4; ++sl)
        for (int k = 0; k < 4; ++k) p[32 * sl + 4 * r + k] = static_cast<uint8_t>(q[4 * sl + k] + zp);
      float* s = reinterpret_cast<float*>(p + bs / 4 * 32);
      s[r] = u.s[static_cast<size_t>(b * bs / 16)];
      if (min) s[8 + r] = u.c[static_cast<size_t>(b * bs / 16)];
    }
  }
}

// In-place transpose of an 8 x 8 matrix of dwords (v[i] is row i).
G4_AVX2 inline void transpose8x8(__m256i* v) {
  __m256i t[8], u[8];
  for (int k = 0; k < 4; ++k) {
    t[2 * k] = _mm256_unpacklo_epi32(v[2 * k], v[2 * k + 1]);
    t[2 * k + 1] = _mm256_unpackhi_epi32(v[2 * k], v[2 * k + 1]);
  }
  for (int k = 0; k < 2; ++k) {  // lane l of u[4k+m]: rows 4k..4k+3 of column 4l+m
    u[4 * k] = _mm256_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
    u[4 * k + 1] = _mm256_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
    u[4 * k + 2] = _mm256_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
    u[4 * k + 3] = _mm256_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
  }
  for (int m = 0; m < 4; ++m) {
    v[m] = _mm256_permute2x128_si256(u[m], u[4 + m], 0x20);
    v[4 + m] = _mm256_permute2x128_si256(u[m], u[4 + m], 0x31);
  }
}

// The panel of `n_rows` rows (the rest zero) of a block-decoded type, block by block: 8 rows are
// decoded in registers and transposed, with no unpacked copy.
template <class D>
G4_AVX2 void build_panel_fused(const uint8_t* rows, int64_t rb, int64_t n_rows, int64_t n_in, uint8_t* panel) {
  const int64_t unit = panel_unit(QK, D::kMin);
  for (int64_t b = 0; b < n_in / QK; ++b) {
    uint8_t* p = panel + b * unit;
    float* scale = reinterpret_cast<float*>(p + 8 * 32);
    __m256i v[8];
    for (int64_t r = 0; r < kPanelRows; ++r) {
      float s = 0, m = 0;
      v[r] = r < n_rows ? D::decode(rows + r * rb, b, s, m) : _mm256_setzero_si256();
      scale[r] = s;
      if constexpr (D::kMin) scale[8 + r] = m;
    }
    transpose8x8(v);
    for (int sl = 0; sl < 8; ++sl) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 32 * sl), v[sl]);
  }
}

using BuildPanel = void (*)(const uint8_t*, int64_t, int64_t, int64_t, uint8_t*);

BuildPanel fused_panel(DType t) {
  switch (t) {
    case DType::Q4_0: return build_panel_fused<BlockQ4_0>;
    case DType::Q8_0: return build_panel_fused<BlockQ8_0>;
    case DType::Q4_K: return build_panel_fused<BlockQK<false>>;
    case DType::Q5_K: return build_panel_fused<BlockQK<true>>;
    case DType::IQ4_NL: return build_panel_fused<BlockIQ4_NL>;
    case DType::IQ4_XS: return build_panel_fused<BlockIQ4_XS>;
    case DType::MXFP4: return build_panel_fused<BlockMXFP4>;
    default: return nullptr;
  }
}

// out[k * 8 + r] = row r . token (t0 + k), for the 8 rows of a panel and T tokens.
template <int T, int BS, bool MIN, bool WIDE, int GROUP>
G4_AVX2 void panel_8xT(const uint8_t* panel, const Acts& a, int64_t t0, float* out) {
  constexpr int kSlices = BS / 4;
  const int64_t unit = panel_unit(BS, MIN);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[T];
  for (auto& v : acc) v = _mm256_setzero_ps();
  const int8_t* xq = a.tok(t0);
  for (int64_t b = 0; b < a.n_blocks; ++b) {
    const uint8_t* p = panel + b * unit;
    const int8_t* xb = xq + b * BS;
    __m256i dot[T];
    for (int k = 0; k < T; ++k) dot[k] = _mm256_set1_epi32(a.corr[a.at(t0 + k, b)]);
    for (int g = 0; g < kSlices; g += GROUP) {
      __m256i sum16[T];
      for (auto& v : sum16) v = _mm256_setzero_si256();
      for (int sl = g; sl < g + GROUP; ++sl) {
        const __m256i w = load32(p + 32 * sl);
        const __m256i wu = WIDE ? _mm256_sign_epi8(w, w) : w;
        for (int k = 0; k < T; ++k) {
          int32_t x4;
          std::memcpy(&x4, xb + k * a.n_in + 4 * sl, 4);
          __m256i x = _mm256_set1_epi32(x4);
          if constexpr (WIDE) x = _mm256_sign_epi8(x, w);
          sum16[k] = _mm256_add_epi16(sum16[k], _mm256_maddubs_epi16(wu, x));
        }
      }
      for (int k = 0; k < T; ++k) dot[k] = _mm256_add_epi32(dot[k], _mm256_madd_epi16(sum16[k], ones));
    }
    const __m256 sw = _mm256_loadu_ps(reinterpret_cast<const float*>(p + kSlices * 32));
    for (int k = 0; k < T; ++k)
      acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[k]), _mm256_mul_ps(sw, _mm256_set1_ps(a.d[a.at(t0 + k, b)])), acc[k]);
    if constexpr (MIN) {
      const __m256 mw = _mm256_loadu_ps(reinterpret_cast<const float*>(p + kSlices * 32 + 32));
      for (int k = 0; k < T; ++k) acc[k] = _mm256_fmadd_ps(mw, _mm256_set1_ps(a.sx[a.at(t0 + k, b)]), acc[k]);
    }
  }
  for (int k = 0; k < T; ++k) _mm256_storeu_ps(out + 8 * k, acc[k]);
}

template <int BS, bool MIN, bool WIDE, int GROUP>
void panel_tile(int n, const uint8_t* panel, const Acts& a, int64_t t0, float* out) {
  switch (n) {
    case 1: return panel_8xT<1, BS, MIN, WIDE, GROUP>(panel, a, t0, out);
    case 2: return panel_8xT<2, BS, MIN, WIDE, GROUP>(panel, a, t0, out);
    case 3: return panel_8xT<3, BS, MIN, WIDE, GROUP>(panel, a, t0, out);
    default: return panel_8xT<4, BS, MIN, WIDE, GROUP>(panel, a, t0, out);
  }
}

using PanelTile = void (*)(int, const uint8_t*, const Acts&, int64_t, float*);

PanelTile panel_tile_for(DType t) {
  switch (t) {
    case DType::Q4_0: return panel_tile<32, false, false, int16_group(DType::Q4_0)>;
    case DType::Q4_1: return panel_tile<32, true, false, int16_group(DType::Q4_1)>;
    case DType::Q4_K: return panel_tile<32, true, false, int16_group(DType::Q4_K)>;
    case DType::Q5_0: return panel_tile<32, false, false, int16_group(DType::Q5_0)>;
    case DType::Q5_1: return panel_tile<32, true, false, int16_group(DType::Q5_1)>;
    case DType::Q5_K: return panel_tile<32, true, false, int16_group(DType::Q5_K)>;
    case DType::Q6_K: return panel_tile<16, false, false, int16_group(DType::Q6_K)>;
    case DType::Q8_0: return panel_tile<32, false, true, 1>;
    case DType::Q2_K: case DType::Q3_K: return panel_tile<16, false, true, 1>;
    default:  // the IQ, ternary and MXFP4 types: signed values, scales per 16 or 32
      if (!is_quantized(t)) return nullptr;
      return scale_block(t) == 16 ? panel_tile<16, false, true, 1> : panel_tile<32, false, true, 1>;
  }
}

}  // namespace

G4_AVX2 void quantize_block_avx2(const float* x, int8_t* q, float& d, int32_t sums[2]) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 v[4];
  for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(x + 8 * i);
  const __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
  d = _mm_cvtss_f32(m4) / 127.0f;
  const __m256 id = _mm256_set1_ps(d ? 1.0f / d : 0.0f);
  __m256i i32[4];
  for (int i = 0; i < 4; ++i) i32[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], id));  // nearest even, as nearbyint
  for (int h = 0; h < 2; ++h) {
    const __m256i s = _mm256_add_epi32(i32[2 * h], i32[2 * h + 1]);
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1)));
    sums[h] = _mm_cvtsi128_si32(s4);
  }
  // The packs interleave 128-bit lanes: dwords come out as 0 2 4 6 1 3 5 7 of the input.
  const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(i32[0], i32[1]), _mm256_packs_epi32(i32[2], i32[3]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                      _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

bool matmul_avx2(const TensorView& w, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y, int64_t row0) {
  if (!is_quantized(w.dtype) || n_in % QK != 0) return false;
  const int64_t rb = *row_bytes(w.dtype, n_in);
  const uint8_t* rows = w.data + row0 * rb;
  Acts& acts = scratch().acts;
  if (n_tok < kTileTokens) {
    quantize_acts(x, n_tok, n_in, zero_point(w.dtype), QK, has_min(w.dtype), quantize_block_avx2, acts);
    if (const FusedDot dot = fused_dot(w.dtype)) {
#pragma omp parallel for schedule(static)
      for (int64_t o = 0; o < n_out; ++o)
        for (int64_t t = 0; t < n_tok; ++t) y[t * n_out + o] = dot(rows + o * rb, acts, t);
      return true;
    }
#pragma omp parallel
    {
      UnpackedRow& u = scratch().row;
#pragma omp for schedule(static)
      for (int64_t o = 0; o < n_out; ++o) {
        unpack_row(w.dtype, rows + o * rb, n_in, u);
        for (int64_t t = 0; t < n_tok; ++t) y[t * n_out + o] = dot_unpacked(u, acts, t);
      }
    }
    return true;
  }
  const int bs = scale_block(w.dtype);
  quantize_acts(x, n_tok, n_in, zero_point(w.dtype), bs, has_min(w.dtype), quantize_block_avx2, acts);
  const PanelTile tile = panel_tile_for(w.dtype);
  const BuildPanel fused = fused_panel(w.dtype);
  const int64_t n_panels = (n_out + kPanelRows - 1) / kPanelRows;
#pragma omp parallel
  {
    UnpackedRow& u = scratch().row;
    uint8_t* panel = grown(scratch().panel, n_in / bs * panel_unit(bs, has_min(w.dtype)));
    alignas(32) float out[kTileTokens * kPanelRows];
#pragma omp for schedule(static)
    for (int64_t pi = 0; pi < n_panels; ++pi) {
      const int64_t first = pi * kPanelRows, n_rows = std::min<int64_t>(kPanelRows, n_out - first);
      if (fused) {
        fused(rows + first * rb, rb, n_rows, n_in, panel);
      } else {
        build_panel(w.dtype, rows + first * rb, rb, n_rows, n_in, u, panel);
      }
      for (int64_t t = 0; t < n_tok; t += kTileTokens) {
        const int nt = static_cast<int>(std::min<int64_t>(kTileTokens, n_tok - t));
        tile(nt, panel, acts, t, out);
        for (int k = 0; k < nt; ++k) std::memcpy(y + (t + k) * n_out + first, out + kPanelRows * k, static_cast<size_t>(n_rows) * 4);
      }
    }
  }
  return true;
}

namespace {

// s * (q - zero point) + m per element (q, s, m as a decoder gives them), as the scalar
// decoders compute it: the types with a minimum as s * q + m, the others as q * s.
template <class D>
G4_AVX2 void decode_blocks_as_floats(const uint8_t* row, int64_t n, float* y) {
  for (int64_t b = 0; b < n / QK; ++b) {
    float s = 0, m = 0;
    alignas(32) uint8_t q[32];
    _mm256_store_si256(reinterpret_cast<__m256i*>(q), D::decode(row, b, s, m));
    for (int j = 0; j < 32; ++j) {
      const int v = D::kWide ? static_cast<int8_t>(q[j]) : q[j] - D::kZeroPoint;
      y[QK * b + j] = D::kMin ? s * static_cast<float>(v) + m : static_cast<float>(v) * s;
    }
  }
}

G4_AVX2 void decode_q6_k_as_floats(const uint8_t* row, int64_t n, float* y) {
  for (int64_t sb = 0; sb < n / QK_K; ++sb) {
    const block_q6_k& blk = *block_at<block_q6_k>(row, sb);
    const float d = half_at(blk.d);
    for (int h = 0; h < 2; ++h) {
      __m256i qv[4];
      decode_q6_k_half(blk, h, qv);
      for (int i = 0; i < 4; ++i) {
        alignas(32) int8_t q[32];
        _mm256_store_si256(reinterpret_cast<__m256i*>(q), qv[i]);
        for (int l = 0; l < 32; ++l)
          y[QK_K * sb + 128 * h + 32 * i + l] = d * static_cast<float>(blk.scales[8 * h + 2 * i + l / 16]) * static_cast<float>(q[l]);
      }
    }
  }
}

}  // namespace

bool decode_row_avx2(DType t, const uint8_t* row, int64_t n, float* y) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !__builtin_cpu_supports("f16c")) return false;
  switch (t) {
    case DType::Q4_0: decode_blocks_as_floats<BlockQ4_0>(row, n, y); return true;
    case DType::Q8_0: decode_blocks_as_floats<BlockQ8_0>(row, n, y); return true;
    case DType::Q4_K: decode_blocks_as_floats<BlockQK<false>>(row, n, y); return true;
    case DType::Q5_K: decode_blocks_as_floats<BlockQK<true>>(row, n, y); return true;
    case DType::Q6_K: decode_q6_k_as_floats(row, n, y); return true;
    case DType::IQ4_NL: decode_blocks_as_floats<BlockIQ4_NL>(row, n, y); return true;
    case DType::IQ4_XS: decode_blocks_as_floats<BlockIQ4_XS>(row, n, y); return true;
    case DType::MXFP4: decode_blocks_as_floats<BlockMXFP4>(row, n, y); return true;
    default: return false;
  }
}

}  // namespace g4::fast_detail

#endif  // __x86_64__
