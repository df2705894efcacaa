// NEON matmul for quantized weights on aarch64: Q4_0, Q8_0 and Q4_K rows are decoded in
// registers, block by block, and dotted with 8-bit activations (as llama.cpp's q8_0),
// like the x86 decode paths. The other types return false and take the scalar kernels.
//
// Products are int8 x int8: vdotq_s32 where the target has the dot-product extension
// (__ARM_FEATURE_DOTPROD, e.g. -march=armv8.2-a+dotprod or a native build on Apple M or
// Graviton 2+), else vmull_s8 + vpadalq_s16 (every ARMv8). Each weight block is decoded once
// and used for up to 4 tokens, so prefill does not decode a row once per token.
//
// aarch64 only (the whole file); block offsets and sizes come from kernels/blocks.h.
#if defined(__aarch64__)
#include <arm_neon.h>

#include <algorithm>
#include <cstring>

#include "kernels/blocks.h"
#include "kernels/fast_internal.h"
#include "util/half.h"

namespace g4::fast_detail {
namespace {

using namespace blocks;

// acc + the dot of 16 int8 pairs, in 4 int32 lanes.
inline int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
  return vdotq_s32(acc, a, b);
#else
  // |a * b| <= 128 * 128 fits int16; pairs are widened to int32 by the pairwise add.
  acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
  return vpadalq_s16(acc, vmull_high_s8(a, b));
#endif
}

// Block decoders: block b (32 weights) of a row as two vectors of 16 signed values in
// element order (lo: 0..15, hi: 16..31), its scale s and (types with a minimum) minimum m,
// so that w = s * q + m.
struct DecQ4_0 {
  static constexpr bool kMin = false;
  static void decode(const uint8_t* row, int64_t b, int8x16_t& lo, int8x16_t& hi, float& s, float&) {
    const block_q4_0& p = *block_at<block_q4_0>(row, b);
    const uint8x16_t raw = vld1q_u8(p.qs);
    const int8x16_t eight = vdupq_n_s8(8);
    lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0f))), eight);
    hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), eight);
    s = load_f16(p.d);
  }
};

struct DecQ8_0 {
  static constexpr bool kMin = false;
  static void decode(const uint8_t* row, int64_t b, int8x16_t& lo, int8x16_t& hi, float& s, float&) {
    const block_q8_0& p = *block_at<block_q8_0>(row, b);
    lo = vld1q_s8(p.qs);
    hi = vld1q_s8(p.qs + 16);
    s = load_f16(p.d);
  }
};

// Q4_K: sub-block j (0..7) of a super-block is the low (j even) or high (j odd) nibbles of
// qs[32 (j/2) .. 32 (j/2) + 31], with a 6-bit scale and minimum under f16 d and dmin.
struct DecQ4_K {
  static constexpr bool kMin = true;
  static void decode(const uint8_t* row, int64_t b, int8x16_t& lo, int8x16_t& hi, float& s, float& m) {
    const block_q4_k& p = *block_at<block_q4_k>(row, b / 8);
    const int j = static_cast<int>(b % 8);
    uint8_t ls, lm;
    scale_min_k4(j, p.scales, ls, lm);
    s = load_f16(p.d) * ls;
    m = -load_f16(p.dmin) * lm;
    const uint8x16_t r0 = vld1q_u8(p.qs + 32 * (j / 2)), r1 = vld1q_u8(p.qs + 32 * (j / 2) + 16);
    const uint8x16_t nib = vdupq_n_u8(0x0f);
    if (j % 2) {
      lo = vreinterpretq_s8_u8(vshrq_n_u8(r0, 4));
      hi = vreinterpretq_s8_u8(vshrq_n_u8(r1, 4));
    } else {
      lo = vreinterpretq_s8_u8(vandq_u8(r0, nib));
      hi = vreinterpretq_s8_u8(vandq_u8(r1, nib));
    }
  }
};

