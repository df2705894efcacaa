#include "kernels/fast.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

#include "kernels/blocks.h"
#include "kernels/dequant.h"
#include "kernels/fast_internal.h"
#include "kernels/ops.h"
#include "util/error.h"
#include "util/half.h"
#include "util/parallel.h"

namespace g4 {
namespace fast_detail {
namespace {

constexpr int QK = blocks::QK;

}  // namespace

void quantize_block_scalar(const float* x, int8_t* q, float& d, int32_t sums[2]) {
  float amax = 0;
  for (int j = 0; j < QK; ++j) amax = std::max(amax, std::fabs(x[j]));
  d = amax / 127.0f;
  const float id = d ? 1.0f / d : 0.0f;
  sums[0] = sums[1] = 0;
  for (int j = 0; j < QK; ++j) {
    const int v = static_cast<int>(std::nearbyint(x[j] * id));
    q[j] = static_cast<int8_t>(v);
    sums[j / 16] += v;
  }
}

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

void quantize_acts(const float* x, int64_t n_tok, int64_t n_in, int zp, int bs, bool with_sums, QuantizeBlock block,
                   Acts& a) {
  a.n_in = n_in;
  a.bs = bs;
  a.n_blocks = n_in / bs;
  a.q.resize(static_cast<size_t>(n_tok * n_in));
  a.corr.resize(static_cast<size_t>(n_tok * a.n_blocks));
  a.d.resize(a.corr.size());
  a.sx.resize(with_sums ? a.corr.size() : 0);
  const int per = QK / bs;  // scale blocks per 32-block
#pragma omp parallel for schedule(static) if (n_tok > 1)
  for (int64_t t = 0; t < n_tok; ++t) {
    for (int64_t b = 0; b < n_in / QK; ++b) {
      float d;
      int32_t sums[2];
      block(x + t * n_in + QK * b, a.q.data() + t * n_in + QK * b, d, sums);
      for (int k = 0; k < per; ++k) {
        const int32_t sum = per == 1 ? sums[0] + sums[1] : sums[k];
        const size_t i = a.at(t, b * per + k);
        a.corr[i] = -zp * sum;
        a.d[i] = d;
        if (with_sums) a.sx[i] = d * static_cast<float>(sum);
      }
    }
  }
}

// Unpacks row r of a quantized tensor with `cols` columns.
void unpack_row(DType t, const uint8_t* src, int64_t cols, UnpackedRow& u) {
  using namespace blocks;
  u.resize(cols);
  int8_t* q = u.q.data();
  float* s = u.s.data();
  float* c = u.c.data();
  u.has_offset = false;
  switch (t) {
    case DType::Q8_0:
      for (int64_t b = 0; b < cols / QK; ++b) {
        const auto& blk = *block_at<block_q8_0>(src, b);
        s[2 * b] = s[2 * b + 1] = load_f16(blk.d);
        std::memcpy(q + 32 * b, blk.qs, 32);
      }
      return;
    case DType::Q4_0:
      for (int64_t b = 0; b < cols / QK; ++b) {
        const auto& blk = *block_at<block_q4_0>(src, b);
        s[2 * b] = s[2 * b + 1] = load_f16(blk.d);
        for (int j = 0; j < 16; ++j) {
          q[32 * b + j] = static_cast<int8_t>((blk.qs[j] & 0x0f) - 8);
          q[32 * b + j + 16] = static_cast<int8_t>((blk.qs[j] >> 4) - 8);
        }
      }
      return;
    case DType::Q4_1:
      u.has_offset = true;
      for (int64_t b = 0; b < cols / QK; ++b) {
        const auto& blk = *block_at<block_q4_1>(src, b);
        s[2 * b] = s[2 * b + 1] = load_f16(blk.d);
        c[2 * b] = c[2 * b + 1] = load_f16(blk.m);
        for (int j = 0; j < 16; ++j) {
          q[32 * b + j] = static_cast<int8_t>(blk.qs[j] & 0x0f);
          q[32 * b + j + 16] = static_cast<int8_t>(blk.qs[j] >> 4);
        }
      }
      return;
    case DType::Q5_0:
      for (int64_t b = 0; b < cols / QK; ++b) {
        const auto& blk = *block_at<block_q5_0>(src, b);
        s[2 * b] = s[2 * b + 1] = load_f16(blk.d);
        const uint32_t qh = load_qh(blk.qh);
        for (int j = 0; j < 16; ++j) {
          q[32 * b + j] = static_cast<int8_t>(((blk.qs[j] & 0x0f) | (((qh >> j) & 1) << 4)) - 16);
          q[32 * b + j + 16] = static_cast<int8_t>(((blk.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16);
        }
      }
      return;
    case DType::Q5_1:
      u.has_offset = true;
      for (int64_t b = 0; b < cols / QK; ++b) {
        const auto& blk = *block_at<block_q5_1>(src, b);
        s[2 * b] = s[2 * b + 1] = load_f16(blk.d);
        c[2 * b] = c[2 * b + 1] = load_f16(blk.m);
        const uint32_t qh = load_qh(blk.qh);
        for (int j = 0; j < 16; ++j) {
          q[32 * b + j] = static_cast<int8_t>((blk.qs[j] & 0x0f) | (((qh >> j) & 1) << 4));
          q[32 * b + j + 16] = static_cast<int8_t>((blk.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
        }
      }
      return;
    default: break;
  }
  // The IQ, ternary and MXFP4 types: blocks.h's integer unpackers.
  bool done = false;
  visit_block_type(t, [&](auto proto) {
    using B = decltype(proto);
    if constexpr (has_int_unpack<B>) {
      for (int64_t b = 0; b < cols / B::kElems; ++b) unpack(*block_at<B>(src, b), q + b * B::kElems, s + b * B::kElems / 16);
      done = true;
    }
  });
  if (done) return;
  // K-quants: re-express each 256 block as int8 * per-16 scale + offset where the format
  // allows it exactly.
  for (int64_t b = 0; b < cols / QK_K; ++b) {
    if (t == DType::Q4_K || t == DType::Q5_K) {
      // Q4_K and Q5_K share d, dmin and scales; Q5_K adds a fifth bit per element.
      const block_q4_k* k4 = t == DType::Q4_K ? block_at<block_q4_k>(src, b) : nullptr;
      const block_q5_k* k5 = t == DType::Q5_K ? block_at<block_q5_k>(src, b) : nullptr;
      const uint8_t* dp = k4 ? k4->d : k5->d;
      const uint8_t* dminp = k4 ? k4->dmin : k5->dmin;
      const uint8_t* sc = k4 ? k4->scales : k5->scales;
      const uint8_t* qs = k4 ? k4->qs : k5->qs;
      const float d = load_f16(dp), dmin = load_f16(dminp);
      u.has_offset = true;
      for (int j = 0; j < 8; ++j) {
        uint8_t ls, lm;
        scale_min_k4(j, sc, ls, lm);
        const int64_t blk = b * 8 + j;
        s[2 * blk] = s[2 * blk + 1] = d * ls;
        c[2 * blk] = c[2 * blk + 1] = -dmin * lm;
        const int cc = j / 2, hi = j % 2;
        for (int l = 0; l < 32; ++l) {
          int v = hi ? qs[32 * cc + l] >> 4 : qs[32 * cc + l] & 0xf;
          if (k5) v += 16 * ((k5->qh[l] >> j) & 1);
          q[blk * 32 + l] = static_cast<int8_t>(v);
        }
      }
    } else if (t == DType::Q6_K) {
      const auto& blk = *block_at<block_q6_k>(src, b);
      const float d = load_f16(blk.d);
      int8_t* qb = q + b * QK_K;
      for (int n = 0; n < 2; ++n)
        for (int l = 0; l < 32; ++l)
          for (int i = 0; i < 4; ++i) qb[128 * n + 32 * i + l] = static_cast<int8_t>(q6_k_value(blk, n, i, l));
      for (int g = 0; g < 16; ++g) s[b * 16 + g] = d * blk.scales[g];  // 16 groups of 16 in element order
    } else {
      // Q2_K / Q3_K: exact floats re-quantized per 16 would lose bits; use the
      // dequantized values at int8 resolution of each 16-group's range.
      float tmp[QK_K];
      dequant_row(t, src + b * dtype_info(t).block_bytes, QK_K, tmp);
      for (int g = 0; g < 16; ++g) {
        float amax = 0;
        for (int l = 0; l < 16; ++l) amax = std::max(amax, std::fabs(tmp[16 * g + l]));
        const float sc = amax / 127.0f, inv = sc ? 1.0f / sc : 0.0f;
        s[b * 16 + g] = sc;
        for (int l = 0; l < 16; ++l) q[b * 256 + 16 * g + l] = static_cast<int8_t>(std::nearbyint(tmp[16 * g + l] * inv));
      }
    }
  }
}

namespace {

float dot_row_scalar(const UnpackedRow& u, const Acts& a, int64_t t) {
  float acc = 0;
  const int8_t* x = a.tok(t);
  for (int64_t b = 0; b < a.n_in / QK; ++b) {
    int d0 = 0, d1 = 0;
    for (int j = 0; j < 16; ++j) d0 += u.q[b * QK + j] * x[b * QK + j];
    for (int j = 16; j < 32; ++j) d1 += u.q[b * QK + j] * x[b * QK + j];
    acc += a.d[a.at(t, b)] * (u.s[2 * b] * static_cast<float>(d0) + u.s[2 * b + 1] * static_cast<float>(d1));
    if (u.has_offset) acc += u.c[2 * b] * a.sx[a.at(t, b)];
  }
  return acc;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) float dot_f32_avx2(const float* w, const float* x, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
  }
  return dot_tail(w, x, i, n, hsum256(_mm256_add_ps(a0, a1)));
}

#endif

float dot_f32_scalar(const float* w, const float* x, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += w[i] * x[i];
  return s;
}

// The kernels of this build, weakest first: x86-64 scalar < avx2 < avx512vnni < amx (VNNI,
// with AMX bf16 tiles for packed matmuls of 16/32 tokens and more), aarch64 scalar < neon, anything else
// scalar only. Each one is a superset of the one before.
enum class Isa { Scalar, Avx2, Avx512Vnni, Amx, Neon };

#if defined(__x86_64__)
constexpr Isa kBuilt[] = {Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Amx};
constexpr const char* kBuiltNames = "scalar, avx2, avx512vnni or amx";
#elif defined(__aarch64__)
constexpr Isa kBuilt[] = {Isa::Scalar, Isa::Neon};
constexpr const char* kBuiltNames = "scalar or neon";
#else
constexpr Isa kBuilt[] = {Isa::Scalar};
constexpr const char* kBuiltNames = "scalar";
#endif

// Rank in kBuilt (the cap order).
int rank(Isa i) {
  for (size_t k = 0; k < std::size(kBuilt); ++k)
    if (kBuilt[k] == i) return static_cast<int>(k);
  return 0;
}

// The best ISA this CPU runs; G4_FORCE_ISA=scalar|avx2|... caps it (as fast_force_isa does).
Isa best_isa() {
  static const Isa v = [] {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return Isa::Scalar;
    if (!cpu_has_avx512_vnni()) return Isa::Avx2;
    return cpu_has_amx() ? Isa::Amx : Isa::Avx512Vnni;
#elif defined(__aarch64__)
    return Isa::Neon;  // Advanced SIMD is part of every aarch64 CPU
#else
    return Isa::Scalar;
#endif
  }();
  return v;
}

const char* isa_name(Isa i) {
  switch (i) {
    case Isa::Amx: return "amx";
    case Isa::Avx512Vnni: return "avx512vnni";
    case Isa::Avx2: return "avx2";
    case Isa::Neon: return "neon";
    default: return "scalar";
  }
}

Isa parse_isa(const std::string& s) {
  for (Isa i : kBuilt)
    if (s == isa_name(i)) return i;
  fail("unknown fast-kernel ISA '{}' (G4_FORCE_ISA or fast_force_isa): this build has {}", s, kBuiltNames);
}

std::optional<Isa> g_forced;

Isa active_isa() {
  static const std::optional<Isa> from_env = []() -> std::optional<Isa> {
    const char* e = std::getenv("G4_FORCE_ISA");
    if (!e || !*e) return std::nullopt;
    return parse_isa(e);
  }();
  const Isa best = best_isa();
  const std::optional<Isa> cap = g_forced ? g_forced : from_env;
  return cap && rank(*cap) < rank(best) ? *cap : best;
}

#if defined(__x86_64__)
// The AVX-512 VNNI kernels (and packed weights) run from avx512vnni up.
bool vnni(Isa i) { return i == Isa::Avx512Vnni || i == Isa::Amx; }
#endif

}  // namespace
}  // namespace fast_detail

using namespace fast_detail;

std::string fast_kernel_isa() { return isa_name(active_isa()); }

int fast_decode_prefetch_bytes() {
#if defined(__x86_64__)
  if (vnni(active_isa())) return decode_prefetch_bytes();
#endif
  return 0;
}

std::vector<std::string> fast_available_isas() {
  std::vector<std::string> out;
  for (Isa i : kBuilt)
    if (rank(i) <= rank(best_isa())) out.push_back(isa_name(i));
  return out;
}

namespace {

#if defined(__x86_64__)
// exp(x) = 2^k exp(r), |r| <= ln2/2, Taylor to degree 7 (relative error < 2e-7 in float).
__attribute__((target("avx2,fma"))) inline __m256 exp_avx2(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  for (float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma"))) void softmax_avx2(float* z, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, z[i]);
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 vs = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(z + i), vmx));
    _mm256_storeu_ps(z + i, e);
    vs = _mm256_add_ps(vs, e);
  }
  float sum = hsum256(vs);
  for (; i < n; ++i) sum += (z[i] = std::exp(z[i] - mx));
  const float inv = 1.0f / sum;
  for (i = 0; i < n; ++i) z[i] *= inv;
}

// c * tanh(x / c) with tanh(y) = 1 - 2 / (exp(2y) + 1) (exp_avx2: relative error < 2e-7).
__attribute__((target("avx2,fma"))) void softcap_avx2(float* x, int64_t n, float c) {
  const __m256 vc = _mm256_set1_ps(c), two_over_c = _mm256_set1_ps(2.0f / c), one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 e = exp_avx2(_mm256_mul_ps(v, two_over_c));
    const __m256 t = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
    // exp_avx2 clamps its input, which would turn a NaN into a number: keep NaN as NaN.
    _mm256_storeu_ps(x + i, _mm256_blendv_ps(_mm256_mul_ps(vc, t), v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  }
  for (; i < n; ++i) x[i] = c * std::tanh(x[i] / c);
}

// gelu_tanh(u) = 0.5 u (1 + tanh(z)) = u / (1 + exp(-2z)), z = sqrt(2/pi) (u + 0.044715 u^3).
__attribute__((target("avx2,fma"))) void gelu_tanh_mul_avx2(float* g, const float* u, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(g + i);
    const __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
    const __m256 m2z = _mm256_mul_ps(_mm256_set1_ps(-2.0f * 0.7978845608028654f),
                                     _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), v3, v));
    const __m256 gelu = _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), exp_avx2(m2z)));
    _mm256_storeu_ps(g + i, _mm256_mul_ps(gelu, _mm256_loadu_ps(u + i)));
  }
  for (; i < n; ++i) g[i] = ops::gelu_tanh(g[i]) * u[i];
}

