#include "model/gemma4.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/fast.h"
#include "kernels/ops.h"
#include "runtime/kv_cache.h"
#include "util/error.h"
#include "util/half.h"

namespace g4 {

Precision parse_precision(const std::string& s) {
  if (s == "f64") return Precision::F64;
  if (s == "f32") return Precision::F32;
  if (s == "fast") return Precision::Fast;
  fail("unknown precision '{}' (use f64, f32 or fast)", s);
}

const char* precision_name(Precision p) { return p == Precision::F64 ? "f64" : p == Precision::F32 ? "f32" : "fast"; }

namespace {

// Small per-layer tensors converted once to the compute type.
template <typename T>
struct LayerConsts {
  std::vector<T> attn_norm, q_norm, k_norm, post_attn_norm, ffn_norm, post_ffn_norm, ple_post_norm;
  std::vector<T> router_scale, per_expert_scale, pre_ffn_norm_2, post_ffn_norm_1, post_ffn_norm_2;
  T layer_scalar = 1;
  std::vector<float> inv_freq;  // RoPE inverse frequencies, float32 as HF computes them
};

template <typename T>
std::vector<T> vec_or_empty(const TensorView* t) {
  return t ? ops::to_vector<T>(*t) : std::vector<T>{};
}

// HF: inv_freq = 1 / base^(arange(0, 2*pairs, 2) / d), all in float32; pairs past
// `rope_pairs` (proportional RoPE) have inv_freq 0, i.e. they are not rotated.
std::vector<float> rope_inv_freq(const LayerSpec& l) {
  std::vector<float> f(static_cast<size_t>(l.head_dim / 2), 0.0f);
  const float base = static_cast<float>(l.rope_theta);
  for (int j = 0; j < l.rope_pairs; ++j) {
    const float expo = static_cast<float>(2 * j) / static_cast<float>(l.rope_dim);
    f[j] = 1.0f / std::pow(base, expo);
  }
  return f;
}

template <typename T>
class Gemma4 {
 public:
  Gemma4(const Model& m, const ForwardOptions& opt)
      : m_(m), s_(m.spec), w_(m.w), cache_(m.spec), f32_islands_(opt.hf_float32_islands && std::is_same_v<T, double>),
        fast_(opt.precision == Precision::Fast && std::is_same_v<T, float>) {
    const double sqrt_h = std::sqrt(static_cast<double>(s_.hidden));
    const double sqrt_p = std::sqrt(static_cast<double>(s_.ple_dim));
    embed_scale_ = opt.bf16_embed_scale ? bf16_to_f32(f32_to_bf16(static_cast<float>(sqrt_h))) : static_cast<T>(sqrt_h);
    ple_embed_scale_ = opt.bf16_embed_scale ? bf16_to_f32(f32_to_bf16(static_cast<float>(sqrt_p))) : static_cast<T>(sqrt_p);
    final_norm_ = ops::to_vector<T>(*w_.final_norm);
    if (s_.ple_dim > 0) ple_proj_norm_ = ops::to_vector<T>(*w_.ple_proj_norm);
    for (int i = 0; i < s_.n_layers; ++i) {
      const auto& lw = w_.layers[i];
      LayerConsts<T> c;
      c.attn_norm = vec_or_empty<T>(lw.attn_norm);
      c.q_norm = vec_or_empty<T>(lw.q_norm);
      c.k_norm = vec_or_empty<T>(lw.k_norm);
      c.post_attn_norm = vec_or_empty<T>(lw.post_attn_norm);
      c.ffn_norm = vec_or_empty<T>(lw.ffn_norm);
      c.post_ffn_norm = vec_or_empty<T>(lw.post_ffn_norm);
      c.ple_post_norm = vec_or_empty<T>(lw.ple_post_norm);
      c.router_scale = vec_or_empty<T>(lw.router_scale);
      c.per_expert_scale = vec_or_empty<T>(lw.per_expert_scale);
      c.pre_ffn_norm_2 = vec_or_empty<T>(lw.pre_ffn_norm_2);
      c.post_ffn_norm_1 = vec_or_empty<T>(lw.post_ffn_norm_1);
      c.post_ffn_norm_2 = vec_or_empty<T>(lw.post_ffn_norm_2);
      c.layer_scalar = ops::to_vector<T>(*lw.layer_scalar)[0];
      c.inv_freq = rope_inv_freq(s_.layers[i]);
      consts_.push_back(std::move(c));
    }
  }

