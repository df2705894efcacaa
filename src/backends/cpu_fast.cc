// The CPU fast backend: the reference float backend with the hot ops replaced by the
// SIMD kernels of kernels/fast.h (8-bit activations against quantized weights,
// vectorized attention and GELU). Everything else is the float reference. Weights of the
// packed types are re-laid out once for the tile kernel (kernels/fast.h: fast_pack). Its KV
// cache is packed (kv_cache.h): K and V are stored as the cache type's bytes and decoded, a
// block of keys at a time, into per-thread scratch while attention iterates them.
#include <omp.h>

#include <unordered_map>

#include "backends/cpu_ref.h"
#include "kernels/fast.h"

namespace g4 {
namespace {

class FastBackend final : public RefBackend<float> {
 public:
  FastBackend(const Model& m, const BackendOptions& opt) : RefBackend<float>(m, opt, /*pack_kv=*/true) {
    reserve_attention(opt.n_ctx ? opt.n_ctx : std::min<int64_t>(opt.n_batch, s_.max_ctx));
  }

  std::string name() const override { return "cpu-fast (" + fast_kernel_isa() + ")"; }

  void matmul(const TensorView& w, const View& x, const View& y, int64_t row0) override {
    contiguous(x, "matmul input");
    contiguous(y, "matmul output");
    if (const PackedMatrix* p = packed(w); p && fast_matmul_packed(*p, row(x, 0), x.rows, x.cols, y.cols, row(y, 0), row0))
      return;
    fast_matmul(w, row(x, 0), x.rows, x.cols, y.cols, row(y, 0), row0);
  }
  void matmul_slices(const TensorView& w, const View& x, const View& y, std::span<const int64_t> row0s) override {
    contiguous(x, "matmul input");
    contiguous(y, "matmul output");
    if (const PackedMatrix* p = packed(w);
        p && fast_matmul_slices_packed(*p, row(x, 0), x.rows, x.cols, y.cols, row(y, 0), row0s))
      return;
    Backend::matmul_slices(w, x, y, row0s);
  }
  // Element-wise: rows, or pieces of one long row, split over the threads change no bits.
  void gelu_mul(const View& g, const View& u) override {
    elementwise(g, [&](int64_t r, int64_t c0, int64_t n) { fast_gelu_tanh_mul(row(g, r) + c0, row(u, r) + c0, n); });
  }
  void softcap(const View& x, double c) override {
    elementwise(x, [&](int64_t r, int64_t c0, int64_t n) { fast_softcap(row(x, r) + c0, n, static_cast<float>(c)); });
  }

