// The CPU reference backend: every op in plain loops over T (double = the float64
// reference that equals HF transformers; float = the same math in float32). Weights
// stay in the mmap and are dequantized one row at a time (kernels/ops.h). It is the
// obviously-correct truth every other backend is tested against, and the base of the
// CPU fast backend, which overrides the hot ops.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <unordered_map>
#include <vector>

#include "backends/backend.h"
#include "backends/emulation.h"
#include "backends/kv_cache.h"
#include "backends/routing.h"
#include "kernels/ops.h"
#include "util/error.h"

namespace g4 {

template <typename T>
class RefBackend : public Backend {
 public:
  // pack_kv: store the KV cache as the cache type's bytes (kv_cache.h; float backends
  // whose attention decodes them, i.e. the fast backend).
  RefBackend(const Model& m, const BackendOptions& opt, bool pack_kv = false)
      : m_(m), s_(m.spec), opt_(opt), f32_islands_(opt.hf_float32_islands && std::is_same_v<T, double>) {
    if (pack_kv && std::is_same_v<T, float> && (opt.cache_type_k != KvType::F32 || opt.cache_type_v != KvType::F32))
      packed_ = std::pair{opt.cache_type_k, opt.cache_type_v};
    // Small tensors (norm weights, scales) converted once to the compute type.
    for (const auto& [name, t] : m.by_hf_name)
      if (t.shape.size() == 1) consts_.emplace(&t, ops::to_vector<T>(t));
    for (const auto& l : s_.layers) {
      inv_freq_.push_back(rope_inv_freq(l));
      if (l.owns_kv && !codecs_.count(l.head_dim))
        codecs_.emplace(l.head_dim, std::pair{KvCodec(opt.cache_type_k, l.head_dim), KvCodec(opt.cache_type_v, l.head_dim)});
    }
    seqs_.push_back(std::make_unique<KvCache<T>>(s_, opt.n_batch, opt.n_ctx, packed_));
    for (const auto& l : s_.layers) max_head_dim_ = std::max<int64_t>(max_head_dim_, l.head_dim);
    const int64_t E = s_.n_experts;
    route_idx_.resize(static_cast<size_t>(E));
    reserve_attention(opt.n_ctx ? opt.n_ctx : std::min<int64_t>(opt.n_batch, s_.max_ctx));
  }

  std::string name() const override { return std::is_same_v<T, double> ? "cpu-f64" : "cpu-f32"; }

  Buf alloc(int64_t n) override {
    bufs_.emplace_back(static_cast<size_t>(n), T(0));
    return Buf{static_cast<int>(bufs_.size() - 1)};
  }
  void read(const View& src, double* dst) override { read_as(src, dst); }
  void read(const View& src, float* dst) override { read_as(src, dst); }
  bool all_finite(const View& x) override {
    for (int64_t r = 0; r < x.rows; ++r) {
      const T* p = row(x, r);
      for (int64_t j = 0; j < x.cols; ++j)
        if (!std::isfinite(p[j])) return false;
    }
    return true;
  }

