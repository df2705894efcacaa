#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "kernels/blocks.h"
#include "kernels/dequant.h"
#include "util/error.h"
#include "util/half.h"

namespace g4 {
namespace {

// Round half to even (llama.cpp's nearest_int: the 1.5 * 2^23 trick).
inline int nearest_int(float f) {
  float val = f + 12582912.f;
  int i;
  std::memcpy(&i, &val, 4);
  return (i & 0x007fffff) - 0x00400000;
}

void q8_0(const float* x, uint8_t* out) {
  auto& b = *blocks::block_at<blocks::block_q8_0>(out, 0);
  float amax = 0;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
  store_f16(b.d, d);
  for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(std::roundf(x[j] * id));
}

// Signed value of largest magnitude (first occurrence wins).
float signed_absmax(const float* x, int n) {
  float amax = 0, mx = 0;
  for (int j = 0; j < n; ++j)
    if (std::fabs(x[j]) > amax) { amax = std::fabs(x[j]); mx = x[j]; }
  return mx;
}

void q4_0(const float* x, uint8_t* out) {
  auto& b = *blocks::block_at<blocks::block_q4_0>(out, 0);
  const float d = signed_absmax(x, 32) / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
  store_f16(b.d, d);
  for (int j = 0; j < 16; ++j) {
    const uint8_t a = static_cast<uint8_t>(std::min(15, static_cast<int>(x[j] * id + 8.5f)));
    const uint8_t c = static_cast<uint8_t>(std::min(15, static_cast<int>(x[j + 16] * id + 8.5f)));
    b.qs[j] = a | static_cast<uint8_t>(c << 4);
  }
}

void q4_1(const float* x, uint8_t* out) {
  auto& b = *blocks::block_at<blocks::block_q4_1>(out, 0);
  float mn = x[0], mx = x[0];
  for (int j = 1; j < 32; ++j) { mn = std::min(mn, x[j]); mx = std::max(mx, x[j]); }
  const float d = (mx - mn) / 15.0f, id = d != 0 ? 1.0f / d : 0.0f;
  store_f16(b.d, d);
  store_f16(b.m, mn);
  for (int j = 0; j < 16; ++j) {
    const uint8_t a = static_cast<uint8_t>(std::min(15, static_cast<int>((x[j] - mn) * id + 0.5f)));
    const uint8_t c = static_cast<uint8_t>(std::min(15, static_cast<int>((x[j + 16] - mn) * id + 0.5f)));
    b.qs[j] = a | static_cast<uint8_t>(c << 4);
  }
}

void q5_0(const float* x, uint8_t* out) {
  auto& b = *blocks::block_at<blocks::block_q5_0>(out, 0);
  const float d = signed_absmax(x, 32) / -16.0f, id = d != 0 ? 1.0f / d : 0.0f;
  store_f16(b.d, d);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const int a = std::min(31, static_cast<int>(x[j] * id + 16.5f));
    const int c = std::min(31, static_cast<int>(x[j + 16] * id + 16.5f));
    b.qs[j] = static_cast<uint8_t>((a & 0x0f) | ((c & 0x0f) << 4));
    qh |= static_cast<uint32_t>((a & 0x10) >> 4) << j;
    qh |= static_cast<uint32_t>((c & 0x10) >> 4) << (j + 16);
  }
  std::memcpy(b.qh, &qh, 4);
}

void q5_1(const float* x, uint8_t* out) {
  auto& b = *blocks::block_at<blocks::block_q5_1>(out, 0);
  float mn = x[0], mx = x[0];
  for (int j = 1; j < 32; ++j) { mn = std::min(mn, x[j]); mx = std::max(mx, x[j]); }
  const float d = (mx - mn) / 31.0f, id = d != 0 ? 1.0f / d : 0.0f;
  store_f16(b.d, d);
  store_f16(b.m, mn);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const int a = static_cast<int>((x[j] - mn) * id + 0.5f);
    const int c = static_cast<int>((x[j + 16] - mn) * id + 0.5f);
    b.qs[j] = static_cast<uint8_t>((a & 0x0f) | ((c & 0x0f) << 4));
    qh |= static_cast<uint32_t>((a & 0x10) >> 4) << j;
    qh |= static_cast<uint32_t>((c & 0x10) >> 4) << (j + 16);
  }
  std::memcpy(b.qh, &qh, 4);
}

