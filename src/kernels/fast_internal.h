// Internals shared by the fast kernels (fast.cc: dispatch, scalar; fast_avx2.cc and
// fast_avx512.cc on x86-64; fast_neon.cc on aarch64).
#pragma once
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <vector>

#include "formats/dtype.h"
#include "formats/tensor.h"
#include "util/huge_pages.h"

namespace g4 {

// A weight matrix re-laid out for one ISA's kernels (fast.h: fast_pack), 16 rows at a time.
struct PackedMatrix {
  DType type = DType::F32;
  int64_t rows = 0, cols = 0;  // of the source matrix (every expert of a 3-D tensor)
  int64_t group_bytes = 0;     // one group of 16 rows
  std::unique_ptr<uint8_t, void (*)(void*)> data{nullptr, &huge_pool_free};  // huge_pool_alloc'd
};

}  // namespace g4

namespace g4::fast_detail {

#if defined(__x86_64__)
// Horizontal sum of 8 floats.
__attribute__((target("avx2,fma"))) inline float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}
#endif

// The last n - i products of a float dot, fused (std::fma), so that every kernel that ends a
// dot here rounds them alike whatever the compiler contracts elsewhere.
inline float dot_tail(const float* w, const float* x, int64_t i, int64_t n, float s) {
  for (; i < n; ++i) s = std::fma(w[i], x[i], s);
  return s;
}

// The quantized weight types the integer kernels know.
constexpr bool is_quantized(DType t) {
  switch (t) {
    case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::Q8_0:
    case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: case DType::Q5_K: case DType::Q6_K:
    case DType::IQ4_NL: case DType::IQ4_XS: case DType::MXFP4: case DType::IQ2_XXS: case DType::IQ2_XS:
    case DType::IQ2_S: case DType::IQ3_XXS: case DType::IQ3_S: case DType::IQ1_S: case DType::IQ1_M:
    case DType::TQ1_0: case DType::TQ2_0: return true;
    default: return false;
  }
}

// Types whose dequantization is s * q + m (unsigned q, a minimum per 32 elements).
constexpr bool has_min(DType t) { return t == DType::Q4_1 || t == DType::Q5_1 || t == DType::Q4_K || t == DType::Q5_K; }

// The scale granularity: per 16 for the types with 16-element scales, per 32 otherwise.
constexpr int scale_block(DType t) {
  switch (t) {
    case DType::Q6_K: case DType::Q2_K: case DType::Q3_K: case DType::IQ2_XS: case DType::IQ2_S: case DType::IQ1_M: return 16;
    default: return 32;
  }
}

// One row of weights unpacked: int8 values in blocks of 32, and per 16 elements a
// scale s and an offset c, so that w = s * q + c (c is the same for both halves of a block).
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

// Activations of n tokens, quantized per token to int8 blocks of 32 with scale d (as
// llama.cpp's q8_0). Per scale block of bs elements (16 or 32): corr = -zp * sum(q), which
// folds a weight zero point zp into the integer dot; the scale d of its 32-block; and, with
// sums, sx = d * sum(q), which multiplies a weight minimum.
struct Acts {
  int64_t n_in = 0, bs = 32, n_blocks = 0;
  std::vector<int8_t> q;    // n_tok x n_in
  std::vector<int32_t> corr;  // n_tok x n_blocks
  std::vector<float> d, sx;   // n_tok x n_blocks
  const int8_t* tok(int64_t t) const { return q.data() + t * n_in; }
  size_t at(int64_t t, int64_t b) const { return static_cast<size_t>(t * n_blocks + b); }
};

// Quantizes 32 floats: q = round_half_even(x * 127 / amax), d = amax / 127, and the sums
// of q over each half. Every ISA gives the same bits.
using QuantizeBlock = void (*)(const float* x, int8_t* q, float& d, int32_t sums[2]);
void quantize_block_scalar(const float* x, int8_t* q, float& d, int32_t sums[2]);
#if defined(__x86_64__)
void quantize_block_avx2(const float* x, int8_t* q, float& d, int32_t sums[2]);
#endif