  KvCache<T>& cache() { return cache_; }

  // Every projection of the model goes through here.
  void mm(const TensorView& w, const T* x, int64_t n_tok, int64_t n_in, int64_t n_out, T* y, int64_t row0 = 0) const {
    if constexpr (std::is_same_v<T, float>) {
      if (fast_) return fast_matmul(w, x, n_tok, n_in, n_out, y, row0);
    }
    ops::matmul(w, x, n_tok, n_in, n_out, y, row0);
  }

  // g = gelu_tanh(g) * u, the gate of every MLP and of the PLE.
  void gelu_mul(T* g, const T* u, int64_t n) const {
    if constexpr (std::is_same_v<T, float>) {
      if (fast_) return fast_gelu_tanh_mul(g, u, n);
    }
    for (int64_t j = 0; j < n; ++j) g[j] = ops::gelu_tanh(g[j]) * u[j];
  }

  // Every RMSNorm of the model goes through here (w = nullptr: weightless).
  void norm(const T* x, int64_t n, const T* w, T* out) const {
    if constexpr (std::is_same_v<T, double>) {
      if (f32_islands_) return ops::rms_norm_hf_f32(x, n, w, s_.rms_eps, out);
    }
    ops::rms_norm(x, n, w, s_.rms_eps, out);
  }

  EvalOutput forward(std::span<const int32_t> tokens, const EvalRequest& req) {
    const bool want_hidden = req.hidden;
    const int64_t n = static_cast<int64_t>(tokens.size()), H = s_.hidden, L = s_.n_layers;
    if (n == 0) return {};
    for (int64_t t = 0; t < n; ++t)
      if (tokens[t] < 0 || tokens[t] >= s_.vocab)
        fail("token id {} at position {} is outside the vocabulary [0, {})", tokens[t], cache_.n_past + t, s_.vocab);
    if (cache_.n_past + n > s_.max_ctx)
      fail("context of {} tokens exceeds the model's max_position_embeddings = {}", cache_.n_past + n, s_.max_ctx);
    EvalOutput out;
    if (want_hidden) out.hidden.resize(static_cast<size_t>((L + 1) * n * H));
    auto record = [&](int64_t entry, const std::vector<T>& h) {
      if (want_hidden) std::copy(h.begin(), h.end(), out.hidden.begin() + entry * n * H);
    };

    // 1. Token embeddings scaled by sqrt(H).
    std::vector<T> h(static_cast<size_t>(n * H));
    for (int64_t t = 0; t < n; ++t) {
      ops::weight_row(*w_.embed, tokens[t], H, &h[t * H]);
      for (int64_t i = 0; i < H; ++i) h[t * H + i] *= embed_scale_;
    }
    record(0, h);

    // 2. Per-layer inputs from the token id and the scaled embedding.
    std::vector<T> ple;
    if (s_.ple_dim > 0) ple = per_layer_inputs(tokens, h);

    // 3. The decoder stack.
    for (int64_t i = 0; i < L; ++i) {
      decoder_layer(static_cast<int>(i), h, ple, n);
      if (i + 1 < L) record(i + 1, h);
    }
    // 4. Final norm (the last hidden state is recorded after it, as HF does).
    for (int64_t t = 0; t < n; ++t) norm(&h[t * H], H, final_norm_.data(), &h[t * H]);
    record(L, h);

    // 5-6. Tied LM head, final logit softcap.
    const int64_t first = req.logits_from < 0 ? n - 1 : std::min(req.logits_from, n), n_out = n - first;
    std::vector<T> logits(static_cast<size_t>(n_out * s_.vocab));
    mm(*w_.embed, &h[first * H], n_out, H, s_.vocab, logits.data());
    if (s_.final_softcap) {
      const T c = static_cast<T>(*s_.final_softcap);
      for (auto& z : logits) z = c * std::tanh(z / c);
    }
    if (req.logits_f64) out.logits64.assign(logits.begin(), logits.end());
    else out.logits.assign(logits.begin(), logits.end());
    cache_.commit(n);
    return out;
  }

