// Packed weights for the AVX-512 VNNI kernels (llama.cpp's CPU backend calls this
// "repacking"): a Q4_0, Q5_0, Q8_0, Q4_K, Q5_K or Q6_K matrix re-laid out once, 16 rows at a time, so
// that one 64-byte vector holds 4 consecutive weights (still in their stored bits) of 16
// rows. One vpdpbusd against 4 broadcast activation bytes then advances 16 row dots, for
// decode (one token) and batches alike: nothing is unpacked or transposed per call, and
// a row's result does not depend on how many tokens share the call.
//
// A group of 16 rows is stored unit after unit (a unit: 32 columns for Q4_0/Q8_0, a
// super-block of 256 for Q4_K/Q6_K); rows past the end of the matrix are zero. "Vector k
// of ..." below means 64 bytes whose bytes 4r..4r+3 are bytes 4k..4k+3 of row r's field.
//   Q4_0 unit (288 B = 16 blocks): vectors 0-3 of qs (low nibbles: elements 4k..4k+3, high:
//        16+4k..), then the 16 f16 scales d.
//   Q5_0 unit (352 B = 16 blocks): vectors 0-3 of qs as Q4_0; the fifth bits, 4 bytes per row
//        (Q5_0L: byte i, bit j = element 4j + i); then the 16 f16 d.
//   Q8_0 unit (544 B): vectors 0-7 of qs XOR 0x80 (int8 + 128), then the 16 f16 d.
//   Q4_K unit (2368 B, +3% over the blocks): d[16] and dmin[16] f16; the 6-bit scales sc[8][16]
//        and mins m[8][16] as bytes; then for each 32-byte qs chunk c (0-3) its vectors 0-7
//        (low nibbles: sub-block 2c, high: 2c+1).
//   Q5_K unit (2880 B, +2%): the Q4_K header, vectors 0-7 of qh (bit j of qh[l]: the fifth bit
//        of element l of sub-block j), then the Q4_K chunks.
//   Q6_K unit (3360 B = 16 blocks): the 16 f16 d; the int8 scales [16][16]; then per half n
//        (0, 1), for k = 0-7: vector k of ql[64n ..], of qh[32n ..], of ql[64n + 32 ..]
//        (Q6_KL::ql, qh).
// Each unit is laid out in the order the tile kernel first reads it (the scales before the
// weights they scale; Q6_K decode reads a half's three vectors k together), so one prefetch
// kPrefetch ahead of each first read covers every line: measured from DRAM, Q4_K and Q6_K +2-5% over the scales-last layout.
// The arithmetic per 32 (16 for Q6_K) weights is that of the panel kernels in
// fast_avx512.cc: the integer dot, then acc += float(dot) * (s * d) (+ m * sx), in
// block order, so both give the same bits.
//
// AMX (Sapphire Rapids and later), for calls of 16 tokens and more (32 for Q5_0 and Q5_K):
// integer tiles (TDPBSUD) need the per-32 scales applied in f32 after every block, through
// memory, which beats VNNI for Q4_0 at 16-31 tokens and Q8_0 at 16-63 (amx_int8_tile: VNNI's
// bits); larger calls (and Q4_K, Q5_K, Q5_0, Q6_K) dequantize a pair of groups once to bf16
// (scale, zero point and minimum applied in f32, then rounded to nearest even; Q4_0, Q5_0, Q4_K
// and Q8_0 straight from the packed bytes), round the activations to bf16, and TDPBF16PS
// accumulates in f32 over the whole row with no per-block step: 2 x 2 tiles of 16 tokens x 16
// rows. Those numbers are bf16 weights' and activations', not q8 activations': the tests
// bound both paths against the reference.
//
// x86-64 only (the whole file).
#if defined(__x86_64__)
#include <immintrin.h>

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels/blocks.h"
#include "kernels/fast_internal.h"
#include "util/error.h"
#include "util/huge_pages.h"
#include "util/parallel.h"

// GCC 12 warns that _mm512_undefined_ps, the pass-through of every unmasked conversion, may be
// used uninitialized: a false positive (it is never read).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define G4_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,fma,f16c")))
#define G4_AMX __attribute__((target("amx-tile,amx-int8,amx-bf16,avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx512vnni,fma,f16c")))

namespace g4::fast_detail {
namespace {

using namespace blocks;

constexpr int kRows = 16;
constexpr int kTile = 8;  // tokens per register tile
// Decode streams a group from DRAM: prefetch this far ahead (decode_prefetch_bytes()).
const int kPrefetch = decode_prefetch_bytes();

// The 4 bytes at `src` of each of 16 rows (nullptr: a padding row, zeros) into one vector.
void interleave(const uint8_t* const* rows, int64_t off, uint8_t* out, uint32_t flip = 0) {
  for (int r = 0; r < kRows; ++r) {
    uint32_t v = 0;
    if (rows[r]) {
      std::memcpy(&v, rows[r] + off, 4);
      v ^= flip;
    }
    std::memcpy(out + 4 * r, &v, 4);
  }
}

void put_f16(const uint8_t* const* rows, int64_t off, uint8_t* out) {
  for (int r = 0; r < kRows; ++r) {
    if (rows[r]) std::memcpy(out + 2 * r, rows[r] + off, 2);
    else std::memset(out + 2 * r, 0, 2);
  }
}

struct Q4_0L {
  static constexpr DType kType = DType::Q4_0;
  static constexpr int kCols = 32, kBytes = 288, kZeroPoint = 8, kScaleBlock = 32, kScales = 256;
  static constexpr int kAmxMinTokens = 16;
  static constexpr bool kMin = false;
  static constexpr int kInt8TilesBelow = 32;  // AMX in integer tiles below 32 tokens, in bf16 from 32
  // rows[r]: row r's block for this unit.
  static void pack(const uint8_t* const* rows, uint8_t* out) {
    for (int k = 0; k < 4; ++k) interleave(rows, offsetof(block_q4_0, qs) + 4 * k, out + 64 * k);
    put_f16(rows, offsetof(block_q4_0, d), out + 256);
  }
};

// Q5_0: the Q4_0 nibbles, then the fifth bits transposed so that one shift and a mask put
// them beside any nibble vector: byte i of row r's word holds in bit j the fifth bit of
// element 4j + i (vector k's low nibbles take bit k, its high nibbles bit 4 + k).
struct Q5_0L {
  static constexpr DType kType = DType::Q5_0;
  static constexpr int kCols = 32, kBytes = 352, kZeroPoint = 16, kScaleBlock = 32, kScales = 320;
  static constexpr int kAmxMinTokens = 32;
  static constexpr bool kMin = false;
  static constexpr int kInt8TilesBelow = 0;
  static void pack(const uint8_t* const* rows, uint8_t* out) {
    for (int k = 0; k < 4; ++k) interleave(rows, offsetof(block_q5_0, qs) + 4 * k, out + 64 * k);
    for (int r = 0; r < kRows; ++r) {
      const uint32_t qh = rows[r] ? load_qh(rows[r] + offsetof(block_q5_0, qh)) : 0;
      for (int i = 0; i < 4; ++i) {
        uint8_t b = 0;
        for (int j = 0; j < 8; ++j) b = static_cast<uint8_t>(b | (((qh >> (4 * j + i)) & 1) << j));
        out[256 + 4 * r + i] = b;
      }
    }
    put_f16(rows, offsetof(block_q5_0, d), out + 320);
  }
};

struct Q8_0L {
  static constexpr DType kType = DType::Q8_0;
  static constexpr int kCols = 32, kBytes = 544, kZeroPoint = 128, kScaleBlock = 32, kScales = 512;
  static constexpr int kAmxMinTokens = 16;
  static constexpr bool kMin = false;
  static constexpr int kInt8TilesBelow = 64;  // AMX in integer tiles below 64 tokens, in bf16 from 64
  static void pack(const uint8_t* const* rows, uint8_t* out) {
    for (int k = 0; k < 8; ++k) interleave(rows, offsetof(block_q8_0, qs) + 4 * k, out + 64 * k, 0x80808080u);
    put_f16(rows, offsetof(block_q8_0, d), out + 512);
  }
};

// Q4_K and Q5_K share d, dmin, the packed 6-bit scales and the nibbles; Q5_K adds qh.
template <class B, DType kT, int kUnitBytes>
struct KQuantL {
  static constexpr DType kType = kT;
  static constexpr int kCols = 256, kBytes = kUnitBytes, kZeroPoint = 0, kScaleBlock = 32;
  static constexpr int kAmxMinTokens = kT == DType::Q4_K ? 16 : 32;  // Q5_K goes through expand (slower)
  static constexpr bool kMin = true;
  static constexpr int kInt8TilesBelow = 0;
  // Byte offsets in a unit: d, dmin, scales, mins, Q5_K's qh, then the nibbles (kHead: the bytes
  // before them, which head_prefetch covers).
  static constexpr int kD = 0, kDmin = 32, kSc = 64, kMn = 192, kQh = 320;
  static constexpr int kQs = kT == DType::Q5_K ? kQh + 512 : kQh, kHead = kQs;
  static void pack(const uint8_t* const* rows, uint8_t* out) {
    put_f16(rows, offsetof(B, d), out + kD);
    put_f16(rows, offsetof(B, dmin), out + kDmin);
    for (int r = 0; r < kRows; ++r)
      for (int j = 0; j < 8; ++j) {
        uint8_t sc = 0, mn = 0;
        if (rows[r]) scale_min_k4(j, rows[r] + offsetof(B, scales), sc, mn);
        out[kSc + 16 * j + r] = sc;
        out[kMn + 16 * j + r] = mn;
      }
    if constexpr (kT == DType::Q5_K)
      for (int k = 0; k < 8; ++k) interleave(rows, offsetof(block_q5_k, qh) + 4 * k, out + kQh + 64 * k);
    for (int c = 0; c < 4; ++c)
      for (int k = 0; k < 8; ++k) interleave(rows, offsetof(B, qs) + 32 * c + 4 * k, out + kQs + 512 * c + 64 * k);
  }
};
using Q4_KL = KQuantL<block_q4_k, DType::Q4_K, 2368>;
using Q5_KL = KQuantL<block_q5_k, DType::Q5_K, 2880>;

struct Q6_KL {
  static constexpr DType kType = DType::Q6_K;
  static constexpr int kCols = 256, kBytes = 3360, kZeroPoint = 32, kScaleBlock = 16;
  static constexpr int kAmxMinTokens = 16;
  static constexpr bool kMin = false;
  static constexpr int kInt8TilesBelow = 0;
  // Byte offsets in a unit: the header (d, scales), then per half n the three vectors k (ql low
  // and high halves, qh) together, in the order decode reads them: a unit is read in address
  // order. On Zen 4 that decides the rate: with the high ql halves after all of the rest (two
  // ascending streams per unit) decode read 8.0-8.8 GB/s from DRAM at 1 thread (6144 x 1536,
  // one group per item), in order 21.2-26.3 (plain read 24.7-24.9); 2 threads 17.7-18.1 -> 32.0-40.0
  // (two groups per item, the default then, against one now); e2b Q6_K tg32 3.8-5.7 -> 10.9-11.6
  // t/s. (Sapphire Rapids measured in-order 2-4% slower, stop 35, with the older kernel.)
  static constexpr int kD = 0, kSc = 32, kHead = 288;
  static constexpr int ql(int n, int half, int k) { return kHead + 1536 * n + 192 * k + (half ? 128 : 0); }
  static constexpr int qh(int n, int k) { return kHead + 1536 * n + 192 * k + 64; }
  static void pack(const uint8_t* const* rows, uint8_t* out) {
    put_f16(rows, offsetof(block_q6_k, d), out + kD);
    for (int r = 0; r < kRows; ++r)
      for (int g = 0; g < 16; ++g) out[kSc + 16 * g + r] = rows[r] ? rows[r][offsetof(block_q6_k, scales) + g] : 0;
    for (int n = 0; n < 2; ++n)
      for (int k = 0; k < 8; ++k) {
        for (int h = 0; h < 2; ++h) interleave(rows, offsetof(block_q6_k, ql) + 64 * n + 32 * h + 4 * k, out + ql(n, h, k));
        interleave(rows, offsetof(block_q6_k, qh) + 32 * n + 4 * k, out + qh(n, k));
      }
  }
};

G4_AVX512 inline __m512i bcast(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

G4_AVX512 inline __m512 f16x16(const uint8_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// Sub-block j's scale d * sc and minimum -dmin * m of the 16 rows of a Q4_K/Q5_K unit p
// (d, mdmin = -dmin: the unit's f16 d and dmin as f32).
template <class L>
G4_AVX512 inline void kquant_scale_min(const uint8_t* p, int j, __m512 d, __m512 mdmin, __m512& s, __m512& m) {
  const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + L::kSc + 16 * j));
  const __m128i mn = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + L::kMn + 16 * j));
  s = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sc)));
  m = _mm512_mul_ps(mdmin, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(mn)));
}

