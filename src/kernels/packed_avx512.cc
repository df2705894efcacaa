// Packed weights for the AVX-512 VNNI kernels (llama.cpp's CPU backend calls this
// "repacking"): a Q4_0, Q8_0, Q4_K, Q5_K or Q6_K matrix re-laid out once, 16 rows at a time, so
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
//   Q8_0 unit (544 B): vectors 0-7 of qs XOR 0x80 (int8 + 128), then the 16 f16 d.
//   Q4_K unit (2368 B, +3% over the blocks): for each 32-byte qs chunk c (0-3) its vectors
//        0-7 (low nibbles: sub-block 2c, high: 2c+1); d[16] and dmin[16] f16; the 6-bit
//        scales sc[8][16] and mins m[8][16] as bytes.
//   Q5_K unit (2880 B, +2%): the Q4_K unit of its d, dmin, scales and qs, then vectors 0-7 of qh
//        (bit j of qh[l]: the fifth bit of element l of sub-block j).
//   Q6_K unit (3360 B = 16 blocks): ql vectors for (n, half) in (0,0) (0,1) (1,0) (1,1) of
//        ql[64n + 32 half ..], 8 each; qh vectors for n = 0, 1 of qh[32n ..], 8 each; the
//        int8 scales [16][16]; the 16 f16 d.
// The arithmetic per 32 (16 for Q6_K) weights is that of the panel kernels in
// fast_avx512.cc: the integer dot, then acc += float(dot) * (s * d) (+ m * sx), in
// block order, so both give the same bits.
//
// x86-64 only (the whole file).
#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "kernels/blocks.h"
#include "kernels/fast_internal.h"
#include "util/error.h"

#define G4_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,fma,f16c")))