 private:
  // ple[t, l, :] = (RMSNorm(W_ple_proj e_t / sqrt(H))[l] + E_ple[tok_t][l] * sqrt(P)) / sqrt(2)
  std::vector<T> per_layer_inputs(std::span<const int32_t> tokens, const std::vector<T>& embeds) {
    const int64_t n = static_cast<int64_t>(tokens.size()), H = s_.hidden, P = s_.ple_dim, L = s_.n_layers;
    std::vector<T> context(static_cast<size_t>(n * L * P));
    mm(*w_.ple_model_proj, embeds.data(), n, H, L * P, context.data());
    const T proj_scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(H)));
    const T combine_scale = static_cast<T>(1.0 / std::sqrt(2.0));
    std::vector<T> token_part(static_cast<size_t>(L * P));
    for (int64_t t = 0; t < n; ++t) {
      if (tokens[t] >= s_.ple_vocab)
        fail("token id {} has no per-layer embedding row (vocab_size_per_layer_input = {})", tokens[t], s_.ple_vocab);
      ops::weight_row(*w_.ple_embed, tokens[t], L * P, token_part.data());
      for (int64_t l = 0; l < L; ++l) {
        T* c = &context[(t * L + l) * P];
        for (int64_t j = 0; j < P; ++j) c[j] *= proj_scale;
        norm(c, P, ple_proj_norm_.data(), c);
        for (int64_t j = 0; j < P; ++j) c[j] = (c[j] + token_part[l * P + j] * ple_embed_scale_) * combine_scale;
      }
    }
    return context;
  }

  // NEOX (rotate-half) RoPE on one head vector at absolute position `pos`. Angles are
  // float32 products as in HF; cos/sin are rounded to float32 then widened.
  void rope(T* x, const LayerConsts<T>& c, int64_t hd, int64_t pos) const {
    const int64_t half = hd / 2;
    for (int64_t j = 0; j < half; ++j) {
      if (c.inv_freq[j] == 0.0f) continue;  // identity pair
      const float angle = c.inv_freq[j] * static_cast<float>(pos);
      const T cs = static_cast<float>(std::cos(static_cast<double>(angle)));
      const T sn = static_cast<float>(std::sin(static_cast<double>(angle)));
      const T a = x[j], b = x[j + half];
      x[j] = a * cs - b * sn;
      x[j + half] = b * cs + a * sn;
    }
  }