  void embed(const TensorView& table, std::span<const int32_t> tokens, double scale, const View& out) override {
    const T sc = static_cast<T>(scale);
    for (size_t t = 0; t < tokens.size(); ++t) {
      T* o = row(out, static_cast<int64_t>(t));
      ops::weight_row(table, tokens[t], out.cols, o);
      for (int64_t i = 0; i < out.cols; ++i) o[i] *= sc;
    }
  }
  void rms_norm(const View& x, const TensorView* w, double eps, const View& out) override {
    const T* wv = w ? constant(*w) : nullptr;
    // Rows are independent: threads change no bits (a prefill step has thousands of rows).
#pragma omp parallel for schedule(static) if (x.rows >= 32)
    for (int64_t r = 0; r < x.rows; ++r) {
      if constexpr (std::is_same_v<T, double>) {
        if (f32_islands_) {
          ops::rms_norm_hf_f32(row(x, r), x.cols, wv, eps, row(out, r));
          continue;
        }
      }
      ops::rms_norm(row(x, r), x.cols, wv, eps, row(out, r));
    }
  }
  void matmul(const TensorView& w, const View& x, const View& y, int64_t row0) override {
    contiguous(x, "matmul input");
    contiguous(y, "matmul output");
    ops::matmul(w, row(x, 0), x.rows, x.cols, y.cols, row(y, 0), row0);
  }
  // NEOX (rotate-half) RoPE. Angles are float32 products as in HF; cos/sin are rounded
  // to float32, then widened.
  // The angles of a position are computed once for all its heads (the rows of one token).
  void rope(int layer, const View& x, int64_t heads, int64_t pos0) override {
    const std::vector<float>& f = inv_freq_[layer];
    const int64_t half = x.cols / 2;
    if (half > kMaxRopeHalf) fail("rope: head dimension {} is above {}", x.cols, 2 * kMaxRopeHalf);
#pragma omp parallel for schedule(static) if (x.rows >= 64)
    for (int64_t t = 0; t < (x.rows + heads - 1) / heads; ++t) {
      const float pos = static_cast<float>(pos0 + t);
      T cs[kMaxRopeHalf], sn[kMaxRopeHalf];
      for (int64_t j = 0; j < half; ++j) {
        const float angle = f[j] * pos;
        cs[j] = static_cast<float>(std::cos(static_cast<double>(angle)));
        sn[j] = static_cast<float>(std::sin(static_cast<double>(angle)));
      }
      for (int64_t r = t * heads; r < std::min(x.rows, (t + 1) * heads); ++r) {
        T* v = row(x, r);
        for (int64_t j = 0; j < half; ++j) {
          if (f[j] == 0.0f) continue;  // identity pair
          const T a = v[j], b = v[j + half];
          v[j] = a * cs[j] - b * sn[j];
          v[j + half] = b * cs[j] + a * sn[j];
        }
      }
    }
  }
  void gelu_mul(const View& g, const View& u) override {
    for (int64_t r = 0; r < g.rows; ++r) {
      T* gp = row(g, r);
      const T* up = row(u, r);
      if (opt_.rounding.gelu_f16)
        for (int64_t j = 0; j < g.cols; ++j) gp[j] = static_cast<T>(emu::gelu_f16_table(static_cast<float>(gp[j]))) * up[j];
      else
        for (int64_t j = 0; j < g.cols; ++j) gp[j] = ops::gelu_tanh(gp[j]) * up[j];
    }
  }
  void scale(const View& x, double s) override {
    const T sc = static_cast<T>(s);
    for (int64_t r = 0; r < x.rows; ++r) {
      T* p = row(x, r);
      for (int64_t j = 0; j < x.cols; ++j) p[j] *= sc;
    }
  }
  void mul(const View& x, const TensorView& w, double s) override {
    const T sc = static_cast<T>(s);
    const T* wv = constant(w);
    for (int64_t r = 0; r < x.rows; ++r) {
      T* p = row(x, r);
      for (int64_t j = 0; j < x.cols; ++j) p[j] = p[j] * wv[j] * sc;
    }
  }
  void add(const View& dst, const View& src) override {
    for (int64_t r = 0; r < dst.rows; ++r) {
      T* d = row(dst, r);
      const T* p = row(src, r);
      for (int64_t j = 0; j < dst.cols; ++j) d[j] += p[j];
    }
  }
  void softcap(const View& x, double c) override {
    const T cc = static_cast<T>(c);
    for (int64_t r = 0; r < x.rows; ++r) {
      T* p = row(x, r);
      for (int64_t j = 0; j < x.cols; ++j) p[j] = cc * std::tanh(p[j] / cc);
    }
  }

