// Internals shared by the fast kernels (fast.cc: AVX2/scalar, fast_avx512.cc: AVX-512 VNNI).
#pragma once
#include <cstdint>
#include <vector>

#include "formats/dtype.h"
#include "formats/tensor.h"

namespace g4::fast_detail {

// One row of weights unpacked: int8 values in blocks of 32, and per 16 elements a
// scale s and an offset c, so that w = s * q + c.
struct UnpackedRow {
  std::vector<int8_t> q;
  std::vector<float> s, c;  // 2 per block of 32
  bool has_offset = false;
  void resize(int64_t n) {
    q.resize(static_cast<size_t>(n));
    s.resize(static_cast<size_t>(n / 16));
    c.assign(static_cast<size_t>(n / 16), 0.0f);
  }
};

// Unpacks one row of a quantized tensor with `cols` columns (cols % 32 == 0).
void unpack_row(DType t, const uint8_t* src, int64_t cols, UnpackedRow& u);

// y[t, o] = sum_i W[row0 + o, i] * x[t, i] on AVX-512 VNNI; false where it does not
// apply (float weights, n_in % 64 != 0), and the caller takes another path.
bool matmul_avx512_vnni(const TensorView& w, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y,
                        int64_t row0);
bool cpu_has_avx512_vnni();

}  // namespace g4::fast_detail
