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
  void gelu_mul(const View& g, const View& u) override {
    if (g.stride == g.cols && u.stride == u.cols) return fast_gelu_tanh_mul(row(g, 0), row(u, 0), g.numel());
    for (int64_t r = 0; r < g.rows; ++r) fast_gelu_tanh_mul(row(g, r), row(u, r), g.cols);
  }
  void softcap(const View& x, double c) override {
    for (int64_t r = 0; r < x.rows; ++r) fast_softcap(row(x, r), x.cols, static_cast<float>(c));
  }

  // Grouped-query attention: the query heads that share a KV head run together, so each
  // key and value row is read (and, in a packed cache, decoded) once per group, not once
  // per head (e2b: 8 heads on one KV head). Each head's numbers are those of a
  // single-head pass. A packed cache is decoded in blocks of keys: up to one block the
  // result equals the float cache's bit for bit; beyond it the blocks' weighted V sums are
  // added (float reordering only).
  void attention(int seq, int layer, const View& q, int64_t heads, const View& out) override {
    const LayerSpec& ls = s_.layers[layer];
    const KvCache<float>& c = kv(seq);
    const LayerKv<float>& src = c.layers[ls.kv_source];
    const int64_t hd = q.cols, G = ls.n_heads / ls.n_kv_heads, n = q.rows / heads, start = c.n_past;
    const int64_t n_kv = heads / G;
    reserve_attention(c.max_keys(ls, start + n - 1));
    const bool stored = src.packed();
    const KvCodec* ck = stored ? &codecs_.at(s_.layers[ls.kv_source].head_dim).first : nullptr;
    const KvCodec* cv = stored ? &codecs_.at(s_.layers[ls.kv_source].head_dim).second : nullptr;
    // A group is split into parts only as far as needed to give every thread work
    // (decode: one token, often one KV head).
    const int64_t threads = omp_get_max_threads();
    int64_t parts = 1;
    while (n * n_kv * parts < threads && G % (2 * parts) == 0) parts *= 2;
    const int64_t per = G / parts, q_stride = q.rows > 1 ? q.stride : hd, out_stride = out.rows > 1 ? out.stride : hd;
#pragma omp parallel for collapse(3) schedule(static)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t k = 0; k < n_kv; ++k)
        for (int64_t part = 0; part < parts; ++part) {
          const int64_t pos = start + t, r = t * heads + k * G + part * per;
          const int64_t lo = ls.window > 0 ? std::max<int64_t>(0, pos - ls.window + 1) : 0;
          const Query a{row(q, r), row(out, r), hd, pos, lo, &src, start, k * hd};
          const int tid = omp_get_thread_num();
          const float** ptr = keys_[tid].data();
          float* scores = gscores_[tid].data();
          float* dec = decoded_[tid].data();
          float* part_sum = dec + kDecodeBlock * hd;  // a later block's weighted V sums, per head
          const int64_t nk = a.pos - a.lo + 1, block = stored ? kDecodeBlock : nk;
          // ptr[0..nb) := rows of keys (or values) b0..b0+nb-1; stored ones decoded into dec.
          auto rows = [&](int64_t b0, int64_t nb, bool values) {
            for (int64_t i = 0; i < nb; ++i) {
              const int64_t p = a.lo + b0 + i;
              if (!stored || p >= a.start) {
                ptr[i] = values ? a.val(p) : a.key(p);
              } else {
                float* d = dec + i * hd;
                if (values) cv->decode(a.val_bytes(p), d);
                else ck->decode(a.key_bytes(p), d);
                ptr[i] = d;
              }
            }
          };
          for (int64_t b0 = 0; b0 < nk; b0 += block) {
            const int64_t nb = std::min(block, nk - b0);
            rows(b0, nb, false);
            fast_scores_group(a.q, q_stride, per, ptr, nb, hd, scores + b0, nk);
          }
          for (int64_t g = 0; g < per; ++g) fast_softmax(scores + g * nk, nk);
          for (int64_t b0 = 0; b0 < nk; b0 += block) {
            const int64_t nb = std::min(block, nk - b0);
            rows(b0, nb, true);
            if (b0 == 0) {
              fast_weighted_sum_group(scores, nk, per, ptr, nb, hd, a.out, out_stride);
              continue;
            }
            fast_weighted_sum_group(scores + b0, nk, per, ptr, nb, hd, part_sum, hd);
            for (int64_t g = 0; g < per; ++g)
              for (int64_t d = 0; d < hd; ++d) a.out[g * out_stride + d] += part_sum[g * hd + d];
          }
        }
  }

 protected:
  void reserve_attention(int64_t keys) override {
    RefBackend<float>::reserve_attention(keys);
    keys_.resize(scores_.size());
    gscores_.resize(scores_.size());
    decoded_.resize(scores_.size());
    int64_t group = 1;
    for (const auto& l : s_.layers) group = std::max<int64_t>(group, l.n_heads / std::max<int64_t>(1, l.n_kv_heads));
    for (size_t i = 0; i < scores_.size(); ++i) {
      keys_[i].resize(scores_[i].size());
      gscores_[i].resize(scores_[i].size() * static_cast<size_t>(group));
      decoded_[i].resize(static_cast<size_t>((kDecodeBlock + group) * max_head_dim_));
    }
  }

 private:
  // Keys decoded per block of a packed cache (a multiple of 4, fast_scores' group, so that
  // the scores equal one call over all keys).
  static constexpr int64_t kDecodeBlock = 1024;

  // The packed copy of a weight (kernels/fast.h: fast_pack), made at its first use.
  const PackedMatrix* packed(const TensorView& w) {
    auto it = packs_.find(w.data);
    if (it == packs_.end()) it = packs_.emplace(w.data, fast_pack(w)).first;
    return it->second.get();
  }

  std::vector<std::vector<const float*>> keys_;  // per thread: key or value rows of a block
  std::vector<std::vector<float>> gscores_;      // per thread: a group's scores, [heads of the group][keys]
  std::vector<std::vector<float>> decoded_;      // per thread: kDecodeBlock decoded rows + a group's partial sums
  std::unordered_map<const uint8_t*, std::shared_ptr<const PackedMatrix>> packs_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_fast_backend(const Model& m, const BackendOptions& opt) {
  return std::make_unique<FastBackend>(m, opt);
}

}  // namespace g4