// Weighted search for (scale, min) with x ~ scale * L - min, L in [0, nmax]
// (llama.cpp's make_qkx2_quants). Returns scale; *the_min receives min >= 0.
float search_scale_min(int n, int nmax, const float* x, const float* w, uint8_t* L, float* the_min, uint8_t* Laux,
                       float rmin, float rdelta, int nstep) {
  float mn = x[0], mx = x[0], sum_w = w[0], sum_x = w[0] * x[0];
  for (int i = 1; i < n; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (mn > 0) mn = 0;
  if (mx == mn) {
    std::fill(L, L + n, 0);
    *the_min = -mn;
    return 0;
  }
  float iscale = nmax / (mx - mn), scale = 1 / iscale, best_mad = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(nearest_int(iscale * (x[i] - mn)), 0, nmax);
    L[i] = static_cast<uint8_t>(l);
    const float diff = scale * l + mn - x[i];
    best_mad += w[i] * diff * diff;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (mx - mn);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest_int(iscale * (x[i] - mn)), 0, nmax);
      Laux[i] = static_cast<uint8_t>(l);
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float mad = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = this_scale * Laux[i] + this_min - x[i];
        mad += w[i] * diff * diff;
      }
      if (mad < best_mad) {
        std::copy(Laux, Laux + n, L);
        best_mad = mad;
        scale = this_scale;
        mn = this_min;
      }
    }
  }
  *the_min = -mn;
  return scale;
}

// Weighted search for a signed scale with x ~ scale * (L - nmax), L in [0, 2 nmax)
// (llama.cpp's make_qx_quants, rmse_type 1: weights x^2).
float search_scale_signed(int n, int nmax, const float* x, int8_t* L) {
  float mx = 0, amax = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) { amax = std::fabs(x[i]); mx = x[i]; }
  if (amax < 1e-15f) {
    std::fill(L, L + n, 0);
    return 0;
  }
  float iscale = -nmax / mx;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / mx;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1) + nmax);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Q4_K / Q5_K: 8 sub-blocks of 32 with 6-bit (scale, min) under f16 (d, dmin).
