// Row dequantization, bit-exact with formats.md §5 (GGML block layouts computed in
// f32). The reference path widens the f32 result exactly to f64; F64 stays exact.
#pragma once
#include <cstdint>

#include "formats/dtype.h"

namespace g4 {

bool dequant_supported(DType t);

// Converts n elements (a multiple of the block size) stored at `src` in type t.
void dequant_row(DType t, const uint8_t* src, int64_t n, float* out);
void dequant_row(DType t, const uint8_t* src, int64_t n, double* out);

// Scale and min of sub-block j (0..7) from the 12 packed bytes of a Q4_K/Q5_K block
// (llama.cpp's get_scale_min_k4).
inline void scale_min_k4(int j, const uint8_t* s, uint8_t& sc, uint8_t& mn) {
  if (j < 4) {
    sc = s[j] & 63;
    mn = s[j + 4] & 63;
  } else {
    sc = static_cast<uint8_t>((s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4));
    mn = static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

}  // namespace g4