void quantize_acts(const float* x, int64_t n_tok, int64_t n_in, int zp, int bs, bool with_sums, QuantizeBlock block,
                   Acts& a);

// Per-thread scratch of the kernels. Vectors only grow (resize within capacity does not
// allocate), so once a shape has been seen a kernel call allocates nothing on the heap.
// `acts` belongs to the thread that calls fast_matmul; the rest to each thread of its
// parallel region.
struct Scratch {
  Acts acts;
  std::vector<uint16_t> tiled_acts;  // the activations as bf16 AMX tiles (packed_avx512.cc), beside acts
  UnpackedRow row;
  std::vector<uint8_t> panel, unpacked;
  std::vector<float> f32;
};
Scratch& scratch();

// Grows v to at least n elements (never shrinks) and returns its data.
template <class T>
T* grown(std::vector<T>& v, int64_t n) {
  if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
  return v.data();
}

// y[t, o] = sum_i W[row0 + o, i] * x[t, i] for quantized W; false where the kernel does not
// apply (float weights, n_in not a multiple of its block), and the caller takes another path.
#if defined(__x86_64__)
bool matmul_avx2(const TensorView& w, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y, int64_t row0);
bool matmul_avx512_vnni(const TensorView& w, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y,
                        int64_t row0);
bool cpu_has_avx512_vnni();
// y[t * y_stride + r] = rows[r] . x[t] for float rows (n_rows, n_tok any): dot_f32_avx2's bits,
// 4 rows x 4 tokens per pass.
void f32_rows_avx512(const float* const* rows, int64_t n_rows, const float* x, int64_t n_tok, int64_t n_in, float* y,
                     int64_t y_stride);
#endif
#if defined(__aarch64__)
bool matmul_neon(const TensorView& w, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y, int64_t row0);
// The int8 dot fast_neon.cc was built with: "vdotq_s32" or "vmull_s8+vpadalq_s16".
const char* neon_dot_kind();
#endif

#if defined(__x86_64__)
// Packed copies for the AVX-512 VNNI kernels (packed_avx512.cc: the layouts): nullptr where
// the type has no packed layout; false where the call does not fit the pack.
std::shared_ptr<PackedMatrix> pack_avx512(const TensorView& w);
// amx: in calls of 32 tokens or more (Q4_K, Q6_K: 16), each 16 tokens go through AMX in bf16
// (where cpu_has_amx()), the rest through VNNI.
bool matmul_packed_avx512(const PackedMatrix& p, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y,
                          int64_t row0, bool amx);
// fast_matmul_slices on a pack (false where the call does not fit it).
bool matmul_slices_packed_avx512(const PackedMatrix& p, const float* x, int64_t n_x, int64_t n_in, int64_t n_out, float* y,
                                 std::span<const int64_t> row0s);
// AMX-BF16 on this CPU and the OS's permission for its tile data (requested once).
bool cpu_has_amx();
// How far ahead of its reads decode's packed stream prefetches, in bytes: G4_DECODE_PREFETCH,
// else this CPU vendor's measured best.
int decode_prefetch_bytes();
// Groups of 16 rows side by side in one decode work item (1 or 2), by CPU.
int decode_groups();
#endif

// Tests: the in-register block decoders of one ISA, as floats (s * q + m per element, in
// element order), to be compared with the scalar decoders of blocks.h. False where that
// ISA has no such decoder for t (or is not built). n is a multiple of the type's block.
bool decode_row_avx2(DType t, const uint8_t* row, int64_t n, float* y);
bool decode_row_avx512(DType t, const uint8_t* row, int64_t n, float* y);
bool decode_row_neon(DType t, const uint8_t* row, int64_t n, float* y);

}  // namespace g4::fast_detail
