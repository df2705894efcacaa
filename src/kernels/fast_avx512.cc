// AVX-512 VNNI matmul (uint8 x int8 -> int32 with vpdpbusd, exact).
//
// Activations are quantized per token to int8 blocks of 32 (scale d), as llama.cpp's q8_0.
// Weights are unpacked to uint8 with a zero point zp (the activations carry -zp * sum(x)
// per block), a scale per block of 32 (per 16 for Q6_K/Q2_K/Q3_K) and, for types with a
// minimum, a minimum per block.
//
// Prefill: a panel of 16 rows is unpacked and interleaved so that one 64-byte vector holds
// 4 consecutive weights of each of the 16 rows; a vpdpbusd against 4 broadcast activation
// bytes then advances 16 row dots at once, and a whole block needs one convert and one FMA
// per token for 16 rows. Tiles are 16 rows x 8 tokens, the panel stays in L1/L2 while
// every token tile passes over it.
//
// Decode: the common types (Q4_0, Q8_0, Q4_K) are decoded in registers, 64 weights at a
// time in "chunk layout": the four 16-element groups g0 g1 g2 g3 in the order g0 g2 g1 g3,
// the order in which a pair of Q4_0/Q4_K blocks comes out of a 256-bit nibble split, so
// lanes 4i..4i+3 of a 16-lane vector cover group (0, 2, 1, 3)[i].
//
// x86-64 only (the whole file); block offsets and sizes come from kernels/blocks.h.
#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/blocks.h"
#include "kernels/dequant.h"
#include "kernels/fast_internal.h"
#include "util/half.h"
#include "util/parallel.h"

#define G4_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,fma,f16c")))

namespace g4::fast_detail {
namespace {

using namespace blocks;

constexpr int kChunk = 64;
constexpr int kGroupOfLane[4] = {0, 2, 1, 3};  // lane group -> 16-element group

// The uint8 weight is q_stored = q + zero_point; the activations carry -zp * sum(x).
int zero_point(DType t) {
  if (has_min(t)) return 0;
  return t == DType::Q4_0 ? 8 : 128;  // Q4_0 nibbles as stored; int8 values + 128 otherwise
}

// One unpacked row: per chunk 64 uint8, 16 scales, and (types with a minimum) 16 minimums.
int64_t unit_bytes(bool min) { return min ? 192 : 128; }

G4_AVX512 inline __m512 pair_lanes(float s0, float s1) {
  const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
  return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_setr_ps(s0, s1, 0, 0)));
}

G4_AVX512 inline float half_at(const uint8_t* p) { return load_f16_f16c(p); }

// Decode streams weights from DRAM: prefetching 4 KiB ahead took e2b Q4_0 decode from
// 6.8 to 10.3-11.4 tokens/s (2 threads), about 94% of the measured read bandwidth.
constexpr int kPrefetchBytes = 4096;

// Chunk decoders of the types with a fused path: chunk c of a row as 64 uint8 in chunk
// layout, its 16 lane scales, and (types with a minimum) 16 lane minimums.
struct ChunkQ4_0 {
  static constexpr bool kMin = false;
  static constexpr int kZeroPoint = 8, kBytes = 2 * sizeof(block_q4_0);
  G4_AVX512 static void decode(const uint8_t* row, int64_t c, __m512i& w, __m512& s, __m512&) {
    const block_q4_0* b = block_at<block_q4_0>(row, 2 * c);
    const __m256i nib = _mm256_set1_epi8(0x0f);
    const __m256i raw = _mm256_setr_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[0].qs)),
                                          _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[1].qs)));
    const __m256i lo = _mm256_and_si256(raw, nib), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), nib);
    w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);  // g0 g2 | g1 g3
    s = pair_lanes(half_at(b[0].d), half_at(b[1].d));
  }
};

struct ChunkQ8_0 {
  static constexpr bool kMin = false;
  static constexpr int kZeroPoint = 128, kBytes = 2 * sizeof(block_q8_0);
  G4_AVX512 static void decode(const uint8_t* row, int64_t c, __m512i& w, __m512& s, __m512&) {
    const block_q8_0* b = block_at<block_q8_0>(row, 2 * c);
    const __m512i q = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[0].qs))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[1].qs)), 1);
    const __m512i ordered = _mm512_shuffle_i64x2(q, q, _MM_SHUFFLE(3, 1, 2, 0));  // g0 g1 g2 g3 -> g0 g2 g1 g3
    w = _mm512_xor_si512(ordered, _mm512_set1_epi8(static_cast<char>(0x80)));
    s = pair_lanes(half_at(b[0].d), half_at(b[1].d));
  }
};

