// Reference ops, templated on the compute type T (double = reference, float = f32).
// Weights stay in their stored type (mmap) and are dequantized one row at a time.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "formats/tensor.h"
#include "kernels/dequant.h"

namespace g4::ops {

// A whole small tensor (norm weights, scalars) converted to T.
template <typename T>
std::vector<T> to_vector(const TensorView& t) {
  std::vector<T> out(static_cast<size_t>(t.numel()));
  dequant_row(t.dtype, t.data, t.numel(), out.data());
  return out;
}

// Row r of a matrix whose rows have `cols` elements (3-D tensors: row = e*rows + r).
template <typename T>
void weight_row(const TensorView& w, int64_t r, int64_t cols, T* out) {
  const int64_t rb = *row_bytes(w.dtype, cols);
  dequant_row(w.dtype, w.data + r * rb, cols, out);
}

// y[t, o] = sum_i W[row0 + o, i] * x[t, i] for t < n_tok, o < n_out; W rows have n_in
// elements. `row0` selects an expert's slice of a 3-D tensor.
template <typename T>
void matmul(const TensorView& w, const T* x, int64_t n_tok, int64_t n_in, int64_t n_out, T* y, int64_t row0 = 0) {
#pragma omp parallel
  {
    std::vector<T> row(static_cast<size_t>(n_in));
#pragma omp for schedule(static)
    for (int64_t o = 0; o < n_out; ++o) {
      weight_row(w, row0 + o, n_in, row.data());
      for (int64_t t = 0; t < n_tok; ++t) {
        const T* xt = x + t * n_in;
        T acc = 0;
        for (int64_t i = 0; i < n_in; ++i) acc += row[i] * xt[i];
        y[t * n_out + o] = acc;
      }
    }
  }
}

// Gemma 4 RMSNorm: x / sqrt(mean(x^2) + eps) * w (w itself, not 1 + w); no weight
// for the V and router norms.
template <typename T>
void rms_norm(const T* x, int64_t n, const T* w, double eps, T* out) {
  T ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const T inv = T(1) / std::sqrt(ss / static_cast<T>(n) + static_cast<T>(eps));
  for (int64_t i = 0; i < n; ++i) out[i] = w ? x[i] * inv * w[i] : x[i] * inv;
}

// PyTorch gelu(approximate="tanh").
template <typename T>
T gelu_tanh(T u) {
  const T k = static_cast<T>(0.7978845608028654);  // sqrt(2/pi)
  return T(0.5) * u * (T(1) + std::tanh(k * (u + static_cast<T>(0.044715) * u * u * u)));
}

}  // namespace g4::ops