// Attention reads its key and value rows through pointers (a packed cache's come decoded
// into scratch): the kernels prefetch the rows ahead themselves.
constexpr int64_t kPrefetchRows = 8;
// G query heads that share a KV head (rows of q, q_stride apart; scores[g * s_stride + j]):
// each block of 4 keys is read from memory once and stays in L1 while the heads pass over
// it, H heads at a time. Per head the sums are those of one head alone (4 keys per pass, one
// chain of 8-lane FMAs per key and head, then hsum256; the remainder through dot_f32_avx2), so
// H changes no bits. H heads give 4H independent chains: with one head the 4 chains waited
// on the FMA latency; 2 heads fit AVX2's 16 registers, 4 need AVX-512VL's 32. Measured, 8
// heads, 2048 keys of 512, 1 thread: from DRAM 8.0 -> 11.3 GB/s of K, from cache 11.8 -> 20.5.
template <int H>
__attribute__((target("avx2,fma"), always_inline)) inline void scores_heads(const float* q, int64_t q_stride,
                                                                           const float* const* keys, int64_t j, int64_t n,
                                                                           int64_t hd, float* scores, int64_t s_stride,
                                                                           bool pf) {
  __m256 a[H][4];
  for (int h = 0; h < H; ++h)
    for (int k = 0; k < 4; ++k) a[h][k] = _mm256_setzero_ps();
  pf = pf && j + 8 <= n;  // the next 4 keys, while the first heads pass over these
  for (int64_t d = 0; d < hd; d += 8) {
    if (pf && d % 16 == 0)
      for (int r = 4; r < 8; ++r) _mm_prefetch(reinterpret_cast<const char*>(keys[j + r] + d), _MM_HINT_T0);
    __m256 kv[4];
    for (int k = 0; k < 4; ++k) kv[k] = _mm256_loadu_ps(keys[j + k] + d);
    for (int h = 0; h < H; ++h) {
      const __m256 qv = _mm256_loadu_ps(q + h * q_stride + d);
      for (int k = 0; k < 4; ++k) a[h][k] = _mm256_fmadd_ps(qv, kv[k], a[h][k]);
    }
  }
  for (int h = 0; h < H; ++h)
    for (int k = 0; k < 4; ++k) scores[h * s_stride + j + k] = hsum256(a[h][k]);
}

