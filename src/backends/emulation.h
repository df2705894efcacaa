// Engine roundings reproduced inside the reference backend (BackendOptions::rounding), so
// that `g4 ladder` and `g4 divergence` can say how much of another engine's difference
// each rounding explains. Each is one small function applied where ggml's CPU backend
// (llama.cpp) rounds; the rest of the forward stays the reference's. What was checked in
// ggml's source is written down in tests/fixtures/llama-cpp/README.md.
//
//   gelu-f16    GGML_GELU_FP16 (ggml-cpu/vec.h): gelu(x) = table[f16(x)], the table holding
//               f16(gelu_f32(x)); 0 for x <= -10, x for x >= 10 (ggml_vec_gelu_f32/geglu_f32)
//   kv-f16      llama.cpp's default f16 K/V cache (the f16 KV codec, kv_codec.h)
//   q-f16       Q converted to f16, the vec-dot type of an f16 K cache, before Q.K
//               (mul_mat's src1 conversion; flash attention's q_to_vec_dot)
//   probs-f16   without flash attention: the f32 softmax probabilities converted to f16
//               for the mul_mat with the f16 V cache
//   flash-f16   ggml_compute_forward_flash_attn_ext_f16 with an f16 V cache: online
//               softmax, the weighted V sum accumulated in f16 (ggml_vec_scale_f16 /
//               ggml_vec_mad_f16 round every update), divided by the f32 sum at the end
//
// Presets: llama.cpp = gelu-f16,kv-f16,q-f16,probs-f16 (llama-perplexity -fa off);
// llama.cpp-fa = gelu-f16,kv-f16,q-f16,flash-f16 (-fa on).
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "util/half.h"

namespace g4 {

struct EngineRounding {
  enum class Attn { Exact, F16Probs, F16Flash };
  bool gelu_f16 = false, kv_f16 = false, q_f16 = false;
  Attn attn = Attn::Exact;
  bool any() const { return gelu_f16 || kv_f16 || q_f16 || attn != Attn::Exact; }
  bool operator==(const EngineRounding&) const = default;
};

// "gelu-f16,q-f16", "llama.cpp-fa", "none" or ""; throws naming the unknown item.
EngineRounding parse_engine_rounding(const std::string& list);
// The canonical list ("gelu-f16,kv-f16,q-f16,flash-f16"; "none").
std::string engine_rounding_name(const EngineRounding& r);
// Every item and preset name, for help texts.
std::vector<std::string> engine_rounding_items();

namespace emu {

inline float f16(float x) { return f16_to_f32(f32_to_f16(x)); }

// ggml_gelu_f32, the formula the table is filled with (float32 throughout).
inline float gelu_f32(float x) {
  constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f, kCoefA = 0.044715f;
  return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * x * (1.0f + kCoefA * x * x)));
}

// One entry of ggml's f16 GELU table for x (ggml_vec_gelu_f32 under GGML_GELU_FP16).
inline float gelu_f16_table(float x) {
  if (x <= -10.0f) return 0.0f;
  if (x >= 10.0f) return x;
  return f16(gelu_f32(f16(x)));
}

// ggml's CPU flash attention for one query row q (already in the K cache's dot type):
// keys a.key(p) / values a.val(p) for p in [a.lo, a.pos], scale 1, no softcap. Scores are
// float (the vec-dot result); VKQ is held in f16 and rounded after every scale and
// multiply-add, as ggml_vec_scale_f16 / ggml_vec_mad_f16 do; out = VKQ / S.
template <typename T, typename Query>
void flash_attention_f16(const Query& a, const T* q, T* out) {
  float M = -INFINITY, S = 0;
  std::fill(out, out + a.hd, T(0));  // VKQ16, f16-representable values
  for (int64_t kp = a.lo; kp <= a.pos; ++kp) {
    const T* kh = a.key(kp);
    T dot = 0;
    for (int64_t d = 0; d < a.hd; ++d) dot += q[d] * kh[d];
    const float s = static_cast<float>(dot);
    float ms = 1.0f, vs = 1.0f;
    if (s > M) {
      ms = std::exp(M - s);
      M = s;
      for (int64_t d = 0; d < a.hd; ++d) out[d] = f16(static_cast<float>(out[d]) * ms);
    } else {
      vs = std::exp(s - M);
    }
    const T* vh = a.val(kp);
    for (int64_t d = 0; d < a.hd; ++d) out[d] = f16(static_cast<float>(out[d]) + static_cast<float>(vh[d]) * vs);
    S = S * ms + vs;
  }
  const float inv = S == 0.0f ? 0.0f : 1.0f / S;
  for (int64_t d = 0; d < a.hd; ++d) out[d] = static_cast<float>(out[d]) * inv;
}

}  // namespace emu
}  // namespace g4