  void decoder_layer(int i, std::vector<T>& h, const std::vector<T>& ple, int64_t n) {
    const LayerSpec& ls = s_.layers[i];
    const LayerWeights& lw = w_.layers[i];
    const LayerConsts<T>& c = consts_[i];
    const int64_t H = s_.hidden, hd = ls.head_dim, nh = ls.n_heads, nkv = ls.n_kv_heads;
    const int64_t qw = nh * hd, kvw = nkv * hd;

    // 1. x = RMSNorm(h; input_layernorm)
    std::vector<T> x(static_cast<size_t>(n * H));
    for (int64_t t = 0; t < n; ++t) norm(&h[t * H], H, c.attn_norm.data(), &x[t * H]);

    // 2. q = RoPE(RMSNorm_head(Wq x; q_norm))
    std::vector<T> q(static_cast<size_t>(n * qw));
    mm(*lw.q, x.data(), n, H, qw, q.data());
    for (int64_t t = 0; t < n; ++t)
      for (int64_t hh = 0; hh < nh; ++hh) {
        T* qh = &q[t * qw + hh * hd];
        norm(qh, hd, c.q_norm.data(), qh);
        rope(qh, c, hd, cache_.n_past + t);
      }

    // 3. K/V of this layer (owners only): k = RoPE(RMSNorm_head(Wk x; k_norm)),
    //    v = RMSNorm_head(Wv x, or the raw Wk x on k_eq_v layers) without weight.
    if (ls.owns_kv) {
      LayerKv<T>& kv = cache_.layers[i];
      kv.pending_k.resize(static_cast<size_t>(n * kvw));
      kv.pending_v.resize(static_cast<size_t>(n * kvw));
      mm(*lw.k, x.data(), n, H, kvw, kv.pending_k.data());
      if (lw.v) mm(*lw.v, x.data(), n, H, kvw, kv.pending_v.data());
      else kv.pending_v = kv.pending_k;  // k_eq_v: V is the raw K projection
      for (int64_t t = 0; t < n; ++t)
        for (int64_t g = 0; g < nkv; ++g) {
          T* kh = &kv.pending_k[t * kvw + g * hd];
          norm(kh, hd, c.k_norm.data(), kh);
          rope(kh, c, hd, cache_.n_past + t);
          T* vh = &kv.pending_v[t * kvw + g * hd];
          norm(vh, hd, nullptr, vh);
        }
    }

    // 4. Attention (scale 1.0, no softcap) over the source layer's cache.
    std::vector<T> attn(static_cast<size_t>(n * qw));
    attention(ls, q, n, attn);

    // 5-7. a = RMSNorm(Wo o; post_attention_layernorm); h1 = h + a
    std::vector<T> a(static_cast<size_t>(n * H));
    mm(*lw.o, attn.data(), n, qw, H, a.data());
    for (int64_t t = 0; t < n; ++t) {
      norm(&a[t * H], H, c.post_attn_norm.data(), &a[t * H]);
      for (int64_t j = 0; j < H; ++j) h[t * H + j] += a[t * H + j];
    }
    const std::vector<T>& h1 = h;

    // 8. y = MLP(RMSNorm(h1; pre_feedforward_layernorm))
    std::vector<T> y(static_cast<size_t>(n * H));
    for (int64_t t = 0; t < n; ++t) norm(&h1[t * H], H, c.ffn_norm.data(), &x[t * H]);
    gated_mlp(*lw.gate, *lw.up, *lw.down, x.data(), n, ls.ff_width, y.data());

    // 9. MoE: y = RMSNorm(y; post_ffn_norm_1) + RMSNorm(Experts(h1); post_ffn_norm_2)
    if (ls.moe) moe_block(lw, c, h1, n, y);

    // 10-11. h2 = h1 + RMSNorm(y; post_feedforward_layernorm)
    for (int64_t t = 0; t < n; ++t) {
      norm(&y[t * H], H, c.post_ffn_norm.data(), &y[t * H]);
      for (int64_t j = 0; j < H; ++j) h[t * H + j] += y[t * H + j];
    }

    // 12. PLE: h3 = h2 + RMSNorm(W_proj(gelu(W_gate h2) * ple[:, i]); post_per_layer_input_norm)
    if (s_.ple_dim > 0) {
      const int64_t P = s_.ple_dim, L = s_.n_layers;
      std::vector<T> g(static_cast<size_t>(n * P));
      mm(*lw.ple_gate, h.data(), n, H, P, g.data());
      for (int64_t t = 0; t < n; ++t) gelu_mul(&g[t * P], &ple[(t * L + i) * P], P);
      std::vector<T> z(static_cast<size_t>(n * H));
      mm(*lw.ple_proj, g.data(), n, P, H, z.data());
      for (int64_t t = 0; t < n; ++t) {
        norm(&z[t * H], H, c.ple_post_norm.data(), &z[t * H]);
        for (int64_t j = 0; j < H; ++j) h[t * H + j] += z[t * H + j];
      }
    }

    // 13. layer_scalar multiplies the whole hidden state.
    for (auto& v : h) v *= c.layer_scalar;
  }