namespace g4::fast_detail {
namespace {

using namespace blocks;

constexpr int kRows = 16;
constexpr int kTile = 8;  // tokens per register tile
// Decode streams a group from DRAM: prefetch this far ahead (fast_avx512.cc measured 4 KiB).
constexpr int kPrefetch = 4096;

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
  static constexpr int kCols = 32, kBytes = 288, kZeroPoint = 8, kScaleBlock = 32;
  static constexpr bool kMin = false;
  // rows[r]: row r's block for this unit.
  static void pack(const uint8_t* const* rows, uint8_t* out) {
    for (int k = 0; k < 4; ++k) interleave(rows, offsetof(block_q4_0, qs) + 4 * k, out + 64 * k);
    put_f16(rows, offsetof(block_q4_0, d), out + 256);
  }
};

struct Q8_0L {
  static constexpr DType kType = DType::Q8_0;
  static constexpr int kCols = 32, kBytes = 544, kZeroPoint = 128, kScaleBlock = 32;
  static constexpr bool kMin = false;
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
  static constexpr bool kMin = true;
  static void pack(const uint8_t* const* rows, uint8_t* out) {
    for (int c = 0; c < 4; ++c)
      for (int k = 0; k < 8; ++k) interleave(rows, offsetof(B, qs) + 32 * c + 4 * k, out + 512 * c + 64 * k);
    put_f16(rows, offsetof(B, d), out + 2048);
    put_f16(rows, offsetof(B, dmin), out + 2080);
    for (int r = 0; r < kRows; ++r)
      for (int j = 0; j < 8; ++j) {
        uint8_t sc = 0, mn = 0;
        if (rows[r]) scale_min_k4(j, rows[r] + offsetof(B, scales), sc, mn);
        out[2112 + 16 * j + r] = sc;
        out[2240 + 16 * j + r] = mn;
      }
    if constexpr (kT == DType::Q5_K)
      for (int k = 0; k < 8; ++k) interleave(rows, offsetof(block_q5_k, qh) + 4 * k, out + 2368 + 64 * k);
  }
};
using Q4_KL = KQuantL<block_q4_k, DType::Q4_K, 2368>;
using Q5_KL = KQuantL<block_q5_k, DType::Q5_K, 2880>;

struct Q6_KL {
  static constexpr DType kType = DType::Q6_K;
  static constexpr int kCols = 256, kBytes = 3360, kZeroPoint = 32, kScaleBlock = 16;
  static constexpr bool kMin = false;
  static void pack(const uint8_t* const* rows, uint8_t* out) {
    for (int n = 0; n < 2; ++n)
      for (int h = 0; h < 2; ++h)
        for (int k = 0; k < 8; ++k)
          interleave(rows, offsetof(block_q6_k, ql) + 64 * n + 32 * h + 4 * k, out + 64 * (8 * (2 * n + h) + k));
    for (int n = 0; n < 2; ++n)
      for (int k = 0; k < 8; ++k) interleave(rows, offsetof(block_q6_k, qh) + 32 * n + 4 * k, out + 2048 + 64 * (8 * n + k));
    for (int r = 0; r < kRows; ++r)
      for (int g = 0; g < 16; ++g) out[3072 + 16 * g + r] = rows[r] ? rows[r][offsetof(block_q6_k, scales) + g] : 0;
    put_f16(rows, offsetof(block_q6_k, d), out + 3328);
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

G4_AVX512 inline __m512i load(const uint8_t* p) {
  _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetch, _MM_HINT_T0);
  return _mm512_loadu_si512(p);
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
}

// out[t * 16 + r] = row r of the group . token t0 + t, over every unit of the group.
template <class L, int T>
G4_AVX512 void tile(const uint8_t* group, int64_t n_units, const Acts& a, int64_t t0, float* out) {
  const __m512i nib = _mm512_set1_epi8(0x0f);
  __m512 acc[T];
  for (auto& v : acc) v = _mm512_setzero_ps();
  const int8_t* x[T];
  for (int t = 0; t < T; ++t) x[t] = a.tok(t0 + t);
  __m512i dot[T];
  for (int64_t u = 0; u < n_units; ++u) {
    const uint8_t* p = group + u * L::kBytes;
    const int64_t e0 = u * L::kCols;  // first column of the unit
    if constexpr (L::kType == DType::Q4_0) {
      init_dot<T>(dot, a, t0, u);
      for (int k = 0; k < 4; ++k) {
        const __m512i v = load(p + 64 * k);
        const __m512i lo = _mm512_and_si512(v, nib), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
        for (int t = 0; t < T; ++t) {
          dot[t] = _mm512_dpbusd_epi32(dot[t], lo, bcast(x[t] + e0 + 4 * k));
          dot[t] = _mm512_dpbusd_epi32(dot[t], hi, bcast(x[t] + e0 + 16 + 4 * k));
        }
      }
      _mm_prefetch(reinterpret_cast<const char*>(p) + 256 + kPrefetch, _MM_HINT_T0);
      scale_add<T>(dot, f16x16(p + 256), a, t0, u, acc);
    } else if constexpr (L::kType == DType::Q8_0) {
      init_dot<T>(dot, a, t0, u);
      for (int k = 0; k < 8; ++k) {
        const __m512i v = load(p + 64 * k);
        for (int t = 0; t < T; ++t) dot[t] = _mm512_dpbusd_epi32(dot[t], v, bcast(x[t] + e0 + 4 * k));
      }
      _mm_prefetch(reinterpret_cast<const char*>(p) + 512 + kPrefetch, _MM_HINT_T0);
      scale_add<T>(dot, f16x16(p + 512), a, t0, u, acc);
    } else if constexpr (L::kType == DType::Q4_K || L::kType == DType::Q5_K) {
      const __m512 d = f16x16(p + 2048), mdmin = _mm512_sub_ps(_mm512_setzero_ps(), f16x16(p + 2080));
      for (int j = 0; j < 8; ++j) {  // sub-blocks of 32: chunk j / 2, low or high nibbles
        const int64_t b = 8 * u + j;
        init_dot<T>(dot, a, t0, b);
        for (int k = 0; k < 8; ++k) {
          const uint8_t* vp = p + 512 * (j / 2) + 64 * k;
          const __m512i v = j % 2 ? _mm512_loadu_si512(vp) : load(vp);
          __m512i w = j % 2 ? _mm512_and_si512(_mm512_srli_epi16(v, 4), nib) : _mm512_and_si512(v, nib);
          if constexpr (L::kType == DType::Q5_K) {  // bit j of qh to bit 4 of each byte
            const uint8_t* hp = p + 2368 + 64 * k;
            const __m512i qh = j == 0 ? load(hp) : _mm512_loadu_si512(hp);
            const __m512i hb = j < 4 ? _mm512_slli_epi16(qh, 4 - j) : _mm512_srli_epi16(qh, j - 4);
            w = _mm512_ternarylogic_epi32(w, hb, _mm512_set1_epi8(0x10), 0xF8);  // w | (hb & 0x10)
          }
          for (int t = 0; t < T; ++t) dot[t] = _mm512_dpbusd_epi32(dot[t], w, bcast(x[t] + e0 + 32 * j + 4 * k));
        }
        const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2112 + 16 * j));
        const __m128i mn = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2240 + 16 * j));
        const __m512 s = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sc)));
        const __m512 m = _mm512_mul_ps(mdmin, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(mn)));
        scale_add<T>(dot, s, a, t0, b, acc);
        for (int t = 0; t < T; ++t) acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(a.sx[a.at(t0 + t, b)]), acc[t]);
      }
      for (int off = 2048; off < 2368; off += 64) _mm_prefetch(reinterpret_cast<const char*>(p) + off + kPrefetch, _MM_HINT_T0);
    } else {  // Q6_K: element 128n + 32i + l = ql nibble | qh bits 2i..2i+1 << 4, scale group 8n + 2i + l / 16
      const __m512 d = f16x16(p + 3328);
      const __m512i hmask = _mm512_set1_epi8(0x30);
      for (int n = 0; n < 2; ++n)
        for (int i = 0; i < 4; ++i)
          for (int h = 0; h < 2; ++h) {
            const int g = 8 * n + 2 * i + h;
            const int64_t b = 16 * u + g;
            init_dot<T>(dot, a, t0, b);
            for (int k = 4 * h; k < 4 * h + 4; ++k) {
              const uint8_t* lp = p + 64 * (8 * (2 * n + (i & 1)) + k);
              const uint8_t* hp = p + 2048 + 64 * (8 * n + k);
              const bool first = i < 2;  // the first visit of these bytes: prefetch ahead
              const __m512i ql = first ? load(lp) : _mm512_loadu_si512(lp);
              const __m512i qh = i == 0 ? load(hp) : _mm512_loadu_si512(hp);
              const __m512i lo = i < 2 ? _mm512_and_si512(ql, nib) : _mm512_and_si512(_mm512_srli_epi16(ql, 4), nib);
              __m512i hb;
              switch (i) {
                case 0: hb = _mm512_slli_epi16(qh, 4); break;
                case 1: hb = _mm512_slli_epi16(qh, 2); break;
                case 2: hb = qh; break;
                default: hb = _mm512_srli_epi16(qh, 2); break;
              }
              const __m512i w = _mm512_ternarylogic_epi32(lo, hb, hmask, 0xF8);  // lo | (hb & 0x30)
              for (int t = 0; t < T; ++t) dot[t] = _mm512_dpbusd_epi32(dot[t], w, bcast(x[t] + e0 + 128 * n + 32 * i + 4 * k));
            }
            const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 3072 + 16 * g));
            scale_add<T>(dot, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc))), a, t0, b, acc);
          }
      for (int off = 3072; off < L::kBytes; off += 64)
        _mm_prefetch(reinterpret_cast<const char*>(p) + off + kPrefetch, _MM_HINT_T0);
    }
  }
  for (int t = 0; t < T; ++t) _mm512_storeu_ps(out + 16 * t, acc[t]);
}

