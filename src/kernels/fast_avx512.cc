// AVX-512 VNNI matmul: weight rows are unpacked, a panel at a time, into uint8 with a
// zero point and per-16 scales (and per-16 minimums for the types that have them),
// then multiplied against 8-bit activations in 4x4 register tiles (rows x tokens) with
// vpdpbusd (uint8 x int8 -> int32, exact). The panel stays in L2 while every token tile
// passes over it, so prefill is arithmetic-bound and decode streams each row once.
//
// Layout of one chunk of 64 elements, for weights and activations alike: the four
// 16-element groups g0 g1 g2 g3 are stored in the order g0 g2 g1 g3, because that is
// the order in which a Q4_0/Q4_K pair of blocks comes out of a 256-bit nibble split.
// Lanes 4i..4i+3 of a 16-lane vector therefore cover group (0, 2, 1, 3)[i].
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/dequant.h"
#include "kernels/fast_internal.h"
#include "util/half.h"

#define G4_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,fma,f16c")))

namespace g4::fast_detail {
namespace {

constexpr int kChunk = 64;
constexpr int kGroupOfLane[4] = {0, 2, 1, 3};  // lane group -> 16-element group

// Types whose dequantization is s * q + m (unsigned q, a minimum per group).
bool has_min(DType t) { return t == DType::Q4_1 || t == DType::Q5_1 || t == DType::Q4_K || t == DType::Q5_K; }

// The uint8 weight is q_stored = q + zero_point; the activations carry -zp * sum(x).
int zero_point(DType t) {
  if (has_min(t)) return 0;
  return t == DType::Q4_0 ? 8 : 128;  // Q4_0 nibbles as stored; int8 values + 128 otherwise
}

// Activations of n tokens in chunk layout: int8 values, per lane -zp * (sum of its 4
// values), per lane the block scale d, and (types with a minimum) per lane d * group sum / 4.
struct VnniActs {
  int64_t chunks = 0;
  std::vector<int8_t> q;
  std::vector<int32_t> corr;
  std::vector<float> dx, sx;
};

G4_AVX512 void quantize_acts(const float* x, int64_t n_tok, int64_t n_in, int zp, bool with_sums, VnniActs& a) {
  const int64_t chunks = n_in / kChunk;
  a.chunks = chunks;
  a.q.resize(static_cast<size_t>(n_tok * n_in));
  a.corr.resize(static_cast<size_t>(n_tok * chunks * 16));
  a.dx.resize(a.corr.size());
  a.sx.resize(with_sums ? a.corr.size() : 0);
  const __m512 sign = _mm512_set1_ps(-0.0f);
  const __m512i ones = _mm512_set1_epi8(1);
  const __m512i neg_zp = _mm512_set1_epi32(-zp);
  const __m512i lane_block = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
#pragma omp parallel for schedule(static) if (n_tok > 1)
  for (int64_t t = 0; t < n_tok; ++t) {
    for (int64_t c = 0; c < chunks; ++c) {
      const float* xc = x + t * n_in + c * kChunk;
      __m512 g[4];
      for (int i = 0; i < 4; ++i) g[i] = _mm512_loadu_ps(xc + 16 * i);
      const float amax0 = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, g[0]), _mm512_andnot_ps(sign, g[1])));
      const float amax1 = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, g[2]), _mm512_andnot_ps(sign, g[3])));
      const float d0 = amax0 / 127.0f, d1 = amax1 / 127.0f;
      const float id0 = d0 ? 1.0f / d0 : 0.0f, id1 = d1 ? 1.0f / d1 : 0.0f;
      __m128i q8[4];
      for (int i = 0; i < 4; ++i)  // default rounding is to nearest even, as nearbyint
        q8[i] = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(g[i], _mm512_set1_ps(i < 2 ? id0 : id1))));
      const __m512i qz = _mm512_inserti64x4(
          _mm512_castsi256_si512(_mm256_setr_m128i(q8[0], q8[2])), _mm256_setr_m128i(q8[1], q8[3]), 1);
      const int64_t lane0 = (t * chunks + c) * 16;
      _mm512_storeu_si512(a.q.data() + t * n_in + c * kChunk, qz);
      const __m512i lane_sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, qz);
      _mm512_storeu_si512(a.corr.data() + lane0, _mm512_mullo_epi32(lane_sums, neg_zp));
      const __m512 dlanes = _mm512_permutexvar_ps(lane_block, _mm512_castps128_ps512(_mm_setr_ps(d0, d1, 0, 0)));
      _mm512_storeu_ps(a.dx.data() + lane0, dlanes);
      if (with_sums) {
        alignas(64) int32_t ls[16];
        _mm512_store_si512(ls, lane_sums);
        for (int i = 0; i < 4; ++i) {
          const float s = static_cast<float>(ls[4 * i] + ls[4 * i + 1] + ls[4 * i + 2] + ls[4 * i + 3]) / 4.0f;
          for (int k = 0; k < 4; ++k) a.sx[static_cast<size_t>(lane0 + 4 * i + k)] = s;
        }
        _mm512_storeu_ps(a.sx.data() + lane0, _mm512_mul_ps(_mm512_loadu_ps(a.sx.data() + lane0), dlanes));
      }
    }
  }
}