template <int H>
__attribute__((target("avx2,fma"), always_inline)) inline void scores_blocked(const float* q, int64_t q_stride, int64_t G,
                                                                             const float* const* keys, int64_t n,
                                                                             int64_t hd, float* scores, int64_t s_stride) {
  int64_t j = 0;
  for (; j + 4 <= n && hd % 8 == 0; j += 4) {
    int64_t g = 0;
    for (; g + H <= G; g += H)
      scores_heads<H>(q + g * q_stride, q_stride, keys, j, n, hd, scores + g * s_stride, s_stride, g == 0);
    for (; g < G; ++g) scores_heads<1>(q + g * q_stride, q_stride, keys, j, n, hd, scores + g * s_stride, s_stride, g == 0);
  }
  for (; j < n; ++j)
    for (int64_t g = 0; g < G; ++g) scores[g * s_stride + j] = dot_f32_avx2(q + g * q_stride, keys[j], hd);
}

__attribute__((target("avx2,fma"))) void scores_avx2(const float* q, int64_t q_stride, int64_t G, const float* const* keys,
                                                  int64_t n, int64_t hd, float* scores, int64_t s_stride) {
  scores_blocked<2>(q, q_stride, G, keys, n, hd, scores, s_stride);
}

// The same chains, 4 heads at a time in AVX-512VL's 32 ymm registers: the bits of AVX2.
__attribute__((target("avx2,fma,avx512f,avx512vl"))) void scores_avx512(const float* q, int64_t q_stride, int64_t G,
                                                                      const float* const* keys, int64_t n, int64_t hd,
                                                                      float* scores, int64_t s_stride) {
  scores_blocked<4>(q, q_stride, G, keys, n, hd, scores, s_stride);
}

