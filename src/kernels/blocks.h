// The GGML quant block layouts (formats.md §5), each defined once: a struct per block with
// the spec's field names, and one scalar decoder per type that is the spec in code. Every
// reader and writer of block bytes (dequant.cc, fast.cc, fast_avx2.cc, fast_avx512.cc,
// fast_neon.cc, quantize.cc) takes its offsets and sizes from here.
//
// All fields are byte arrays (alignment 1), so a block pointer may sit at any address of a
// mapped file; f16 fields are read with load_f16 (util/half.h). Blocks live in kernels/, not
// formats/, because only kernels look inside a block; formats/ moves blocks as opaque bytes
// and its (elements, bytes) table is checked against these structs by a test.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "formats/dtype.h"
#include "kernels/iq_tables.h"
#include "util/half.h"

namespace g4::blocks {

constexpr int QK = 32;    // elements of a Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 block
constexpr int QK_K = 256;  // elements of a K-quant super-block
constexpr int K_SCALE_SIZE = 12;  // packed 6-bit (scale, min) bytes of Q4_K/Q5_K

struct block_q4_0 {
  static constexpr DType kType = DType::Q4_0;
  static constexpr int kElems = QK;
  uint8_t d[2];        // f16 scale
  uint8_t qs[QK / 2];  // nibbles: low = elements 0..15, high = 16..31
};
struct block_q4_1 {
  static constexpr DType kType = DType::Q4_1;
  static constexpr int kElems = QK;
  uint8_t d[2], m[2];  // f16 scale and minimum
  uint8_t qs[QK / 2];
};
struct block_q5_0 {
  static constexpr DType kType = DType::Q5_0;
  static constexpr int kElems = QK;
  uint8_t d[2];
  uint8_t qh[4];  // fifth bits, a little-endian u32: bit j of element j
  uint8_t qs[QK / 2];
};
struct block_q5_1 {
  static constexpr DType kType = DType::Q5_1;
  static constexpr int kElems = QK;
  uint8_t d[2], m[2];
  uint8_t qh[4];
  uint8_t qs[QK / 2];
};
struct block_q8_0 {
  static constexpr DType kType = DType::Q8_0;
  static constexpr int kElems = QK;
  uint8_t d[2];
  int8_t qs[QK];
};
struct block_q2_k {
  static constexpr DType kType = DType::Q2_K;
  static constexpr int kElems = QK_K;
  uint8_t scales[QK_K / 16];  // low nibble scale, high nibble min, per 16
  uint8_t qs[QK_K / 4];       // 2-bit quants
  uint8_t d[2], dmin[2];
};
struct block_q3_k {
  static constexpr DType kType = DType::Q3_K;
  static constexpr int kElems = QK_K;
  uint8_t hmask[QK_K / 8];  // high bits
  uint8_t qs[QK_K / 4];     // low 2 bits
  uint8_t scales[12];       // 16 packed 6-bit scales (signed: s - 32)
  uint8_t d[2];
};
struct block_q4_k {
  static constexpr DType kType = DType::Q4_K;
  static constexpr int kElems = QK_K;
  uint8_t d[2], dmin[2];
  uint8_t scales[K_SCALE_SIZE];  // 8 packed 6-bit (scale, min)
  uint8_t qs[QK_K / 2];
};
struct block_q5_k {
  static constexpr DType kType = DType::Q5_K;
  static constexpr int kElems = QK_K;
  uint8_t d[2], dmin[2];
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qh[QK_K / 8];
  uint8_t qs[QK_K / 2];
};
struct block_q6_k {
  static constexpr DType kType = DType::Q6_K;
  static constexpr int kElems = QK_K;
  uint8_t ql[QK_K / 2];     // low 4 bits
  uint8_t qh[QK_K / 4];     // high 2 bits
  int8_t scales[QK_K / 16];  // per 16
  uint8_t d[2];
};

static_assert(sizeof(block_q4_0) == 18 && offsetof(block_q4_0, qs) == 2);
static_assert(sizeof(block_q4_1) == 20 && offsetof(block_q4_1, qs) == 4);
static_assert(sizeof(block_q5_0) == 22 && offsetof(block_q5_0, qh) == 2 && offsetof(block_q5_0, qs) == 6);
static_assert(sizeof(block_q5_1) == 24 && offsetof(block_q5_1, qh) == 4 && offsetof(block_q5_1, qs) == 8);
static_assert(sizeof(block_q8_0) == 34 && offsetof(block_q8_0, qs) == 2);
static_assert(sizeof(block_q2_k) == 84 && offsetof(block_q2_k, qs) == 16 && offsetof(block_q2_k, d) == 80);
static_assert(sizeof(block_q3_k) == 110 && offsetof(block_q3_k, qs) == 32 && offsetof(block_q3_k, scales) == 96 &&
              offsetof(block_q3_k, d) == 108);
static_assert(sizeof(block_q4_k) == 144 && offsetof(block_q4_k, scales) == 4 && offsetof(block_q4_k, qs) == 16);
static_assert(sizeof(block_q5_k) == 176 && offsetof(block_q5_k, qh) == 16 && offsetof(block_q5_k, qs) == 48);
static_assert(sizeof(block_q6_k) == 210 && offsetof(block_q6_k, qh) == 128 && offsetof(block_q6_k, scales) == 192 &&
              offsetof(block_q6_k, d) == 208);
// ---- The IQ, ternary and MXFP4 layouts (llama.cpp's ggml-common.h; codebooks in iq_tables.h). ----

constexpr int QK4_NL = 32;
constexpr int QK_MXFP4 = 32;

struct block_iq4_nl {
  static constexpr DType kType = DType::IQ4_NL;
  static constexpr int kElems = QK4_NL;
  uint8_t d[2];
  uint8_t qs[QK4_NL / 2];  // indices into kvalues_iq4nl: low nibble = elements 0..15, high = 16..31
};
struct block_iq4_xs {
  static constexpr DType kType = DType::IQ4_XS;
  static constexpr int kElems = QK_K;
  uint8_t d[2];
  uint8_t scales_h[2];           // u16: bits 2j, 2j+1 = high 2 bits of the 6-bit scale of block j
  uint8_t scales_l[QK_K / 64];   // low 4 bits of the scales, two per byte
  uint8_t qs[QK_K / 2];          // per 32: 16 bytes of nibbles as IQ4_NL
};
struct block_mxfp4 {
  static constexpr DType kType = DType::MXFP4;
  static constexpr int kElems = QK_MXFP4;
  uint8_t e;                     // E8M0 shared exponent
  uint8_t qs[QK_MXFP4 / 2];      // E2M1 codes: low nibble = elements 0..15, high = 16..31
};
struct block_iq2_xxs {
  static constexpr DType kType = DType::IQ2_XXS;
  static constexpr int kElems = QK_K;
  uint8_t d[2];
  uint8_t qs[QK_K / 4];  // per 32: 4 grid indices (bytes), then a u32 of 4 x 7 sign bits and a 4-bit scale
};
struct block_iq2_xs {
  static constexpr DType kType = DType::IQ2_XS;
  static constexpr int kElems = QK_K;
  uint8_t d[2];
  uint8_t qs[QK_K / 4];      // u16 per 8 elements: 9-bit grid index, 7-bit sign index
  uint8_t scales[QK_K / 32];  // two 4-bit scales per 32 (one per 16)
};
struct block_iq2_s {
  static constexpr DType kType = DType::IQ2_S;
  static constexpr int kElems = QK_K;
  uint8_t d[2];
  uint8_t qs[QK_K / 4];       // low 8 bits of the 10-bit grid indices (QK_K/8 bytes), then sign bytes
  uint8_t qh[QK_K / 32];      // high 2 bits of the indices, 4 per 32
  uint8_t scales[QK_K / 32];  // two 4-bit scales per 32
};
struct block_iq3_xxs {
  static constexpr DType kType = DType::IQ3_XXS;
  static constexpr int kElems = QK_K;
  uint8_t d[2];
  uint8_t qs[3 * QK_K / 8];  // 64 grid indices, then per 32 a u32 of 4 x 7 sign bits and a 4-bit scale
};
struct block_iq3_s {
  static constexpr DType kType = DType::IQ3_S;
  static constexpr int kElems = QK_K;
  uint8_t d[2];
  uint8_t qs[QK_K / 4];      // low 8 bits of the 9-bit grid indices
  uint8_t qh[QK_K / 32];     // ninth bits
  uint8_t signs[QK_K / 8];   // one sign bit per element
  uint8_t scales[QK_K / 64];  // 4-bit scales, one per 32
};
struct block_iq1_s {
  static constexpr DType kType = DType::IQ1_S;
  static constexpr int kElems = QK_K;
  uint8_t d[2];
  uint8_t qs[QK_K / 8];   // low 8 bits of the 11-bit grid indices
  uint8_t qh[QK_K / 16];  // u16 per 32: 4 x 3 index bits, a 3-bit scale, the delta sign
};
struct block_iq1_m {
  static constexpr DType kType = DType::IQ1_M;
  static constexpr int kElems = QK_K;
  uint8_t qs[QK_K / 8];       // low 8 bits of the grid indices
  uint8_t qh[QK_K / 16];      // per 8: 3 index bits and the delta sign
  uint8_t scales[QK_K / 32];  // 4 u16: 3-bit scales per 16, and the f16 super-scale in the top nibbles
};
struct block_tq1_0 {
  static constexpr DType kType = DType::TQ1_0;
  static constexpr int kElems = QK_K;
  uint8_t qs[(QK_K - 4 * QK_K / 64) / 5];  // 5 trits per byte (base-3 fixed point)
  uint8_t qh[QK_K / 64];                    // 4 trits per byte
  uint8_t d[2];
};
struct block_tq2_0 {
  static constexpr DType kType = DType::TQ2_0;
  static constexpr int kElems = QK_K;
  uint8_t qs[QK_K / 4];  // 2-bit values q, element = (q - 1) * d
  uint8_t d[2];
};

static_assert(sizeof(block_iq4_nl) == 18 && sizeof(block_iq4_xs) == 136 && offsetof(block_iq4_xs, qs) == 8);
static_assert(sizeof(block_mxfp4) == 17 && sizeof(block_iq2_xxs) == 66 && sizeof(block_iq2_xs) == 74);
static_assert(sizeof(block_iq2_s) == 82 && sizeof(block_iq3_xxs) == 98 && sizeof(block_iq3_s) == 110);
static_assert(sizeof(block_iq1_s) == 50 && sizeof(block_iq1_m) == 56 && sizeof(block_tq1_0) == 54 &&
              sizeof(block_tq2_0) == 66);
static_assert(alignof(block_q4_k) == 1 && alignof(block_q6_k) == 1, "blocks sit at any byte offset of a file");

// Calls f(B{}) with the block struct B of type t; false if t is not a block type here.
template <class F>
bool visit_block_type(DType t, F&& f) {
  switch (t) {
    case DType::Q4_0: f(block_q4_0{}); return true;
    case DType::Q4_1: f(block_q4_1{}); return true;
    case DType::Q5_0: f(block_q5_0{}); return true;
    case DType::Q5_1: f(block_q5_1{}); return true;
    case DType::Q8_0: f(block_q8_0{}); return true;
    case DType::Q2_K: f(block_q2_k{}); return true;
    case DType::Q3_K: f(block_q3_k{}); return true;
    case DType::Q4_K: f(block_q4_k{}); return true;
    case DType::Q5_K: f(block_q5_k{}); return true;
    case DType::Q6_K: f(block_q6_k{}); return true;
    case DType::IQ4_NL: f(block_iq4_nl{}); return true;
    case DType::IQ4_XS: f(block_iq4_xs{}); return true;
    case DType::MXFP4: f(block_mxfp4{}); return true;
    case DType::IQ2_XXS: f(block_iq2_xxs{}); return true;
    case DType::IQ2_XS: f(block_iq2_xs{}); return true;
    case DType::IQ2_S: f(block_iq2_s{}); return true;
    case DType::IQ3_XXS: f(block_iq3_xxs{}); return true;
    case DType::IQ3_S: f(block_iq3_s{}); return true;
    case DType::IQ1_S: f(block_iq1_s{}); return true;
    case DType::IQ1_M: f(block_iq1_m{}); return true;
    case DType::TQ1_0: f(block_tq1_0{}); return true;
    case DType::TQ2_0: f(block_tq2_0{}); return true;
    default: return false;
  }
}

// Block b of a row of type B.
template <class B>
inline const B* block_at(const uint8_t* row, int64_t b) {
  return reinterpret_cast<const B*>(row) + b;
}
template <class B>
inline B* block_at(uint8_t* row, int64_t b) {
  return reinterpret_cast<B*>(row) + b;
}

// Scale and min of sub-block j (0..7) of the 12 packed bytes of a Q4_K/Q5_K block
// (llama.cpp's get_scale_min_k4, formats.md §5.9).
inline void scale_min_k4(int j, const uint8_t* s, uint8_t& sc, uint8_t& mn) {
  if (j < 4) {
    sc = s[j] & 63;
    mn = s[j + 4] & 63;
  } else {
    sc = static_cast<uint8_t>((s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4));
    mn = static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

// The 16 six-bit scales of a Q3_K block, unsigned (the effective scale is s - 32; §5.8).
inline void q3_k_scales(const uint8_t* sc, int s[16]) {
  for (int j = 0; j < 4; ++j) {
    s[j] = (sc[j] & 0xf) | (((sc[8 + j] >> 0) & 3) << 4);
    s[4 + j] = (sc[4 + j] & 0xf) | (((sc[8 + j] >> 2) & 3) << 4);
    s[8 + j] = (sc[j] >> 4) | (((sc[8 + j] >> 4) & 3) << 4);
    s[12 + j] = (sc[4 + j] >> 4) | (((sc[8 + j] >> 6) & 3) << 4);
  }
}

// The fifth bits of a Q5_0/Q5_1 block.
inline uint32_t load_qh(const uint8_t* qh) {
  uint32_t v;
  std::memcpy(&v, qh, 4);
  return v;
}

// ---- The scalar decoders: formats.md §5, in f32, element order. ----

inline void decode(const block_q4_0& b, float* y) {
  const float d = load_f16(b.d);
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((b.qs[j] & 0x0f) - 8) * d;
    y[j + 16] = static_cast<float>((b.qs[j] >> 4) - 8) * d;
  }
}
inline void decode(const block_q4_1& b, float* y) {
  const float d = load_f16(b.d), m = load_f16(b.m);
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(b.qs[j] & 0x0f) * d + m;
    y[j + 16] = static_cast<float>(b.qs[j] >> 4) * d + m;
  }
}
inline void decode(const block_q5_0& b, float* y) {
  const float d = load_f16(b.d);
  const uint32_t qh = load_qh(b.qh);
  for (int j = 0; j < 16; ++j) {
    const int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
    y[j] = static_cast<float>(((b.qs[j] & 0x0f) | (h0 << 4)) - 16) * d;
    y[j + 16] = static_cast<float>(((b.qs[j] >> 4) | (h1 << 4)) - 16) * d;
  }
}
inline void decode(const block_q5_1& b, float* y) {
  const float d = load_f16(b.d), m = load_f16(b.m);
  const uint32_t qh = load_qh(b.qh);
  for (int j = 0; j < 16; ++j) {
    const int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
    y[j] = static_cast<float>((b.qs[j] & 0x0f) | (h0 << 4)) * d + m;
    y[j + 16] = static_cast<float>((b.qs[j] >> 4) | (h1 << 4)) * d + m;
  }
}
inline void decode(const block_q8_0& b, float* y) {
  const float d = load_f16(b.d);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
}
inline void decode(const block_q2_k& b, float* y) {
  const float d = load_f16(b.d), dmin = load_f16(b.dmin);
  for (int n = 0; n < 2; ++n)
    for (int j = 0; j < 4; ++j) {
      const uint8_t sa = b.scales[8 * n + 2 * j], sb = b.scales[8 * n + 2 * j + 1];
      const float da = d * (sa & 0xf), ma = dmin * (sa >> 4), db = d * (sb & 0xf), mb = dmin * (sb >> 4);
      for (int l = 0; l < 16; ++l) {
        y[128 * n + 32 * j + l] = da * static_cast<float>((b.qs[32 * n + l] >> (2 * j)) & 3) - ma;
        y[128 * n + 32 * j + 16 + l] = db * static_cast<float>((b.qs[32 * n + 16 + l] >> (2 * j)) & 3) - mb;
      }
    }
}
inline void decode(const block_q3_k& b, float* y) {
  const float d = load_f16(b.d);
  int s[16];
  q3_k_scales(b.scales, s);
  for (int n = 0; n < 2; ++n)
    for (int j = 0; j < 4; ++j) {
      const int m = 1 << (4 * n + j);
      const float d1 = d * static_cast<float>(s[8 * n + 2 * j] - 32), d2 = d * static_cast<float>(s[8 * n + 2 * j + 1] - 32);
      for (int l = 0; l < 16; ++l) {
        const int q1 = ((b.qs[32 * n + l] >> (2 * j)) & 3) - ((b.hmask[l] & m) ? 0 : 4);
        const int q2 = ((b.qs[32 * n + 16 + l] >> (2 * j)) & 3) - ((b.hmask[16 + l] & m) ? 0 : 4);
        y[128 * n + 32 * j + l] = d1 * static_cast<float>(q1);
        y[128 * n + 32 * j + 16 + l] = d2 * static_cast<float>(q2);
      }
    }
}
inline void decode(const block_q4_k& b, float* y) {
  const float d = load_f16(b.d), dmin = load_f16(b.dmin);
  for (int c = 0; c < 4; ++c) {
    uint8_t sc, mn;
    scale_min_k4(2 * c, b.scales, sc, mn);
    const float d1 = d * sc, m1 = dmin * mn;
    scale_min_k4(2 * c + 1, b.scales, sc, mn);
    const float d2 = d * sc, m2 = dmin * mn;
    for (int l = 0; l < 32; ++l) {
      y[64 * c + l] = d1 * static_cast<float>(b.qs[32 * c + l] & 0xf) - m1;
      y[64 * c + 32 + l] = d2 * static_cast<float>(b.qs[32 * c + l] >> 4) - m2;
    }
  }
}
inline void decode(const block_q5_k& b, float* y) {
  const float d = load_f16(b.d), dmin = load_f16(b.dmin);
  for (int c = 0; c < 4; ++c) {
    uint8_t sc, mn;
    scale_min_k4(2 * c, b.scales, sc, mn);
    const float d1 = d * sc, m1 = dmin * mn;
    scale_min_k4(2 * c + 1, b.scales, sc, mn);
    const float d2 = d * sc, m2 = dmin * mn;
    for (int l = 0; l < 32; ++l) {
      const int q1 = (b.qs[32 * c + l] & 0xf) + 16 * ((b.qh[l] >> (2 * c)) & 1);
      const int q2 = (b.qs[32 * c + l] >> 4) + 16 * ((b.qh[l] >> (2 * c + 1)) & 1);
      y[64 * c + l] = d1 * static_cast<float>(q1) - m1;
      y[64 * c + 32 + l] = d2 * static_cast<float>(q2) - m2;
    }
  }
}
// Q6_K's 6-bit value of element 128n + 32i + l (i = 0..3; l = 0..31), unbiased (-32..31).
inline int q6_k_value(const block_q6_k& b, int n, int i, int l) {
  const uint8_t lo = b.ql[64 * n + l + 32 * (i & 1)];
  const int nib = i < 2 ? lo & 0xf : lo >> 4;
  return (nib | (((b.qh[32 * n + l] >> (2 * i)) & 3) << 4)) - 32;
}
inline void decode(const block_q6_k& b, float* y) {
  const float d = load_f16(b.d);
  for (int n = 0; n < 2; ++n)
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      for (int i = 0; i < 4; ++i)
        y[128 * n + 32 * i + l] = d * static_cast<float>(b.scales[8 * n + is + 2 * i]) * static_cast<float>(q6_k_value(b, n, i, l));
    }
}