struct ChunkQ4_K {
  static constexpr bool kMin = true;
  static constexpr int kZeroPoint = 0, kBytes = sizeof(block_q4_k) / 4;
  G4_AVX512 static void decode(const uint8_t* row, int64_t c, __m512i& w, __m512& s, __m512& m) {
    const block_q4_k& b = *block_at<block_q4_k>(row, c / 4);
    const int j = static_cast<int>(c % 4);
    const __m256i nib = _mm256_set1_epi8(0x0f);
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * j));
    const __m256i lo = _mm256_and_si256(raw, nib), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), nib);
    const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    w = _mm512_shuffle_i64x2(q, q, _MM_SHUFFLE(3, 1, 2, 0));  // lo(A) lo(B) hi(A) hi(B) -> g0 g2 g1 g3
    uint8_t s0, m0, s1, m1;
    scale_min_k4(2 * j, b.scales, s0, m0);
    scale_min_k4(2 * j + 1, b.scales, s1, m1);
    const float d = half_at(b.d), dmin = half_at(b.dmin);
    s = pair_lanes(d * s0, d * s1);
    m = pair_lanes(-dmin * m0, -dmin * m1);
  }
};

// Decode (few tokens): one row against token t, decoded in registers, never stored.
// The types here have 32-element scale blocks: chunk c is blocks 2c and 2c+1.
template <class D>
G4_AVX512 float dot_fused(const uint8_t* row, const Acts& a, int64_t t) {
  const __m512i block_of_lane = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
  __m512 acc = _mm512_setzero_ps(), acc_min = _mm512_setzero_ps();
  const int8_t* xq = a.q.data() + t * a.n_in;
  const int64_t b0 = t * a.n_blocks;
  for (int64_t c = 0; c < a.n_in / kChunk; ++c) {
    __m512i w;
    __m512 s, m;
    _mm_prefetch(reinterpret_cast<const char*>(row) + c * D::kBytes + kPrefetchBytes, _MM_HINT_T0);
    D::decode(row, c, w, s, m);
    const __m512i xp = _mm512_loadu_si512(xq + c * kChunk);
    const __m512i x = _mm512_shuffle_i64x2(xp, xp, _MM_SHUFFLE(3, 1, 2, 0));  // to chunk layout
    // The two blocks' corrections in one lane each (lane 0: block 2c, lane 4: block 2c+1).
    const __m128i corr2 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(a.corr.data() + b0 + 2 * c));
    const __m512i corr = _mm512_maskz_permutexvar_epi32(0x0011, block_of_lane, _mm512_castsi128_si512(corr2));
    const __m512i dot = _mm512_dpbusd_epi32(corr, w, x);
    const __m128 d2 = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(a.d.data() + b0 + 2 * c)));
    const __m512 dx = _mm512_permutexvar_ps(block_of_lane, _mm512_castps128_ps512(d2));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(s, dx), acc);
    if constexpr (D::kMin) {  // 8 lanes per block: each carries sum/8 (exact)
      const __m128 sx2 = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(a.sx.data() + b0 + 2 * c)));
      const __m512 sx = _mm512_mul_ps(_mm512_permutexvar_ps(block_of_lane, _mm512_castps128_ps512(sx2)), _mm512_set1_ps(0.125f));
      acc_min = _mm512_fmadd_ps(m, sx, acc_min);
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc, acc_min));
}

// A panel of 16 rows, per scale block: bs/4 vectors of 64 bytes (lane r: 4 consecutive
// weights of row r), 16 scales, and (types with a minimum) 16 minimums.
int64_t panel_unit(int bs, bool min) { return bs / 4 * 64 + 64 + (min ? 64 : 0); }

// Where lane `lane` of a chunk (chunk layout) goes in a panel, from the chunk's first block.
int64_t lane_offset(int lane, int bs, int64_t unit) {
  const int64_t e = 16 * kGroupOfLane[lane / 4] + 4 * (lane % 4);
  return (e / bs) * unit + ((e % bs) / 4) * 64;
}