// Vector k of a Q4_0 / Q5_0 unit as bytes: lo the elements 4k .. 4k + 3 of each row, hi the
// elements 16 + 4k ..; Q5_0 ORs in the fifth bits (qh: the unit's transposed bits).
template <bool kFive>
G4_AVX512 inline void small_values(__m512i v, __m512i qh, int k, __m512i& lo, __m512i& hi) {
  const __m512i nib = _mm512_set1_epi8(0x0f);
  lo = _mm512_and_si512(v, nib);
  hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
  if constexpr (kFive) {  // lo | (qh << 4 - k & 0x10), hi | (qh >> k & 0x10)
    lo = _mm512_ternarylogic_epi32(lo, _mm512_slli_epi16(qh, 4 - k), _mm512_set1_epi8(0x10), 0xF8);
    hi = _mm512_ternarylogic_epi32(hi, _mm512_srli_epi16(qh, k), _mm512_set1_epi8(0x10), 0xF8);
  }
}

// Weight vector i (0-3) of a Q6_K half from its ql vector (half i & 1) and qh vector: the
// nibble (low for i < 2, high above) | qh bits 2i..2i+1 at bits 4-5, as bytes.
G4_AVX512 inline __m512i q6_values(__m512i ql, __m512i qh, int i) {
  const __m512i nib = _mm512_set1_epi8(0x0f);
  const __m512i lo = i < 2 ? _mm512_and_si512(ql, nib) : _mm512_and_si512(_mm512_srli_epi16(ql, 4), nib);
  const __m512i hb = i == 0 ? _mm512_slli_epi16(qh, 4) : i == 1 ? _mm512_slli_epi16(qh, 2) : i == 2 ? qh : _mm512_srli_epi16(qh, 2);
  return _mm512_ternarylogic_epi32(lo, hb, _mm512_set1_epi8(0x30), 0xF8);  // lo | (hb & 0x30)
}

// Where a stream prefetches: offset off of a unit at at + off (kPrefetch bytes ahead), and from
// offset split of the unit on, past its group's end, skip bytes further: the stream's
// continuation (tile()). Per line, not per unit: a K-quant unit (2.3-3.4 KB) is longer than
// kPrefetch, so a per-unit choice sent a whole kPrefetch of each item's prefetches astray.
struct Pf {
  const uint8_t* at;
  int64_t split = INT64_MAX, skip = 0;
  G4_AVX512 void operator()(int off) const {
    _mm_prefetch(reinterpret_cast<const char*>(at) + off + (off >= split ? skip : 0), _MM_HINT_T0);
  }
};

// The vector at offset off of unit p, and its prefetch.
G4_AVX512 inline __m512i load(const uint8_t* p, const Pf& pf, int off) {
  pf(off);
  return _mm512_loadu_si512(p + off);
}
G4_AVX512 inline __m512i load(const uint8_t* p) { return load(p, Pf{p + kPrefetch}, 0); }

// A K-quant unit's header lines (read before its first vector) prefetched as load() prefetches
// each vector's: the stream is read in address order, every line once.
template <class L>
G4_AVX512 inline void head_prefetch(const Pf& pf) {
  for (int off = 0; off < L::kHead; off += 64) pf(off);
}

// acc[t] += float(dot[t]) * (s * d[t, b]) for tokens t0..t0+T-1 of scale block b.
template <int T>
G4_AVX512 inline void scale_add(const __m512i* dot, __m512 s, const Acts& a, int64_t t0, int64_t b, __m512* acc) {
  for (int t = 0; t < T; ++t) {
    const __m512 scale = _mm512_mul_ps(s, _mm512_set1_ps(a.d[a.at(t0 + t, b)]));
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[t]), scale, acc[t]);
  }
}

template <int T>
G4_AVX512 inline void init_dot(__m512i* dot, const Acts& a, int64_t t0, int64_t b) {
  for (int t = 0; t < T; ++t) dot[t] = _mm512_set1_epi32(a.corr[a.at(t0 + t, b)]);
  for (int t = T; t < 2 * T; ++t) dot[t] = _mm512_setzero_si512();
}

// Folds the second chain of each token into the first (integer sums: the same bits).
template <int T>
G4_AVX512 inline void fold_dot(__m512i* dot) {
  for (int t = 0; t < T; ++t) dot[t] = _mm512_add_epi32(dot[t], dot[T + t]);
}

