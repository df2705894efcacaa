// Token sampling with llama.cpp's chain order (protocols.md §e): logit bias -> penalties
// (repetition, frequency, presence) -> top-k -> top-p -> min-p -> temperature -> seeded
// draw. temp <= 0 is greedy.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace g4 {

struct SamplingParams {
  float temp = 0.8f;
  int top_k = 40;          // <= 0: off
  float top_p = 0.95f;     // >= 1: off
  float min_p = 0.05f;     // <= 0: off
  float repeat_penalty = 1.0f;
  int repeat_last_n = 64;     // the penalty window (all three penalties); < 0: the whole history
  float frequency_penalty = 0;  // OpenAI: minus this times the token's count in the window
  float presence_penalty = 0;   // OpenAI: minus this once if the token is in the window
  std::vector<std::pair<int32_t, float>> logit_bias;  // added to the logits first
  uint64_t seed = 0xFFFFFFFF;  // 0xFFFFFFFF: random
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history);
  const SamplingParams& params() const { return p_; }

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
};

}  // namespace g4
