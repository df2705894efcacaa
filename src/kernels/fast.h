// The fast CPU matmul: weights stay in their GGML type (mmap), activations are
// quantized to 8-bit blocks of 32 (int8 + f32 scale, as llama.cpp's q8_0).
// Prefill: panels of weight rows are unpacked to 8-bit with per-16/32 scales and
// multiplied by register tiles of (rows x tokens): 16 x 8 with AVX-512 VNNI (fast_avx512.cc),
// 8 x 4 with AVX2 (fast_avx2.cc). Decode: rows are decoded in registers and streamed.
// On aarch64, NEON decodes Q4_0/Q8_0/Q4_K rows in registers (fast_neon.cc); other types and
// targets take the scalar kernels. Float weights (F32/F16/BF16) take an f32 FMA path.
// Dispatch is at run time (fast.cc). After warm-up (a shape seen once) nothing here
// allocates on the heap: scratch is per thread and only grows.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/tensor.h"

namespace g4 {

// y[t, o] = sum_i W[row0 + o, i] * x[t, i]
void fast_matmul(const TensorView& w, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y, int64_t row0 = 0);

// Weights re-laid out once for the fast kernels ("repacking", as llama.cpp's CPU backend
// does): Q4_0, Q8_0, Q4_K, Q5_K and Q6_K rows interleaved 16 at a time (kernels/packed_avx512.cc),
// so that decode and batches of any size run one tile kernel that neither unpacks nor
// transposes per call, at the bytes per weight of the GGUF blocks (+2-3% for Q4_K/Q5_K).
// nullptr where no packed layout applies (type, CPU without AVX-512 VNNI, G4_FORCE_ISA
// below it, or G4_NO_REPACK=1). A tensor is packed once while any caller holds its pack.
struct PackedMatrix;
std::shared_ptr<const PackedMatrix> fast_pack(const TensorView& w);
// fast_matmul on a pack of w; false where it does not apply (then call fast_matmul): another
// ISA forced since packing, or rows not on the pack's 16-row groups (row0 % 16 != 0).
bool fast_matmul_packed(const PackedMatrix& p, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y,
                        int64_t row0 = 0);
// Slices of one packed matrix in one call (MoE decode: the rows of every routed expert):
// y[k * n_out + o] = W[row0s[k] + o] . x[n_x == 1 ? 0 : k], each slice's bits those of
// fast_matmul_packed(p, that x row, 1, n_in, n_out, y + k * n_out, row0s[k]). The threads
// split all slices' rows at once. False where it does not apply (as fast_matmul_packed).
bool fast_matmul_slices_packed(const PackedMatrix& p, const float* x, int64_t n_x, int64_t n_in, int64_t n_out, float* y,
                               std::span<const int64_t> row0s);

// Vector helpers of the fast forward (attention, activations), dispatched like fast_matmul.
void fast_softmax(float* z, int64_t n);
// Attention of one query head: scores[j] = q . keys[j]; out = sum_j p[j] * vals[j] (n rows of hd).
void fast_scores(const float* q, const float* const* keys, int64_t n, int64_t hd, float* scores);
void fast_weighted_sum(const float* p, const float* const* vals, int64_t n, int64_t hd, float* out);
// The same for G heads that share a KV head (grouped-query attention): head g's query at
// q + g * q_stride, its scores at scores + g * s_stride (p likewise), its output at
// out + g * out_stride. Each key and value row is read from memory once for the group;
// every head's result equals the single-head call's bit for bit. Scores of keys split over
// calls at multiples of 4 from the first key equal one call's. `accumulate` adds the sum to
// out, continuing its chain of additions: rows split over calls give one call's bits.
void fast_scores_group(const float* q, int64_t q_stride, int64_t G, const float* const* keys, int64_t n, int64_t hd,
                       float* scores, int64_t s_stride);
void fast_weighted_sum_group(const float* p, int64_t p_stride, int64_t G, const float* const* vals, int64_t n, int64_t hd,
                             float* out, int64_t out_stride, bool accumulate = false);
void fast_gelu_tanh_mul(float* g, const float* u, int64_t n);  // g = gelu_tanh(g) * u
void fast_softcap(float* x, int64_t n, float c);                // x = c * tanh(x / c)

// "amx", "avx512vnni", "avx2", "neon" or "scalar": what fast_matmul runs on this CPU
// (G4_FORCE_ISA=avx2|scalar|... caps it, e.g. to compare kernels; names of another
// architecture are an error).
std::string fast_kernel_isa();
// Bytes ahead of its reads that decode's weight stream prefetches (the packed AVX-512 kernels;
// G4_DECODE_PREFETCH=<multiple of 64> overrides the CPU vendor's measured best); 0 where the
// active kernels have no such stream.
int fast_decode_prefetch_bytes();
// Every ISA this CPU can run, weakest first.
std::vector<std::string> fast_available_isas();
// Tests and benchmarks: cap the ISA ("" = the best one).
void fast_force_isa(const std::string& isa);

}  // namespace g4