// out[(T q + t) * 16 + r] = row r of group q . token t0 + t, over every unit; NG groups walked
// side by side, unit by unit.
template <class L, int T, int NG = 1>
G4_AVX512 void tile(const uint8_t* const* groups, int64_t n_units, const Acts& a, int64_t t0, float* out) {
  const __m512i nib = _mm512_set1_epi8(0x0f);
  __m512 accs[NG][T];
  for (auto& g : accs)
    for (auto& v : g) v = _mm512_setzero_ps();
  const int8_t* x[T];
  for (int t = 0; t < T; ++t) x[t] = a.tok(t0 + t);
  // Two accumulator chains per token (dot[t], dot[T + t]), so that with few tokens the
  // vpdpbusd latency is not one serial chain (same bits; no decode change measured on
  // Sapphire Rapids, where decode is bound by memory). The loops that pick a dot[] are unrolled
  // (#pragma GCC unroll): left as loops, GCC indexes dot[] at run time, so it lives on the
  // stack with a store and reload around every vpdpbusd. Measured, 6144 x 1536, 1 thread, from
  // L3: Q6_K decode 415 -> 267 us (23 -> 35 GMAC/s), Q8_0 at 8 tokens 782 -> 365, Q4_K at 8
  // tokens 986 -> 424. The loops over groups, Q4_K chunks and Q6_K halves stay loops: a decode
  // body that fits the uop cache refills the core faster after a wait on memory. Measured from
  // DRAM (6144 x 1536 matrices cycled over 1.2 GB, 1 token, median of 5): Q4_K 12.3 -> 13.5 GB/s
  // at 1 thread, 24.0 -> 26.1 at 2 threads; Q6_K 12.1 -> 12.9 / 24.4 -> 24.9 (with the
  // header-first layout), while the L2-resident rates barely move (Q4_K 42 -> 46 GB/s).
  __m512i dot[2 * T];
  // With NG groups side by side, the stream of group q continues in group q + NG (the same
  // place of the thread's next item), not in the group after it, which another stream of this
  // item has already read: past its group's end, a prefetch skips the NG - 1 groups between.
  // Measured, a Q4_0-like read of 13.8 KB groups (e2b's 1536 columns) two side by side:
  // 16.4 -> 17.4 GB/s at 1 thread, 33.0 -> 35.8 at 2 (plain read: 18.8 / 36.5); the kernels
  // from DRAM at 1 thread (6144 x 1536): Q4_0 +3-6%, e2b tg32 Q4_0 +2-4%, Q4_K_M +4%, Q6_K
  // +6-8%. Which stream a prefetch serves is chosen per line (Pf): chosen per unit, a K-quant
  // unit longer than kPrefetch never skipped (Q4_K from DRAM, 1 thread: 14.8 -> 15.9 GB/s, Q6_K
  // 14.1 -> 14.7) and Q8_0 lost 3-7% with the skip (now +0-4%).
  constexpr bool kSkip = NG > 1;
  const int64_t group_stride = kSkip ? groups[1] - groups[0] : 0;
  for (int64_t u = 0; u < n_units; ++u)
#pragma GCC unroll 1
  for (int q = 0; q < NG; ++q) {
    const uint8_t* p = groups[q] + u * L::kBytes;
    Pf pf{p + kPrefetch};
    if constexpr (kSkip) {
      pf.split = group_stride - u * L::kBytes - kPrefetch;
      pf.skip = (NG - 1) * group_stride;
    }
    __m512* acc = accs[q];
    const int64_t e0 = u * L::kCols;  // first column of the unit
    if constexpr (L::kType == DType::Q4_0 || L::kType == DType::Q5_0) {
      init_dot<T>(dot, a, t0, u);
      constexpr bool five = L::kType == DType::Q5_0;
      const __m512i qh = five ? load(p, pf, 256) : _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int k = 0; k < 4; ++k) {
        __m512i lo, hi;
        const __m512i v = load(p, pf, 64 * k);
        if constexpr (five) {
          small_values<five>(v, qh, k, lo, hi);
        } else {  // the high nibbles in place (16 x their value): one op fewer per vector
          lo = _mm512_and_si512(v, nib);
          hi = _mm512_andnot_si512(nib, v);
        }
        for (int t = 0; t < T; ++t) {
          dot[t] = _mm512_dpbusd_epi32(dot[t], lo, bcast(x[t] + e0 + 4 * k));
          dot[T + t] = _mm512_dpbusd_epi32(dot[T + t], hi, bcast(x[t] + e0 + 16 + 4 * k));
        }
      }
      pf(L::kScales);
      if constexpr (!five)  // 16 x the high nibbles' dot, a multiple of 16: the shift is exact
        for (int t = 0; t < T; ++t) dot[T + t] = _mm512_srai_epi32(dot[T + t], 4);
      fold_dot<T>(dot);
      scale_add<T>(dot, f16x16(p + L::kScales), a, t0, u, acc);
    } else if constexpr (L::kType == DType::Q8_0) {
      init_dot<T>(dot, a, t0, u);
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        const __m512i v = load(p, pf, 64 * k);
        for (int t = 0; t < T; ++t) dot[T * (k & 1) + t] = _mm512_dpbusd_epi32(dot[T * (k & 1) + t], v, bcast(x[t] + e0 + 4 * k));
      }
      pf(512);
      fold_dot<T>(dot);
      scale_add<T>(dot, f16x16(p + L::kScales), a, t0, u, acc);
    } else if constexpr (L::kType == DType::Q4_K || L::kType == DType::Q5_K) {
      head_prefetch<L>(pf);
      const __m512 d = f16x16(p + L::kD), mdmin = _mm512_sub_ps(_mm512_setzero_ps(), f16x16(p + L::kDmin));
      // Q4_K's odd sub-blocks take the high nibbles in place (16 x their value, one op fewer per
      // vector) and d / 16: float(16 dot) * (d / 16 * sc * xd) rounds to the same bits as
      // float(dot) * (d * sc * xd) (scaling by 16 is exact at both ends).
      const __m512 d16 = L::kType == DType::Q4_K ? _mm512_mul_ps(d, _mm512_set1_ps(1.0f / 16)) : d;
      // Chunk c holds sub-blocks j = 2c (low nibbles, chain dot[t]) and 2c + 1 (high, dot[T + t]):
      // each vector is read once for both, scaled in sub-block order (the same bits). Measured,
      // 6144 x 1536, 1 thread, over a pass per sub-block: 8 tokens 408 -> 384 us; 1 token from
      // DRAM within noise (16.1 GB/s).
#pragma GCC unroll 1
      for (int c = 0; c < 4; ++c) {
        const int j = 2 * c;
        const int64_t b = 8 * u + j;
        // Q5_K: a 32-bit rotation by 4 - j puts bit j of each qh byte at bit 4 of the same byte
        // (j is not a constant here: one rotate, no variable shift).
        const __m512i rot0 = _mm512_set1_epi32((4 - j) & 31), rot1 = _mm512_set1_epi32((3 - j) & 31);
        for (int t = 0; t < T; ++t) {
          dot[t] = _mm512_set1_epi32(a.corr[a.at(t0 + t, b)]);
          dot[T + t] = _mm512_set1_epi32(a.corr[a.at(t0 + t, b + 1)]);
        }
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) {
          const __m512i v = load(p, pf, L::kQs + 512 * c + 64 * k);
          __m512i lo = _mm512_and_si512(v, nib);
          __m512i hi = L::kType == DType::Q4_K ? _mm512_andnot_si512(nib, v) : _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
          if constexpr (L::kType == DType::Q5_K) {  // bits j and j + 1 of qh to bit 4 of each byte
            const __m512i qh = _mm512_loadu_si512(p + L::kQh + 64 * k);
            lo = _mm512_ternarylogic_epi32(lo, _mm512_rolv_epi32(qh, rot0), _mm512_set1_epi8(0x10), 0xF8);  // lo | (.. & 0x10)
            hi = _mm512_ternarylogic_epi32(hi, _mm512_rolv_epi32(qh, rot1), _mm512_set1_epi8(0x10), 0xF8);
          }
          for (int t = 0; t < T; ++t) {
            dot[t] = _mm512_dpbusd_epi32(dot[t], lo, bcast(x[t] + e0 + 32 * j + 4 * k));
            dot[T + t] = _mm512_dpbusd_epi32(dot[T + t], hi, bcast(x[t] + e0 + 32 * j + 32 + 4 * k));
          }
        }
        for (int h = 0; h < 2; ++h) {
          __m512 s, m;
          kquant_scale_min<L>(p, j + h, h ? d16 : d, mdmin, s, m);
          scale_add<T>(dot + T * h, s, a, t0, b + h, acc);
          for (int t = 0; t < T; ++t) acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(a.sx[a.at(t0 + t, b + h)]), acc[t]);
        }
      }
    } else {  // Q6_K: element 128n + 32i + l = ql nibble | qh bits 2i..2i+1 << 4, scale group 8n + 2i + l / 16
      head_prefetch<L>(pf);
      const __m512 d = f16x16(p + L::kD);
      // Decode: each half's three vectors k (ql low and high, qh) read once for the four weight
      // vectors i = 0-3 they hold, eight chains (scale group 8n + 2i + k / 4), scaled in group
      // order (the same bits as the loop below). Measured from DRAM (6144 x 1536, 1 token): 1
      // thread 14.9 -> 15.9 GB/s, 2 threads 28.4 -> 29.9; e2b Q6_K tg32 7.4 -> 8.2 t/s at 1
      // thread, 14.3 -> 15.7 at 2. With more tokens, 8T chains do not fit the registers.
      if constexpr (T == 1) {
#pragma GCC unroll 1
        for (int n = 0; n < 2; ++n) {
          __m512i d8[8];
#pragma GCC unroll 8
          for (int gg = 0; gg < 8; ++gg) d8[gg] = _mm512_set1_epi32(a.corr[a.at(t0, 16 * u + 8 * n + gg)]);
#pragma GCC unroll 8
          for (int k = 0; k < 8; ++k) {
            const __m512i ql0 = load(p, pf, L::ql(n, 0, k)), qh = load(p, pf, L::qh(n, k)), ql1 = load(p, pf, L::ql(n, 1, k));
#pragma GCC unroll 4
            for (int i = 0; i < 4; ++i)
              d8[2 * i + k / 4] = _mm512_dpbusd_epi32(d8[2 * i + k / 4], q6_values(i & 1 ? ql1 : ql0, qh, i),
                                                      bcast(x[0] + e0 + 128 * n + 32 * i + 4 * k));
          }
#pragma GCC unroll 8
          for (int gg = 0; gg < 8; ++gg) {
            const int g = 8 * n + gg;
            const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + L::kSc + 16 * g));
            scale_add<1>(d8 + gg, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc))), a, t0, 16 * u + g, acc);
          }
        }
      } else
