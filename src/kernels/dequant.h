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

}  // namespace g4