// ---- IQ, ternary and MXFP4 decoders: llama.cpp's dequantize_row_* (ggml-quants.c), operation
// for operation, so the f32 results are the same bits (tests/test_iq.cc). ----

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline float sign_of(uint8_t signs, int j) { return (signs >> j) & 1 ? -1.0f : 1.0f; }

// The 6-bit scale of 32-block ib of an IQ4_XS block (unsigned; the effective scale is ls - 32).
inline int iq4_xs_scale(const block_iq4_xs& b, int ib) {
  return ((b.scales_l[ib / 2] >> 4 * (ib % 2)) & 0xf) | (((load_u16(b.scales_h) >> 2 * ib) & 3) << 4);
}
// E8M0 exponent e as 2^(e - 128): half the block scale, because kvalues_mxfp4 are doubled
// (llama.cpp's ggml_e8m0_to_fp32_half; e < 2 gives an f32 subnormal).
inline float e8m0_to_fp32_half(uint8_t e) {
  const uint32_t bits = e < 2 ? 0x00200000u << e : static_cast<uint32_t>(e - 1) << 23;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// IQ1_M's f16 super-scale, spread over the top nibbles of its 4 scale words.
inline float iq1_m_scale(const block_iq1_m& b) {
  const uint16_t s0 = load_u16(b.scales), s1 = load_u16(b.scales + 2), s2 = load_u16(b.scales + 4), s3 = load_u16(b.scales + 6);
  const uint16_t h = static_cast<uint16_t>((s0 >> 12) | ((s1 >> 8) & 0x00f0) | ((s2 >> 4) & 0x0f00) | (s3 & 0xf000));
  uint8_t raw[2];
  std::memcpy(raw, &h, 2);
  return load_f16(raw);
}
constexpr float IQ1_DELTA = 0.125f;

inline void decode(const block_iq4_nl& b, float* y) {
  const float d = load_f16(b.d);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(kvalues_iq4nl[b.qs[j] & 0xf]);
    y[j + 16] = d * static_cast<float>(kvalues_iq4nl[b.qs[j] >> 4]);
  }
}
inline void decode(const block_iq4_xs& b, float* y) {
  const float d = load_f16(b.d);
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    const float dl = d * static_cast<float>(iq4_xs_scale(b, ib) - 32);
    const uint8_t* qs = b.qs + 16 * ib;
    for (int j = 0; j < 16; ++j) {
      y[32 * ib + j] = dl * static_cast<float>(kvalues_iq4nl[qs[j] & 0xf]);
      y[32 * ib + j + 16] = dl * static_cast<float>(kvalues_iq4nl[qs[j] >> 4]);
    }
  }
}
inline void decode(const block_mxfp4& b, float* y) {
  const float d = e8m0_to_fp32_half(b.e);
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(kvalues_mxfp4[b.qs[j] & 0xf]) * d;
    y[j + 16] = static_cast<float>(kvalues_mxfp4[b.qs[j] >> 4]) * d;
  }
}
inline void decode(const block_iq2_xxs& b, float* y) {
  const float d = load_f16(b.d);
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    const uint8_t* q = b.qs + 8 * ib;
    const uint32_t aux = load_u32(q + 4);
    const float db = d * (0.5f + static_cast<float>(aux >> 28)) * 0.25f;
    for (int l = 0; l < 4; ++l) {
      const uint8_t* grid = iq2xxs_grid[q[l]];
      const uint8_t signs = ksigns_iq2xs[(aux >> 7 * l) & 127];
      for (int j = 0; j < 8; ++j) y[32 * ib + 8 * l + j] = db * static_cast<float>(grid[j]) * sign_of(signs, j);
    }
  }
}
inline void decode(const block_iq2_xs& b, float* y) {
  const float d = load_f16(b.d);
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    const float db[2] = {d * (0.5f + static_cast<float>(b.scales[ib] & 0xf)) * 0.25f,
                         d * (0.5f + static_cast<float>(b.scales[ib] >> 4)) * 0.25f};
    for (int l = 0; l < 4; ++l) {
      const uint16_t q = load_u16(b.qs + 2 * (4 * ib + l));
      const uint8_t* grid = iq2xs_grid[q & 511];
      const uint8_t signs = ksigns_iq2xs[q >> 9];
      for (int j = 0; j < 8; ++j) y[32 * ib + 8 * l + j] = db[l / 2] * static_cast<float>(grid[j]) * sign_of(signs, j);
    }
  }
}
inline void decode(const block_iq2_s& b, float* y) {
  const float d = load_f16(b.d);
  const uint8_t* signs = b.qs + QK_K / 8;
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    const float db[2] = {d * (0.5f + static_cast<float>(b.scales[ib] & 0xf)) * 0.25f,
                         d * (0.5f + static_cast<float>(b.scales[ib] >> 4)) * 0.25f};
    for (int l = 0; l < 4; ++l) {
      const uint8_t* grid = iq2s_grid[b.qs[4 * ib + l] | ((b.qh[ib] << (8 - 2 * l)) & 0x300)];
      const uint8_t s = signs[4 * ib + l];
      for (int j = 0; j < 8; ++j) y[32 * ib + 8 * l + j] = db[l / 2] * static_cast<float>(grid[j]) * sign_of(s, j);
    }
  }
}
inline void decode(const block_iq3_xxs& b, float* y) {
  const float d = load_f16(b.d);
  const uint8_t* scales_and_signs = b.qs + QK_K / 4;
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    const uint32_t aux = load_u32(scales_and_signs + 4 * ib);
    const float db = d * (0.5f + static_cast<float>(aux >> 28)) * 0.5f;
    const uint8_t* qs = b.qs + 8 * ib;
    for (int l = 0; l < 4; ++l) {
      const uint8_t signs = ksigns_iq2xs[(aux >> 7 * l) & 127];
      const uint8_t* g1 = iq3xxs_grid[qs[2 * l]];
      const uint8_t* g2 = iq3xxs_grid[qs[2 * l + 1]];
      for (int j = 0; j < 4; ++j) {
        y[32 * ib + 8 * l + j] = db * static_cast<float>(g1[j]) * sign_of(signs, j);
        y[32 * ib + 8 * l + j + 4] = db * static_cast<float>(g2[j]) * sign_of(signs, j + 4);
      }
    }
  }
}
inline void decode(const block_iq3_s& b, float* y) {
  const float d = load_f16(b.d);
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    const float db = d * static_cast<float>(1 + 2 * ((b.scales[ib / 2] >> 4 * (ib % 2)) & 0xf));
    const uint8_t* qs = b.qs + 8 * ib;
    const uint8_t* signs = b.signs + 4 * ib;
    const int qh = b.qh[ib];
    for (int l = 0; l < 4; ++l) {
      const uint8_t* g1 = iq3s_grid[qs[2 * l] | ((qh << (8 - 2 * l)) & 256)];
      const uint8_t* g2 = iq3s_grid[qs[2 * l + 1] | ((qh << (7 - 2 * l)) & 256)];
      for (int j = 0; j < 4; ++j) {
        y[32 * ib + 8 * l + j] = db * static_cast<float>(g1[j]) * sign_of(signs[l], j);
        y[32 * ib + 8 * l + j + 4] = db * static_cast<float>(g2[j]) * sign_of(signs[l], j + 4);
      }
    }
  }
}
inline void decode(const block_iq1_s& b, float* y) {
  const float d = load_f16(b.d);
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    const uint16_t qh = load_u16(b.qh + 2 * ib);
    const float dl = d * static_cast<float>(2 * ((qh >> 12) & 7) + 1);
    const float delta = qh & 0x8000 ? -IQ1_DELTA : IQ1_DELTA;
    for (int l = 0; l < 4; ++l) {
      const int8_t* grid = iq1s_grid[b.qs[4 * ib + l] | (((qh >> 3 * l) & 7) << 8)];
      for (int j = 0; j < 8; ++j) y[32 * ib + 8 * l + j] = dl * (static_cast<float>(grid[j]) + delta);
    }
  }
}
inline void decode(const block_iq1_m& b, float* y) {
  const float d = iq1_m_scale(b);
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    const uint16_t sc = load_u16(b.scales + 2 * (ib / 2));
    const float dl[2] = {d * static_cast<float>(2 * ((sc >> (6 * (ib % 2) + 0)) & 0x7) + 1),
                         d * static_cast<float>(2 * ((sc >> (6 * (ib % 2) + 3)) & 0x7) + 1)};
    const uint8_t* qs = b.qs + 4 * ib;
    const uint8_t* qh = b.qh + 2 * ib;
    for (int l = 0; l < 4; ++l) {
      const uint8_t h = qh[l / 2] >> (4 * (l % 2));  // 3 index bits, then the delta sign (bit 3)
      const int8_t* grid = iq1s_grid[qs[l] | ((h & 7) << 8)];
      const float delta = h & 0x08 ? -IQ1_DELTA : IQ1_DELTA;
      for (int j = 0; j < 8; ++j) y[32 * ib + 8 * l + j] = dl[l / 2] * (static_cast<float>(grid[j]) + delta);
    }
  }
}
// A trit of TQ1_0: byte q holds trits in base-3 fixed point; trit n is the top of q * 3^n.
inline int tq1_trit(uint8_t q, int n) {
  static constexpr uint8_t pow3[5] = {1, 3, 9, 27, 81};
  const uint8_t v = static_cast<uint8_t>(q * pow3[n]);
  return ((static_cast<uint16_t>(v) * 3) >> 8) - 1;
}
inline void decode(const block_tq1_0& b, float* y) {
  const float d = load_f16(b.d);
  // 32 bytes x 5 trits (elements 0..159), 16 bytes x 5 (160..239), qh 4 bytes x 4 (240..255).
  for (int n = 0; n < 5; ++n)
    for (int m = 0; m < 32; ++m) *y++ = static_cast<float>(tq1_trit(b.qs[m], n)) * d;
  for (int n = 0; n < 5; ++n)
    for (int m = 0; m < 16; ++m) *y++ = static_cast<float>(tq1_trit(b.qs[32 + m], n)) * d;
  for (int n = 0; n < 4; ++n)
    for (int j = 0; j < 4; ++j) *y++ = static_cast<float>(tq1_trit(b.qh[j], n)) * d;
}
inline void decode(const block_tq2_0& b, float* y) {
  const float d = load_f16(b.d);
  for (int j = 0; j < QK_K / 4; j += 32)
    for (int l = 0; l < 4; ++l)
      for (int m = 0; m < 32; ++m) *y++ = static_cast<float>(((b.qs[j + m] >> (2 * l)) & 3) - 1) * d;
}