#pragma GCC unroll 1
      for (int n = 0; n < 2; ++n)
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i)
#pragma GCC unroll 2
          for (int h = 0; h < 2; ++h) {
            const int g = 8 * n + 2 * i + h;
            const int64_t b = 16 * u + g;
            init_dot<T>(dot, a, t0, b);
#pragma GCC unroll 4
            for (int kk = 0; kk < 4; ++kk) {
              const int k = 4 * h + kk;
              const int lo_off = L::ql(n, i & 1, k), hi_off = L::qh(n, k);
              const bool first = i < 2;  // the first visit of these bytes: prefetch ahead
              const __m512i ql = first ? load(p, pf, lo_off) : _mm512_loadu_si512(p + lo_off);
              const __m512i qh = i == 0 ? load(p, pf, hi_off) : _mm512_loadu_si512(p + hi_off);
              const __m512i w = q6_values(ql, qh, i);
              for (int t = 0; t < T; ++t)
                dot[T * (kk & 1) + t] = _mm512_dpbusd_epi32(dot[T * (kk & 1) + t], w, bcast(x[t] + e0 + 128 * n + 32 * i + 4 * k));
            }
            fold_dot<T>(dot);
            const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + L::kSc + 16 * g));
            scale_add<T>(dot, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc))), a, t0, b, acc);
          }
    }
  }
  for (int q = 0; q < NG; ++q)
    for (int t = 0; t < T; ++t) _mm512_storeu_ps(out + 16 * (T * q + t), accs[q][t]);
}

// --- AMX ---------------------------------------------------------------------------------

// Expands a Q5_K or Q6_K group for to_bf16 (below): per scale block b (bs columns) bs / 4
// vectors at w + 16 * bs * b, each 64 bytes of 4 consecutive weights of 16 rows as unsigned
// bytes (the stored value, before its zero point), and the block's scale s[16 b ..] and, for
// Q5_K, its minimum m[16 b ..], computed as the tile kernel computes them. (Q4_0, Q4_K and
// Q8_0 need no expansion: group_bf16 reads their packed bytes.)
template <class L>
G4_AVX512 void expand(const uint8_t* group, int64_t n_units, uint8_t* w, float* s, float* m) {
  static_assert(L::kType == DType::Q5_K || L::kType == DType::Q6_K);
  const __m512i nib = _mm512_set1_epi8(0x0f);
  for (int64_t u = 0; u < n_units; ++u) {
    const uint8_t* p = group + u * L::kBytes;
    if constexpr (L::kType == DType::Q5_K) {
      const __m512 d = f16x16(p + L::kD), mdmin = _mm512_sub_ps(_mm512_setzero_ps(), f16x16(p + L::kDmin));
      for (int j = 0; j < 8; ++j) {
        const int64_t b = 8 * u + j;
        for (int k = 0; k < 8; ++k) {
          const __m512i v = _mm512_loadu_si512(p + L::kQs + 512 * (j / 2) + 64 * k);
          const __m512i q = j % 2 ? _mm512_and_si512(_mm512_srli_epi16(v, 4), nib) : _mm512_and_si512(v, nib);
          const __m512i qh = _mm512_loadu_si512(p + L::kQh + 64 * k);
          const __m512i hb = j < 4 ? _mm512_slli_epi16(qh, 4 - j) : _mm512_srli_epi16(qh, j - 4);
          _mm512_storeu_si512(w + 512 * b + 64 * k, _mm512_ternarylogic_epi32(q, hb, _mm512_set1_epi8(0x10), 0xF8));
        }
        __m512 sv, mv;
        kquant_scale_min<L>(p, j, d, mdmin, sv, mv);
        _mm512_storeu_ps(s + 16 * b, sv);
        _mm512_storeu_ps(m + 16 * b, mv);
      }
    } else {  // Q6_K: scale group g = 8n + 2i + h holds the vectors k = 4h .. 4h + 3 of (n, i)
      const __m512 d = f16x16(p + L::kD);
      for (int n = 0; n < 2; ++n)
        for (int i = 0; i < 4; ++i)
          for (int k = 0; k < 8; ++k) {
            const __m512i ql = _mm512_loadu_si512(p + L::ql(n, i & 1, k));
            const __m512i qh = _mm512_loadu_si512(p + L::qh(n, k));
            const int64_t b = 16 * u + 8 * n + 2 * i + k / 4;
            _mm512_storeu_si512(w + 256 * b + 64 * (k % 4), q6_values(ql, qh, i));
          }
      for (int g = 0; g < 16; ++g) {
        const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + L::kSc + 16 * g));
        _mm512_storeu_ps(s + 16 * (16 * u + g), _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc))));
      }
    }
  }
}