  void attention(const LayerSpec& ls, const std::vector<T>& q, int64_t n, std::vector<T>& out) {
    const LayerKv<T>& src = cache_.layers[ls.kv_source];
    const int64_t hd = ls.head_dim, nh = ls.n_heads, group = ls.n_heads / ls.n_kv_heads;
    const int64_t qw = nh * hd, kvw = src.width, start = cache_.n_past;
    auto key = [&](int64_t pos) { return pos < start ? src.k_at(pos) : &src.pending_k[(pos - start) * kvw]; };
    auto val = [&](int64_t pos) { return pos < start ? src.v_at(pos) : &src.pending_v[(pos - start) * kvw]; };
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t hh = 0; hh < nh; ++hh) {
        const int64_t pos = start + t;
        const int64_t lo = ls.window > 0 ? std::max<int64_t>(0, pos - ls.window + 1) : 0;
        const int64_t kvh = hh / group;
        const T* qh = &q[t * qw + hh * hd];
        std::vector<T> scores(static_cast<size_t>(pos - lo + 1));
        T* o = &out[t * qw + hh * hd];
        std::fill(o, o + hd, T(0));
        if constexpr (std::is_same_v<T, float>) {
          if (fast_) {
            const int64_t nk = pos - lo + 1;
            std::vector<const float*> keys(static_cast<size_t>(nk)), vals(keys.size());
            for (int64_t kp = lo; kp <= pos; ++kp) {
              keys[kp - lo] = key(kp) + kvh * hd;
              vals[kp - lo] = val(kp) + kvh * hd;
            }
            fast_scores(qh, keys.data(), nk, hd, scores.data());
            fast_softmax(scores.data(), nk);
            fast_weighted_sum(scores.data(), vals.data(), nk, hd, o);
            continue;
          }
        }
        for (int64_t kp = lo; kp <= pos; ++kp) {
          const T* kh = key(kp) + kvh * hd;
          T s = 0;
          for (int64_t d = 0; d < hd; ++d) s += qh[d] * kh[d];
          scores[kp - lo] = s;
        }
        ops::softmax(scores.data(), static_cast<int64_t>(scores.size()), f32_islands_);
        for (int64_t kp = lo; kp <= pos; ++kp) {
          const T p = scores[kp - lo];
          const T* vh = val(kp) + kvh * hd;
          for (int64_t d = 0; d < hd; ++d) o[d] += p * vh[d];
        }
      }
  }

  // down(gelu_tanh(gate x) * up x); gate/up rows may be an expert's slice (row0).
  void gated_mlp(const TensorView& gate, const TensorView& up, const TensorView& down, const T* x, int64_t n,
                 int64_t width, T* y, int64_t gate_row0 = 0, int64_t up_row0 = 0, int64_t down_row0 = 0) {
    const int64_t H = s_.hidden;
    std::vector<T> g(static_cast<size_t>(n * width)), u(static_cast<size_t>(n * width));
    mm(gate, x, n, H, width, g.data(), gate_row0);
    mm(up, x, n, H, width, u.data(), up_row0);
    gelu_mul(g.data(), u.data(), static_cast<int64_t>(g.size()));
    mm(down, g.data(), n, width, H, y, down_row0);
  }

  void moe_block(const LayerWeights& lw, const LayerConsts<T>& c, const std::vector<T>& h1, int64_t n, std::vector<T>& y) {
    const int64_t H = s_.hidden, E = s_.n_experts, K = s_.top_k, Ie = s_.moe_ff;
    // Dense branch output norm.
    for (int64_t t = 0; t < n; ++t) norm(&y[t * H], H, c.post_ffn_norm_1.data(), &y[t * H]);
    // Router on h1: RMSNorm without weight, * scale * H^-1/2, proj, softmax, top-k,
    // renormalise, * per_expert_scale.
    std::vector<T> r(static_cast<size_t>(n * H)), logits(static_cast<size_t>(n * E));
    const T root = static_cast<T>(1.0 / std::sqrt(static_cast<double>(H)));
    for (int64_t t = 0; t < n; ++t) {
      norm(&h1[t * H], H, nullptr, &r[t * H]);
      for (int64_t j = 0; j < H; ++j) r[t * H + j] = r[t * H + j] * c.router_scale[j] * root;
    }
    mm(*lw.router_proj, r.data(), n, H, E, logits.data());
    // Expert inputs.
    std::vector<T> u(static_cast<size_t>(n * H));
    for (int64_t t = 0; t < n; ++t) norm(&h1[t * H], H, c.pre_ffn_norm_2.data(), &u[t * H]);
    std::vector<T> experts_out(static_cast<size_t>(n * H), T(0)), o(static_cast<size_t>(H));
    for (int64_t t = 0; t < n; ++t) {
      T* z = &logits[t * E];
      ops::softmax(z, E, false);  // HF: in the activation dtype
      std::vector<int64_t> idx(static_cast<size_t>(E));
      std::iota(idx.begin(), idx.end(), 0);
      // Stable: on equal probabilities the lower expert id wins.
      std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return z[a] > z[b]; });
      T wsum = 0;
      for (int64_t k = 0; k < K; ++k) wsum += z[idx[k]];
      for (int64_t k = 0; k < K; ++k) {
        const int64_t e = idx[k];
        const T weight = z[e] / wsum * c.per_expert_scale[e];
        // experts.gate_up_proj[e]: rows [0, Ie) gate, [Ie, 2Ie) up; down_proj[e]: [H, Ie].
        gated_mlp(*lw.experts_gate_up, *lw.experts_gate_up, *lw.experts_down, &u[t * H], 1, Ie, o.data(),
                  e * 2 * Ie, e * 2 * Ie + Ie, e * H);
        for (int64_t j = 0; j < H; ++j) experts_out[t * H + j] += weight * o[j];
      }
    }
    for (int64_t t = 0; t < n; ++t) {
      norm(&experts_out[t * H], H, c.post_ffn_norm_2.data(), &experts_out[t * H]);
      for (int64_t j = 0; j < H; ++j) y[t * H + j] += experts_out[t * H + j];
    }
  }

  const Model& m_;
  const ModelSpec& s_;
  const Weights& w_;
  KvCache<T> cache_;
  bool f32_islands_;
  bool fast_;
  T embed_scale_ = 1, ple_embed_scale_ = 1;
  std::vector<T> final_norm_, ple_proj_norm_;
  std::vector<LayerConsts<T>> consts_;
};

}  // namespace

