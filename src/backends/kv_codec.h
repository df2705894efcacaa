// KV-cache element types (--cache-type-k / --cache-type-v). Each K or V head row of
// head_dim values is encoded to the type's bytes when it enters the cache; attention
// sees the decoded values. The fast CPU backend stores the bytes (kv_cache.h) and
// decodes while iterating the keys, so the cache holds kv_row_bytes per head row; the
// reference backends apply the same encode -> decode round trip and keep floats.
//
//   f32, f16, bf16          plain
//   q8_0, q4_0, q4_1        GGML blocks of 32 (kernels/quantize.h), head_dim % 32 == 0
//   iq4_nl                  blocks of 32: f16 scale d = max|x| / 127 and 4-bit indices into
//                           the IQ4_NL codebook (kvalues_iq4nl); 4.5 bits per value.
//                           Bytes per block: d, then 16 bytes whose low nibble is value j
//                           and high nibble value j+16 (GGML's block_iq4_nl)
//   rot4, rot3              the head row is rotated by H D / sqrt(n) (H: Walsh-Hadamard of
//                           order n = head_dim, a power of two; D: fixed random signs from
//                           seed 0x9E3779B9), then blocks of min(32, n): f16 scale
//                           d = -x_absmax_signed / 2^(b-1) and b-bit signed levels
//                           q = clamp(round(x/d), -2^(b-1), 2^(b-1)-1) (q4_0's rule at b bits);
//                           the inverse rotation undoes it. 4.5 and 3.5 bits per value.
//                           Bytes per block: d, then the levels u = q + 2^(b-1): rot4 as
//                           q4_0's nibbles (low: j, high: j+16), rot3 as a little-endian
//                           bit stream (value j at bits 3j..3j+2)
// A head row shorter than 32 is one block (iq4_nl, rot4, rot3).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace g4 {

enum class KvType { F32, F16, BF16, Q8_0, Q4_0, Q4_1, IQ4_NL, Rot4, Rot3 };

KvType parse_kv_type(const std::string& s);
const char* kv_type_name(KvType t);
std::vector<KvType> all_kv_types();
// Storage per value in bits, scales included (head rows of a multiple of 32).
double kv_bits_per_value(KvType t);
// Bytes of one encoded head row of head_dim values (the stored size, exact).
int64_t kv_row_bytes(KvType t, int64_t head_dim);

class KvCodec {
 public:
  // Throws naming the type and head_dim when the type cannot store rows of head_dim.
  KvCodec(KvType t, int64_t head_dim);
  KvType type() const { return t_; }
  int64_t row_bytes() const { return row_bytes_; }
  // row[0..head_dim) -> row_bytes() bytes. Uses the codec's scratch: one thread at a time.
  void encode(const float* row, uint8_t* out) const;
  // The values a stored row holds. Thread-safe.
  void decode(const uint8_t* in, float* row) const;
  // Replaces row[0..head_dim) by what the cache stores for it: encode, then decode.
  void roundtrip(float* row) const;
  void roundtrip(double* row) const;

 private:
  void rotate(float* x, bool inverse) const;
  KvType t_;
  int64_t n_, bs_, row_bytes_;
  std::vector<float> signs_;
  mutable std::vector<float> tmp_;
  mutable std::vector<uint8_t> bytes_;
};

}  // namespace g4