// Outputs [d0, hd) of the weighted sum, one at a time (head dimensions not a multiple of 64).
__attribute__((target("avx2,fma"))) void weighted_sum_tail(const float* p, int64_t p_stride, int64_t G,
                                                        const float* const* vals, int64_t n, int64_t d0, int64_t hd,
                                                        float* out, int64_t out_stride, bool acc) {
  for (int64_t g = 0; g < G; ++g)
    for (int64_t d = d0; d < hd; ++d) {
      float s = acc ? out[g * out_stride + d] : 0.0f;
      for (int64_t j = 0; j < n; ++j) s += p[g * p_stride + j] * vals[j][d];
      out[g * out_stride + d] = s;
    }
}

// out[g] = sum_j p[g * p_stride + j] * vals[j] for G heads (acc: out[g] + the sum, the chain
// of additions continued, so rows split over calls give the bits of one call): per 64
// outputs, the heads pass over the same value columns one after another (L2-resident after
// the first).
__attribute__((target("avx2,fma"))) void weighted_sum_avx2(const float* p, int64_t p_stride, int64_t G,
                                                        const float* const* vals, int64_t n, int64_t hd, float* out,
                                                        int64_t out_stride, bool acc_in) {
  for (int64_t g = 0; g < G; ++g) {
    const float* pg = p + g * p_stride;
    float* og = out + g * out_stride;
    for (int64_t d = 0; d + 64 <= hd; d += 64) {  // 64 outputs stay in registers over all rows
      __m256 acc[8];
      for (int k = 0; k < 8; ++k) acc[k] = acc_in ? _mm256_loadu_ps(og + d + 8 * k) : _mm256_setzero_ps();
      for (int64_t j = 0; j < n; ++j) {
        const __m256 pj = _mm256_set1_ps(pg[j]);
        for (int k = 0; k < 8; ++k) acc[k] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vals[j] + d + 8 * k), acc[k]);
      }
      for (int k = 0; k < 8; ++k) _mm256_storeu_ps(og + d + 8 * k, acc[k]);
    }
  }
  weighted_sum_tail(p, p_stride, G, vals, n, hd / 64 * 64, hd, out, out_stride, acc_in);
}

