// KV-cache element types (--cache-type-k / --cache-type-v). Each K or V head row of
// head_dim values is stored as the type stores it: the CPU backends apply the type's
// quantize -> dequantize round trip when a row enters the cache, so attention sees
// exactly the values such a cache holds (the measured cost of the type; the rows are
// kept decoded in float, so the memory saving itself is not realised on the CPU).
//
//   f32, f16, bf16          plain
//   q8_0, q4_0, q4_1        GGML blocks of 32 (kernels/quantize.h), head_dim % 32 == 0
//   iq4_nl                  blocks of 32: f16 scale d = max|x| / 127 and 4-bit indices into
//                           the IQ4_NL codebook (kvalues_iq4nl); 4.5 bits per value
//   rot4, rot3              the head row is rotated by H D / sqrt(n) (H: Walsh-Hadamard of
//                           order n = head_dim, a power of two; D: fixed random signs from
//                           seed 0x9E3779B9), then blocks of min(32, n): f16 scale
//                           d = -x_absmax_signed / 2^(b-1) and b-bit signed levels
//                           q = clamp(round(x/d), -2^(b-1), 2^(b-1)-1) (q4_0's rule at b bits);
//                           the inverse rotation undoes it. 4.5 and 3.5 bits per value.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace g4 {

enum class KvType { F32, F16, BF16, Q8_0, Q4_0, Q4_1, IQ4_NL, Rot4, Rot3 };

KvType parse_kv_type(const std::string& s);
const char* kv_type_name(KvType t);
std::vector<KvType> all_kv_types();
// Storage per value in bits, scales included.
double kv_bits_per_value(KvType t);

class KvCodec {
 public:
  // Throws naming the type and head_dim when the type cannot store rows of head_dim.
  KvCodec(KvType t, int64_t head_dim);
  KvType type() const { return t_; }
  // Replaces row[0..head_dim) by what the cache stores for it.
  void roundtrip(float* row) const;
  void roundtrip(double* row) const;

 private:
  void rotate(float* x, bool inverse) const;
  KvType t_;
  int64_t n_;
  std::vector<float> signs_;
  mutable std::vector<float> tmp_;
  mutable std::vector<uint8_t> bytes_;
};

}  // namespace g4
