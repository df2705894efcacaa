// MoE expert selection on the host, shared by every backend that routes there (the CPU
// backends, and the Vulkan backend after reading back the router's probabilities).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "util/error.h"

namespace g4::routing {

// The k largest of z[0..E) into ids, largest first, by repeated selection: the first
// maximum wins, so on equal values the lower expert id comes first (HF's topk on CPU,
// a stable sort). `taken` is scratch of E entries.
template <typename T>
void top_k(const T* z, int64_t E, int64_t k, std::vector<char>& taken, int32_t* ids) {
  taken.assign(static_cast<size_t>(E), 0);
  for (int64_t j = 0; j < k; ++j) {
    int64_t best = -1;
    for (int64_t e = 0; e < E; ++e)
      if (!taken[e] && (best < 0 || z[e] > z[best])) best = e;
    taken[best] = 1;
    ids[j] = static_cast<int32_t>(best);
  }
}

// Row t's experts into ids[t * k ...]: top-k of z, or forced[t] where that row is set
// (forced routing, g4 divergence).
template <typename T>
void select_experts(const T* z, int64_t E, int64_t k, int64_t t, const int32_t* forced, std::vector<char>& taken,
                    int32_t* ids) {
  if (forced && forced[t * k] >= 0) {
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = forced[t * k + j];
      if (e < 0 || e >= E) fail("forced routing of row {}: expert {} is outside [0, {})", t, e, E);
      ids[t * k + j] = e;
    }
    return;
  }
  top_k(z, E, k, taken, ids + t * k);
}

}  // namespace g4::routing