// The same sums with AVX-512: 4 heads at a time take each value row from one load (16
// accumulators of 16 lanes), so prefill attention is bound by FMAs, not loads. Per output
// the additions are those of weighted_sum_avx2 (in row order, fused), so the bits are equal.
// The head count H is a template argument: with a run-time count GCC kept the accumulators
// on the stack, a store and a reload around every FMA.
template <int H>
__attribute__((target("avx512f,fma"))) void weighted_sum_heads(const float* p, int64_t p_stride, const float* const* vals,
                                                               int64_t n, int64_t d, float* out, int64_t out_stride,
                                                               bool acc_in) {
  __m512 acc[H][4];
  for (int i = 0; i < H; ++i)
    for (int k = 0; k < 4; ++k) acc[i][k] = acc_in ? _mm512_loadu_ps(out + i * out_stride + d + 16 * k) : _mm512_setzero_ps();
  for (int64_t j = 0; j < n; ++j) {
    __m512 v[4];
    if (j + kPrefetchRows < n)
      for (int k = 0; k < 4; ++k) _mm_prefetch(reinterpret_cast<const char*>(vals[j + kPrefetchRows] + d + 16 * k), _MM_HINT_T0);
    for (int k = 0; k < 4; ++k) v[k] = _mm512_loadu_ps(vals[j] + d + 16 * k);
    for (int i = 0; i < H; ++i) {
      const __m512 pj = _mm512_set1_ps(p[i * p_stride + j]);
      for (int k = 0; k < 4; ++k) acc[i][k] = _mm512_fmadd_ps(pj, v[k], acc[i][k]);
    }
  }
  for (int i = 0; i < H; ++i)
    for (int k = 0; k < 4; ++k) _mm512_storeu_ps(out + i * out_stride + d + 16 * k, acc[i][k]);
}