// In-place transpose of a 16 x 16 matrix of dwords (v[i] is row i).
G4_AVX512 inline void transpose16x16(__m512i* v) {
  __m512i t[16], u[16];
  for (int k = 0; k < 8; ++k) {  // lane l of t[2k]: a[2k][4l], a[2k+1][4l], a[2k][4l+1], a[2k+1][4l+1]
    t[2 * k] = _mm512_unpacklo_epi32(v[2 * k], v[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_epi32(v[2 * k], v[2 * k + 1]);
  }
  for (int k = 0; k < 4; ++k) {  // lane l of u[4k+m]: rows 4k..4k+3 of column 4l+m
    u[4 * k] = _mm512_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
    u[4 * k + 1] = _mm512_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
    u[4 * k + 2] = _mm512_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
    u[4 * k + 3] = _mm512_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
  }
  for (int m = 0; m < 4; ++m) {  // column 4l+m gathers lane l of u[m], u[4+m], u[8+m], u[12+m]
    const __m512i a01 = _mm512_shuffle_i32x4(u[m], u[4 + m], 0x44), a23 = _mm512_shuffle_i32x4(u[m], u[4 + m], 0xEE);
    const __m512i b01 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0x44), b23 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0xEE);
    v[m] = _mm512_shuffle_i32x4(a01, b01, 0x88);
    v[4 + m] = _mm512_shuffle_i32x4(a01, b01, 0xDD);
    v[8 + m] = _mm512_shuffle_i32x4(a23, b23, 0x88);
    v[12 + m] = _mm512_shuffle_i32x4(a23, b23, 0xDD);
  }
}

// The panel of `n_rows` rows (the rest zero) of a fused type, chunk by chunk: 16 rows are
// decoded in registers and transposed, so nothing goes through an unpacked copy.
template <class D>
G4_AVX512 void build_panel_fused(const uint8_t* rows, int64_t rb, int64_t n_rows, int64_t n_in, uint8_t* panel) {
  constexpr int kBs = 32;  // the fused types have 32-element scale blocks: 2 per chunk
  const int64_t unit = panel_unit(kBs, D::kMin);
  int64_t dst[16];
  for (int lane = 0; lane < 16; ++lane) dst[lane] = lane_offset(lane, kBs, unit);
  alignas(64) float scale[16][16] = {}, minimum[16][16] = {};
  for (int64_t c = 0; c < n_in / kChunk; ++c) {
    __m512i v[16];
    for (int64_t r = 0; r < 16; ++r) {
      if (r >= n_rows) {
        v[r] = _mm512_setzero_si512();
        continue;
      }
      __m512 s, m;
      _mm_prefetch(reinterpret_cast<const char*>(rows + r * rb) + c * D::kBytes + kPrefetchBytes, _MM_HINT_T0);
      D::decode(rows + r * rb, c, v[r], s, m);
      _mm512_store_ps(scale[r], s);
      if constexpr (D::kMin) _mm512_store_ps(minimum[r], m);
    }
    transpose16x16(v);
    uint8_t* chunk = panel + c * 2 * unit;
    for (int lane = 0; lane < 16; ++lane) _mm512_storeu_si512(chunk + dst[lane], v[lane]);
    for (int b = 0; b < 2; ++b) {  // lane 0 carries group 0 (block 0), lane 4 group 2 (block 1)
      float* bs_ptr = reinterpret_cast<float*>(chunk + b * unit + kBs / 4 * 64);
      for (int r = 0; r < 16; ++r) {
        bs_ptr[r] = scale[r][4 * b];
        if constexpr (D::kMin) bs_ptr[16 + r] = minimum[r][4 * b];
      }
    }
  }
}

using DotFused = float (*)(const uint8_t*, const Acts&, int64_t);
using BuildPanel = void (*)(const uint8_t*, int64_t, int64_t, int64_t, uint8_t*);

struct Fused {
  DotFused dot = nullptr;
  BuildPanel panel = nullptr;
};

Fused fused_for(DType t) {
  switch (t) {
    case DType::Q4_0: return {dot_fused<ChunkQ4_0>, build_panel_fused<ChunkQ4_0>};
    case DType::Q8_0: return {dot_fused<ChunkQ8_0>, build_panel_fused<ChunkQ8_0>};
    case DType::Q4_K: return {dot_fused<ChunkQ4_K>, build_panel_fused<ChunkQ4_K>};
    default: return {};
  }
}

