// The fast CPU matmul: weights stay in their GGML type (mmap), activations are
// quantized to 8-bit blocks of 32 (int8 + f32 scale, as llama.cpp's q8_0/q8_K), and
// every quantized type is unpacked row by row into int8 blocks with per-16 scales
// and offsets, so one integer dot kernel (AVX2 maddubs, or scalar) serves them all.
// Float weights (F32/F16/BF16) take an f32 FMA path. Dispatch is at run time.
#pragma once
#include <cstdint>
#include <string>

#include "formats/tensor.h"

namespace g4 {

// y[t, o] = sum_i W[row0 + o, i] * x[t, i]
void fast_matmul(const TensorView& w, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y, int64_t row0 = 0);

// "avx2" or "scalar": what fast_matmul runs on this CPU (G4_FORCE_SCALAR=1 forces scalar).
std::string fast_kernel_isa();
// Tests: run the scalar kernels even where AVX2 exists.
void fast_force_scalar(bool on);

}  // namespace g4
