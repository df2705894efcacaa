#include "backends/kv_codec.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "formats/dtype.h"
#include "kernels/dequant.h"
#include "kernels/quantize.h"
#include "util/error.h"
#include "util/half.h"

namespace g4 {
namespace {

struct KvTypeInfo {
  KvType t;
  const char* name;
  double bits;
};
constexpr KvTypeInfo kTypes[] = {
    {KvType::F32, "f32", 32},     {KvType::F16, "f16", 16},       {KvType::BF16, "bf16", 16},
    {KvType::Q8_0, "q8_0", 8.5},  {KvType::Q4_0, "q4_0", 4.5},    {KvType::Q4_1, "q4_1", 5},
    {KvType::IQ4_NL, "iq4_nl", 4.5}, {KvType::Rot4, "rot4", 4.5}, {KvType::Rot3, "rot3", 3.5},
};

// IQ4_NL's non-linear levels (formats.md / ggml-common.h kvalues_iq4nl).
constexpr int8_t kIq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

DType ggml_type(KvType t) {
  switch (t) {
    case KvType::Q8_0: return DType::Q8_0;
    case KvType::Q4_0: return DType::Q4_0;
    case KvType::Q4_1: return DType::Q4_1;
    default: return DType::F32;
  }
}

inline float round_f16(float x) { return f16_to_f32(f32_to_f16(x)); }

}  // namespace

KvType parse_kv_type(const std::string& s) {
  for (const auto& i : kTypes)
    if (s == i.name) return i.t;
  std::string names;
  for (const auto& i : kTypes) names += std::string(names.empty() ? "" : ", ") + i.name;
  fail("unknown KV cache type '{}' (use one of {})", s, names);
}

const char* kv_type_name(KvType t) {
  for (const auto& i : kTypes)
    if (i.t == t) return i.name;
  return "?";
}

std::vector<KvType> all_kv_types() {
  std::vector<KvType> v;
  for (const auto& i : kTypes) v.push_back(i.t);
  return v;
}

double kv_bits_per_value(KvType t) {
  for (const auto& i : kTypes)
    if (i.t == t) return i.bits;
  return 32;
}

KvCodec::KvCodec(KvType t, int64_t head_dim) : t_(t), n_(head_dim) {
  tmp_.resize(static_cast<size_t>(n_));
  if (t == KvType::Q8_0 || t == KvType::Q4_0 || t == KvType::Q4_1) {
    if (n_ % 32) fail("KV cache type {} stores blocks of 32 values, but head_dim = {}; use f16, bf16, rot4 or rot3", kv_type_name(t), n_);
    bytes_.resize(static_cast<size_t>(*row_bytes(ggml_type(t), n_)));
  }
  if (t == KvType::IQ4_NL && n_ % std::min<int64_t>(32, n_))
    fail("KV cache type iq4_nl needs head_dim to be a multiple of 32 (or below it), got {}", n_);
  if (t == KvType::Rot4 || t == KvType::Rot3) {
    if (n_ < 2 || (n_ & (n_ - 1))) fail("KV cache type {} rotates by a Hadamard matrix of order head_dim, which must be a power of two (got {})", kv_type_name(t), n_);
    std::mt19937 rng(0x9E3779B9u);
    signs_.resize(static_cast<size_t>(n_));
    for (auto& s : signs_) s = (rng() & 1) ? 1.0f : -1.0f;
  }
}

// y = H D x / sqrt(n) (forward) or D H y / sqrt(n) (inverse); H is symmetric, so the two
// are transposes and the pair is the identity up to float rounding.
void KvCodec::rotate(float* x, bool inverse) const {
  if (!inverse)
    for (int64_t i = 0; i < n_; ++i) x[i] *= signs_[i];
  for (int64_t len = 1; len < n_; len <<= 1)
    for (int64_t i = 0; i < n_; i += 2 * len)
      for (int64_t j = i; j < i + len; ++j) {
        const float a = x[j], b = x[j + len];
        x[j] = a + b;
        x[j + len] = a - b;
      }
  const float s = 1.0f / std::sqrt(static_cast<float>(n_));
  for (int64_t i = 0; i < n_; ++i) x[i] *= inverse ? s * signs_[i] : s;
}

void KvCodec::roundtrip(float* x) const {
  switch (t_) {
    case KvType::F32: return;
    case KvType::F16:
      for (int64_t i = 0; i < n_; ++i) x[i] = round_f16(x[i]);
      return;
    case KvType::BF16:
      for (int64_t i = 0; i < n_; ++i) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
      return;
    case KvType::Q8_0:
    case KvType::Q4_0:
    case KvType::Q4_1:
      quantize_row(ggml_type(t_), x, n_, bytes_.data());
      dequant_row(ggml_type(t_), bytes_.data(), n_, x);
      return;
    case KvType::IQ4_NL: {
      const int64_t bs = std::min<int64_t>(32, n_);
      for (int64_t b = 0; b < n_; b += bs) {
        float amax = 0;
        for (int64_t i = b; i < b + bs; ++i) amax = std::max(amax, std::fabs(x[i]));
        const float d = round_f16(amax / 127.0f);
        for (int64_t i = b; i < b + bs; ++i) {
          int best = 0;
          for (int k = 1; k < 16; ++k)
            if (std::fabs(d * kIq4nl[k] - x[i]) < std::fabs(d * kIq4nl[best] - x[i])) best = k;
          x[i] = d * kIq4nl[best];
        }
      }
      return;
    }
    case KvType::Rot4:
    case KvType::Rot3: {
      const int bits = t_ == KvType::Rot4 ? 4 : 3;
      const int half = 1 << (bits - 1);
      rotate(x, false);
      const int64_t bs = std::min<int64_t>(32, n_);
      for (int64_t b = 0; b < n_; b += bs) {
        float amax = 0, vmax = 0;  // the value of largest magnitude, with its sign (q4_0's rule)
        for (int64_t i = b; i < b + bs; ++i)
          if (std::fabs(x[i]) > amax) {
            amax = std::fabs(x[i]);
            vmax = x[i];
          }
        const float d = round_f16(vmax / -static_cast<float>(half));
        const float id = d != 0 ? 1.0f / d : 0.0f;
        for (int64_t i = b; i < b + bs; ++i) {
          const float q = std::clamp(std::nearbyint(x[i] * id), -static_cast<float>(half), static_cast<float>(half - 1));
          x[i] = q * d;
        }
      }
      rotate(x, true);
      return;
    }
  }
}

void KvCodec::roundtrip(double* x) const {
  if (t_ == KvType::F32) return;  // the f64 reference keeps its cache exact
  for (int64_t i = 0; i < n_; ++i) tmp_[i] = static_cast<float>(x[i]);
  roundtrip(tmp_.data());
  for (int64_t i = 0; i < n_; ++i) x[i] = tmp_[i];
}

}  // namespace g4