// Unpacks one row into `out` (chunks * unit bytes). `u` is scratch for the generic path.
void unpack_row_vnni(DType t, const uint8_t* src, int64_t n_in, uint8_t* out, UnpackedRow& u) {
  const int64_t chunks = n_in / kChunk;
  unpack_row(t, src, n_in, u);
  const bool min = has_min(t);
  const uint8_t flip = min ? 0 : 0x80;  // int8 + 128 as uint8
  for (int64_t c = 0; c < chunks; ++c, out += unit_bytes(min)) {
    float* s = reinterpret_cast<float*>(out + 64);
    float* m = reinterpret_cast<float*>(out + 128);
    for (int i = 0; i < 4; ++i) {
      const int64_t g = 4 * c + kGroupOfLane[i];
      for (int k = 0; k < 16; ++k) out[16 * i + k] = static_cast<uint8_t>(u.q[static_cast<size_t>(16 * g + k)]) ^ flip;
      for (int k = 0; k < 4; ++k) {
        s[4 * i + k] = u.s[static_cast<size_t>(g)];
        if (min) m[4 * i + k] = u.c[static_cast<size_t>(g)];
      }
    }
  }
}

// Interleaves `rows` unpacked rows (chunk layout, see unpack_row_vnni) into a panel; the
// rows beyond `rows` are zero.
void build_panel(const uint8_t* unpacked, int64_t row_stride, int64_t rows, int64_t n_in, int bs, bool min,
                 uint8_t* panel) {
  const int64_t unit = panel_unit(bs, min), n_blocks = n_in / bs, slices = bs / 4;
  const int64_t blocks_per_chunk = kChunk / bs;
  // Where each lane of a chunk goes, relative to the chunk's first block.
  int64_t lane_dst[16];
  for (int lane = 0; lane < 16; ++lane) lane_dst[lane] = lane_offset(lane, bs, unit);
  if (rows < 16) std::memset(panel, 0, static_cast<size_t>(n_blocks * unit));
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* src = unpacked + r * row_stride;
    for (int64_t c = 0; c < n_in / kChunk; ++c, src += unit_bytes(min)) {
      uint8_t* chunk = panel + c * blocks_per_chunk * unit;
      for (int lane = 0; lane < 16; ++lane) std::memcpy(chunk + lane_dst[lane] + 4 * r, src + 4 * lane, 4);
      const float* s = reinterpret_cast<const float*>(src + 64);
      const float* m = reinterpret_cast<const float*>(src + 128);
      for (int lane = 0; lane < 16; lane += 4) {  // one lane of each 16-element group
        const int64_t block = (16 * kGroupOfLane[lane / 4]) / bs;
        float* bs_ptr = reinterpret_cast<float*>(chunk + block * unit + slices * 64);
        bs_ptr[r] = s[lane];
        if (min) bs_ptr[16 + r] = m[lane];
      }
    }
  }
}

// out[k * 16 + r] = row r . token (t0 + k), for the 16 rows of a panel and T tokens.
template <int T, int BS, bool MIN>
G4_AVX512 void panel_16xT(const uint8_t* panel, const Acts& a, int64_t t0, float* out) {
  constexpr int kSlices = BS / 4;
  const int64_t unit = panel_unit(BS, MIN);
  __m512 acc[T];
  for (auto& v : acc) v = _mm512_setzero_ps();
  const int8_t* xq = a.q.data() + t0 * a.n_in;
  const int64_t nb = a.n_blocks;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* p = panel + b * unit;
    __m512i dot[T];
    for (int k = 0; k < T; ++k) dot[k] = _mm512_set1_epi32(a.corr[static_cast<size_t>((t0 + k) * nb + b)]);
    for (int sl = 0; sl < kSlices; ++sl) {
      const __m512i w = _mm512_loadu_si512(p + 64 * sl);
      for (int k = 0; k < T; ++k) {
        int32_t x4;
        std::memcpy(&x4, xq + k * a.n_in + b * BS + 4 * sl, 4);
        dot[k] = _mm512_dpbusd_epi32(dot[k], w, _mm512_set1_epi32(x4));
      }
    }
    const __m512 sw = _mm512_loadu_ps(p + kSlices * 64);
    for (int k = 0; k < T; ++k) {
      const __m512 scale = _mm512_mul_ps(sw, _mm512_set1_ps(a.d[static_cast<size_t>((t0 + k) * nb + b)]));
      acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[k]), scale, acc[k]);
    }
    if constexpr (MIN) {
      const __m512 mw = _mm512_loadu_ps(p + kSlices * 64 + 64);
      for (int k = 0; k < T; ++k)
        acc[k] = _mm512_fmadd_ps(mw, _mm512_set1_ps(a.sx[static_cast<size_t>((t0 + k) * nb + b)]), acc[k]);
    }
  }
  for (int k = 0; k < T; ++k) _mm512_storeu_ps(out + 16 * k, acc[k]);
}