// One unpacked row: per chunk 64 uint8, 16 scales, and (types with a minimum) 16 minimums.
int64_t unit_bytes(bool min) { return min ? 192 : 128; }

G4_AVX512 inline __m512 pair_lanes(float s0, float s1) {
  const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
  return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_setr_ps(s0, s1, 0, 0)));
}

G4_AVX512 inline float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// Decode streams weights from DRAM: prefetching 4 KiB ahead took e2b Q4_0 decode from
// 6.8 to 10.3-11.4 tokens/s (2 threads), about 94% of the measured read bandwidth.
constexpr int kPrefetchBytes = 4096;

// Chunk decoders of the types with a fused path: chunk c of a row as 64 uint8 in chunk
// layout, its 16 lane scales, and (types with a minimum) 16 lane minimums.
struct ChunkQ4_0 {
  static constexpr bool kMin = false;
  static constexpr int kBytes = 36;
  G4_AVX512 static void decode(const uint8_t* row, int64_t c, __m512i& w, __m512& s, __m512&) {
    const uint8_t* b = row + 36 * c;
    const __m256i nib = _mm256_set1_epi8(0x0f);
    const __m256i raw = _mm256_setr_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2)),
                                          _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 20)));
    const __m256i lo = _mm256_and_si256(raw, nib), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), nib);
    w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);  // g0 g2 | g1 g3
    s = pair_lanes(half_at(b), half_at(b + 18));
  }
};

struct ChunkQ8_0 {
  static constexpr bool kMin = false;
  static constexpr int kBytes = 68;
  G4_AVX512 static void decode(const uint8_t* row, int64_t c, __m512i& w, __m512& s, __m512&) {
    const uint8_t* b = row + 68 * c;
    const __m512i q = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 36)), 1);
    const __m512i ordered = _mm512_shuffle_i64x2(q, q, _MM_SHUFFLE(3, 1, 2, 0));  // g0 g1 g2 g3 -> g0 g2 g1 g3
    w = _mm512_xor_si512(ordered, _mm512_set1_epi8(static_cast<char>(0x80)));
    s = pair_lanes(half_at(b), half_at(b + 34));
  }
};

struct ChunkQ4_K {
  static constexpr bool kMin = true;
  static constexpr int kBytes = 72;
  G4_AVX512 static void decode(const uint8_t* row, int64_t c, __m512i& w, __m512& s, __m512& m) {
    const uint8_t* b = row + 144 * (c / 4);
    const int j = static_cast<int>(c % 4);
    const __m256i nib = _mm256_set1_epi8(0x0f);
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16 + 32 * j));
    const __m256i lo = _mm256_and_si256(raw, nib), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), nib);
    const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    w = _mm512_shuffle_i64x2(q, q, _MM_SHUFFLE(3, 1, 2, 0));  // lo(A) lo(B) hi(A) hi(B) -> g0 g2 g1 g3
    uint8_t s0, m0, s1, m1;
    scale_min_k4(2 * j, b + 4, s0, m0);
    scale_min_k4(2 * j + 1, b + 4, s1, m1);
    const float d = half_at(b), dmin = half_at(b + 2);
    s = pair_lanes(d * s0, d * s1);
    m = pair_lanes(-dmin * m0, -dmin * m1);
  }
};

