// Row dequantization, bit-exact with formats.md §5 (the scalar block decoders of
// kernels/blocks.h, in f32). The reference path widens the f32 result exactly to f64; F64 stays exact.
#pragma once
#include <cstdint>

#include "formats/dtype.h"
#include "kernels/blocks.h"

namespace g4 {

bool dequant_supported(DType t);

// Converts n elements (a multiple of the block size) stored at `src` in type t.
void dequant_row(DType t, const uint8_t* src, int64_t n, float* out);
void dequant_row(DType t, const uint8_t* src, int64_t n, double* out);

// Scale and min of sub-block j (0..7) from the 12 packed bytes of a Q4_K/Q5_K block
// (llama.cpp's get_scale_min_k4); defined with the block layouts in kernels/blocks.h.
using blocks::scale_min_k4;

}  // namespace g4