  // Grouped-query attention, tiled: the query heads that share a KV head, and up to
  // kTileTokens consecutive tokens of the step, form one work item; keys and values are
  // read (and, in a packed cache, decoded) in blocks of kBlock rows, once per item for all
  // its tokens and heads rather than once per token and head (e2b: 8 heads on one KV head),
  // so a long prefill streams its K and V from L2, not from memory. Each (token, head)
  // computes exactly what one query alone would: its scores (blocks split at multiples of 4
  // keys from its first key, fast_scores_group's grouping), an exact softmax over all of
  // them, and one chain of additions over its value rows (continued across blocks). So the
  // result does not depend on the tiling, the block size, the number of tokens in the step
  // or the threads, and a packed cache gives the bits of a float cache holding its decoded
  // rows.
  void attention(int seq, int layer, const View& q, int64_t heads, const View& out) override {
    const LayerSpec& ls = s_.layers[layer];
    const KvCache<float>& c = kv(seq);
    const LayerKv<float>& src = c.layers[ls.kv_source];
    const int64_t hd = q.cols, G = ls.n_heads / ls.n_kv_heads, n = q.rows / heads, start = c.n_past;
    const int64_t n_kv = heads / G, max_keys = c.max_keys(ls, start + n - 1);
    const bool stored = src.packed();
    const KvCodec* ck = stored ? &codecs_.at(s_.layers[ls.kv_source].head_dim).first : nullptr;
    const KvCodec* cv = stored ? &codecs_.at(s_.layers[ls.kv_source].head_dim).second : nullptr;
    const int64_t tq = std::min(n, tile_tokens(G, max_keys)), tiles = (n + tq - 1) / tq;
    reserve_attention(max_keys);
    // A group is split into parts only as far as needed to give every thread work
    // (decode: one token, often one KV head).
    const int64_t threads = omp_get_max_threads();
    int64_t parts = 1;
    while (tiles * n_kv * parts < threads && G % (2 * parts) == 0) parts *= 2;
    const int64_t per = G / parts, q_stride = q.rows > 1 ? q.stride : hd, out_stride = out.rows > 1 ? out.stride : hd;
    if (n == 1 && parts > 1) return decode_split(ls, src, start, q, q_stride, heads, out, out_stride, ck, cv);
#pragma omp parallel for collapse(3) schedule(dynamic, 1)
    for (int64_t tile = 0; tile < tiles; ++tile)
      for (int64_t k = 0; k < n_kv; ++k)
        for (int64_t part = 0; part < parts; ++part) {
          const int64_t t0 = tile * tq, nt = std::min(tq, n - t0), h0 = k * G + part * per;
          const int tid = omp_get_thread_num();
          auto lo_of = [&](int64_t pos) { return ls.window > 0 ? std::max<int64_t>(0, pos - ls.window + 1) : 0; };
          const int64_t lo_min = lo_of(start + t0), hi = start + t0 + nt - 1, span = hi - lo_min + 1;
          const Query a{nullptr, nullptr, hd, hi, lo_min, &src, start, k * hd};
          const float** ptr = keys_[tid].data();  // ptr[p - lo_min]: key or value row of position p
          float* dec = decoded_[tid].data();
          float* scores = gscores_[tid].data();  // token i, head g: scores + (i * per + g) * span, from its first key
          // ptr[p0 - lo_min .. p1 - lo_min) := rows p0..p1-1; stored ones decoded into dec.
          auto rows = [&](int64_t p0, int64_t p1, bool values) {
            fetch_rows(a, values ? cv : ck, p0, p1, values, ptr + (p0 - lo_min), dec);
          };
          int64_t cur[kTileTokens];  // each token's next key to score
          for (int64_t i = 0; i < nt; ++i) cur[i] = lo_of(start + t0 + i);
          if (!stored) rows(lo_min, hi + 1, false);
          for (int64_t b0 = lo_min; b0 <= hi; b0 += kBlock) {
            const int64_t e = std::min(b0 + kBlock, hi + 1);
            if (stored) rows(std::max(lo_min, b0 - 3), e, false);  // a token may still need the 3 rows before
            for (int64_t i = 0; i < nt; ++i) {
              const int64_t pos = start + t0 + i, lo = lo_of(pos);
              const int64_t end = pos < e ? pos + 1 : cur[i] + (e - cur[i]) / 4 * 4;
              if (end <= cur[i]) continue;
              fast_scores_group(row(q, (t0 + i) * heads + h0), q_stride, per, ptr + (cur[i] - lo_min), end - cur[i], hd,
                                scores + i * per * span + (cur[i] - lo), span);
              cur[i] = end;
            }
          }
          for (int64_t i = 0; i < nt; ++i) {
            const int64_t pos = start + t0 + i, nk = pos - lo_of(pos) + 1;
            for (int64_t g = 0; g < per; ++g) fast_softmax(scores + (i * per + g) * span, nk);
          }
          if (!stored) rows(lo_min, hi + 1, true);
          for (int64_t b0 = lo_min; b0 <= hi; b0 += kBlock) {
            const int64_t e = std::min(b0 + kBlock, hi + 1);
            if (stored) rows(b0, e, true);
            for (int64_t i = 0; i < nt; ++i) {
              const int64_t pos = start + t0 + i, lo = lo_of(pos), r0 = std::max(b0, lo), r1 = std::min(e, pos + 1);
              if (r1 <= r0) continue;
              fast_weighted_sum_group(scores + i * per * span + (r0 - lo), span, per, ptr + (r0 - lo_min), r1 - r0, hd,
                                      row(out, (t0 + i) * heads + h0), out_stride, /*accumulate=*/r0 > lo);
            }
          }
        }
  }

