// Reference ops, templated on the compute type T (double = reference, float = f32).
// Weights stay in their stored type (mmap) and are dequantized one row at a time.
#pragma once
#include <algorithm>
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
      int64_t t = 0;
      // Four tokens per pass over the row: independent accumulators for ILP, each
      // summed in the same order as the one-token loop (results are identical).
      for (; t + 4 <= n_tok; t += 4) {
        const T *x0 = x + t * n_in, *x1 = x0 + n_in, *x2 = x1 + n_in, *x3 = x2 + n_in;
        T a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (int64_t i = 0; i < n_in; ++i) {
          const T r = row[i];
          a0 += r * x0[i];
          a1 += r * x1[i];
          a2 += r * x2[i];
          a3 += r * x3[i];
        }
        y[t * n_out + o] = a0;
        y[(t + 1) * n_out + o] = a1;
        y[(t + 2) * n_out + o] = a2;
        y[(t + 3) * n_out + o] = a3;
      }
      for (; t < n_tok; ++t) {
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

// HF's Gemma4RMSNorm on a float64 tensor: upcasts with .float() (i.e. rounds to
// float32), normalises in float32, multiplies by the float32 weight, casts back.
inline void rms_norm_hf_f32(const double* x, int64_t n, const double* w, double eps, double* out) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float xf = static_cast<float>(x[i]);
    ss += static_cast<double>(xf * xf);
  }
  const float mean = static_cast<float>(ss / static_cast<double>(n)) + static_cast<float>(eps);
  const float inv = static_cast<float>(1.0 / std::sqrt(static_cast<double>(mean)));
  for (int64_t i = 0; i < n; ++i) {
    const float y = static_cast<float>(x[i]) * inv;
    out[i] = w ? static_cast<double>(y * static_cast<float>(w[i])) : static_cast<double>(y);
  }
}

// Softmax in place; `f32` computes it in float32 (HF eager attention), result widened.
template <typename T>
void softmax(T* z, int64_t n, bool f32) {
  if (f32) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, static_cast<float>(z[i]));
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<float>(z[i]) - mx);
    const float s = static_cast<float>(sum);
    for (int64_t i = 0; i < n; ++i) z[i] = static_cast<T>(std::exp(static_cast<float>(z[i]) - mx) / s);
    return;
  }
  T mx = z[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, z[i]);
  T sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += (z[i] = std::exp(z[i] - mx));
  for (int64_t i = 0; i < n; ++i) z[i] /= sum;
}

// PyTorch gelu(approximate="tanh").
template <typename T>
T gelu_tanh(T u) {
  const T k = static_cast<T>(0.7978845608028654);  // sqrt(2/pi)
  return T(0.5) * u * (T(1) + std::tanh(k * (u + static_cast<T>(0.044715) * u * u * u)));
}

}  // namespace g4::ops
