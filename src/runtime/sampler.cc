#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

namespace g4 {

Sampler::Sampler(const SamplingParams& p) : p_(p), rng_(p.seed == 0xFFFFFFFF ? std::random_device{}() : p.seed) {}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history) {
  const int32_t V = static_cast<int32_t>(logits.size());
  std::vector<float> z(logits.begin(), logits.end());
  for (const auto& [t, b] : p_.logit_bias)
    if (t >= 0 && t < V) z[t] += b;
  const bool penalize = p_.repeat_penalty != 1.0f || p_.frequency_penalty != 0.0f || p_.presence_penalty != 0.0f;
  if (penalize && p_.repeat_last_n != 0) {
    const size_t n = p_.repeat_last_n < 0 ? history.size() : std::min(history.size(), static_cast<size_t>(p_.repeat_last_n));
    std::unordered_map<int32_t, int> count;
    for (auto it = history.end() - static_cast<std::ptrdiff_t>(n); it != history.end(); ++it) count[*it]++;
    for (const auto& [t, c] : count) {
      if (t < 0 || t >= V) continue;
      // llama.cpp's penalties sampler: repetition scales, then frequency and presence subtract.
      if (p_.repeat_penalty != 1.0f) z[t] = z[t] > 0 ? z[t] / p_.repeat_penalty : z[t] * p_.repeat_penalty;
      z[t] -= static_cast<float>(c) * p_.frequency_penalty + p_.presence_penalty;
    }
  }
  if (p_.temp <= 0) {  // greedy: the first maximum (lowest id on ties, as HF)
    return static_cast<int32_t>(std::max_element(z.begin(), z.end()) - z.begin());
  }
  std::vector<int32_t> cand(static_cast<size_t>(V));
  std::iota(cand.begin(), cand.end(), 0);
  const size_t k = p_.top_k > 0 ? std::min<size_t>(static_cast<size_t>(p_.top_k), cand.size()) : cand.size();
  std::partial_sort(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(k), cand.end(),
                    [&](int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); });
  cand.resize(k);
  // Probabilities of the (untempered) candidates for top-p and min-p.
  auto probs = [&] {
    std::vector<double> p(cand.size());
    double s = 0;
    for (size_t i = 0; i < cand.size(); ++i) s += (p[i] = std::exp(static_cast<double>(z[cand[i]] - z[cand[0]])));
    for (auto& x : p) x /= s;
    return p;
  };
  if (p_.top_p < 1.0f) {
    const auto p = probs();
    double cum = 0;
    size_t keep = cand.size();
    for (size_t i = 0; i < p.size(); ++i) {
      cum += p[i];
      if (cum >= p_.top_p) { keep = i + 1; break; }
    }
    cand.resize(std::max<size_t>(1, keep));
  }
  if (p_.min_p > 0.0f) {
    const auto p = probs();
    size_t keep = 1;
    while (keep < cand.size() && p[keep] >= p_.min_p * p[0]) ++keep;
    cand.resize(keep);
  }
  std::vector<double> w(cand.size());
  for (size_t i = 0; i < cand.size(); ++i) w[i] = std::exp(static_cast<double>(z[cand[i]] - z[cand[0]]) / p_.temp);
  std::discrete_distribution<size_t> dist(w.begin(), w.end());
  return cand[dist(rng_)];
}

}  // namespace g4
