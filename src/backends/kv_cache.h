// The KV cache of the CPU backends. Layers that own K/V store post-norm, post-RoPE K
// and post-norm V per position; sliding layers keep only their window (ring buffer),
// full layers grow. KV-shared layers own nothing: they read their source layer's cache.
// Stores are reserved for the session's context and step size up front, so a step
// allocates nothing.
//
// Packed caches (the fast backend, any cache type but f32): the store holds each
// position's K and V as the type's bytes (kv_codec.h), one encoded head row after
// another, so a q4_0 cache takes 4.5/32 of the f32 bytes. The current step's rows also
// stay decoded in pending_k/v (the values the bytes decode to), for the step's own queries.
#pragma once
#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "backends/kv_codec.h"
#include "model/spec.h"
#include "util/huge_pages.h"

namespace g4 {

template <typename T>
struct LayerKv {
  int64_t width = 0;     // n_kv_heads * head_dim; 0 for KV-shared layers
  int64_t capacity = 0;  // ring slots for sliding layers; 0 = unbounded
  std::vector<T, HugePageAllocator<T>> k, v;  // read whole by every decode step
  // Entries of the current step, committed at its end, so that queries early in a
  // long step still see keys the ring has no room for.
  std::vector<T> pending_k, pending_v;

  const T* k_at(int64_t pos) const { return &k[static_cast<size_t>(slot(pos) * width)]; }
  const T* v_at(int64_t pos) const { return &v[static_cast<size_t>(slot(pos) * width)]; }
  int64_t slot(int64_t pos) const { return capacity ? pos % capacity : pos; }

  // Packed store: bytes per position (all KV heads) and per head row; 0 = float store.
  int64_t k_row_bytes = 0, v_row_bytes = 0, k_head_bytes = 0, v_head_bytes = 0;
  std::vector<uint8_t, HugePageAllocator<uint8_t>> kb, vb;
  std::vector<uint8_t> pending_kb, pending_vb;
  bool packed() const { return k_row_bytes > 0; }
  const uint8_t* kb_at(int64_t pos) const { return &kb[static_cast<size_t>(slot(pos) * k_row_bytes)]; }
  const uint8_t* vb_at(int64_t pos) const { return &vb[static_cast<size_t>(slot(pos) * v_row_bytes)]; }
};

// Sliding-layer rings keep this many slots beyond the window so that the cache can
// be rewound (prefix reuse across chat turns and requests) without recomputation.
inline constexpr int64_t kKvRewindSlots = 256;

template <typename T>
struct KvCache {
  int64_t n_past = 0;
  int64_t n_pending = 0;
  std::vector<LayerKv<T>> layers;
  int64_t max_rewind = INT64_MAX;  // limited by the sliding rings

  int64_t max_step = 0;  // most positions one step may add (pending rows)

  // max_step: most positions per step; n_ctx: positions to reserve (0 = grow on demand);
  // packed: the K and V types to store as bytes (none: float rows).
  KvCache(const ModelSpec& s, int64_t max_step_, int64_t n_ctx, std::optional<std::pair<KvType, KvType>> packed = {})
      : max_step(max_step_) {
    layers.resize(static_cast<size_t>(s.n_layers));
    for (const auto& l : s.layers) {
      if (!l.owns_kv) continue;
      auto& kv = layers[l.index];
      kv.width = int64_t{l.n_kv_heads} * l.head_dim;
      kv.capacity = l.window > 0 ? l.window + kKvRewindSlots : 0;
      if (l.window > 0) max_rewind = kKvRewindSlots + 1;
      kv.pending_k.resize(static_cast<size_t>(max_step * kv.width));
      kv.pending_v.resize(kv.pending_k.size());
      const int64_t slots = kv.capacity ? (n_ctx ? std::min(kv.capacity, n_ctx) : 0) : n_ctx;
      if (packed) {
        kv.k_head_bytes = kv_row_bytes(packed->first, l.head_dim);
        kv.v_head_bytes = kv_row_bytes(packed->second, l.head_dim);
        kv.k_row_bytes = l.n_kv_heads * kv.k_head_bytes;
        kv.v_row_bytes = l.n_kv_heads * kv.v_head_bytes;
        kv.pending_kb.resize(static_cast<size_t>(max_step * kv.k_row_bytes));
        kv.pending_vb.resize(static_cast<size_t>(max_step * kv.v_row_bytes));
        kv.kb.reserve(static_cast<size_t>(slots * kv.k_row_bytes));
        kv.vb.reserve(static_cast<size_t>(slots * kv.v_row_bytes));
      } else {
        kv.k.reserve(static_cast<size_t>(slots * kv.width));
        kv.v.reserve(static_cast<size_t>(slots * kv.width));
      }
    }
  }