template <class L>
void tile_n(int n, const uint8_t* group, int64_t n_units, const Acts& a, int64_t t0, float* out) {
  switch (n) {
    case 1: return tile<L, 1>(group, n_units, a, t0, out);
    case 2: return tile<L, 2>(group, n_units, a, t0, out);
    case 3: return tile<L, 3>(group, n_units, a, t0, out);
    case 4: return tile<L, 4>(group, n_units, a, t0, out);
    case 5: return tile<L, 5>(group, n_units, a, t0, out);
    case 6: return tile<L, 6>(group, n_units, a, t0, out);
    case 7: return tile<L, 7>(group, n_units, a, t0, out);
    default: return tile<L, 8>(group, n_units, a, t0, out);
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
  p->data.reset(static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64)));
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

template <class L>
void run(const PackedMatrix& p, const Acts& a, int64_t n_tok, int64_t n_out, float* y, int64_t row0) {
  const int64_t n_units = p.cols / L::kCols, g0 = row0 / kRows, n_groups = (n_out + kRows - 1) / kRows;
#pragma omp parallel for schedule(static)
  for (int64_t gi = 0; gi < n_groups; ++gi) {
    const uint8_t* group = p.data.get() + (g0 + gi) * p.group_bytes;
    const int64_t first = gi * kRows, rows = std::min<int64_t>(kRows, n_out - first);
    alignas(64) float out[kTile * kRows];
    for (int64_t t = 0; t < n_tok; t += kTile) {
      const int nt = static_cast<int>(std::min<int64_t>(kTile, n_tok - t));
      tile_n<L>(nt, group, n_units, a, t, out);
      for (int k = 0; k < nt; ++k) std::memcpy(y + (t + k) * n_out + first, out + kRows * k, static_cast<size_t>(rows) * 4);
    }
  }
}