constexpr int kTileTokens = 8;

template <int BS, bool MIN>
void panel_tile(int n, const uint8_t* panel, const Acts& a, int64_t t0, float* out) {
  switch (n) {
    case 1: return panel_16xT<1, BS, MIN>(panel, a, t0, out);
    case 2: return panel_16xT<2, BS, MIN>(panel, a, t0, out);
    case 3: return panel_16xT<3, BS, MIN>(panel, a, t0, out);
    case 4: return panel_16xT<4, BS, MIN>(panel, a, t0, out);
    case 5: return panel_16xT<5, BS, MIN>(panel, a, t0, out);
    case 6: return panel_16xT<6, BS, MIN>(panel, a, t0, out);
    case 7: return panel_16xT<7, BS, MIN>(panel, a, t0, out);
    default: return panel_16xT<8, BS, MIN>(panel, a, t0, out);
  }
}

using PanelTile = void (*)(int, const uint8_t*, const Acts&, int64_t, float*);

PanelTile panel_tile_for(int bs, bool min) {
  if (bs == 16) return panel_tile<16, false>;  // the 16-scale types have no minimum
  return min ? panel_tile<32, true> : panel_tile<32, false>;
}

// acc[r][t] over whole 16-float steps of rows r and tokens t; lanes 0-7 of a zmm accumulator
// are dot_f32_avx2's a0 and lanes 8-15 its a1, so the sums are that function's bits.
template <int R, int T>
G4_AVX512 void f32_block(const float* const* rows, const float* x, int64_t n_in, float* y, int64_t y_stride) {
  __m512 acc[R][T];
  for (auto& ar : acc)
    for (auto& v : ar) v = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n_in; i += 16) {
    __m512 w[R];
    for (int r = 0; r < R; ++r) {
      // Decode streams the rows from memory (e2b's F32 per-layer projection, 55 MB a token):
      // 2 KiB ahead as the packed kernels, 10.7-14.4 -> 15.4-15.6 GB/s at 1 thread.
      if constexpr (T == 1) _mm_prefetch(reinterpret_cast<const char*>(rows[r] + i) + 2048, _MM_HINT_T0);
      w[r] = _mm512_loadu_ps(rows[r] + i);
    }
    for (int t = 0; t < T; ++t) {
      const __m512 xv = _mm512_loadu_ps(x + t * n_in + i);
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(w[r], xv, acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) {
      const __m256 lo = _mm512_castps512_ps256(acc[r][t]), hi = _mm512_extractf32x8_ps(acc[r][t], 1);
      y[t * y_stride + r] = dot_tail(rows[r], x + t * n_in, i, n_in, hsum256(_mm256_add_ps(lo, hi)));
    }
}

template <int R>
void f32_block_t(int t, const float* const* rows, const float* x, int64_t n_in, float* y, int64_t y_stride) {
  switch (t) {
    case 1: return f32_block<R, 1>(rows, x, n_in, y, y_stride);
    case 2: return f32_block<R, 2>(rows, x, n_in, y, y_stride);
    case 3: return f32_block<R, 3>(rows, x, n_in, y, y_stride);
    default: return f32_block<R, 4>(rows, x, n_in, y, y_stride);
  }
}

}  // namespace

void f32_rows_avx512(const float* const* rows, int64_t n_rows, const float* x, int64_t n_tok, int64_t n_in, float* y,
                     int64_t y_stride) {
  // 4 rows x 4 tokens per pass: 16 accumulators, 8 loads per 16 FMAs.
  for (int64_t r = 0; r < n_rows; r += 4)
    for (int64_t t = 0; t < n_tok; t += 4) {
      const int nt = static_cast<int>(std::min<int64_t>(4, n_tok - t));
      const float* const* rr = rows + r;
      const float* xt = x + t * n_in;
      float* yt = y + t * y_stride + r;
      switch (std::min<int64_t>(4, n_rows - r)) {
        case 1: f32_block_t<1>(nt, rr, xt, n_in, yt, y_stride); break;
        case 2: f32_block_t<2>(nt, rr, xt, n_in, yt, y_stride); break;
        case 3: f32_block_t<3>(nt, rr, xt, n_in, yt, y_stride); break;
        default: f32_block_t<4>(nt, rr, xt, n_in, yt, y_stride); break;
      }
    }
}

bool cpu_has_avx512_vnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