// A B-tile row of 32 bf16 from the f32 weights k (f0) and k + 1 (f1) of 16 rows: lanes 2r
// and 2r + 1 hold row r's pair. Rounded to nearest even.
G4_AMX inline __m512i bf16_pairs(__m512 f0, __m512 f1) {
  alignas(64) static constexpr uint16_t kIdx[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                    8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  return _mm512_permutexvar_epi16(_mm512_load_si512(kIdx), (__m512i)_mm512_cvtne2ps_pbh(f1, f0));
}

// Rows 2k + jp (jp = 0, 1) of a block in bf16 from vector k of byte values q:
// (q - zp) * s (+ m). A byte becomes a float without a conversion: vpshufb moves byte j of
// each lane to its low byte (zeros above), and those bits OR 0x4B000000 are 2^23 + q.
template <int kZp, bool kMin>
struct ByteRows {
  __m512i sel[4], magic = _mm512_set1_epi32(0x4B000000);
  __m512 bias = _mm512_set1_ps(8388608.0f + kZp);
  G4_AMX ByteRows() {
    for (int j = 0; j < 4; ++j)
      sel[j] = _mm512_set4_epi32(static_cast<int>(0x80808000u | (12 + j)), static_cast<int>(0x80808000u | (8 + j)),
                                 static_cast<int>(0x80808000u | (4 + j)), static_cast<int>(0x80808000u | j));
  }
  G4_AMX void operator()(__m512i v, __m512 sv, __m512 mv, uint16_t* out) const {
    for (int jp = 0; jp < 2; ++jp) {
      __m512 f[2];
      for (int j = 0; j < 2; ++j) {
        const __m512 q = _mm512_castsi512_ps(_mm512_or_si512(_mm512_shuffle_epi8(v, sel[2 * jp + j]), magic));
        f[j] = _mm512_mul_ps(sv, _mm512_sub_ps(q, bias));
        if constexpr (kMin) f[j] = _mm512_add_ps(f[j], mv);
      }
      _mm512_storeu_si512(out + 32 * jp, bf16_pairs(f[0], f[1]));
    }
  }
};

// One expanded group (expand) as bf16 B tiles: row i of the result holds the weights 2i and
// 2i + 1 of the 16 rows, w = s * (q - zp) (+ m) in f32, rounded to nearest even.
template <int kZp, bool kMin>
G4_AMX void to_bf16(const uint8_t* w, const float* s, const float* m, int64_t nb, int bs, uint16_t* out) {
  const ByteRows<kZp, kMin> rows;
  for (int64_t b = 0; b < nb; ++b) {
    const __m512 sv = _mm512_loadu_ps(s + 16 * b), mv = kMin ? _mm512_loadu_ps(m + 16 * b) : _mm512_setzero_ps();
    for (int k = 0; k < bs / 4; ++k) rows(_mm512_loadu_si512(w + 16 * bs * b + 64 * k), sv, mv, out + 32 * (b * bs / 2 + 2 * k));
  }
}

// Rows 2k + jp (jp = 0, 1) of a 32-weight block in bf16 from vector k of 4-bit values at
// bit `sh` of each byte: (tab[q] = q - zp) * s (+ m). vpermps reads the low 4 bits of each
// lane, so a shift picks the nibble and no mask or conversion is needed. With tab2 (5-bit
// values, bits above them clear), vpermt2ps reads 5 bits from the tables tab, tab2.
template <bool kMin, bool kFive = false>
G4_AMX inline void nibble_rows(__m512i v, int sh, __m512 tab, __m512 sv, __m512 mv, uint16_t* out,
                               __m512 tab2 = _mm512_setzero_ps()) {
  for (int jp = 0; jp < 2; ++jp) {
    __m512 f[2];
    for (int j = 0; j < 2; ++j) {
      const __m512i idx = _mm512_srli_epi32(v, 16 * jp + 8 * j + sh);
      const __m512 q = kFive ? _mm512_permutex2var_ps(tab, idx, tab2) : _mm512_permutexvar_ps(idx, tab);
      f[j] = _mm512_mul_ps(sv, q);
      if constexpr (kMin) f[j] = _mm512_add_ps(f[j], mv);
    }
    _mm512_storeu_si512(out + 32 * jp, bf16_pairs(f[0], f[1]));
  }
}

// A group as bf16 B tiles (to_bf16's layout and bits). Q4_0, Q4_K and Q8_0 go straight from
// the packed bytes; Q5_K and Q6_K through expand (w, s, m: its scratch) and to_bf16.
template <class L>
G4_AMX void group_bf16(const uint8_t* group, int64_t n_units, uint8_t* w, float* s, float* m, uint16_t* out) {
  if constexpr (L::kType == DType::Q4_0) {
    const __m512 tab = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
    for (int64_t u = 0; u < n_units; ++u) {
      const uint8_t* p = group + u * L::kBytes;
      const __m512 sv = f16x16(p + L::kScales);
      for (int k = 0; k < 4; ++k) {
        const __m512i v = _mm512_loadu_si512(p + 64 * k);
        nibble_rows<false>(v, 0, tab, sv, sv, out + 32 * (16 * u + 2 * k));      // elements 4k ..
        nibble_rows<false>(v, 4, tab, sv, sv, out + 32 * (16 * u + 8 + 2 * k));  // elements 16 + 4k ..
      }
    }
  } else if constexpr (L::kType == DType::Q5_0) {
    const __m512 tab = _mm512_setr_ps(-16, -15, -14, -13, -12, -11, -10, -9, -8, -7, -6, -5, -4, -3, -2, -1);
    const __m512 tab2 = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int64_t u = 0; u < n_units; ++u) {
      const uint8_t* p = group + u * L::kBytes;
      const __m512 sv = f16x16(p + L::kScales);
      const __m512i qh = _mm512_loadu_si512(p + 256);
      for (int k = 0; k < 4; ++k) {
        __m512i lo, hi;
        small_values<true>(_mm512_loadu_si512(p + 64 * k), qh, k, lo, hi);
        nibble_rows<false, true>(lo, 0, tab, sv, sv, out + 32 * (16 * u + 2 * k), tab2);
        nibble_rows<false, true>(hi, 0, tab, sv, sv, out + 32 * (16 * u + 8 + 2 * k), tab2);
      }
    }
  } else if constexpr (L::kType == DType::Q4_K) {
    const __m512 tab = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int64_t u = 0; u < n_units; ++u) {
      const uint8_t* p = group + u * L::kBytes;
      const __m512 d = f16x16(p + L::kD), mdmin = _mm512_sub_ps(_mm512_setzero_ps(), f16x16(p + L::kDmin));
      for (int j = 0; j < 8; ++j) {
        __m512 sv, mv;
        kquant_scale_min<L>(p, j, d, mdmin, sv, mv);
        for (int k = 0; k < 8; ++k)
          nibble_rows<true>(_mm512_loadu_si512(p + L::kQs + 512 * (j / 2) + 64 * k), 4 * (j % 2), tab, sv, mv,
                            out + 32 * (16 * (8 * u + j) + 2 * k));
      }
    }
  } else if constexpr (L::kType == DType::Q8_0) {
    const ByteRows<L::kZeroPoint, false> rows;
    for (int64_t u = 0; u < n_units; ++u) {
      const uint8_t* p = group + u * L::kBytes;
      const __m512 sv = f16x16(p + L::kScales);
      for (int k = 0; k < 8; ++k) rows(_mm512_loadu_si512(p + 64 * k), sv, sv, out + 32 * (16 * u + 2 * k));
    }
  } else {
    expand<L>(group, n_units, w, s, m);
    to_bf16<L::kZeroPoint, L::kMin>(w, s, m, n_units * L::kCols / L::kScaleBlock, L::kScaleBlock, out);
  }
}

// The activations of n_tok / 16 * 16 tokens as bf16 A tiles: per 16 tokens, per 32 columns,
// 16 rows of 32 bf16 (a tile load reads 1 KiB contiguously).
G4_AMX void acts_bf16(const float* x, int64_t n_tok, int64_t n_in, std::vector<uint16_t>& xt) {
  uint16_t* o = grown(xt, n_tok / 16 * 16 * n_in);
  for (int64_t t0 = 0; t0 + 16 <= n_tok; t0 += 16)
    for (int64_t k = 0; k < n_in; k += 32)
      for (int t = 0; t < 16; ++t, o += 32) {
        const float* r = x + (t0 + t) * n_in + k;
        const __m256i lo = (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(r));
        const __m256i hi = (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(r + 16));
        _mm512_storeu_si512(o, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
      }
}

// The tile registers: A (tiles 0, 1) 16 tokens x 32 bf16, B (2, 3) 16 rows of 16 x 2 bf16 weights,
// C (4-7) 16 tokens x 16 f32 for each (A, B) pair.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

G4_AMX void amx_configure() {
  TileConfig c;
  for (int i = 0; i < 8; ++i) c.rows[i] = 16, c.colsb[i] = 64;
  // GCC 12 does not see that ldtilecfg reads the struct and drops the stores above.
  __asm__ __volatile__("" : : "r"(&c) : "memory");
  _tile_loadconfig(&c);
}

G4_AMX void amx_release() { _tile_release(); }

// C(i, j) = A tile i . B tile j over n_ks steps of 32 columns, for A tiles a[i] (steps 512
// bf16 apart) and B tiles b[j]; C(i, j) is stored as 16 tokens x 16 f32 at c[i][j], rows
// stride_c bytes apart. A missing a[1] / b[1] (nullptr) runs as a copy of the first and is
// not stored.
G4_AMX void amx_bf16_2x2(const uint16_t* const a[2], const uint16_t* const b[2], int64_t n_ks, float* const c[2][2],
                         int64_t stride_c) {
  const uint16_t* a1 = a[1] ? a[1] : a[0];
  const uint16_t* b1 = b[1] ? b[1] : b[0];
  _tile_zero(4);
  _tile_zero(5);
  _tile_zero(6);
  _tile_zero(7);
  for (int64_t k = 0; k < n_ks; ++k) {
    _tile_loadd(0, a[0] + 512 * k, 64);
    _tile_loadd(2, b[0] + 512 * k, 64);
    _tile_dpbf16ps(4, 0, 2);
    _tile_loadd(3, b1 + 512 * k, 64);
    _tile_dpbf16ps(5, 0, 3);
    _tile_loadd(1, a1 + 512 * k, 64);
    _tile_dpbf16ps(6, 1, 2);
    _tile_dpbf16ps(7, 1, 3);
  }
  _tile_stored(4, c[0][0], stride_c);
  if (b[1]) _tile_stored(5, c[0][1], stride_c);
  if (a[1]) _tile_stored(6, c[1][0], stride_c);
  if (a[1] && b[1]) _tile_stored(7, c[1][1], stride_c);
}

// --- AMX int8 (Q4_0 at 16-31 tokens, Q8_0 at 16-63) ---
// One TDPBSUD per block of 32: A the tokens' q8 activations, B the block's unsigned stored
// weights of 16 rows (Q8_0's packed vectors 0-7 as they stand; Q4_0 nibbles expanded to bytes).
// The block's int32 C tile goes through memory to be scaled in f32 exactly as VNNI scales its
// dots, so the bits are VNNI's. That per-block step bounds the path: bf16 tiles need none and
// win from 32 (Q4_0) or 64 (Q8_0) tokens. Measured, 6144 x 1536, 1 thread, ms VNNI / int8 tiles /
// bf16 tiles: Q4_0 16 tokens 0.66-0.68 / 0.55 / 0.97; Q8_0 16 tokens 1.55 / 0.59-0.65 / 1.08, 32
// 3.19 / 1.24 / 1.36, 64 6.88 / 2.43 / 1.51. Q5_0 at 16 tokens: VNNI 0.75-0.77, int8 tiles
// 0.76-0.85, so VNNI keeps it.
// The tile registers: A (0, 1) 16 tokens x 32 int8 activations (one block), B (2, 3) the block's
// 32 weights of 16 rows as 8 rows of 16 x 4 unsigned bytes, C (4, 5) 16 tokens x 16 int32 dots.
G4_AMX void amx_configure_int8() {
  TileConfig c;
  for (int i = 0; i < 6; ++i) {
    c.rows[i] = i == 2 || i == 3 ? 8 : 16;
    c.colsb[i] = i < 2 ? 32 : 64;
  }
  __asm__ __volatile__("" : : "r"(&c) : "memory");
  _tile_loadconfig(&c);
}

// acc[t] += float(C row t + corr) * (s * d[t, u]) from a stored C tile: the tile kernel's
// scale_add on the same integer dots, so the bits are VNNI's.
G4_AMX inline void int8_block_add(const int32_t* c, const uint8_t* p_scales, const Acts& a, int64_t t0, int64_t u,
                                  __m512* acc) {
  const __m512 s = f16x16(p_scales);
  for (int t = 0; t < 16; ++t) {
    const __m512i dot = _mm512_add_epi32(_mm512_load_si512(c + 16 * t), _mm512_set1_epi32(a.corr[a.at(t0 + t, u)]));
    const __m512 scale = _mm512_mul_ps(s, _mm512_set1_ps(a.d[a.at(t0 + t, u)]));
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[t]);
  }
}