__attribute__((target("avx512f,fma"))) void weighted_sum_avx512(const float* p, int64_t p_stride, int64_t G,
                                                             const float* const* vals, int64_t n, int64_t hd, float* out,
                                                             int64_t out_stride, bool acc_in) {
  for (int64_t d = 0; d + 64 <= hd; d += 64)
    for (int64_t g = 0; g < G; g += 4) {
      const float* pg = p + g * p_stride;
      float* og = out + g * out_stride;
      switch (std::min<int64_t>(4, G - g)) {
        case 1: weighted_sum_heads<1>(pg, p_stride, vals, n, d, og, out_stride, acc_in); break;
        case 2: weighted_sum_heads<2>(pg, p_stride, vals, n, d, og, out_stride, acc_in); break;
        case 3: weighted_sum_heads<3>(pg, p_stride, vals, n, d, og, out_stride, acc_in); break;
        default: weighted_sum_heads<4>(pg, p_stride, vals, n, d, og, out_stride, acc_in); break;
      }
    }
  weighted_sum_tail(p, p_stride, G, vals, n, hd / 64 * 64, hd, out, out_stride, acc_in);
}
#endif

}  // namespace

// The vector helpers: AVX2 versions (the weighted sum also in AVX-512); other ISAs take the scalar loops.
void fast_scores_group(const float* q, int64_t q_stride, int64_t G, const float* const* keys, int64_t n, int64_t hd,
                       float* scores, int64_t s_stride) {
#if defined(__x86_64__)
  if (vnni(active_isa())) return scores_avx512(q, q_stride, G, keys, n, hd, scores, s_stride);
  if (active_isa() != Isa::Scalar) return scores_avx2(q, q_stride, G, keys, n, hd, scores, s_stride);
#endif
  for (int64_t j = 0; j < n; ++j)
    for (int64_t g = 0; g < G; ++g) scores[g * s_stride + j] = dot_f32_scalar(q + g * q_stride, keys[j], hd);
}

void fast_scores(const float* q, const float* const* keys, int64_t n, int64_t hd, float* scores) {
  fast_scores_group(q, hd, 1, keys, n, hd, scores, n);
}

void fast_weighted_sum_group(const float* p, int64_t p_stride, int64_t G, const float* const* vals, int64_t n, int64_t hd,
                             float* out, int64_t out_stride, bool accumulate) {
#if defined(__x86_64__)
  if (vnni(active_isa())) return weighted_sum_avx512(p, p_stride, G, vals, n, hd, out, out_stride, accumulate);
  if (active_isa() != Isa::Scalar) return weighted_sum_avx2(p, p_stride, G, vals, n, hd, out, out_stride, accumulate);
#endif
  for (int64_t g = 0; g < G; ++g) {
    float* og = out + g * out_stride;
    if (!accumulate) std::fill(og, og + hd, 0.0f);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t d = 0; d < hd; ++d) og[d] += p[g * p_stride + j] * vals[j][d];
  }
}