  int kv_seq_add(int64_t max_step) override {
    auto kv = std::make_unique<KvCache<T>>(s_, max_step, opt_.n_ctx, packed_);
    for (size_t i = 0; i < seqs_.size(); ++i)
      if (!seqs_[i]) {
        seqs_[i] = std::move(kv);
        return static_cast<int>(i);
      }
    seqs_.push_back(std::move(kv));
    return static_cast<int>(seqs_.size() - 1);
  }
  void kv_seq_free(int seq) override {
    kv(seq);  // checks the id
    seqs_[static_cast<size_t>(seq)].reset();
  }
  void kv_write(int seq, int layer, const View& k, const View& v) override {
    KvCache<T>& c = kv(seq);
    LayerKv<T>& kv = c.layers[layer];
    if (k.rows > c.max_step)
      fail("kv_write: {} positions of sequence {} in one step, more than its step size {}", k.rows, seq, c.max_step);
    const int64_t hd = s_.layers[layer].head_dim;
    const auto& [ck, cv] = codecs_.at(hd);
    for (int64_t t = 0; t < k.rows; ++t) {
      T* pk = &kv.pending_k[static_cast<size_t>(t * kv.width)];
      T* pv = &kv.pending_v[static_cast<size_t>(t * kv.width)];
      if constexpr (std::is_same_v<T, float>) {
        if (kv.packed()) {  // the stored bytes, and the values they decode to for this step's queries
          for (int64_t h = 0; h < kv.width / hd; ++h) {
            uint8_t* bk = &kv.pending_kb[static_cast<size_t>(t * kv.k_row_bytes + h * kv.k_head_bytes)];
            uint8_t* bv = &kv.pending_vb[static_cast<size_t>(t * kv.v_row_bytes + h * kv.v_head_bytes)];
            ck.encode(row(k, t) + h * hd, bk);
            cv.encode(row(v, t) + h * hd, bv);
            ck.decode(bk, pk + h * hd);
            cv.decode(bv, pv + h * hd);
          }
          continue;
        }
      }
      std::copy_n(row(k, t), kv.width, pk);
      std::copy_n(row(v, t), kv.width, pv);
      for (int64_t h = 0; h < kv.width; h += hd) {  // what the cache type stores of each head row
        ck.roundtrip(pk + h);
        cv.roundtrip(pv + h);
      }
    }
    c.n_pending = k.rows;
  }
  void attention(int seq, int layer, const View& q, int64_t heads, const View& out) override {
    const EngineRounding& er = opt_.rounding;
    for_each_query(seq, layer, q, heads, out, [&](const Query& a) {
      const int tid = omp_get_thread_num();
      T* scores = scores_[tid].data();
      const T* qv = a.q;
      if (er.q_f16) {  // emulation: Q in the f16 cache's dot type
        T* qr = qround_[tid].data();
        for (int64_t d = 0; d < a.hd; ++d) qr[d] = emu::f16(static_cast<float>(a.q[d]));
        qv = qr;
      }
      if (er.attn == EngineRounding::Attn::F16Flash) return emu::flash_attention_f16(a, qv, a.out);
      std::fill(a.out, a.out + a.hd, T(0));
      for (int64_t kp = a.lo; kp <= a.pos; ++kp) {
        const T* kh = a.key(kp);
        T s = 0;
        for (int64_t d = 0; d < a.hd; ++d) s += qv[d] * kh[d];
        scores[kp - a.lo] = s;
      }
      ops::softmax(scores, a.pos - a.lo + 1, f32_islands_);
      if (er.attn == EngineRounding::Attn::F16Probs)  // emulation: P converted for the f16 V matmul
        for (int64_t kp = a.lo; kp <= a.pos; ++kp) scores[kp - a.lo] = emu::f16(static_cast<float>(scores[kp - a.lo]));
      for (int64_t kp = a.lo; kp <= a.pos; ++kp) {
        const T p = scores[kp - a.lo];
        const T* vh = a.val(kp);
        for (int64_t d = 0; d < a.hd; ++d) a.out[d] += p * vh[d];
      }
    });
  }
  void kv_commit(int seq, int64_t n) override { kv(seq).commit(n); }
  int64_t n_past(int seq) const override { return kv(seq).n_past; }
  bool kv_truncate(int seq, int64_t n) override { return kv(seq).truncate(n); }
  void kv_reset(int seq) override { kv(seq).reset(); }
  size_t kv_bytes() const override {
    size_t b = 0;
    for (const auto& c : seqs_)
      if (c) b += c->bytes();
    return b;
  }

  void moe_route(const View& logits, int64_t k, const TensorView& per_expert_scale, int32_t* ids,
                 double* weights, const int32_t* forced) override {
    const int64_t E = logits.cols;
    const T* pes = constant(per_expert_scale);
    for (int64_t t = 0; t < logits.rows; ++t) {
      T* z = row(logits, t);
      ops::softmax(z, E, false);  // HF: in the activation dtype
      select_experts(z, E, k, t, forced, ids);
      T wsum = 0;
      for (int64_t j = 0; j < k; ++j) wsum += z[ids[t * k + j]];
      for (int64_t j = 0; j < k; ++j) {
        const int32_t e = ids[t * k + j];
        weights[t * k + j] = static_cast<double>(z[e] / wsum * pes[e]);
      }
    }
  }
  void gather_rows(const View& src, std::span<const int32_t> rows, const View& dst) override {
    for (size_t r = 0; r < rows.size(); ++r) std::copy_n(row(src, rows[r]), src.cols, row(dst, static_cast<int64_t>(r)));
  }
  void scatter_rows(const View& src, std::span<const int32_t> rows, const View& dst) override {
    for (size_t r = 0; r < rows.size(); ++r) std::copy_n(row(src, static_cast<int64_t>(r)), src.cols, row(dst, rows[r]));
  }
  void moe_combine(const View& eo, const double* w, int64_t K, const View& out) override {
    for (int64_t t = 0; t < out.rows; ++t) {
      T* o = row(out, t);
      std::fill(o, o + out.cols, T(0));
      for (int64_t k = 0; k < K; ++k) {
        const T wk = static_cast<T>(w[t * K + k]);
        const T* e = row(eo, t * K + k);
        for (int64_t j = 0; j < out.cols; ++j) o[j] += wk * e[j];
      }
    }
  }