// Unit u of a Q4_0/Q5_0 group as its B tile: rows 0-3 the low values (elements 4k ..), rows 4-7
// the high ones (16 + 4k ..) of vectors k = 0-3, the tile kernel's bytes.
template <class L>
G4_AVX512 inline void unit_int8(const uint8_t* group, int64_t u, uint8_t* out) {
  constexpr bool five = L::kType == DType::Q5_0;
  const uint8_t* p = group + u * L::kBytes;
  const __m512i qh = five ? load(p + 256) : _mm512_setzero_si512();
  for (int k = 0; k < 4; ++k) {
    __m512i lo, hi;
    small_values<five>(load(p + 64 * k), qh, k, lo, hi);
    _mm512_store_si512(out + 64 * k, lo);
    _mm512_store_si512(out + 256 + 64 * k, hi);
  }
  _mm_prefetch(reinterpret_cast<const char*>(p) + L::kScales + kPrefetch, _MM_HINT_T0);
}

// out[t * 16 + r] = row r of the group . token t0 + t (16 tokens): one TDPBSUD per block of 32
// (q8 activations x the unsigned stored weights), its C tile stored and scaled in f32 as VNNI
// does. Q8_0's B tiles are its packed vectors; Q4_0/Q5_0 units are expanded kAhead units ahead
// into a ring, so that their stores have left the store buffer when the tile load reads them.
template <class L>
G4_AMX void amx_int8_tile(const uint8_t* group, int64_t n_units, const Acts& a, int64_t t0, float* out) {
  constexpr bool direct = L::kType == DType::Q8_0;
  constexpr int64_t kAhead = 2, kRing = 4;
  alignas(64) int32_t c[2][256];
  alignas(64) uint8_t ring[kRing][512];
  __m512 acc[16];
  for (auto& v : acc) v = _mm512_setzero_ps();
  const int8_t* x = a.tok(t0);
  const int64_t stride = a.n_in;
  auto b_tile = [&](int64_t u) -> const uint8_t* { return direct ? group + u * L::kBytes : ring[u % kRing]; };
  auto expand = [&](int64_t u) {
    if constexpr (!direct)
      if (u < n_units) unit_int8<L>(group, u, ring[u % kRing]);
  };
  for (int64_t u = 0; u < kAhead; ++u) expand(u);
  // Software-pipelined: block u + 1's product is issued before block u's tile is stored, so the
  // tile unit's latency overlaps (a plain loop measured latency-bound on the tile instructions).
#define G4_INT8_DOT(A, B, C, u)             \
  expand((u) + kAhead);                     \
  __asm__ __volatile__("" ::: "memory");    \
  _tile_zero(C);                            \
  _tile_loadd(A, x + 32 * (u), stride);     \
  _tile_loadd(B, b_tile(u), 64);            \
  _tile_dpbsud(C, A, B)
#define G4_INT8_ADD(C, i, u)                                                    \
  _tile_stored(C, c[i], 64);                                                    \
  __asm__ __volatile__("" ::: "memory"); /* GCC's tilestored does not say it writes memory */ \
  int8_block_add(c[i], group + (u) * L::kBytes + L::kScales, a, t0, u, acc)
  G4_INT8_DOT(0, 2, 4, 0);
  int64_t u = 0;
  for (; u + 2 < n_units; u += 2) {
    G4_INT8_DOT(1, 3, 5, u + 1);
    G4_INT8_ADD(4, 0, u);
    G4_INT8_DOT(0, 2, 4, u + 2);
    G4_INT8_ADD(5, 1, u + 1);
  }
  if (u + 1 < n_units) {
    G4_INT8_DOT(1, 3, 5, u + 1);
    G4_INT8_ADD(4, 0, u);
    G4_INT8_ADD(5, 1, u + 1);
  } else {
    G4_INT8_ADD(4, 0, u);
  }
#undef G4_INT8_DOT
#undef G4_INT8_ADD
  for (int t = 0; t < 16; ++t) _mm512_storeu_ps(out + 16 * t, acc[t]);
}

// Tokens [0, n_amx) (a multiple of 16) x every group through amx_int8_tile, on the q8
// activations a of all the call's tokens.
template <class L>
void run_amx_int8(const PackedMatrix& p, const Acts& a, int64_t n_amx, int64_t n_out, float* y, int64_t row0) {
  const int64_t n_units = p.cols / L::kCols, g0 = row0 / kRows, n_groups = (n_out + kRows - 1) / kRows;
#pragma omp parallel
  {
    amx_configure_int8();
    alignas(64) float out[16 * kRows];
#pragma omp for schedule(static)
    for (int64_t gi = 0; gi < n_groups; ++gi) {
      const uint8_t* group = p.data.get() + (g0 + gi) * p.group_bytes;
      const int64_t first = gi * kRows, rows = std::min<int64_t>(kRows, n_out - first);
      for (int64_t t = 0; t < n_amx; t += 16) {
        amx_int8_tile<L>(group, n_units, a, t, out);
        for (int k = 0; k < 16; ++k) std::memcpy(y + (t + k) * n_out + first, out + kRows * k, static_cast<size_t>(rows) * 4);
      }
    }
    amx_release();
  }
}

// AMX-TILE, AMX-BF16 and AVX512-BF16 in CPUID, and Linux's permission to use the tile data
// (without it the first tile instruction faults).
bool amx_usable() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 22)) || !(d & (1u << 25))) return false;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & (1u << 5))) return false;
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}

template <class L>
void tile_n(int n, const uint8_t* group, int64_t n_units, const Acts& a, int64_t t0, float* out) {
  switch (n) {
    case 1: return tile<L, 1>(&group, n_units, a, t0, out);
    case 2: return tile<L, 2>(&group, n_units, a, t0, out);
    case 3: return tile<L, 3>(&group, n_units, a, t0, out);
    case 4: return tile<L, 4>(&group, n_units, a, t0, out);
    case 5: return tile<L, 5>(&group, n_units, a, t0, out);
    case 6: return tile<L, 6>(&group, n_units, a, t0, out);
    case 7: return tile<L, 7>(&group, n_units, a, t0, out);
    default: return tile<L, 8>(&group, n_units, a, t0, out);
  }
}

