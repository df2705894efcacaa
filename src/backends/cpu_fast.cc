// The CPU fast backend: the reference float backend with the hot ops replaced by the
// SIMD kernels of kernels/fast.h (8-bit activations against quantized weights,
// vectorized attention and GELU). Everything else is the float reference. Its KV cache
// is packed (kv_cache.h): K and V are stored as the cache type's bytes and decoded, a
// block of keys at a time, into per-thread scratch while attention iterates them.
#include <omp.h>

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
    fast_matmul(w, row(x, 0), x.rows, x.cols, y.cols, row(y, 0), row0);
  }
  void gelu_mul(const View& g, const View& u) override {
    if (g.stride == g.cols && u.stride == u.cols) return fast_gelu_tanh_mul(row(g, 0), row(u, 0), g.numel());
    for (int64_t r = 0; r < g.rows; ++r) fast_gelu_tanh_mul(row(g, r), row(u, r), g.cols);
  }
  void attention(int seq, int layer, const View& q, int64_t heads, const View& out) override {
    if (kv(seq).layers[s_.layers[layer].kv_source].packed()) return packed_attention(seq, layer, q, heads, out);
    for_each_query(seq, layer, q, heads, out, [&](const Query& a) {
      const int tid = omp_get_thread_num();
      const float** keys = keys_[tid].data();
      const float** vals = vals_[tid].data();
      float* scores = scores_[tid].data();
      const int64_t nk = a.pos - a.lo + 1;
      for (int64_t kp = a.lo; kp <= a.pos; ++kp) {
        keys[kp - a.lo] = a.key(kp);
        vals[kp - a.lo] = a.val(kp);
      }
      fast_scores(a.q, keys, nk, a.hd, scores);
      fast_softmax(scores, nk);
      fast_weighted_sum(scores, vals, nk, a.hd, a.out);
    });
  }

 protected:
  void reserve_attention(int64_t keys) override {
    RefBackend<float>::reserve_attention(keys);
    keys_.resize(scores_.size());
    vals_.resize(scores_.size());
    decoded_.resize(scores_.size());
    for (size_t i = 0; i < scores_.size(); ++i) {
      keys_[i].resize(scores_[i].size());
      vals_[i].resize(scores_[i].size());
      decoded_[i].resize(static_cast<size_t>((kDecodeBlock + 1) * max_head_dim_));
    }
  }

 private:
  // Keys decoded per block (a multiple of 4, fast_scores' group, so that the scores equal
  // one call over all keys). Up to one block the result equals the float cache bit for
  // bit; beyond it the weighted V sums of the blocks are added (float reordering only).
  static constexpr int64_t kDecodeBlock = 1024;

  // The fast attention over a packed cache: scores of a block of keys, decoded into the
  // thread's scratch; softmax over all; the weighted sum of V, decoded a block at a time.
  void packed_attention(int seq, int layer, const View& q, int64_t heads, const View& out) {
    const auto& [ck, cv] = codecs_.at(s_.layers[s_.layers[layer].kv_source].head_dim);
    for_each_query(seq, layer, q, heads, out, [&](const Query& a) {
      const int tid = omp_get_thread_num();
      const float** ptr = keys_[tid].data();
      float* scores = scores_[tid].data();
      float* dec = decoded_[tid].data();
      float* part = dec + kDecodeBlock * a.hd;  // one block's weighted V sum
      const int64_t nk = a.pos - a.lo + 1;
      // ptr[0..nb) := rows of keys (or values) b0..b0+nb-1, stored ones decoded into dec.
      auto rows = [&](int64_t b0, int64_t nb, bool values) {
        for (int64_t i = 0; i < nb; ++i) {
          const int64_t p = a.lo + b0 + i;
          if (p >= a.start) {
            ptr[i] = values ? a.val(p) : a.key(p);
          } else {
            float* d = dec + i * a.hd;
            if (values) cv.decode(a.val_bytes(p), d);
            else ck.decode(a.key_bytes(p), d);
            ptr[i] = d;
          }
        }
      };
      for (int64_t b0 = 0; b0 < nk; b0 += kDecodeBlock) {
        const int64_t nb = std::min(kDecodeBlock, nk - b0);
        rows(b0, nb, false);
        fast_scores(a.q, ptr, nb, a.hd, scores + b0);
      }
      fast_softmax(scores, nk);
      for (int64_t b0 = 0; b0 < nk; b0 += kDecodeBlock) {
        const int64_t nb = std::min(kDecodeBlock, nk - b0);
        rows(b0, nb, true);
        fast_weighted_sum(scores + b0, ptr, nb, a.hd, b0 ? part : a.out);
        if (b0)
          for (int64_t d = 0; d < a.hd; ++d) a.out[d] += part[d];
      }
    });
  }

  std::vector<std::vector<const float*>> keys_, vals_;
  std::vector<std::vector<float>> decoded_;  // per thread: kDecodeBlock rows + one partial sum
};

}  // namespace

std::unique_ptr<Backend> make_cpu_fast_backend(const Model& m, const BackendOptions& opt) {
  return std::make_unique<FastBackend>(m, opt);
}

}  // namespace g4