template <int kBits>
void qk_scale_min(const float* x, uint8_t* out) {
  using B = std::conditional_t<kBits == 4, blocks::block_q4_k, blocks::block_q5_k>;
  B& b = *blocks::block_at<B>(out, 0);
  constexpr int nmax = (1 << kBits) - 1;
  uint8_t L[256], Laux[32];
  float weights[32], mins[8], scales[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
    scales[j] = kBits == 4 ? search_scale_min(32, nmax, xs, weights, L + 32 * j, &mins[j], Laux, -1.0f, 0.1f, 20)
                           : search_scale_min(32, nmax, xs, weights, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  uint8_t* sc = b.scales;
  std::memset(sc, 0, sizeof(b.scales));
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = static_cast<uint8_t>(std::min(63, nearest_int(inv_scale * scales[j])));
    const uint8_t lm = static_cast<uint8_t>(std::min(63, nearest_int(inv_min * mins[j])));
    if (j < 4) {
      sc[j] = ls;
      sc[j + 4] = lm;
    } else {
      sc[j + 4] = static_cast<uint8_t>((ls & 0xf) | ((lm & 0xf) << 4));
      sc[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      sc[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  store_f16(b.d, max_scale / 63.0f);
  store_f16(b.dmin, max_min / 63.0f);
  const float d = load_f16(b.d), dmin = load_f16(b.dmin);
  for (int j = 0; j < 8; ++j) {
    uint8_t ls, lm;
    scale_min_k4(j, sc, ls, lm);
    const float dj = d * ls;
    if (dj == 0) continue;
    const float dm = dmin * lm;
    for (int l = 0; l < 32; ++l) L[32 * j + l] = static_cast<uint8_t>(std::clamp(nearest_int((x[32 * j + l] + dm) / dj), 0, nmax));
  }
  if constexpr (kBits == 4) {
    uint8_t* qs = b.qs;
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
  } else {
    uint8_t* qh = b.qh;
    uint8_t* qs = b.qs;
    std::memset(qh, 0, sizeof(b.qh));
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        const int a = L[64 * c + l], e = L[64 * c + 32 + l];
        qs[32 * c + l] = static_cast<uint8_t>((a & 0xf) | ((e & 0xf) << 4));
        qh[l] |= static_cast<uint8_t>(((a >> 4) & 1) << (2 * c));
        qh[l] |= static_cast<uint8_t>(((e >> 4) & 1) << (2 * c + 1));
      }
  }
}

// Q6_K: 16 sub-blocks of 16 with int8 scales under an f16 d.
void q6_k(const float* x, uint8_t* out) {
  auto& b = *blocks::block_at<blocks::block_q6_k>(out, 0);
  int8_t L[256];
  float scales[16];
  float max_scale = 0, max_abs_scale = 0;
  for (int j = 0; j < 16; ++j) {
    scales[j] = search_scale_signed(16, 32, x + 16 * j, L + 16 * j);
    if (std::fabs(scales[j]) > max_abs_scale) { max_abs_scale = std::fabs(scales[j]); max_scale = scales[j]; }
  }
  uint8_t* ql = b.ql;
  uint8_t* qh = b.qh;
  int8_t* sc = b.scales;
  if (max_abs_scale < 1e-15f) {
    std::memset(&b, 0, sizeof(b));
    return;
  }
  const float iscale = -128.0f / max_scale;
  store_f16(b.d, 1 / iscale);
  for (int j = 0; j < 16; ++j) sc[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[j])));
  const float d = load_f16(b.d);
  uint8_t Lu[256];
  for (int j = 0; j < 16; ++j) {
    const float dj = d * sc[j];
    if (dj == 0) { std::fill(Lu + 16 * j, Lu + 16 * j + 16, 32); continue; }
    for (int l = 0; l < 16; ++l) Lu[16 * j + l] = static_cast<uint8_t>(std::clamp(nearest_int(x[16 * j + l] / dj), -32, 31) + 32);
  }
  std::memset(qh, 0, sizeof(b.qh));
  for (int n = 0; n < 2; ++n)
    for (int l = 0; l < 32; ++l) {
      const uint8_t q1 = Lu[128 * n + l], q2 = Lu[128 * n + l + 32], q3 = Lu[128 * n + l + 64], q4 = Lu[128 * n + l + 96];
      ql[64 * n + l] = static_cast<uint8_t>((q1 & 0xf) | ((q3 & 0xf) << 4));
      ql[64 * n + l + 32] = static_cast<uint8_t>((q2 & 0xf) | ((q4 & 0xf) << 4));
      qh[32 * n + l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
}

// ---- IQ4_NL / IQ4_XS: llama.cpp's quantize_row_iq4_nl_impl (ggml-quants.c), operation for
// operation, without an importance matrix (weights x^2), ntry = 7. ----

// The index of the codebook value nearest to x (ties to the upper one, as best_index_int8).
int best_index_int8(int n, const int8_t* val, float x) {
  if (x <= val[0]) return 0;
  if (x >= val[n - 1]) return n - 1;
  int ml = 0, mu = n - 1;
  while (mu - ml > 1) {
    const int mav = (ml + mu) / 2;
    if (x < val[mav]) mu = mav;
    else ml = mav;
  }
  return x - val[mu - 1] < val[mu] - x ? mu - 1 : mu;
}

// One super-block of `super` elements in blocks of 32: per block the scale search, then (IQ4_XS)
// the 6-bit block scales under one f16 super-scale. Writes d, the nibbles and (IQ4_XS) the scales.
void iq4_impl(int super, const float* x, const float* quant_weights, uint8_t* dh, uint8_t* q4, uint8_t* scales_h,
              uint8_t* scales_l) {
  constexpr int kBlock = 32, kTry = 7;
  constexpr float kGroupMaxEps = 1e-15f;
  const int8_t* values = blocks::kvalues_iq4nl;
  float scales[blocks::QK_K / 32], weight[32];
  uint8_t L[blocks::QK_K];
  float sigma2 = 0;
  for (int j = 0; j < super; ++j) sigma2 += x[j] * x[j];
  sigma2 *= 2.f / static_cast<float>(super);
  std::memset(q4, 0, static_cast<size_t>(super / 2));
  store_f16(dh, 0.0f);
  float max_scale = 0, amax_scale = 0;
  for (int ib = 0; ib < super / kBlock; ++ib) {
    const float* xb = x + ib * kBlock;
    uint8_t* Lb = L + ib * kBlock;
    if (quant_weights) {
      const float* qw = quant_weights + ib * kBlock;
      for (int j = 0; j < kBlock; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
    } else {
      for (int j = 0; j < kBlock; ++j) weight[j] = xb[j] * xb[j];
    }
    float amax = 0, max = 0;
    for (int j = 0; j < kBlock; ++j) {
      const float ax = std::fabs(xb[j]);
      if (ax > amax) {
        amax = ax;
        max = xb[j];
      }
    }
    if (amax < kGroupMaxEps) {
      scales[ib] = 0;
      continue;
    }
    float d = -max / values[0];
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < kBlock; ++j) {
      const float al = id * xb[j];
      const int l = best_index_int8(16, values, al);
      Lb[j] = static_cast<uint8_t>(l);
      const float q = values[l], w = weight[j];
      sumqx += w * q * xb[j];
      sumq2 += w * q * q;
    }
    d = sumqx / sumq2;
    float best = d * sumqx;
    for (int itry = -kTry; itry <= kTry; ++itry) {
      id = (static_cast<float>(itry) + values[0]) / max;
      sumqx = sumq2 = 0;
      for (int j = 0; j < kBlock; ++j) {
        const float al = id * xb[j];
        const int l = best_index_int8(16, values, al);
        const float q = values[l], w = weight[j];
        sumqx += w * q * xb[j];
        sumq2 += w * q * q;
      }
      if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
        d = sumqx / sumq2;
        best = d * sumqx;
      }
    }
    scales[ib] = d;
    const float abs_d = std::fabs(d);
    if (abs_d > amax_scale) {
      amax_scale = abs_d;
      max_scale = d;
    }
  }
  if (super / kBlock > 1) {
    uint16_t sh = 0;
    const float d = -max_scale / 32;
    store_f16(dh, d);
    const float id = d ? 1 / d : 0.f;
    for (int ib = 0; ib < super / kBlock; ++ib) {
      int l = nearest_int(id * scales[ib]);
      l = std::max(-32, std::min(31, l));
      const float dl = d * static_cast<float>(l);
      const float idl = dl ? 1 / dl : 0.f;
      uint8_t* Lb = L + ib * kBlock;
      const float* xb = x + ib * kBlock;
      for (int j = 0; j < kBlock; ++j) Lb[j] = static_cast<uint8_t>(best_index_int8(16, values, idl * xb[j]));
      l += 32;
      const uint8_t l_l = static_cast<uint8_t>(l & 0xf), l_h = static_cast<uint8_t>(l >> 4);
      if (ib % 2 == 0) scales_l[ib / 2] = l_l;
      else scales_l[ib / 2] |= static_cast<uint8_t>(l_l << 4);
      sh = static_cast<uint16_t>(sh | (l_h << 2 * (ib % 16)));
    }
    std::memcpy(scales_h, &sh, 2);
  } else {
    store_f16(dh, scales[0]);
    const float id = scales[0] ? 1 / scales[0] : 0;
    for (int j = 0; j < super; ++j) L[j] = static_cast<uint8_t>(best_index_int8(16, values, id * x[j]));
  }
  for (int i = 0; i < super / 32; ++i)
    for (int j = 0; j < 16; ++j) q4[16 * i + j] = static_cast<uint8_t>(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

void iq4_nl(const float* x, const float* qw, uint8_t* out) {
  auto& b = *reinterpret_cast<blocks::block_iq4_nl*>(out);
  iq4_impl(32, x, qw, b.d, b.qs, nullptr, nullptr);
}
void iq4_xs(const float* x, const float* qw, uint8_t* out) {
  auto& b = *reinterpret_cast<blocks::block_iq4_xs*>(out);
  iq4_impl(blocks::QK_K, x, qw, b.d, b.qs, b.scales_h, b.scales_l);
}
void iq4_nl_plain(const float* x, uint8_t* out) { iq4_nl(x, nullptr, out); }
void iq4_xs_plain(const float* x, uint8_t* out) { iq4_xs(x, nullptr, out); }

// The types whose quantizer takes an importance matrix (per-column weights of a row).
using BlockQW = void (*)(const float*, const float*, uint8_t*);
BlockQW weighted_quantizer(DType t) {
  switch (t) {
    case DType::IQ4_NL: return iq4_nl;
    case DType::IQ4_XS: return iq4_xs;
    default: return nullptr;
  }
}

using BlockQ = void (*)(const float*, uint8_t*);
BlockQ block_quantizer(DType t) {
  switch (t) {
    case DType::Q8_0: return q8_0;
    case DType::Q4_0: return q4_0;
    case DType::Q4_1: return q4_1;
    case DType::Q5_0: return q5_0;
    case DType::Q5_1: return q5_1;
    case DType::Q4_K: return qk_scale_min<4>;
    case DType::Q5_K: return qk_scale_min<5>;
    case DType::Q6_K: return q6_k;
    case DType::IQ4_NL: return iq4_nl_plain;
    case DType::IQ4_XS: return iq4_xs_plain;
    default: return nullptr;
  }
}

}  // namespace

bool quantize_takes_imatrix(DType t) { return weighted_quantizer(t) != nullptr; }

bool quantize_supported(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || block_quantizer(t) != nullptr;
}

void quantize_row(DType t, const float* x, int64_t n, uint8_t* out, const float* imatrix) {
  if (imatrix) {
    const BlockQW q = weighted_quantizer(t);
    if (!q) fail("quantization to {} does not take an importance matrix", dtype_name(t));
    const auto& info = dtype_info(t);
    if (n % info.block_elems != 0) fail("a row of {} elements cannot be quantized to {} (blocks of {})", n, info.name, info.block_elems);
    for (int64_t b = 0; b < n / info.block_elems; ++b)
      q(x + b * info.block_elems, imatrix + b * info.block_elems, out + b * info.block_bytes);
    return;
  }
  switch (t) {
    case DType::F32: std::memcpy(out, x, static_cast<size_t>(n) * 4); return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) store_f16(out + 2 * i, x[i]);
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) store_bf16(out + 2 * i, x[i]);
      return;
    default: break;
  }
  BlockQ q = block_quantizer(t);
  if (!q) fail("quantization to {} is not supported (g4 writes F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS)", dtype_name(t));
  const auto& info = dtype_info(t);
  if (n % info.block_elems != 0) fail("a row of {} elements cannot be quantized to {} (blocks of {})", n, info.name, info.block_elems);
  for (int64_t b = 0; b < n / info.block_elems; ++b) q(x + b * info.block_elems, out + b * info.block_bytes);
}

std::vector<uint8_t> quantize_rows(DType t, const float* x, int64_t rows, int64_t cols, const float* imatrix) {
  if (!quantize_supported(t)) fail("quantization to {} is not supported", dtype_name(t));
  const auto rb = row_bytes(t, cols);
  if (!rb) fail("a row of {} elements cannot be stored as {}", cols, dtype_name(t));
  std::vector<uint8_t> out(static_cast<size_t>(*rb * rows));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) quantize_row(t, x + r * cols, cols, out.data() + r * *rb, imatrix);
  return out;
}

}  // namespace g4