 private:
  // out[p - p0] := the key (values: value) row of position p of a's KV head, p in [p0, p1);
  // with a codec (a packed cache) committed rows are decoded into dec[(p - p0) * hd ..].
  static void fetch_rows(const Query& a, const KvCodec* codec, int64_t p0, int64_t p1, bool values, const float** out,
                         float* dec) {
    for (int64_t p = p0; p < p1; ++p) {
      if (!codec || p >= a.start) {
        out[p - p0] = values ? a.val(p) : a.key(p);
      } else {
        float* d = dec + (p - p0) * a.hd;
        codec->decode(values ? a.val_bytes(p) : a.key_bytes(p), d);
        out[p - p0] = d;
      }
    }
  }

  // One token whose KV heads are fewer than the threads (decode; e2b and the 12b's full
  // layers have one): split over the heads, every thread would read all of the layer's K
  // and V. Instead the keys are split for the scores (at multiples of 4 from the first key,
  // fast_scores_group's grouping), each head's softmax runs on one thread, and the value
  // columns are split for the weighted sum (in slabs of 64, the kernel's; each output's
  // chain of additions is over all rows in order). Every head gets the bits of the path
  // above, and each K and V row of a float cache is read once (a packed cache's V rows are
  // decoded whole by every thread that needs columns of them).
  void decode_split(const LayerSpec& ls, const LayerKv<float>& src, int64_t start, const View& q, int64_t q_stride,
                    int64_t heads, const View& out, int64_t out_stride, const KvCodec* ck, const KvCodec* cv) {
    const int64_t hd = q.cols, G = ls.n_heads / ls.n_kv_heads, n_kv = heads / G, pos = start;
    const int64_t lo = ls.window > 0 ? std::max<int64_t>(0, pos - ls.window + 1) : 0, nk = pos - lo + 1;
    float* sc = split_scores_.data();  // head h's score of key p at sc[h * nk + p - lo] (reserve_attention)
#pragma omp parallel
    {
      const int64_t T = omp_get_num_threads(), me = omp_get_thread_num();
      const float** ptr = keys_[me].data();
      float* dec = decoded_[me].data();
      // ptr[0 .. p1 - p0) := rows p0..p1-1 of KV head k (stored ones decoded into dec).
      auto rows = [&](int64_t k, int64_t p0, int64_t p1, bool values) {
        const Query a{nullptr, nullptr, hd, pos, lo, &src, start, k * hd};
        fetch_rows(a, values ? cv : ck, p0, p1, values, ptr, dec);
      };
      const int64_t quads = (nk + 3) / 4, a = lo + quads * me / T * 4;
      const int64_t b = me == T - 1 ? pos + 1 : std::min(pos + 1, lo + quads * (me + 1) / T * 4);
      for (int64_t k = 0; k < n_kv; ++k)
        for (int64_t b0 = a; b0 < b; b0 += kBlock) {
          const int64_t e = std::min(b0 + kBlock, b);
          rows(k, b0, e, false);
          fast_scores_group(row(q, k * G), q_stride, G, ptr, e - b0, hd, sc + k * G * nk + (b0 - lo), nk);
        }
#pragma omp barrier
      for (int64_t h = me; h < heads; h += T) fast_softmax(sc + h * nk, nk);
#pragma omp barrier
      const int64_t slabs = hd / 64;
      const int64_t c0 = slabs ? slabs * me / T * 64 : 0, c1 = me == T - 1 ? hd : slabs * (me + 1) / T * 64;
      if (c1 > c0)
        for (int64_t k = 0; k < n_kv; ++k)
          for (int64_t b0 = lo; b0 <= pos; b0 += kBlock) {
            const int64_t e = std::min(b0 + kBlock, pos + 1);
            rows(k, b0, e, true);
            for (int64_t i = 0; i < e - b0; ++i) ptr[i] += c0;
            fast_weighted_sum_group(sc + k * G * nk + (b0 - lo), nk, G, ptr, e - b0, c1 - c0, row(out, k * G) + c0,
                                    out_stride, /*accumulate=*/b0 > lo);
          }
    }
  }
  std::vector<float> split_scores_;  // decode_split: every head's scores of one token