// out[k] = row . token (t0 + k) for T tokens; each block is decoded once.
template <class D, int T>
void dot_row(const uint8_t* row, const Acts& a, int64_t t0, float* out) {
  float32x4_t acc[T];
  float off[T];
  for (int k = 0; k < T; ++k) {
    acc[k] = vdupq_n_f32(0.0f);
    off[k] = 0.0f;
  }
  for (int64_t b = 0; b < a.n_in / QK; ++b) {
    int8x16_t lo, hi;
    float s = 0, m = 0;
    D::decode(row, b, lo, hi, s, m);
    for (int k = 0; k < T; ++k) {
      const int8_t* x = a.tok(t0 + k) + QK * b;
      const int32x4_t p = dot16(dot16(vdupq_n_s32(0), lo, vld1q_s8(x)), hi, vld1q_s8(x + 16));
      const size_t i = a.at(t0 + k, b);
      acc[k] = vfmaq_n_f32(acc[k], vcvtq_f32_s32(p), s * a.d[i]);
      if constexpr (D::kMin) off[k] += m * a.sx[i];
    }
  }
  for (int k = 0; k < T; ++k) out[k] = vaddvq_f32(acc[k]) + off[k];
}

using RowDot = void (*)(const uint8_t*, const Acts&, int64_t, float*);

template <class D>
RowDot dot_for(int n) {
  switch (n) {
    case 1: return dot_row<D, 1>;
    case 2: return dot_row<D, 2>;
    case 3: return dot_row<D, 3>;
    default: return dot_row<D, 4>;
  }
}

RowDot row_dot(DType t, int n) {
  switch (t) {
    case DType::Q4_0: return dot_for<DecQ4_0>(n);
    case DType::Q8_0: return dot_for<DecQ8_0>(n);
    case DType::Q4_K: return dot_for<DecQ4_K>(n);
    default: return nullptr;
  }
}

constexpr int kTileTokens = 4;

template <class D>
void decode_blocks_as_floats(const uint8_t* row, int64_t n, float* y) {
  for (int64_t b = 0; b < n / QK; ++b) {
    int8x16_t lo, hi;
    float s = 0, m = 0;
    D::decode(row, b, lo, hi, s, m);
    int8_t q[32];
    vst1q_s8(q, lo);
    vst1q_s8(q + 16, hi);
    for (int j = 0; j < 32; ++j) {
      const float v = static_cast<float>(q[j]);
      y[QK * b + j] = D::kMin ? s * v + m : v * s;
    }
  }
}

}  // namespace

bool matmul_neon(const TensorView& w, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y, int64_t row0) {
  if (!row_dot(w.dtype, 1) || n_in % QK != 0) return false;
  const int64_t rb = *row_bytes(w.dtype, n_in);
  const uint8_t* rows = w.data + row0 * rb;
  Acts& acts = scratch().acts;
  quantize_acts(x, n_tok, n_in, 0, QK, has_min(w.dtype), quantize_block_scalar, acts);
  const RowDot full = row_dot(w.dtype, kTileTokens);
  const int rest = static_cast<int>(n_tok % kTileTokens);
  const RowDot tail = rest ? row_dot(w.dtype, rest) : nullptr;
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < n_out; ++o) {
    float out[kTileTokens];
    int64_t t = 0;
    for (; t + kTileTokens <= n_tok; t += kTileTokens) {
      full(rows + o * rb, acts, t, out);
      for (int k = 0; k < kTileTokens; ++k) y[(t + k) * n_out + o] = out[k];
    }
    if (tail) {
      tail(rows + o * rb, acts, t, out);
      for (int k = 0; k < rest; ++k) y[(t + k) * n_out + o] = out[k];
    }
  }
  return true;
}

const char* neon_dot_kind() {
#if defined(__ARM_FEATURE_DOTPROD)
  return "vdotq_s32";
#else
  return "vmull_s8+vpadalq_s16";
#endif
}

bool decode_row_neon(DType t, const uint8_t* row, int64_t n, float* y) {
  switch (t) {
    case DType::Q4_0: decode_blocks_as_floats<DecQ4_0>(row, n, y); return true;
    case DType::Q8_0: decode_blocks_as_floats<DecQ8_0>(row, n, y); return true;
    case DType::Q4_K: decode_blocks_as_floats<DecQ4_K>(row, n, y); return true;
    default: return false;
  }
}

}  // namespace g4::fast_detail

#endif  // __aarch64__