  // Most keys a query can see: the whole context on full layers, the window on sliding ones.
  int64_t max_keys(const LayerSpec& l, int64_t pos) const {
    return l.window > 0 ? std::min<int64_t>(pos + 1, l.window) : pos + 1;
  }

  // Forgets positions >= n. Possible while every position a later query can see is
  // still in the rings; returns false (cache untouched) otherwise.
  bool truncate(int64_t n) {
    if (n < 0 || n > n_past) return false;
    if (n_past - n > max_rewind) return false;
    // Ring slots stay where they are (later commits overwrite them); full-attention
    // stores simply shrink (keeping their capacity).
    for (auto& l : layers) {
      if (l.width == 0 || l.capacity) continue;
      if (l.packed()) {
        l.kb.resize(static_cast<size_t>(n * l.k_row_bytes));
        l.vb.resize(static_cast<size_t>(n * l.v_row_bytes));
      } else {
        l.k.resize(static_cast<size_t>(n * l.width));
        l.v.resize(static_cast<size_t>(n * l.width));
      }
    }
    n_past = n;
    return true;
  }

  void reset() {
    n_past = 0;
    n_pending = 0;
    for (auto& l : layers) {
      l.k.clear();
      l.v.clear();
      l.kb.clear();
      l.vb.clear();
    }
  }

  // Moves the pending entries of every layer into its store.
  void commit(int64_t n_new) {
    for (auto& l : layers) {
      if (l.width == 0) continue;
      for (int64_t t = 0; t < n_new; ++t) {
        const int64_t pos = n_past + t;
        const int64_t held = l.capacity ? std::min(pos + 1, l.capacity) : pos + 1;
        if (l.packed()) {
          if (l.kb.size() < static_cast<size_t>(held * l.k_row_bytes)) {
            l.kb.resize(static_cast<size_t>(held * l.k_row_bytes));
            l.vb.resize(static_cast<size_t>(held * l.v_row_bytes));
          }
          std::copy_n(&l.pending_kb[static_cast<size_t>(t * l.k_row_bytes)], l.k_row_bytes, &l.kb[static_cast<size_t>(l.slot(pos) * l.k_row_bytes)]);
          std::copy_n(&l.pending_vb[static_cast<size_t>(t * l.v_row_bytes)], l.v_row_bytes, &l.vb[static_cast<size_t>(l.slot(pos) * l.v_row_bytes)]);
          continue;
        }
        const size_t need = static_cast<size_t>(held * l.width);
        if (l.k.size() < need) {
          l.k.resize(need);
          l.v.resize(need);
        }
        std::copy_n(&l.pending_k[static_cast<size_t>(t * l.width)], l.width, &l.k[static_cast<size_t>(l.slot(pos) * l.width)]);
        std::copy_n(&l.pending_v[static_cast<size_t>(t * l.width)], l.width, &l.v[static_cast<size_t>(l.slot(pos) * l.width)]);
      }
    }
    n_past += n_new;
    n_pending = 0;
  }

  // Bytes of the positions held (K and V stores, the rings' kept slots).
  size_t bytes() const {
    size_t b = 0;
    for (const auto& l : layers) b += (l.k.size() + l.v.size()) * sizeof(T) + l.kb.size() + l.vb.size();
    return b;
  }
  // Bytes reserved for the stores up front (n_ctx positions; pending rows not counted).
  size_t reserved_bytes() const {
    size_t b = 0;
    for (const auto& l : layers) b += (l.k.capacity() + l.v.capacity()) * sizeof(T) + l.kb.capacity() + l.vb.capacity();
    return b;
  }
};

}  // namespace g4