void fast_weighted_sum(const float* p, const float* const* vals, int64_t n, int64_t hd, float* out) {
  fast_weighted_sum_group(p, n, 1, vals, n, hd, out, hd);
}

void fast_softmax(float* z, int64_t n) {
#if defined(__x86_64__)
  if (active_isa() != Isa::Scalar) return softmax_avx2(z, n);
#endif
  ops::softmax(z, n, false);
}

void fast_gelu_tanh_mul(float* g, const float* u, int64_t n) {
#if defined(__x86_64__)
  if (active_isa() != Isa::Scalar) return gelu_tanh_mul_avx2(g, u, n);
#endif
  for (int64_t i = 0; i < n; ++i) g[i] = ops::gelu_tanh(g[i]) * u[i];
}

void fast_softcap(float* x, int64_t n, float c) {
#if defined(__x86_64__)
  if (active_isa() != Isa::Scalar) return softcap_avx2(x, n, c);
#endif
  for (int64_t i = 0; i < n; ++i) x[i] = c * std::tanh(x[i] / c);
}

void fast_force_isa(const std::string& isa) { g_forced = isa.empty() ? std::nullopt : std::optional<Isa>(parse_isa(isa)); }

namespace {

// The ternary types dot their exactly decoded rows with the float activations instead of q8
// ones: on brown-mini (c=128, 64 chunks) int8 activation rounding moved their PPL +0.063% from
// the reference, over the 0.05% bar (f32: -0.013%); every other type stays within it on q8
// activations, as llama.cpp computes them (README "Low-bit GGUFs").
constexpr bool float_acts(DType t) { return t == DType::TQ1_0 || t == DType::TQ2_0; }

}  // namespace

void fast_matmul(const TensorView& w, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y, int64_t row0) {
  const auto rb = row_bytes(w.dtype, n_in);
  if (!rb) fail("{}: rows of {} elements cannot be {}", w.name, n_in, dtype_name(w.dtype));
  const Isa isa = active_isa();
  const bool f32_acts = float_acts(w.dtype);
#if defined(__x86_64__)
  const bool avx2 = isa == Isa::Avx2 || vnni(isa);
  if (!f32_acts && vnni(isa) && matmul_avx512_vnni(w, x, n_tok, n_in, n_out, y, row0)) return;
#elif defined(__aarch64__)
  if (!f32_acts && isa == Isa::Neon && matmul_neon(w, x, n_tok, n_in, n_out, y, row0)) return;
#else
  (void)isa;
#endif
  if (!is_quantized(w.dtype) || n_in % QK != 0 || f32_acts) {
    // Blocks of 16 rows (in place for F32, else dequantized into scratch) against every
    // token, so each token's activations are read from memory once per block, not per row.
    constexpr int64_t kRowBlock = 16;
    parallel_stream((n_out + kRowBlock - 1) / kRowBlock, [&](int64_t block) {
      float* buf = scratch().f32.data();  // grown by the prologue below
      const float* rows[kRowBlock];
      const int64_t o0 = block * kRowBlock, nr = std::min(kRowBlock, n_out - o0);
      for (int64_t r = 0; r < nr; ++r) {
        const uint8_t* src = w.data + (row0 + o0 + r) * *rb;
        if (w.dtype == DType::F32 && reinterpret_cast<uintptr_t>(src) % alignof(float) == 0) {
          rows[r] = reinterpret_cast<const float*>(src);
        } else {
          dequant_row(w.dtype, src, n_in, buf + r * n_in);
          rows[r] = buf + r * n_in;
        }
      }
#if defined(__x86_64__)
      if (vnni(isa)) {
        f32_rows_avx512(rows, nr, x, n_tok, n_in, y + o0, n_out);
        return;
      }
#endif
      for (int64_t t = 0; t < n_tok; ++t)
        for (int64_t r = 0; r < nr; ++r) {
#if defined(__x86_64__)
          if (avx2) {
            y[t * n_out + o0 + r] = dot_f32_avx2(rows[r], x + t * n_in, n_in);
            continue;
          }
#endif
          y[t * n_out + o0 + r] = dot_f32_scalar(rows[r], x + t * n_in, n_in);
        }
    }, [&] { grown(scratch().f32, kRowBlock * n_in); });
    return;
  }
#if defined(__x86_64__)
  if (avx2 && matmul_avx2(w, x, n_tok, n_in, n_out, y, row0)) return;
#endif
  Acts& acts = scratch().acts;
  quantize_acts(x, n_tok, n_in, 0, QK, true, quantize_block_scalar, acts);
#pragma omp parallel
  {
    UnpackedRow& u = scratch().row;
#pragma omp for schedule(static)
    for (int64_t o = 0; o < n_out; ++o) {
      unpack_row(w.dtype, w.data + (row0 + o) * *rb, n_in, u);
      for (int64_t t = 0; t < n_tok; ++t) y[t * n_out + o] = dot_row_scalar(u, acts, t);
    }
  }
}