template <class D>
G4_AVX512 void unpack_fused(const uint8_t* row, int64_t chunks, uint8_t* out) {
  for (int64_t c = 0; c < chunks; ++c, out += unit_bytes(D::kMin)) {
    __m512i w;
    __m512 s, m;
    _mm_prefetch(reinterpret_cast<const char*>(row) + c * D::kBytes + kPrefetchBytes, _MM_HINT_T0);
    D::decode(row, c, w, s, m);
    _mm512_storeu_si512(out, w);
    _mm512_storeu_ps(out + 64, s);
    if constexpr (D::kMin) _mm512_storeu_ps(out + 128, m);
  }
}

// Decode (few tokens): one row against token t, decoded in registers, never stored.
template <class D>
G4_AVX512 float dot_fused(const uint8_t* row, const VnniActs& a, int64_t t) {
  __m512 acc = _mm512_setzero_ps(), acc_min = _mm512_setzero_ps();
  const int64_t base = t * a.chunks;
  for (int64_t c = 0; c < a.chunks; ++c) {
    __m512i w;
    __m512 s, m;
    _mm_prefetch(reinterpret_cast<const char*>(row) + c * D::kBytes + kPrefetchBytes, _MM_HINT_T0);
    D::decode(row, c, w, s, m);
    const __m512i x = _mm512_loadu_si512(a.q.data() + (base + c) * kChunk);
    const __m512i dot = _mm512_dpbusd_epi32(_mm512_loadu_si512(a.corr.data() + (base + c) * 16), w, x);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(s, _mm512_loadu_ps(a.dx.data() + (base + c) * 16)), acc);
    if constexpr (D::kMin) acc_min = _mm512_fmadd_ps(m, _mm512_loadu_ps(a.sx.data() + (base + c) * 16), acc_min);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc, acc_min));
}

using DotFused = float (*)(const uint8_t*, const VnniActs&, int64_t);
using UnpackFused = void (*)(const uint8_t*, int64_t, uint8_t*);

struct Fused {
  DotFused dot = nullptr;
  UnpackFused unpack = nullptr;
};

Fused fused_for(DType t) {
  switch (t) {
    case DType::Q4_0: return {dot_fused<ChunkQ4_0>, unpack_fused<ChunkQ4_0>};
    case DType::Q8_0: return {dot_fused<ChunkQ8_0>, unpack_fused<ChunkQ8_0>};
    case DType::Q4_K: return {dot_fused<ChunkQ4_K>, unpack_fused<ChunkQ4_K>};
    default: return {};
  }
}