 protected:
  void reserve_attention(int64_t keys) override {
    RefBackend<float>::reserve_attention(keys);  // grows the key capacity geometrically
    const int64_t cap = static_cast<int64_t>(scores_[0].size());
    int64_t group = 1, heads = 1;
    for (const auto& l : s_.layers) {
      group = std::max<int64_t>(group, l.n_heads / std::max<int64_t>(1, l.n_kv_heads));
      heads = std::max<int64_t>(heads, l.n_heads);
    }
    if (static_cast<int64_t>(split_scores_.size()) < heads * cap) split_scores_.resize(static_cast<size_t>(heads * cap));
    // A work item's scores: tq * G * (keys + tq - 1) floats, which tile_tokens keeps within
    // kScoreFloats, or G * keys where even one token exceeds it.
    const int64_t score_floats = std::max(group * cap, std::min(kScoreFloats, kTileTokens * group * (cap + kTileTokens)));
    keys_.resize(scores_.size());
    gscores_.resize(scores_.size());
    decoded_.resize(scores_.size());
    for (size_t i = 0; i < scores_.size(); ++i) {
      keys_[i].resize(static_cast<size_t>(std::max<int64_t>(static_cast<int64_t>(keys_[i].size()), cap + kTileTokens)));
      gscores_[i].resize(static_cast<size_t>(std::max<int64_t>(static_cast<int64_t>(gscores_[i].size()), score_floats)));
      decoded_[i].resize(static_cast<size_t>((kBlock + 3) * max_head_dim_));
    }
  }

 private:
  // Key and value rows per block: a block of K or V stays in L2 while every token and head
  // of a work item passes over it (e2b full layers: 128 rows x 512 x 4 B = 256 KiB).
  static constexpr int64_t kBlock = 128;
  static constexpr int64_t kTileTokens = 16;
  static constexpr int64_t kScoreFloats = int64_t{1} << 20;  // per-thread scores of a work item (4 MiB)
  // Tokens per work item: as many as keep its scores within kScoreFloats.
  static int64_t tile_tokens(int64_t G, int64_t keys) {
    return std::clamp<int64_t>(kScoreFloats / (G * (keys + kTileTokens)), 1, kTileTokens);
  }

  // fn(row, first column, columns) over x. A decode step has one row (the logits: 262144
  // columns), so it is cut into pieces of kPiece columns: multiples of every kernel's vector
  // width, so each element goes through the code it would go through in one call.
  template <class Fn>
  static void elementwise(const View& x, Fn fn) {
    constexpr int64_t kPiece = 4096;
    const int64_t pieces = (x.cols + kPiece - 1) / kPiece, items = x.rows * pieces;
#pragma omp parallel for schedule(static) if (x.numel() >= 2 * kPiece && items >= 2)
    for (int64_t i = 0; i < items; ++i) {
      const int64_t r = i / pieces, c0 = i % pieces * kPiece;
      fn(r, c0, std::min(kPiece, x.cols - c0));
    }
  }

  // The packed copy of a weight (kernels/fast.h: fast_pack), made at its first use. Every
  // step multiplies the same weights in the same order, so the entry after the last one
  // found is tried before the hash table (whose nodes a step's weight stream has evicted
  // from the caches: its lookups were 0.3% of a decode step's samples).
  struct Pack {
    const uint8_t* data;
    std::shared_ptr<const PackedMatrix> pack;
  };
  const PackedMatrix* packed(const TensorView& w) {
    if (next_pack_ < packs_.size() && packs_[next_pack_].data == w.data) return packs_[next_pack_++].pack.get();
    auto it = pack_index_.find(w.data);
    if (it == pack_index_.end()) {
      it = pack_index_.emplace(w.data, packs_.size()).first;
      packs_.push_back({w.data, fast_pack(w)});
    }
    next_pack_ = it->second + 1;
    return packs_[it->second].pack.get();
  }

  std::vector<std::vector<const float*>> keys_;  // per thread: a work item's key or value rows
  std::vector<std::vector<float>> gscores_;      // per thread: a work item's scores, [tokens][heads][keys]
  std::vector<std::vector<float>> decoded_;      // per thread: kBlock + 3 decoded rows of a packed cache
  std::vector<Pack> packs_;                                     // in order of first use
  std::unordered_map<const uint8_t*, size_t> pack_index_;       // data -> its entry in packs_
  size_t next_pack_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_fast_backend(const Model& m, const BackendOptions& opt) {
  return std::make_unique<FastBackend>(m, opt);
}

}  // namespace g4