template <class L>
std::shared_ptr<PackedMatrix> pack(const TensorView& w, int64_t rows, int64_t cols) {
  const int64_t rb = *row_bytes(L::kType, cols), units = cols / L::kCols, groups = (rows + kRows - 1) / kRows;
  auto p = std::make_shared<PackedMatrix>();
  p->type = L::kType;
  p->rows = rows;
  p->cols = cols;
  p->group_bytes = units * L::kBytes;
  const size_t bytes = static_cast<size_t>(groups * p->group_bytes);
  p->data.reset(static_cast<uint8_t*>(huge_pool_alloc(bytes)));
  if (!p->data) fail("{}: cannot allocate {} bytes for its packed copy (G4_NO_REPACK=1 computes from the file as is)", w.name, bytes);
  const int64_t block_bytes = dtype_info(L::kType).block_bytes;
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* src[kRows];
    for (int64_t u = 0; u < units; ++u) {
      for (int r = 0; r < kRows; ++r) {
        const int64_t row = g * kRows + r;
        src[r] = row < rows ? w.data + row * rb + u * block_bytes : nullptr;
      }
      L::pack(src, p->data.get() + g * p->group_bytes + u * L::kBytes);
    }
  }
  return p;
}

// Tokens [0, n_amx) through AMX in bf16 (x: their f32 activations), stored straight into y:
// each pair of full groups is expanded to bf16 once, then every pair of token tiles passes
// over it. (Chunking the columns so that the activations stay in L2 measured slower: the
// partial sums then go to and from y, which is far larger than the cache at prefill sizes.)
template <class L>
void run_amx(const PackedMatrix& p, const float* x, int64_t n_amx, int64_t n_out, float* y, int64_t row0) {
  const int64_t g0 = row0 / kRows, n_full = n_out / kRows, n_pairs = (n_full + 1) / 2, nb = p.cols / L::kScaleBlock;
  const int64_t n_units = p.cols / L::kCols;
  std::vector<uint16_t>& xt = scratch().tiled_acts;
  acts_bf16(x, n_amx, p.cols, xt);
#pragma omp parallel
  {
    amx_configure();
    uint8_t* w = grown(scratch().unpacked, 16 * p.cols);
    float* s = grown(scratch().f32, 2 * 16 * nb);
    float* m = s + 16 * nb;
    uint16_t* wb = reinterpret_cast<uint16_t*>(grown(scratch().panel, 2 * 2 * 16 * p.cols));  // two groups in bf16
#pragma omp for schedule(static)
    for (int64_t pi = 0; pi < n_pairs; ++pi) {
      const int64_t gi = 2 * pi, ng = std::min<int64_t>(2, n_full - gi);
      for (int64_t j = 0; j < ng; ++j) {
        group_bf16<L>(p.data.get() + (g0 + gi + j) * p.group_bytes, n_units, w, s, m, wb + j * 16 * p.cols);
      }
      __asm__ __volatile__("" ::: "memory");  // GCC's tileloadd does not say it reads memory
      const uint16_t* b[2] = {wb, ng == 2 ? wb + 16 * p.cols : nullptr};
      for (int64_t t = 0; t < n_amx; t += 32) {
        const bool two = t + 16 < n_amx;
        const uint16_t* a[2] = {xt.data() + t * p.cols, two ? xt.data() + (t + 16) * p.cols : nullptr};
        float* c[2][2];
        for (int i = 0; i < 2; ++i)
          for (int j = 0; j < 2; ++j) c[i][j] = y + (t + 16 * i) * n_out + (gi + j) * kRows;
        amx_bf16_2x2(a, b, p.cols / 32, c, n_out * 4);
      }
    }
    amx_release();
  }
}

// One decode work item: groups [gi, gi + NG) of the n_groups (n_out rows) that start at group
// g0 of p, against token t of a, into y[0, n_out). NG groups side by side are NG streams from
// DRAM in flight (decode_groups()).
template <class L, int NG>
void decode_item(const PackedMatrix& p, const Acts& a, int64_t t, int64_t g0, int64_t gi, int64_t n_groups, int64_t n_out,
                 float* y) {
  const int64_t n_units = p.cols / L::kCols, ng = std::min<int64_t>(NG, n_groups - gi);
  const uint8_t* gs[NG];
  for (int q = 0; q < NG; ++q) gs[q] = p.data.get() + (g0 + gi + std::min<int64_t>(q, ng - 1)) * p.group_bytes;
  alignas(64) float out[NG * kRows];
  if (ng == NG) tile<L, 1, NG>(gs, n_units, a, t, out);
  else for (int q = 0; q < ng; ++q) tile<L, 1, 1>(gs + q, n_units, a, t, out + kRows * q);
  for (int q = 0; q < ng; ++q) {
    const int64_t first = (gi + q) * kRows, rows = std::min<int64_t>(kRows, n_out - first);
    std::memcpy(y + first, out + kRows * q, static_cast<size_t>(rows) * 4);
  }
}

// f(std::integral_constant<int, NG>{}) with decode's groups per item.
template <class F>
void with_decode_groups(F&& f) {
  if (decode_groups() == 1) f(std::integral_constant<int, 1>{});
  else f(std::integral_constant<int, 2>{});
}

// Tokens [t_begin, t_end) x groups [g_begin, ..) through the VNNI tile on a, the q8
// activations of the tokens from a0 on.
template <class L>
void run(const PackedMatrix& p, const Acts& a, int64_t a0, int64_t t_begin, int64_t t_end, int64_t g_begin, int64_t n_out,
         float* y, int64_t row0) {
  const int64_t n_units = p.cols / L::kCols, g0 = row0 / kRows, n_groups = (n_out + kRows - 1) / kRows;
  if (t_end - t_begin == 1) {
    with_decode_groups([&]<int NG>(std::integral_constant<int, NG>) {
      parallel_stream((n_groups - g_begin + NG - 1) / NG, [&](int64_t i) {
        decode_item<L, NG>(p, a, t_begin - a0, g0, g_begin + NG * i, n_groups, n_out, y + t_begin * n_out);
      });
    });
    return;
  }
  parallel_stream(n_groups - g_begin, [&](int64_t i) {
    const int64_t gi = g_begin + i;
    const uint8_t* group = p.data.get() + (g0 + gi) * p.group_bytes;
    const int64_t first = gi * kRows, rows = std::min<int64_t>(kRows, n_out - first);
    alignas(64) float out[kTile * kRows];
    for (int64_t t = t_begin; t < t_end; t += kTile) {
      const int nt = static_cast<int>(std::min<int64_t>(kTile, t_end - t));
      tile_n<L>(nt, group, n_units, a, t - a0, out);
      for (int k = 0; k < nt; ++k) std::memcpy(y + (t + k) * n_out + first, out + kRows * k, static_cast<size_t>(rows) * 4);
    }
  });
}

template <class L>
bool matmul(const PackedMatrix& p, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y, int64_t row0,
            bool amx) {
  // AMX takes each 16 tokens on the full groups of 16 rows; VNNI the other tokens, and every
  // token on a last partial group, on q8 activations of just the tokens it takes. Below
  // kAmxMinTokens VNNI takes all. Measured, 6144x1536, 1 thread, ms VNNI / AMX bf16: Q4_0 at 16
  // tokens 0.69 / 0.97, at 32 1.48 / 1.00, at 128 5.3 / 3.1; Q5_0 at 16 0.74 / 1.02, at 32
  // 1.51 / 1.08; Q4_K at 16 1.95 / 1.52; Q6_K at 16 2.38 / 1.89 (integer tiles: amx_int8_tile).
  if constexpr (L::kInt8TilesBelow > 0) {
    if (amx && n_tok >= L::kAmxMinTokens && n_tok < L::kInt8TilesBelow) {  // VNNI's bits for every token
      Acts& acts = scratch().acts;
      quantize_acts(x, n_tok, n_in, L::kZeroPoint, L::kScaleBlock, L::kMin, quantize_block_avx2, acts);
      const int64_t n_amx = n_tok / 16 * 16;
      run_amx_int8<L>(p, acts, n_amx, n_out, y, row0);
      if (n_amx < n_tok) run<L>(p, acts, 0, n_amx, n_tok, 0, n_out, y, row0);
      return true;
    }
  }
  const int64_t min_tokens = std::max(L::kAmxMinTokens, L::kInt8TilesBelow);
  const int64_t n_full = n_out / kRows, n_amx = amx && n_full && n_tok >= min_tokens ? n_tok / 16 * 16 : 0;
  const bool partial = n_full * kRows < n_out;
  if (n_amx) run_amx<L>(p, x, n_amx, n_out, y, row0);
  const int64_t a0 = partial ? 0 : n_amx;
  if (a0 == n_tok) return true;
  Acts& acts = scratch().acts;
  quantize_acts(x + a0 * n_in, n_tok - a0, n_in, L::kZeroPoint, L::kScaleBlock, L::kMin, quantize_block_avx2, acts);
  if (n_amx && partial) run<L>(p, acts, 0, 0, n_amx, n_full, n_out, y, row0);
  run<L>(p, acts, a0, n_amx, n_tok, 0, n_out, y, row0);
  return true;
}

}  // namespace