std::shared_ptr<const PackedMatrix> fast_pack(const TensorView& w) {
#if defined(__x86_64__)
  static const bool off = [] {
    const char* e = std::getenv("G4_NO_REPACK");
    return e && *e && std::strcmp(e, "0") != 0;
  }();
  if (off || !vnni(active_isa()) || !w.data) return nullptr;
  // One pack per tensor while someone holds it: sessions of one model share them.
  using Key = std::tuple<const uint8_t*, DType, int64_t>;
  static std::mutex mu;
  static std::map<Key, std::weak_ptr<const PackedMatrix>> packs;
  const std::lock_guard<std::mutex> lock(mu);
  auto& slot = packs[Key{w.data, w.dtype, w.nbytes}];
  if (auto p = slot.lock()) return p;
  // The packed copies live in RAM beside the mapped file: past a budget (half of the
  // physical memory, or G4_REPACK_MAX_GB) further tensors run from the file as they are,
  // so a model near the size of RAM still runs.
  static const int64_t budget = [] {
    if (const char* e = std::getenv("G4_REPACK_MAX_GB"); e && *e) return static_cast<int64_t>(std::atof(e) * 1e9);
    return static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE) / 2;
  }();
  static int64_t live = 0;  // bytes of packs alive, under mu
  const int64_t bytes = w.nbytes + w.nbytes / 16;  // the layouts add at most 3%, plus 16-row padding
  if (live + bytes > budget) {
    static bool told = false;
    if (!told) std::fprintf(stderr, "g4: packed weights reached %.1f GB (the limit: half of RAM, or G4_REPACK_MAX_GB); "
                                    "further tensors run from the file as stored\n", live / 1e9);
    told = true;
    return nullptr;
  }
  std::shared_ptr<PackedMatrix> raw = pack_avx512(w);
  if (!raw) return nullptr;
  // The file's copy is not read by the kernels again: without this the process held both
  // (12b Q8_0: peak RSS 24.2 GB of 24 GiB for a 12.7 GB file).
  if (w.file) w.file->release(w.data, static_cast<size_t>(w.nbytes));
  live += bytes;
  std::shared_ptr<const PackedMatrix> p(raw.get(), [raw, bytes](const PackedMatrix*) mutable {
    const std::lock_guard<std::mutex> l(mu);
    live -= bytes;
    raw.reset();
  });
  slot = p;
  return p;
#else
  (void)w;
  return nullptr;
#endif
}

bool fast_matmul_packed(const PackedMatrix& p, const float* x, int64_t n_tok, int64_t n_in, int64_t n_out, float* y,
                        int64_t row0) {
#if defined(__x86_64__)
  const Isa isa = active_isa();
  return vnni(isa) && matmul_packed_avx512(p, x, n_tok, n_in, n_out, y, row0, isa == Isa::Amx);
#else
  (void)p, (void)x, (void)n_tok, (void)n_in, (void)n_out, (void)y, (void)row0;
  return false;
#endif
}

bool fast_matmul_slices_packed(const PackedMatrix& p, const float* x, int64_t n_x, int64_t n_in, int64_t n_out, float* y,
                               std::span<const int64_t> row0s) {
#if defined(__x86_64__)
  return vnni(active_isa()) && matmul_slices_packed_avx512(p, x, n_x, n_in, n_out, y, row0s);
#else
  (void)p, (void)x, (void)n_x, (void)n_in, (void)n_out, (void)y, (void)row0s;
  return false;
#endif
}

#if !defined(__x86_64__)
bool fast_detail::decode_row_avx2(DType, const uint8_t*, int64_t, float*) { return false; }
bool fast_detail::decode_row_avx512(DType, const uint8_t*, int64_t, float*) { return false; }
#endif
#if !defined(__aarch64__)
bool fast_detail::decode_row_neon(DType, const uint8_t*, int64_t, float*) { return false; }
#endif

}  // namespace g4