bool matmul_avx512_vnni(const TensorView& w, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y,
                        int64_t row0) {
  if (!is_quantized(w.dtype) || n_in % kChunk != 0) return false;
  const int64_t rb = *row_bytes(w.dtype, n_in);
  const bool min = has_min(w.dtype);
  const int bs = scale_block(w.dtype);
  const Fused f = fused_for(w.dtype);
  // Decode of the other types: a panel costs more than it saves for one token; the AVX2
  // kernels stream those rows (decode is bound by memory reads, not arithmetic).
  if (n_tok < 4 && !f.dot) return false;
  Acts& acts = scratch().acts;
  quantize_acts(x, n_tok, n_in, zero_point(w.dtype), bs, min, quantize_block_avx2, acts);
  if (f.dot && n_tok < 4) {
    constexpr int64_t kRowsPerItem = 16;
    parallel_stream((n_out + kRowsPerItem - 1) / kRowsPerItem, [&](int64_t item) {
      for (int64_t o = item * kRowsPerItem; o < std::min(n_out, (item + 1) * kRowsPerItem); ++o)
        for (int64_t t = 0; t < n_tok; ++t) y[t * n_out + o] = f.dot(w.data + (row0 + o) * rb, acts, t);
    });
    return true;
  }
  constexpr int64_t kPanelRows = 16;
  const int64_t row_stride = n_in / kChunk * unit_bytes(min);
  const int64_t n_panels = (n_out + kPanelRows - 1) / kPanelRows;
  const PanelTile tile = panel_tile_for(bs, min);
#pragma omp parallel
  {
    Scratch& sc = scratch();
    uint8_t* unpacked = f.panel ? nullptr : grown(sc.unpacked, kPanelRows * row_stride);
    uint8_t* panel = grown(sc.panel, n_in / bs * panel_unit(bs, min));
    alignas(64) float out[kTileTokens * 16];
#pragma omp for schedule(static)
    for (int64_t pi = 0; pi < n_panels; ++pi) {
      const int64_t first = pi * kPanelRows, rows = std::min(kPanelRows, n_out - first);
      if (f.panel) {
        f.panel(w.data + (row0 + first) * rb, rb, rows, n_in, panel);
      } else {
        for (int64_t r = 0; r < rows; ++r)
          unpack_row_vnni(w.dtype, w.data + (row0 + first + r) * rb, n_in, unpacked + r * row_stride, sc.row);
        build_panel(unpacked, row_stride, rows, n_in, bs, min, panel);
      }
      for (int64_t t = 0; t < n_tok; t += kTileTokens) {
        const int nt = static_cast<int>(std::min<int64_t>(kTileTokens, n_tok - t));
        tile(nt, panel, acts, t, out);
        for (int k = 0; k < nt; ++k) std::memcpy(y + (t + k) * n_out + first, out + 16 * k, static_cast<size_t>(rows) * 4);
      }
    }
  }
  return true;
}

namespace {

// Element order from chunk layout: lanes 4i..4i+3 (bytes 16i..16i+15) hold group
// kGroupOfLane[i]; y = s * (w - zero point) + m, as the scalar decoders compute it.
template <class D>
G4_AVX512 void decode_chunks_as_floats(const uint8_t* row, int64_t n, float* y) {
  for (int64_t c = 0; c < n / kChunk; ++c) {
    __m512i w;
    __m512 s, m = _mm512_setzero_ps();
    D::decode(row, c, w, s, m);
    alignas(64) uint8_t q[64];
    alignas(64) float sv[16], mv[16];
    _mm512_store_si512(q, w);
    _mm512_store_ps(sv, s);
    _mm512_store_ps(mv, m);
    for (int i = 0; i < 4; ++i)
      for (int k = 0; k < 16; ++k) {
        const float v = static_cast<float>(q[16 * i + k] - D::kZeroPoint);
        y[kChunk * c + 16 * kGroupOfLane[i] + k] = D::kMin ? sv[4 * i] * v + mv[4 * i] : v * sv[4 * i];
      }
  }
}

}  // namespace

bool decode_row_avx512(DType t, const uint8_t* row, int64_t n, float* y) {
  if (!cpu_has_avx512_vnni()) return false;
  switch (t) {
    case DType::Q4_0: decode_chunks_as_floats<ChunkQ4_0>(row, n, y); return true;
    case DType::Q8_0: decode_chunks_as_floats<ChunkQ8_0>(row, n, y); return true;
    case DType::Q4_K: decode_chunks_as_floats<ChunkQ4_K>(row, n, y); return true;
    default: return false;
  }
}

}  // namespace g4::fast_detail

#endif  // __x86_64__
