// Row quantization into GGML blocks. Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 follow llama.cpp's
// reference quantizers bit for bit (formats.md §6); Q4_K/Q5_K/Q6_K use the same
// weighted scale/min searches as llama.cpp's non-imatrix path; IQ4_NL/IQ4_XS follow llama.cpp with
// and without an importance matrix.
#pragma once
#include <cstdint>
#include <vector>

#include "formats/dtype.h"

namespace g4 {

bool quantize_supported(DType t);
// Types whose quantizer weighs columns by an importance matrix (IQ4_NL, IQ4_XS, as llama.cpp's).
bool quantize_takes_imatrix(DType t);
// Quantizes n elements (a multiple of the block size) of x into out (row_bytes(t, n) bytes);
// imatrix: n per-column importances (only for quantize_takes_imatrix types), or nullptr.
void quantize_row(DType t, const float* x, int64_t n, uint8_t* out, const float* imatrix = nullptr);
std::vector<uint8_t> quantize_rows(DType t, const float* x, int64_t rows, int64_t cols, const float* imatrix = nullptr);

}  // namespace g4