 protected:
  void select_experts(const T* z, int64_t E, int64_t k, int64_t t, const int32_t* forced, int32_t* ids) {
    routing::select_experts(z, E, k, t, forced, route_idx_, ids);
  }
  // One attention query: head row q of a token at absolute position pos, which sees the
  // keys lo..pos of its KV head (key(p)/val(p): from the cache or the current step).
  struct Query {
    const T* q;
    T* out;
    int64_t hd, pos, lo;
    const LayerKv<T>* src;
    int64_t start, head_off;
    const T* key(int64_t p) const { return (p < start ? src->k_at(p) : &src->pending_k[(p - start) * src->width]) + head_off; }
    const T* val(int64_t p) const { return (p < start ? src->v_at(p) : &src->pending_v[(p - start) * src->width]) + head_off; }
    // Packed caches: the stored bytes of a committed position (p < start); the current
    // step's rows (p >= start) come decoded from key()/val().
    const uint8_t* key_bytes(int64_t p) const { return src->kb_at(p) + head_off / hd * src->k_head_bytes; }
    const uint8_t* val_bytes(int64_t p) const { return src->vb_at(p) + head_off / hd * src->v_head_bytes; }
  };
  // Calls f(Query) for every (token, head) of q ([tokens*heads, hd]) in parallel, with the
  // per-thread scratch reserved for the longest key range.
  template <typename F>
  void for_each_query(int seq, int layer, const View& q, int64_t heads, const View& out, F f) {
    const LayerSpec& ls = s_.layers[layer];
    const KvCache<T>& c = kv(seq);
    const LayerKv<T>& src = c.layers[ls.kv_source];
    const int64_t hd = q.cols, group = ls.n_heads / ls.n_kv_heads, n = q.rows / heads, start = c.n_past;
    reserve_attention(c.max_keys(ls, start + n - 1));
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t hh = 0; hh < heads; ++hh) {
        const int64_t pos = start + t;
        const int64_t lo = ls.window > 0 ? std::max<int64_t>(0, pos - ls.window + 1) : 0;
        f(Query{row(q, t * heads + hh), row(out, t * heads + hh), hd, pos, lo, &src, start, (hh / group) * hd});
      }
  }
  KvCache<T>& kv(int seq) const {
    if (seq < 0 || static_cast<size_t>(seq) >= seqs_.size() || !seqs_[static_cast<size_t>(seq)])
      fail("KV-cache sequence {} does not exist (Session::add_sequence makes one)", seq);
    return *seqs_[static_cast<size_t>(seq)];
  }
  T* row(const View& v, int64_t r) { return bufs_[v.buf.id].data() + v.offset + r * v.stride; }
  const T* constant(const TensorView& t) const {
    auto it = consts_.find(&t);
    if (it == consts_.end()) fail("{}: not a small constant tensor of this model", t.name);
    return it->second.data();
  }
  static void contiguous(const View& v, const char* what) {
    if (v.stride != v.cols && v.rows > 1) fail("internal: {} view is strided ({} != {})", what, v.stride, v.cols);
  }
  // Per-thread attention scratch for `keys` keys (grows only when the context does).
  virtual void reserve_attention(int64_t keys) {
    const size_t threads = static_cast<size_t>(std::max(1, omp_get_max_threads()));
    if (scores_.size() < threads) scores_.resize(threads);
    if (qround_.size() < threads) qround_.resize(threads);
    for (auto& q : qround_) q.resize(static_cast<size_t>(max_head_dim_));
    for (auto& s : scores_)
      if (static_cast<int64_t>(s.size()) < keys) s.resize(static_cast<size_t>(std::max(keys, 2 * static_cast<int64_t>(s.size()))));
  }
  template <typename U>
  void read_as(const View& src, U* dst) {
    for (int64_t r = 0; r < src.rows; ++r) {
      const T* p = row(src, r);
      for (int64_t j = 0; j < src.cols; ++j) dst[r * src.cols + j] = static_cast<U>(p[j]);
    }
  }

  const Model& m_;
  const ModelSpec& s_;
  BackendOptions opt_;
  std::vector<std::unique_ptr<KvCache<T>>> seqs_;  // by sequence id; null = free
  bool f32_islands_;
  std::vector<std::vector<T>> bufs_;
  std::unordered_map<const TensorView*, std::vector<T>> consts_;
  std::vector<std::vector<float>> inv_freq_;
  std::map<int64_t, std::pair<KvCodec, KvCodec>> codecs_;  // by head_dim: K, V
  std::optional<std::pair<KvType, KvType>> packed_;        // K, V types of packed caches
  std::vector<char> route_idx_;
  std::vector<std::vector<T>> scores_;
  std::vector<std::vector<T>> qround_;  // per-thread Q row rounded to f16 (emulation)
  int64_t max_head_dim_ = 0;
  static constexpr int64_t kMaxRopeHalf = 512;  // head dimensions up to 1024 (Gemma 4: 256 and 512)
};

}  // namespace g4