// Unpacks one row into `out` (chunks * unit bytes). `u` is scratch for the generic path.
void unpack_row_vnni(DType t, const uint8_t* src, int64_t n_in, uint8_t* out, UnpackedRow& u) {
  const int64_t chunks = n_in / kChunk;
  if (const Fused f = fused_for(t); f.unpack) return f.unpack(src, chunks, out);
  // Every other quantized type: the shared int8 unpack, re-laid into chunks.
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

// out[r][k] = row r . token k over all chunks, for 4 rows and T tokens.
template <int T, bool MIN>
G4_AVX512 void tile_4xT(const uint8_t* const* rows, const VnniActs& a, const int64_t* tok, float out[4][4]) {
  const int64_t unit = unit_bytes(MIN);
  __m512 acc[4][T];
  for (auto& r : acc)
    for (auto& v : r) v = _mm512_setzero_ps();
  for (int64_t c = 0; c < a.chunks; ++c) {
    __m512i x[T];
    __m512 dx[T];
    for (int k = 0; k < T; ++k) {
      x[k] = _mm512_loadu_si512(a.q.data() + (tok[k] * a.chunks + c) * kChunk);
      dx[k] = _mm512_loadu_ps(a.dx.data() + (tok[k] * a.chunks + c) * 16);
    }
    for (int r = 0; r < 4; ++r) {
      const uint8_t* p = rows[r] + c * unit;
      const __m512i w = _mm512_loadu_si512(p);
      const __m512 sw = _mm512_loadu_ps(p + 64);
      for (int k = 0; k < T; ++k) {
        const __m512i corr = _mm512_loadu_si512(a.corr.data() + (tok[k] * a.chunks + c) * 16);
        const __m512i dot = _mm512_dpbusd_epi32(corr, w, x[k]);
        acc[r][k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(sw, dx[k]), acc[r][k]);
      }
      if constexpr (MIN) {
        const __m512 mw = _mm512_loadu_ps(p + 128);
        for (int k = 0; k < T; ++k)
          acc[r][k] = _mm512_fmadd_ps(mw, _mm512_loadu_ps(a.sx.data() + (tok[k] * a.chunks + c) * 16), acc[r][k]);
      }
    }
  }
  for (int r = 0; r < 4; ++r)
    for (int k = 0; k < T; ++k) out[r][k] = _mm512_reduce_add_ps(acc[r][k]);
}

template <bool MIN>
void tile(int n, const uint8_t* const* rows, const VnniActs& a, const int64_t* tok, float out[4][4]) {
  switch (n) {
    case 1: return tile_4xT<1, MIN>(rows, a, tok, out);
    case 2: return tile_4xT<2, MIN>(rows, a, tok, out);
    case 3: return tile_4xT<3, MIN>(rows, a, tok, out);
    default: return tile_4xT<4, MIN>(rows, a, tok, out);
  }
}

// The types unpack_row_vnni knows (the same set as the AVX2/scalar int8 path).
bool is_quantized(DType t) {
  switch (t) {
    case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::Q8_0:
    case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: return true;
    default: return false;
  }
}

}  // namespace

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
  VnniActs acts;
  quantize_acts(x, n_tok, n_in, zero_point(w.dtype), min, acts);
  // Prefill: panels of 16 rows, reused by every 4-token tile; decode: 4 rows.
  const int64_t panel_rows = n_tok >= 8 ? 16 : 4;
  const int64_t stride = acts.chunks * unit_bytes(min);
  const int64_t n_panels = (n_out + panel_rows - 1) / panel_rows;
  if (const Fused f = fused_for(w.dtype); f.dot && n_tok < 4) {
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < n_out; ++o)
      for (int64_t t = 0; t < n_tok; ++t) y[t * n_out + o] = f.dot(w.data + (row0 + o) * rb, acts, t);
    return true;
  }
#pragma omp parallel
  {
    std::vector<uint8_t> panel(static_cast<size_t>(panel_rows * stride));
    UnpackedRow scratch;
#pragma omp for schedule(static)
    for (int64_t pi = 0; pi < n_panels; ++pi) {
      const int64_t first = pi * panel_rows, rows = std::min(panel_rows, n_out - first);
      for (int64_t r = 0; r < rows; ++r)
        unpack_row_vnni(w.dtype, w.data + (row0 + first + r) * rb, n_in, panel.data() + r * stride, scratch);
      for (int64_t t = 0; t < n_tok; t += 4) {
        const int nt = static_cast<int>(std::min<int64_t>(4, n_tok - t));
        const int64_t tok[4] = {t, std::min(t + 1, n_tok - 1), std::min(t + 2, n_tok - 1), std::min(t + 3, n_tok - 1)};
        for (int64_t g = 0; g < rows; g += 4) {
          const uint8_t* rp[4];
          for (int k = 0; k < 4; ++k) rp[k] = panel.data() + std::min(g + k, rows - 1) * stride;
          float out[4][4];
          if (min) tile<true>(nt, rp, acts, tok, out);
          else tile<false>(nt, rp, acts, tok, out);
          for (int r = 0; r < 4 && g + r < rows; ++r)
            for (int k = 0; k < nt; ++k) y[(t + k) * n_out + first + g + r] = out[r][k];
        }
      }
    }
  }
  return true;
}

}  // namespace g4::fast_detail