struct Session::Impl {
  std::unique_ptr<Gemma4<double>> f64;
  std::unique_ptr<Gemma4<float>> f32;
};

Session::Session(const Model& model, ForwardOptions opt) : model_(model), opt_(opt), impl_(std::make_unique<Impl>()) {
  if (!model.valid()) fail("{}: refusing to run a model that failed validation", model.path);
  if (opt.precision == Precision::F64) impl_->f64 = std::make_unique<Gemma4<double>>(model, opt);
  else impl_->f32 = std::make_unique<Gemma4<float>>(model, opt);  // F32 and Fast
}
Session::~Session() = default;
Session::Session(Session&&) noexcept = default;

EvalOutput Session::eval(std::span<const int32_t> tokens, const EvalRequest& req) {
  return impl_->f64 ? impl_->f64->forward(tokens, req) : impl_->f32->forward(tokens, req);
}

std::vector<float> Session::eval_last(std::span<const int32_t> tokens) {
  EvalRequest req;
  req.logits_from = -1;
  return eval(tokens, req).logits;
}

void Session::reset() {
  if (impl_->f64) impl_->f64->cache().reset();
  else impl_->f32->cache().reset();
}

bool Session::truncate(int64_t n) {
  return impl_->f64 ? impl_->f64->cache().truncate(n) : impl_->f32->cache().truncate(n);
}

int64_t Session::n_past() const { return impl_->f64 ? impl_->f64->cache().n_past : impl_->f32->cache().n_past; }

}  // namespace g4
