// The CPU fast backend: the reference float backend with the hot ops replaced by the
// SIMD kernels of kernels/fast.h (8-bit activations against quantized weights,
// vectorized attention and GELU). Everything else is the float reference.
#include <omp.h>

#include <unordered_map>

#include "backends/cpu_ref.h"
#include "kernels/fast.h"

namespace g4 {
namespace {

class FastBackend final : public RefBackend<float> {
 public:
  FastBackend(const Model& m, const BackendOptions& opt) : RefBackend<float>(m, opt) {
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
  void attention(int seq, int layer, const View& q, int64_t heads, const View& out) override {
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
    for (size_t i = 0; i < scores_.size(); ++i) {
      keys_[i].resize(scores_[i].size());
      vals_[i].resize(scores_[i].size());
    }
  }

 private:
  // The packed copy of a weight (kernels/fast.h: fast_pack), made at its first use.
  const PackedMatrix* packed(const TensorView& w) {
    auto it = packs_.find(w.data);
    if (it == packs_.end()) it = packs_.emplace(w.data, fast_pack(w)).first;
    return it->second.get();
  }

  std::vector<std::vector<const float*>> keys_, vals_;
  std::unordered_map<const uint8_t*, std::shared_ptr<const PackedMatrix>> packs_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_fast_backend(const Model& m, const BackendOptions& opt) {
  return std::make_unique<FastBackend>(m, opt);
}

}  // namespace g4
