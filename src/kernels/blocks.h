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

}  // namespace g4::blocks