template <class L>
bool matmul(const PackedMatrix& p, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y, int64_t row0) {
  Acts& acts = scratch().acts;
  quantize_acts(x, n_tok, n_in, L::kZeroPoint, L::kScaleBlock, L::kMin, quantize_block_avx2, acts);
  run<L>(p, acts, n_tok, n_out, y, row0);
  return true;
}

}  // namespace

std::shared_ptr<PackedMatrix> pack_avx512(const TensorView& w) {
  if (w.shape.size() < 2) return nullptr;
  const int64_t cols = w.shape.back(), rows = w.numel() / cols;
  switch (w.dtype) {
    case DType::Q4_0: return cols % Q4_0L::kCols ? nullptr : pack<Q4_0L>(w, rows, cols);
    case DType::Q8_0: return cols % Q8_0L::kCols ? nullptr : pack<Q8_0L>(w, rows, cols);
    case DType::Q4_K: return cols % Q4_KL::kCols ? nullptr : pack<Q4_KL>(w, rows, cols);
    case DType::Q5_K: return cols % Q5_KL::kCols ? nullptr : pack<Q5_KL>(w, rows, cols);
    case DType::Q6_K: return cols % Q6_KL::kCols ? nullptr : pack<Q6_KL>(w, rows, cols);
    default: return nullptr;
  }
}

bool matmul_packed_avx512(const PackedMatrix& p, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y,
                          int64_t row0) {
  if (n_in != p.cols || row0 % kRows != 0 || row0 < 0 || row0 + n_out > p.rows || n_tok < 1) return false;
  switch (p.type) {
    case DType::Q4_0: return matmul<Q4_0L>(p, x, n_tok, n_in, n_out, y, row0);
    case DType::Q8_0: return matmul<Q8_0L>(p, x, n_tok, n_in, n_out, y, row0);
    case DType::Q4_K: return matmul<Q4_KL>(p, x, n_tok, n_in, n_out, y, row0);
    case DType::Q5_K: return matmul<Q5_KL>(p, x, n_tok, n_in, n_out, y, row0);
    case DType::Q6_K: return matmul<Q6_KL>(p, x, n_tok, n_in, n_out, y, row0);
    default: return false;
  }
}

}  // namespace g4::fast_detail

#endif  // __x86_64__
