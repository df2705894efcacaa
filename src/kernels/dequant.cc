#include "kernels/dequant.h"

#include <cstring>
#include <vector>

#include "util/error.h"
#include "util/half.h"

namespace g4 {
namespace {

inline float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

void q4_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((b[2 + j] & 0x0f) - 8) * d;
    y[j + 16] = static_cast<float>((b[2 + j] >> 4) - 8) * d;
  }
}
void q4_1(const uint8_t* b, float* y) {
  const float d = f16_at(b), m = f16_at(b + 2);
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(b[4 + j] & 0x0f) * d + m;
    y[j + 16] = static_cast<float>(b[4 + j] >> 4) * d + m;
  }
}
void q5_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  for (int j = 0; j < 16; ++j) {
    const int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
    y[j] = static_cast<float>(((b[6 + j] & 0x0f) | (h0 << 4)) - 16) * d;
    y[j + 16] = static_cast<float>(((b[6 + j] >> 4) | (h1 << 4)) - 16) * d;
  }
}
void q5_1(const uint8_t* b, float* y) {
  const float d = f16_at(b), m = f16_at(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  for (int j = 0; j < 16; ++j) {
    const int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
    y[j] = static_cast<float>((b[8 + j] & 0x0f) | (h0 << 4)) * d + m;
    y[j + 16] = static_cast<float>((b[8 + j] >> 4) | (h1 << 4)) * d + m;
  }
}
void q8_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
}
void q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = f16_at(b + 80), dmin = f16_at(b + 82);
  for (int n = 0; n < 2; ++n)
    for (int j = 0; j < 4; ++j) {
      const uint8_t sa = scales[8 * n + 2 * j], sb = scales[8 * n + 2 * j + 1];
      const float da = d * (sa & 0xf), ma = dmin * (sa >> 4), db = d * (sb & 0xf), mb = dmin * (sb >> 4);
      for (int l = 0; l < 16; ++l) {
        y[128 * n + 32 * j + l] = da * static_cast<float>((qs[32 * n + l] >> (2 * j)) & 3) - ma;
        y[128 * n + 32 * j + 16 + l] = db * static_cast<float>((qs[32 * n + 16 + l] >> (2 * j)) & 3) - mb;
      }
    }
}
void q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = f16_at(b + 108);
  int s[16];
  for (int j = 0; j < 4; ++j) {
    s[j] = (sc[j] & 0xf) | (((sc[8 + j] >> 0) & 3) << 4);
    s[4 + j] = (sc[4 + j] & 0xf) | (((sc[8 + j] >> 2) & 3) << 4);
    s[8 + j] = (sc[j] >> 4) | (((sc[8 + j] >> 4) & 3) << 4);
    s[12 + j] = (sc[4 + j] >> 4) | (((sc[8 + j] >> 6) & 3) << 4);
  }
  for (int n = 0; n < 2; ++n)
    for (int j = 0; j < 4; ++j) {
      const int m = 1 << (4 * n + j);
      const float d1 = d * static_cast<float>(s[8 * n + 2 * j] - 32), d2 = d * static_cast<float>(s[8 * n + 2 * j + 1] - 32);
      for (int l = 0; l < 16; ++l) {
        const int q1 = ((qs[32 * n + l] >> (2 * j)) & 3) - ((hmask[l] & m) ? 0 : 4);
        const int q2 = ((qs[32 * n + 16 + l] >> (2 * j)) & 3) - ((hmask[16 + l] & m) ? 0 : 4);
        y[128 * n + 32 * j + l] = d1 * static_cast<float>(q1);
        y[128 * n + 32 * j + 16 + l] = d2 * static_cast<float>(q2);
      }
    }
}
void q4_k(const uint8_t* b, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qs = b + 16;
  for (int c = 0; c < 4; ++c) {
    uint8_t sc, mn;
    scale_min_k4(2 * c, scales, sc, mn);
    const float d1 = d * sc, m1 = dmin * mn;
    scale_min_k4(2 * c + 1, scales, sc, mn);
    const float d2 = d * sc, m2 = dmin * mn;
    for (int l = 0; l < 32; ++l) {
      y[64 * c + l] = d1 * static_cast<float>(qs[32 * c + l] & 0xf) - m1;
      y[64 * c + 32 + l] = d2 * static_cast<float>(qs[32 * c + l] >> 4) - m2;
    }
  }
}
void q5_k(const uint8_t* b, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int c = 0; c < 4; ++c) {
    uint8_t sc, mn;
    scale_min_k4(2 * c, scales, sc, mn);
    const float d1 = d * sc, m1 = dmin * mn;
    scale_min_k4(2 * c + 1, scales, sc, mn);
    const float d2 = d * sc, m2 = dmin * mn;
    for (int l = 0; l < 32; ++l) {
      const int q1 = (qs[32 * c + l] & 0xf) + 16 * ((qh[l] >> (2 * c)) & 1);
      const int q2 = (qs[32 * c + l] >> 4) + 16 * ((qh[l] >> (2 * c + 1)) & 1);
      y[64 * c + l] = d1 * static_cast<float>(q1) - m1;
      y[64 * c + 32 + l] = d2 * static_cast<float>(q2) - m2;
    }
  }
}
void q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = f16_at(b + 208);
  for (int n = 0; n < 2; ++n)
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const uint8_t h = qh[32 * n + l];
      const int q1 = ((ql[64 * n + l] & 0xf) | (((h >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[64 * n + l + 32] & 0xf) | (((h >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[64 * n + l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[64 * n + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
      y[128 * n + l] = d * static_cast<float>(sc[8 * n + is]) * static_cast<float>(q1);
      y[128 * n + l + 32] = d * static_cast<float>(sc[8 * n + is + 2]) * static_cast<float>(q2);
      y[128 * n + l + 64] = d * static_cast<float>(sc[8 * n + is + 4]) * static_cast<float>(q3);
      y[128 * n + l + 96] = d * static_cast<float>(sc[8 * n + is + 6]) * static_cast<float>(q4);
    }
}

using BlockFn = void (*)(const uint8_t*, float*);
BlockFn block_fn(DType t) {
  switch (t) {
    case DType::Q4_0: return q4_0;
    case DType::Q4_1: return q4_1;
    case DType::Q5_0: return q5_0;
    case DType::Q5_1: return q5_1;
    case DType::Q8_0: return q8_0;
    case DType::Q2_K: return q2_k;
    case DType::Q3_K: return q3_k;
    case DType::Q4_K: return q4_k;
    case DType::Q5_K: return q5_k;
    case DType::Q6_K: return q6_k;
    default: return nullptr;
  }
}

}  // namespace

bool dequant_supported(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64 || block_fn(t) != nullptr;
}

void dequant_row(DType t, const uint8_t* src, int64_t n, float* out) {
  switch (t) {
    case DType::F32: std::memcpy(out, src, static_cast<size_t>(n) * 4); return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) out[i] = f16_at(src + 2 * i);
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = bf16_to_f32(h);
      }
      return;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        out[i] = static_cast<float>(d);
      }
      return;
    default: break;
  }
  BlockFn fn = block_fn(t);
  if (!fn) fail("dequantization of {} is not supported", dtype_name(t));
  const auto& info = dtype_info(t);
  for (int64_t b = 0; b < n / info.block_elems; ++b) fn(src + b * info.block_bytes, out + b * info.block_elems);
}

void dequant_row(DType t, const uint8_t* src, int64_t n, double* out) {
  if (t == DType::F64) {
    std::memcpy(out, src, static_cast<size_t>(n) * 8);
    return;
  }
  thread_local std::vector<float> tmp;
  tmp.resize(static_cast<size_t>(n));
  dequant_row(t, src, n, tmp.data());
  for (int64_t i = 0; i < n; ++i) out[i] = tmp[i];
}

}  // namespace g4
