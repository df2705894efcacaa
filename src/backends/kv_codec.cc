#include "backends/kv_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
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

// Values per block of iq4_nl, rot4 and rot3: 32, or the whole row if shorter.
int64_t block_of(int64_t n) { return std::min<int64_t>(32, n); }
int64_t block_bytes(KvType t, int64_t bs) {
  switch (t) {
    case KvType::IQ4_NL:
    case KvType::Rot4: return 2 + (bs + 1) / 2;
    case KvType::Rot3: return 2 + (3 * bs + 7) / 8;
    default: return 0;
  }
}

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

int64_t kv_row_bytes(KvType t, int64_t n) {
  switch (t) {
    case KvType::F32: return 4 * n;
    case KvType::F16:
    case KvType::BF16: return 2 * n;
    case KvType::Q8_0:
    case KvType::Q4_0:
    case KvType::Q4_1: return row_bytes(ggml_type(t), n).value_or(0);
    default: return n / block_of(n) * block_bytes(t, block_of(n));
  }
}

KvCodec::KvCodec(KvType t, int64_t head_dim) : t_(t), n_(head_dim), bs_(block_of(head_dim)) {
  if (n_ < 1) fail("KV cache: head_dim {} must be positive", n_);
  tmp_.resize(static_cast<size_t>(n_));
  if ((t == KvType::Q8_0 || t == KvType::Q4_0 || t == KvType::Q4_1) && n_ % 32)
    fail("KV cache type {} stores blocks of 32 values, but head_dim = {}; use f16, bf16, rot4 or rot3", kv_type_name(t), n_);
  if (t == KvType::IQ4_NL && (n_ % bs_ || n_ % 2))
    fail("KV cache type iq4_nl needs head_dim to be a multiple of 32 (or an even number below it), got {}", n_);
  if (t == KvType::Rot4 || t == KvType::Rot3) {
    if (n_ < 2 || (n_ & (n_ - 1))) fail("KV cache type {} rotates by a Hadamard matrix of order head_dim, which must be a power of two (got {})", kv_type_name(t), n_);
    std::mt19937 rng(0x9E3779B9u);
    signs_.resize(static_cast<size_t>(n_));
    for (auto& s : signs_) s = (rng() & 1) ? 1.0f : -1.0f;
  }
  row_bytes_ = kv_row_bytes(t, n_);
  bytes_.resize(static_cast<size_t>(row_bytes_));
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

void KvCodec::encode(const float* x, uint8_t* out) const {
  switch (t_) {
    case KvType::F32:
      std::memcpy(out, x, static_cast<size_t>(4 * n_));
      return;
    case KvType::F16:
      for (int64_t i = 0; i < n_; ++i) store_f16(out + 2 * i, x[i]);
      return;
    case KvType::BF16:
      for (int64_t i = 0; i < n_; ++i) store_bf16(out + 2 * i, x[i]);
      return;
    case KvType::Q8_0:
    case KvType::Q4_0:
    case KvType::Q4_1:
      quantize_row(ggml_type(t_), x, n_, out);
      return;
    case KvType::IQ4_NL: {
      const int64_t half = bs_ / 2;
      for (int64_t b = 0; b < n_; b += bs_, out += block_bytes(t_, bs_)) {
        float amax = 0;
        for (int64_t i = b; i < b + bs_; ++i) amax = std::max(amax, std::fabs(x[i]));
        store_f16(out, amax / 127.0f);
        const float d = load_f16(out);
        std::fill(out + 2, out + 2 + half, uint8_t{0});
        for (int64_t i = 0; i < bs_; ++i) {
          int best = 0;
          for (int k = 1; k < 16; ++k)
            if (std::fabs(d * kIq4nl[k] - x[b + i]) < std::fabs(d * kIq4nl[best] - x[b + i])) best = k;
          out[2 + i % half] |= static_cast<uint8_t>(best << (i < half ? 0 : 4));
        }
      }
      return;
    }
    case KvType::Rot4:
    case KvType::Rot3: {
      const int bits = t_ == KvType::Rot4 ? 4 : 3;
      const int half = 1 << (bits - 1);
      float* r = tmp_.data();
      std::copy_n(x, n_, r);
      rotate(r, false);
      for (int64_t b = 0; b < n_; b += bs_, out += block_bytes(t_, bs_)) {
        float amax = 0, vmax = 0;  // the value of largest magnitude, with its sign (q4_0's rule)
        for (int64_t i = b; i < b + bs_; ++i)
          if (std::fabs(r[i]) > amax) {
            amax = std::fabs(r[i]);
            vmax = r[i];
          }
        store_f16(out, vmax / -static_cast<float>(half));
        const float d = load_f16(out);
        const float id = d != 0 ? 1.0f / d : 0.0f;
        std::fill(out + 2, out + block_bytes(t_, bs_), uint8_t{0});
        for (int64_t i = 0; i < bs_; ++i) {
          const float q = std::clamp(std::nearbyint(r[b + i] * id), -static_cast<float>(half), static_cast<float>(half - 1));
          const unsigned u = static_cast<unsigned>((std::isfinite(q) ? static_cast<int>(q) : 0) + half);  // NaN: level 0
          if (bits == 4) {
            out[2 + i % (bs_ / 2)] |= static_cast<uint8_t>(u << (i < bs_ / 2 ? 0 : 4));
          } else {
            const int64_t bit = 3 * i;
            const unsigned w = u << (bit % 8);  // may straddle two bytes
            out[2 + bit / 8] |= static_cast<uint8_t>(w & 0xFF);
            if (w >> 8) out[2 + bit / 8 + 1] |= static_cast<uint8_t>(w >> 8);
          }
        }
      }
      return;
    }
  }
}

void KvCodec::decode(const uint8_t* in, float* x) const {
  switch (t_) {
    case KvType::F32:
      std::memcpy(x, in, static_cast<size_t>(4 * n_));
      return;
    case KvType::F16:
      for (int64_t i = 0; i < n_; ++i) x[i] = load_f16(in + 2 * i);
      return;
    case KvType::BF16:
      for (int64_t i = 0; i < n_; ++i) x[i] = load_bf16(in + 2 * i);
      return;
    case KvType::Q8_0:
    case KvType::Q4_0:
    case KvType::Q4_1:
      dequant_row(ggml_type(t_), in, n_, x);
      return;
    case KvType::IQ4_NL: {
      const int64_t half = bs_ / 2;
      for (int64_t b = 0; b < n_; b += bs_, in += block_bytes(t_, bs_)) {
        const float d = load_f16(in);
        for (int64_t i = 0; i < bs_; ++i) x[b + i] = d * kIq4nl[(in[2 + i % half] >> (i < half ? 0 : 4)) & 15];
      }
      return;
    }
    case KvType::Rot4:
    case KvType::Rot3: {
      const int bits = t_ == KvType::Rot4 ? 4 : 3;
      const int half = 1 << (bits - 1);
      for (int64_t b = 0; b < n_; b += bs_, in += block_bytes(t_, bs_)) {
        const float d = load_f16(in);
        for (int64_t i = 0; i < bs_; ++i) {
          unsigned u;
          if (bits == 4) {
            u = (in[2 + i % (bs_ / 2)] >> (i < bs_ / 2 ? 0 : 4)) & 15;
          } else {
            const int64_t bit = 3 * i;
            unsigned w = in[2 + bit / 8];
            if (bit % 8 > 5) w |= static_cast<unsigned>(in[2 + bit / 8 + 1]) << 8;
            u = (w >> (bit % 8)) & 7;
          }
          x[b + i] = static_cast<float>(static_cast<int>(u) - half) * d;
        }
      }
      rotate(x, true);
      return;
    }
  }
}

void KvCodec::roundtrip(float* x) const {
  if (t_ == KvType::F32) return;
  encode(x, bytes_.data());
  decode(bytes_.data(), x);
}

void KvCodec::roundtrip(double* x) const {
  if (t_ == KvType::F32) return;  // the f64 reference keeps its cache exact
  for (int64_t i = 0; i < n_; ++i) tmp_[i] = static_cast<float>(x[i]);
  roundtrip(tmp_.data());
  for (int64_t i = 0; i < n_; ++i) x[i] = tmp_[i];
}

}  // namespace g4