std::shared_ptr<PackedMatrix> pack_avx512(const TensorView& w) {
  if (w.shape.size() < 2) return nullptr;
  const int64_t cols = w.shape.back(), rows = w.numel() / cols;
  switch (w.dtype) {
    case DType::Q4_0: return cols % Q4_0L::kCols ? nullptr : pack<Q4_0L>(w, rows, cols);
    case DType::Q5_0: return cols % Q5_0L::kCols ? nullptr : pack<Q5_0L>(w, rows, cols);
    case DType::Q8_0: return cols % Q8_0L::kCols ? nullptr : pack<Q8_0L>(w, rows, cols);
    case DType::Q4_K: return cols % Q4_KL::kCols ? nullptr : pack<Q4_KL>(w, rows, cols);
    case DType::Q5_K: return cols % Q5_KL::kCols ? nullptr : pack<Q5_KL>(w, rows, cols);
    case DType::Q6_K: return cols % Q6_KL::kCols ? nullptr : pack<Q6_KL>(w, rows, cols);
    default: return nullptr;
  }
}

bool cpu_has_amx() {
  static const bool v = cpu_has_avx512_vnni() && amx_usable();
  return v;
}

// The CPU family (19h: Zen 3/4, 1Ah: Zen 5) on AMD, 0 on any other vendor: decode's tuning is per
// memory system.
static unsigned amd_family() {
  static const unsigned v = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    __get_cpuid(0, &a, &b, &c, &d);
    if (!(b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163)) return 0u;  // "AuthenticAMD"
    __get_cpuid(1, &a, &b, &c, &d);
    return ((a >> 8) & 0xf) + ((a >> 20) & 0xff);
  }();
  return v;
}

// The best distance is the CPU's memory system's. Measured with weights in huge pages, tg32/64
// t/s by distance. Sapphire Rapids VM, e2b Q4_0 at 2 threads: 2 KiB 22.3, 1 KiB 21.5, 512 B
// 20.8, 3 KiB 22.1, 4 KiB 20.3 (e2b Q6_K at 1 thread: 2 KiB 7.5, 1 KiB 7.0; in 4 KiB pages
// 1 KiB was best). AMD EPYC (Zen 5) VM, 2 KiB / 3 KiB / 4 KiB, 2-3 interleaved rounds: 1
// thread e2b Q6_K 9.6-10.2 / 12.5-13.0 / 12.0-12.9 (6 KiB 9.7-10.1), Q4_K_M 12.3-13.7 /
// 14.2-16.9 / 16.1-16.8, Q4_0 15.6-16.1 / 17.8-18.5 / 17.5-17.6, Q8_0 10.1-10.5 / 10.6-10.7
// / 9.8-10.3, MoE Q4_0 31.5-31.6 / 31.5-33.5 / 31.6; 2 threads e2b Q6_K 16.7-17.3 /
// 21.8-23.4 / 21.9-23.2, Q4_K_M 21.3-26.2 / 30.8-31.2 / 29.7-30.8, Q4_0 29.7-30.0 /
// 30.8-31.6 / 29.8-29.8, MoE Q4_0 48.0-50.8 / 49.5-50.2 / 46.5-50.6.
int decode_prefetch_bytes() {
  static const int v = [] {
    const int dflt = amd_family() ? 3072 : 2048;
    const char* e = std::getenv("G4_DECODE_PREFETCH");
    if (!e || !*e) return dflt;
    char* end = nullptr;
    const long n = std::strtol(e, &end, 10);
    if (*end || n < 0 || n > 65536 || n % 64) {
      // Read before main (kPrefetch): a warning, not an exception nothing could catch.
      std::fprintf(stderr, "g4: G4_DECODE_PREFETCH='%s' ignored: expected a multiple of 64 in 0..65536 (bytes); "
                   "using %d\n", e, dflt);
      return dflt;
    }
    return static_cast<int>(n);
  }();
  return v;
}

// Groups per decode item: two side by side (two streams per thread) where that measured
// faster, one elsewhere. Measured, 6144 x 1536 matrices from DRAM (BM_DecodeFromDram), 1
// thread, GB/s: Sapphire Rapids VM, Q4_0 one group 12.2, two 13.2, four 13.3 (two then gained
// 3-6% more with tile()'s stream skip); Q8_0, Q4_K, Q6_K within noise. AMD EPYC Zen 4 (family
// 19h) VM, two runs each, two groups / one: Q4_0 15.4-18.6 / 28.0-29.2, Q8_0 15.0-15.4 /
// 25.0-27.3, Q4_K 13.0-14.4 / 16.9-18.4, Q6_K 10.6-11.0 / 7.3-8.2; in the model, e2b tg32 at
// 1 thread, ABBA: Q4_0 11.9-14.3 / 19.0-20.5 t/s, Q8_0 5.3-6.4 / 9.0-10.4, Q4_K_M 8.6 /
// 8.9-9.1. Q6_K's two were faster only while its unit was read out of address order (Q6_KL):
// read in order, one group 21.2-26.3 GB/s, two 14.6-15.8. So family 19h takes one (Zen 5 is family
// 1Ah: two). G4_DECODE_GROUPS=1 or 2 overrides.
int decode_groups() {
  static const int forced = [] {
    const char* e = std::getenv("G4_DECODE_GROUPS");
    if (!e || !*e) return 0;
    if (std::strcmp(e, "1") == 0 || std::strcmp(e, "2") == 0) return e[0] - '0';
    // Read at the first decode: a warning, as G4_DECODE_PREFETCH's.
    std::fprintf(stderr, "g4: G4_DECODE_GROUPS='%s' ignored: expected 1 or 2\n", e);
    return 0;
  }();
  if (forced) return forced;
  return amd_family() == 0x19 ? 1 : 2;
}

// f(L{}) with the packed layout of type t; false for a type without one.
template <class F>
bool with_layout(DType t, F&& f) {
  switch (t) {
    case DType::Q4_0: return f(Q4_0L{});
    case DType::Q5_0: return f(Q5_0L{});
    case DType::Q8_0: return f(Q8_0L{});
    case DType::Q4_K: return f(Q4_KL{});
    case DType::Q5_K: return f(Q5_KL{});
    case DType::Q6_K: return f(Q6_KL{});
    default: return false;
  }
}

bool matmul_packed_avx512(const PackedMatrix& p, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y,
                          int64_t row0, bool amx) {
  amx = amx && cpu_has_amx();
  if (n_in != p.cols || row0 % kRows != 0 || row0 < 0 || row0 + n_out > p.rows || n_tok < 1) return false;
  return with_layout(p.type, [&]<class L>(L) { return matmul<L>(p, x, n_tok, n_in, n_out, y, row0, amx); });
}

bool matmul_slices_packed_avx512(const PackedMatrix& p, const float* x, int64_t n_x, int64_t n_in, int64_t n_out, float* y,
                                 std::span<const int64_t> row0s) {
  const auto n = static_cast<int64_t>(row0s.size());
  if (n_in != p.cols || n_out < 1 || n < 1 || (n_x != 1 && n_x != n)) return false;
  for (const int64_t r : row0s)
    if (r % kRows != 0 || r < 0 || r + n_out > p.rows) return false;
  return with_layout(p.type, [&]<class L>(L) {
    Acts& acts = scratch().acts;
    quantize_acts(x, n_x, n_in, L::kZeroPoint, L::kScaleBlock, L::kMin, quantize_block_avx2, acts);
    // Slice after slice, each in decode's items: the threads split the whole list, so a call
    // waits once for its slowest thread, not once per slice.
    with_decode_groups([&]<int NG>(std::integral_constant<int, NG>) {
      const int64_t n_groups = (n_out + kRows - 1) / kRows, per = (n_groups + NG - 1) / NG;
      parallel_stream(n * per, [&](int64_t i) {
        const int64_t k = i / per;
        decode_item<L, NG>(p, acts, n_x == 1 ? 0 : k, row0s[static_cast<size_t>(k)] / kRows, NG * (i % per), n_groups, n_out,
                           y + k * n_out);
      });
    });
    return true;
  });
}

}  // namespace g4::fast_detail

#endif  // __x86_64__
