// Exact scalar conversions between f32 and the 16-bit float formats (formats.md §3), and
// the one reader/writer of such values in (unaligned, little-endian) bytes: load_f16,
// load_bf16, store_f16, store_bf16. Every file format and kernel goes through these.
#pragma once
#include <cstdint>
#include <cstring>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace g4 {

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round-to-nearest-even, NaN kept quiet (as ggml and PyTorch do).
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// IEEE round-to-nearest-even with subnormals; overflow to inf; NaN -> sign|0x7e00.
inline uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return sign | 0x7e00u;
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520 -> inf
  if (ax < 0x38800000u) {                        // below the smallest normal f16
    if (ax < 0x33000000u) return sign;           // < 2^-25 rounds to 0
    const uint32_t e = ax >> 23;
    const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14 - (e - 127) + 13 - 1 ... gives 14..24
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return sign | static_cast<uint16_t>(q);
  }
  uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);  // round mantissa to 10 bits
  r -= 0x38000000u;                              // rebias exponent 127 -> 15
  return sign | static_cast<uint16_t>(r >> 13);
}

// A 16-bit value stored at p (any alignment; the host is little-endian, as the formats).
inline uint16_t load_u16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}
inline float load_f16(const uint8_t* p) { return f16_to_f32(load_u16(p)); }
inline float load_bf16(const uint8_t* p) { return bf16_to_f32(load_u16(p)); }
inline void store_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}
inline void store_bf16(uint8_t* p, float v) {
  const uint16_t h = f32_to_bf16(v);
  std::memcpy(p, &h, 2);
}

#if defined(__x86_64__)
// load_f16 with the F16C instruction, for code compiled with target("f16c") (the AVX2 and
// AVX-512 kernels): the same value (the conversion is exact), one instruction instead of
// a branchy software path in the decode loops. NaNs come back quiet.
__attribute__((target("f16c"))) inline float load_f16_f16c(const uint8_t* p) { return _cvtsh_ss(load_u16(p)); }
#endif

}  // namespace g4