// ---- The same blocks as int8 values and a scale per 16 elements (q[i] * s[i / 16] is the decoder's
// value, bit for bit: tests/test_blocks.cc), for the integer kernels (fast*.cc's unpack_row). The
// IQ1 values are 8 * (grid + delta) with the scale / 8. ----

inline void unpack(const block_iq4_nl& b, int8_t* q, float* s) {
  s[0] = s[1] = load_f16(b.d);
  for (int j = 0; j < 16; ++j) {
    q[j] = kvalues_iq4nl[b.qs[j] & 0xf];
    q[j + 16] = kvalues_iq4nl[b.qs[j] >> 4];
  }
}
inline void unpack(const block_iq4_xs& b, int8_t* q, float* s) {
  const float d = load_f16(b.d);
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    s[2 * ib] = s[2 * ib + 1] = d * static_cast<float>(iq4_xs_scale(b, ib) - 32);
    for (int j = 0; j < 16; ++j) {
      q[32 * ib + j] = kvalues_iq4nl[b.qs[16 * ib + j] & 0xf];
      q[32 * ib + j + 16] = kvalues_iq4nl[b.qs[16 * ib + j] >> 4];
    }
  }
}
inline void unpack(const block_mxfp4& b, int8_t* q, float* s) {
  s[0] = s[1] = e8m0_to_fp32_half(b.e);
  for (int j = 0; j < 16; ++j) {
    q[j] = kvalues_mxfp4[b.qs[j] & 0xf];
    q[j + 16] = kvalues_mxfp4[b.qs[j] >> 4];
  }
}
inline int8_t signed_grid(uint8_t g, uint8_t signs, int j) { return static_cast<int8_t>((signs >> j) & 1 ? -g : g); }
inline void unpack(const block_iq2_xxs& b, int8_t* q, float* s) {
  const float d = load_f16(b.d);
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    const uint8_t* qs = b.qs + 8 * ib;
    const uint32_t aux = load_u32(qs + 4);
    s[2 * ib] = s[2 * ib + 1] = d * (0.5f + static_cast<float>(aux >> 28)) * 0.25f;
    for (int l = 0; l < 4; ++l)
      for (int j = 0; j < 8; ++j) q[32 * ib + 8 * l + j] = signed_grid(iq2xxs_grid[qs[l]][j], ksigns_iq2xs[(aux >> 7 * l) & 127], j);
  }
}
inline void unpack(const block_iq2_xs& b, int8_t* q, float* s) {
  const float d = load_f16(b.d);
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    s[2 * ib] = d * (0.5f + static_cast<float>(b.scales[ib] & 0xf)) * 0.25f;
    s[2 * ib + 1] = d * (0.5f + static_cast<float>(b.scales[ib] >> 4)) * 0.25f;
    for (int l = 0; l < 4; ++l) {
      const uint16_t v = load_u16(b.qs + 2 * (4 * ib + l));
      for (int j = 0; j < 8; ++j) q[32 * ib + 8 * l + j] = signed_grid(iq2xs_grid[v & 511][j], ksigns_iq2xs[v >> 9], j);
    }
  }
}
inline void unpack(const block_iq2_s& b, int8_t* q, float* s) {
  const float d = load_f16(b.d);
  const uint8_t* signs = b.qs + QK_K / 8;
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    s[2 * ib] = d * (0.5f + static_cast<float>(b.scales[ib] & 0xf)) * 0.25f;
    s[2 * ib + 1] = d * (0.5f + static_cast<float>(b.scales[ib] >> 4)) * 0.25f;
    for (int l = 0; l < 4; ++l) {
      const uint8_t* grid = iq2s_grid[b.qs[4 * ib + l] | ((b.qh[ib] << (8 - 2 * l)) & 0x300)];
      for (int j = 0; j < 8; ++j) q[32 * ib + 8 * l + j] = signed_grid(grid[j], signs[4 * ib + l], j);
    }
  }
}
inline void unpack(const block_iq3_xxs& b, int8_t* q, float* s) {
  const float d = load_f16(b.d);
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    const uint32_t aux = load_u32(b.qs + QK_K / 4 + 4 * ib);
    s[2 * ib] = s[2 * ib + 1] = d * (0.5f + static_cast<float>(aux >> 28)) * 0.5f;
    const uint8_t* qs = b.qs + 8 * ib;
    for (int l = 0; l < 4; ++l) {
      const uint8_t signs = ksigns_iq2xs[(aux >> 7 * l) & 127];
      for (int j = 0; j < 4; ++j) {
        q[32 * ib + 8 * l + j] = signed_grid(iq3xxs_grid[qs[2 * l]][j], signs, j);
        q[32 * ib + 8 * l + j + 4] = signed_grid(iq3xxs_grid[qs[2 * l + 1]][j], signs, j + 4);
      }
    }
  }
}
inline void unpack(const block_iq3_s& b, int8_t* q, float* s) {
  const float d = load_f16(b.d);
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    s[2 * ib] = s[2 * ib + 1] = d * static_cast<float>(1 + 2 * ((b.scales[ib / 2] >> 4 * (ib % 2)) & 0xf));
    const uint8_t* qs = b.qs + 8 * ib;
    const uint8_t* signs = b.signs + 4 * ib;
    const int qh = b.qh[ib];
    for (int l = 0; l < 4; ++l) {
      const uint8_t* g1 = iq3s_grid[qs[2 * l] | ((qh << (8 - 2 * l)) & 256)];
      const uint8_t* g2 = iq3s_grid[qs[2 * l + 1] | ((qh << (7 - 2 * l)) & 256)];
      for (int j = 0; j < 4; ++j) {
        q[32 * ib + 8 * l + j] = signed_grid(g1[j], signs[l], j);
        q[32 * ib + 8 * l + j + 4] = signed_grid(g2[j], signs[l], j + 4);
      }
    }
  }
}
inline void unpack(const block_iq1_s& b, int8_t* q, float* s) {
  const float d = load_f16(b.d);
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    const uint16_t qh = load_u16(b.qh + 2 * ib);
    s[2 * ib] = s[2 * ib + 1] = d * static_cast<float>(2 * ((qh >> 12) & 7) + 1) * 0.125f;
    const int delta = qh & 0x8000 ? -1 : 1;
    for (int l = 0; l < 4; ++l) {
      const int8_t* grid = iq1s_grid[b.qs[4 * ib + l] | (((qh >> 3 * l) & 7) << 8)];
      for (int j = 0; j < 8; ++j) q[32 * ib + 8 * l + j] = static_cast<int8_t>(8 * grid[j] + delta);
    }
  }
}
inline void unpack(const block_iq1_m& b, int8_t* q, float* s) {
  const float d = iq1_m_scale(b);
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    const uint16_t sc = load_u16(b.scales + 2 * (ib / 2));
    s[2 * ib] = d * static_cast<float>(2 * ((sc >> (6 * (ib % 2) + 0)) & 0x7) + 1) * 0.125f;
    s[2 * ib + 1] = d * static_cast<float>(2 * ((sc >> (6 * (ib % 2) + 3)) & 0x7) + 1) * 0.125f;
    for (int l = 0; l < 4; ++l) {
      const uint8_t h = b.qh[2 * ib + l / 2] >> (4 * (l % 2));
      const int8_t* grid = iq1s_grid[b.qs[4 * ib + l] | ((h & 7) << 8)];
      const int delta = h & 0x08 ? -1 : 1;
      for (int j = 0; j < 8; ++j) q[32 * ib + 8 * l + j] = static_cast<int8_t>(8 * grid[j] + delta);
    }
  }
}
inline void unpack(const block_tq1_0& b, int8_t* q, float* s) {
  for (int g = 0; g < 16; ++g) s[g] = load_f16(b.d);
  for (int n = 0; n < 5; ++n)
    for (int m = 0; m < 32; ++m) *q++ = static_cast<int8_t>(tq1_trit(b.qs[m], n));
  for (int n = 0; n < 5; ++n)
    for (int m = 0; m < 16; ++m) *q++ = static_cast<int8_t>(tq1_trit(b.qs[32 + m], n));
  for (int n = 0; n < 4; ++n)
    for (int j = 0; j < 4; ++j) *q++ = static_cast<int8_t>(tq1_trit(b.qh[j], n));
}
inline void unpack(const block_tq2_0& b, int8_t* q, float* s) {
  for (int g = 0; g < 16; ++g) s[g] = load_f16(b.d);
  for (int j = 0; j < QK_K / 4; j += 32)
    for (int l = 0; l < 4; ++l)
      for (int m = 0; m < 32; ++m) *q++ = static_cast<int8_t>(((b.qs[j + m] >> (2 * l)) & 3) - 1);
}

// True for the layouts above (the types unpack_row takes from here).
template <class B>
constexpr bool has_int_unpack = requires(const B& b, int8_t* q, float* s) { unpack(b, q, s); };

}  // namespace g4::blocks
