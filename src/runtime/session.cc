// The Gemma 4 forward, written once against the Backend ops. Every buffer it uses is
// allocated here, once per session (gemma.cpp's Activations): a step allocates nothing.
#include "runtime/session.h"

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"
#include "util/error.h"
#include "util/half.h"

namespace g4 {
namespace {

// Activations for steps of up to `cap` tokens: views into backend buffers.
struct Activations {
  int64_t cap = 0;
  View h, x, q, k, v, attn, a, y;  // [cap, hidden or head widths]
  View g, u;                       // [cap, widest MLP]
  View ple, ple_tok, ple_g, ple_z;  // [cap, L*P] x2, [cap, P], [cap, H]
  View router, eu, ex, eo, eout;    // MoE
  View eg;                          // MoE decode: [2K, moe_ff], the routed experts' gate rows, then their up rows
  std::vector<int64_t> slices;      // MoE decode: [2K] the first weight row of each
  View logits;                      // [cap_out, vocab], grown on demand
  // Host-side MoE routing tables, [cap, K].
  std::vector<int32_t> ids, order, rows_in, rows_out, forced;
  std::vector<double> router_logits;  // [cap, E], only for ForwardOptions::on_router
  std::vector<float> matmul_in;       // [cap, widest input], only for ForwardOptions::on_matmul
  std::vector<double> weights;
  std::vector<int64_t> expert_start;
};

View matrix(Backend& be, int64_t rows, int64_t cols) { return View{be.alloc(rows * cols), 0, rows, cols, cols}; }
// The first n x cols elements of a buffer as a contiguous matrix.
View mat(const View& buf, int64_t n, int64_t cols) { return View{buf.buf, buf.offset, n, cols, cols}; }

}  // namespace

struct Session::Impl {
  const Model& m;
  const ModelSpec& s;
  const Weights& w;
  ForwardOptions opt;
  std::unique_ptr<Backend> be;
  Activations act;
  double embed_scale = 1, ple_embed_scale = 1;
  std::vector<double> layer_scalar;
  std::vector<float> host_logits;  // decode() and step(): [rows, vocab]
  // The sequences of the current step: rows [row0, row0 + n) at positions pos0...
  struct Seg {
    int seq;
    int64_t row0, n, pos0;
  };
  std::vector<Seg> segs;
  std::vector<int32_t> tokens_in, out_rows;  // step(): the batch's tokens, rows with logits

  Impl(const Model& model, const ForwardOptions& o) : m(model), s(model.spec), w(model.w), opt(o) {
    BackendOptions bo;
    bo.precision = o.precision;
    bo.n_batch = std::max<int64_t>(1, o.n_batch);
    bo.n_ctx = o.n_ctx;
    bo.hf_float32_islands = o.hf_float32_islands;
    bo.bf16_weights_only = o.bf16_weights_only;
    bo.cache_type_k = o.cache_type_k;
    bo.cache_type_v = o.cache_type_v;
    bo.rounding = o.emulate;
    if (o.emulate.kv_f16) bo.cache_type_k = bo.cache_type_v = KvType::F16;
    bo.device = o.device;
    bo.n_gpu_layers = o.n_gpu_layers;
    be = make_backend(model, bo);
    const double sqrt_h = std::sqrt(static_cast<double>(s.hidden));
    const double sqrt_p = std::sqrt(static_cast<double>(s.ple_dim));
    embed_scale = o.bf16_embed_scale ? bf16_to_f32(f32_to_bf16(static_cast<float>(sqrt_h))) : sqrt_h;
    ple_embed_scale = o.bf16_embed_scale ? bf16_to_f32(f32_to_bf16(static_cast<float>(sqrt_p))) : sqrt_p;
    for (const auto& lw : w.layers) layer_scalar.push_back(ops::to_vector<double>(*lw.layer_scalar)[0]);
    allocate(bo.n_batch);
  }

  void allocate(int64_t cap) {
    Backend& b = *be;
    const int64_t H = s.hidden, L = s.n_layers, P = s.ple_dim;
    int64_t qw = 0, kvw = 0, ff = 0;
    for (const auto& l : s.layers) {
      qw = std::max(qw, int64_t{l.n_heads} * l.head_dim);
      kvw = std::max(kvw, int64_t{l.n_kv_heads} * l.head_dim);
      ff = std::max<int64_t>(ff, l.ff_width);
    }
    if (s.moe) ff = std::max<int64_t>(ff, s.moe_ff);
    act.cap = cap;
    act.h = matrix(b, cap, H);
    act.x = matrix(b, cap, H);
    act.a = matrix(b, cap, H);
    act.y = matrix(b, cap, H);
    act.q = matrix(b, cap, qw);
    act.attn = matrix(b, cap, qw);
    act.k = matrix(b, cap, kvw);
    act.v = matrix(b, cap, kvw);
    act.g = matrix(b, cap, ff);
    act.u = matrix(b, cap, ff);
    if (P > 0) {
      act.ple = matrix(b, cap, L * P);
      act.ple_tok = matrix(b, cap, L * P);
      act.ple_g = matrix(b, cap, P);
      act.ple_z = matrix(b, cap, H);
    }
    if (s.moe) {
      const int64_t E = s.n_experts, K = s.top_k;
      act.router = matrix(b, cap, E);
      act.eu = matrix(b, cap, H);
      act.ex = matrix(b, cap, H);
      act.eo = matrix(b, cap * K, H);
      act.eout = matrix(b, cap, H);
      act.eg = matrix(b, 2 * K, s.moe_ff);
      act.slices.resize(static_cast<size_t>(2 * K));
      act.ids.resize(static_cast<size_t>(cap * K));
      act.order.resize(act.ids.size());
      act.rows_in.resize(act.ids.size());
      act.rows_out.resize(act.ids.size());
      act.weights.resize(act.ids.size());
      act.forced.resize(act.ids.size());
      if (opt.on_router) act.router_logits.resize(static_cast<size_t>(cap * E));
      act.expert_start.resize(static_cast<size_t>(E + 1));
    }
    if (opt.on_matmul) act.matmul_in.resize(static_cast<size_t>(cap * std::max({H, qw, ff, P})));
    act.logits = matrix(b, 1, s.vocab);
    host_logits.resize(static_cast<size_t>(s.vocab));
    segs.reserve(static_cast<size_t>(cap));
    tokens_in.reserve(static_cast<size_t>(cap));
    out_rows.reserve(static_cast<size_t>(cap));
  }

  // Logit rows for `n` outputs; grows (once per new maximum) for long logits requests.
  View logits_rows(int64_t n) {
    if (act.logits.rows < n) act.logits = matrix(*be, n, s.vocab);
    return act.logits.sub_rows(0, n);
  }

  // Reports the input x of a weight matmul to ForwardOptions::on_matmul (nothing when unset).
  void trace(const View& x, int layer, LayerTensor t, int expert = -1) {
    if (!opt.on_matmul) return;
    be->read(x, act.matmul_in.data());
    opt.on_matmul(MatmulTrace{layer, t, GlobalTensor::Count, expert, x.rows, x.cols, act.matmul_in.data()});
  }
  void trace(const View& x, GlobalTensor t) {
    if (!opt.on_matmul) return;
    be->read(x, act.matmul_in.data());
    opt.on_matmul(MatmulTrace{-1, LayerTensor::Count, t, -1, x.rows, x.cols, act.matmul_in.data()});
  }

  void check(const View& x, int layer, int64_t pos0) {
    if (!opt.check_finite) return;
    if (!be->all_finite(x))
      fail("non-finite values (NaN or Inf) in the hidden state after layer {} (positions {}..{}); the weights of "
           "layer {} or the input are damaged: `g4 inspect -m {}` lists tensors with non-finite values",
           layer, pos0, pos0 + x.rows - 1, layer, m.path);
  }

  // One step of n <= cap tokens of sequence 0 at positions n_past()...; logits for rows
  // >= first (first = n: none) go to `logits`; hidden states to `hidden` (stride n_total).
  void step(std::span<const int32_t> tokens, int64_t first, const View* logits, float* hidden, int64_t hidden_stride) {
    segs.assign(1, Seg{0, 0, static_cast<int64_t>(tokens.size()), be->n_past(0)});
    out_rows.clear();
    forward(tokens, first, logits, hidden, hidden_stride);
  }

  // The forward over the segments in `segs` (rows of several sequences; every op but
  // RoPE, the KV cache and attention is row-wise, so they run once for the whole batch).
  // Logits for rows >= first, or for the rows in out_rows when it is not empty.
  void forward(std::span<const int32_t> tokens, int64_t first, const View* logits, float* hidden, int64_t hidden_stride) {
    Backend& b = *be;
    const int64_t n = static_cast<int64_t>(tokens.size()), H = s.hidden, L = s.n_layers, pos0 = segs[0].pos0;
    for (const Seg& g : segs) {
      for (int64_t t = g.row0; t < g.row0 + g.n; ++t) {
        if (tokens[t] < 0 || tokens[t] >= s.vocab)
          fail("token id {} at position {} is outside the vocabulary [0, {})", tokens[t], g.pos0 + t - g.row0, s.vocab);
        if (s.ple_dim > 0 && tokens[t] >= s.ple_vocab)
          fail("token id {} has no per-layer embedding row (vocab_size_per_layer_input = {})", tokens[t], s.ple_vocab);
      }
      if (g.pos0 + g.n > s.max_ctx)
        fail("context of {} tokens exceeds the model's max_position_embeddings = {}", g.pos0 + g.n, s.max_ctx);
    }
    const View h = act.h.sub_rows(0, n);
    auto record = [&](int64_t entry) {
      if (hidden) be->read(h, hidden + entry * hidden_stride);
    };

    // 1. Token embeddings scaled by sqrt(H).
    b.embed(*w.embed, tokens, embed_scale, h);
    record(0);
    // 2. Per-layer inputs from the token id and the scaled embedding:
    //    ple[t, l] = (RMSNorm(W_ple_proj e_t / sqrt(H))[l] + E_ple[tok_t][l] * sqrt(P)) / sqrt(2)
    if (s.ple_dim > 0) {
      const View ple = act.ple.sub_rows(0, n), tok = act.ple_tok.sub_rows(0, n);
      trace(h, GlobalTensor::PleModelProj);
      b.matmul(*w.ple_model_proj, h, ple);
      b.scale(ple, 1.0 / std::sqrt(static_cast<double>(H)));
      b.rms_norm(ple.reshape(s.ple_dim), w.ple_proj_norm, s.rms_eps, ple.reshape(s.ple_dim));
      b.embed(*w.ple_embed, tokens, ple_embed_scale, tok);
      b.add(ple, tok);
      b.scale(ple, 1.0 / std::sqrt(2.0));
    }
    // 3. The decoder stack.
    for (int i = 0; i < L; ++i) {
      decoder_layer(i, n);
      check(h, i, pos0);
      if (i + 1 < L) record(i + 1);
    }
    // 4. Final norm (the last hidden state is recorded after it, as HF does).
    b.rms_norm(h, w.final_norm, s.rms_eps, h);
    record(L);
    // 5-6. Tied LM head, final logit softcap.
    if (logits && !out_rows.empty()) {
      const View sel = act.x.sub_rows(0, static_cast<int64_t>(out_rows.size()));
      b.gather_rows(h, out_rows, sel);
      trace(sel, GlobalTensor::Embed);
      b.matmul(*w.embed, sel, *logits);
      if (s.final_softcap) b.softcap(*logits, *s.final_softcap);
    } else if (logits && first < n) {
      trace(h.sub_rows(first, n - first), GlobalTensor::Embed);
      b.matmul(*w.embed, h.sub_rows(first, n - first), *logits);
      if (s.final_softcap) b.softcap(*logits, *s.final_softcap);
    }
    for (const Seg& g : segs) b.kv_commit(g.seq, g.n);
  }

  void decoder_layer(int i, int64_t n) {
    Backend& b = *be;
    const LayerSpec& ls = s.layers[i];
    const LayerWeights& lw = w.layers[i];
    const int64_t hd = ls.head_dim, nh = ls.n_heads, nkv = ls.n_kv_heads;
    const double eps = s.rms_eps;
    const View h = act.h.sub_rows(0, n), x = act.x.sub_rows(0, n), a = act.a.sub_rows(0, n), y = act.y.sub_rows(0, n);
    const View q = mat(act.q, n, nh * hd), attn = mat(act.attn, n, nh * hd);

    // 1. x = RMSNorm(h; input_layernorm)
    b.rms_norm(h, lw.attn_norm, eps, x);
    // 2. q = RoPE(RMSNorm_head(Wq x; q_norm))
    trace(x, i, LayerTensor::Q);
    b.matmul(*lw.q, x, q);
    b.rms_norm(q.reshape(hd), lw.q_norm, eps, q.reshape(hd));
    for (const Seg& g : segs) b.rope(i, q.sub_rows(g.row0, g.n).reshape(hd), nh, g.pos0);
    // 3. K/V of this layer (owners only): k = RoPE(RMSNorm_head(Wk x; k_norm)),
    //    v = RMSNorm_head(Wv x, or the raw Wk x on k_eq_v layers) without weight.
    if (ls.owns_kv) {
      const View k = mat(act.k, n, nkv * hd), v = mat(act.v, n, nkv * hd);
      trace(x, i, LayerTensor::K);
      b.matmul(*lw.k, x, k);
      if (lw.v) {
        trace(x, i, LayerTensor::V);
        b.matmul(*lw.v, x, v);
        b.rms_norm(v.reshape(hd), nullptr, eps, v.reshape(hd));
      } else {
        b.rms_norm(k.reshape(hd), nullptr, eps, v.reshape(hd));  // k_eq_v: V is the raw K projection
      }
      b.rms_norm(k.reshape(hd), lw.k_norm, eps, k.reshape(hd));
      for (const Seg& g : segs) {
        b.rope(i, k.sub_rows(g.row0, g.n).reshape(hd), nkv, g.pos0);
        b.kv_write(g.seq, i, k.sub_rows(g.row0, g.n), v.sub_rows(g.row0, g.n));
      }
    }
    // 4. Attention (scale 1.0, no softcap) over the source layer's cache, per sequence.
    for (const Seg& g : segs)
      b.attention(g.seq, i, q.sub_rows(g.row0, g.n).reshape(hd), nh, attn.sub_rows(g.row0, g.n).reshape(hd));
    // 5-7. a = RMSNorm(Wo o; post_attention_layernorm); h1 = h + a
    trace(attn, i, LayerTensor::O);
    b.matmul(*lw.o, attn, a);
    b.rms_norm(a, lw.post_attn_norm, eps, a);
    b.add(h, a);
    // 8. y = MLP(RMSNorm(h1; pre_feedforward_layernorm))
    b.rms_norm(h, lw.ffn_norm, eps, x);
    gated_mlp(*lw.gate, *lw.up, *lw.down, x, ls.ff_width, y, i);
    // 9. MoE: y = RMSNorm(y; post_ffn_norm_1) + RMSNorm(Experts(h1); post_ffn_norm_2)
    if (ls.moe) moe_block(i, lw, h, y);
    // 10-11. h2 = h1 + RMSNorm(y; post_feedforward_layernorm)
    b.rms_norm(y, lw.post_ffn_norm, eps, y);
    b.add(h, y);
    // 12. PLE: h3 = h2 + RMSNorm(W_proj(gelu(W_gate h2) * ple[:, i]); post_per_layer_input_norm)
    if (s.ple_dim > 0) {
      const int64_t P = s.ple_dim;
      const View g = act.ple_g.sub_rows(0, n), z = act.ple_z.sub_rows(0, n);
      trace(h, i, LayerTensor::PleGate);
      b.matmul(*lw.ple_gate, h, g);
      b.gelu_mul(g, act.ple.sub_rows(0, n).sub_cols(int64_t{i} * P, P));
      trace(g, i, LayerTensor::PleProj);
      b.matmul(*lw.ple_proj, g, z);
      b.rms_norm(z, lw.ple_post_norm, eps, z);
      b.add(h, z);
    }
    // 13. layer_scalar multiplies the whole hidden state.
    b.scale(h, layer_scalar[i]);
  }

  // y = down(gelu_tanh(gate x) * up x) of layer `layer`; with expert >= 0, gate/up/down rows
  // are that expert's slice of the stacked tensors.
  void gated_mlp(const TensorView& gate, const TensorView& up, const TensorView& down, const View& x, int64_t width,
                 const View& y, int layer, int expert = -1, int64_t gate_row0 = 0, int64_t up_row0 = 0,
                 int64_t down_row0 = 0) {
    const int64_t n = x.rows;
    const View g = mat(act.g, n, width), u = mat(act.u, n, width);
    if (expert >= 0) {
      trace(x, layer, LayerTensor::ExpertsGateUp, expert);  // one tensor: its input once
    } else {
      trace(x, layer, LayerTensor::Gate);
      trace(x, layer, LayerTensor::Up);
    }
    be->matmul(gate, x, g, gate_row0);
    be->matmul(up, x, u, up_row0);
    be->gelu_mul(g, u);
    trace(g, layer, expert >= 0 ? LayerTensor::ExpertsDown : LayerTensor::Down, expert);
    be->matmul(down, g, y, down_row0);
  }

  // The forced-routing table of this step for `layer` (nullptr when nothing is forced).
  const int32_t* forced_routes(int layer, int64_t n) {
    if (opt.force_routes.empty()) return nullptr;
    if (segs.size() != 1) fail("forced routing applies to single-sequence runs, not to batched steps");
    const int64_t K = s.top_k, pos0 = segs[0].pos0;
    std::fill(act.forced.begin(), act.forced.begin() + n * K, -1);
    bool any = false;
    for (const RouteForce& f : opt.force_routes) {
      if (f.layer != layer || f.pos < pos0 || f.pos >= pos0 + n) continue;
      if (static_cast<int64_t>(f.experts.size()) != K)
        fail("forced routing at layer {}, position {}: {} experts given, the model routes to top_k = {}", layer, f.pos,
             f.experts.size(), K);
      std::copy(f.experts.begin(), f.experts.end(), act.forced.begin() + (f.pos - pos0) * K);
      any = true;
    }
    return any ? act.forced.data() : nullptr;
  }

  void moe_block(int layer, const LayerWeights& lw, const View& h1, const View& y) {
    Backend& b = *be;
    const int64_t n = h1.rows, H = s.hidden, E = s.n_experts, K = s.top_k, Ie = s.moe_ff;
    const double eps = s.rms_eps;
    // Dense branch output norm.
    b.rms_norm(y, lw.post_ffn_norm_1, eps, y);
    // Router on h1: RMSNorm without weight, * scale * H^-1/2, proj, softmax, top-k,
    // renormalise, * per_expert_scale.
    const View r = act.ex.sub_rows(0, n), logits = act.router.sub_rows(0, n);
    b.rms_norm(h1, nullptr, eps, r);
    b.mul(r, *lw.router_scale, 1.0 / std::sqrt(static_cast<double>(H)));
    trace(r, layer, LayerTensor::RouterProj);
    b.matmul(*lw.router_proj, r, logits);
    if (opt.on_router) b.read(logits, act.router_logits.data());  // before moe_route's in-place softmax
    b.moe_route(logits, K, *lw.per_expert_scale, act.ids.data(), act.weights.data(), forced_routes(layer, n));
    // Router traces are a single-sequence diagnostic: positions are sequence 0's.
    if (opt.on_router) opt.on_router(RouterTrace{layer, segs[0].pos0, n, E, K, act.router_logits.data(), act.ids.data()});
    // Expert inputs.
    const View u = act.eu.sub_rows(0, n);
    b.rms_norm(h1, lw.pre_ffn_norm_2, eps, u);
    if (n == 1) return moe_decode(layer, lw, u, y);
    // Tokens grouped by expert (counting sort): each expert runs once on all its tokens.
    auto& start = act.expert_start;
    std::fill(start.begin(), start.end(), 0);
    for (int64_t j = 0; j < n * K; ++j) ++start[act.ids[j] + 1];
    for (int64_t e = 0; e < E; ++e) start[e + 1] += start[e];
    for (int64_t j = 0; j < n * K; ++j) act.order[start[act.ids[j]]++] = static_cast<int32_t>(j);
    for (int64_t e = E; e > 0; --e) start[e] = start[e - 1];
    start[0] = 0;
    const View eo = act.eo.sub_rows(0, n * K);
    for (int64_t e = 0; e < E; ++e) {
      const int64_t m = start[e + 1] - start[e];
      if (m == 0) continue;
      for (int64_t j = 0; j < m; ++j) {
        const int32_t slot = act.order[start[e] + j];  // t * K + k
        act.rows_in[j] = slot / static_cast<int32_t>(K);
        act.rows_out[j] = slot;
      }
      const View xe = act.ex.sub_rows(0, m), oe = act.eout.sub_rows(0, m);
      b.gather_rows(u, std::span<const int32_t>(act.rows_in.data(), m), xe);
      // experts.gate_up_proj[e]: rows [0, Ie) gate, [Ie, 2Ie) up; down_proj[e]: [H, Ie].
      gated_mlp(*lw.experts_gate_up, *lw.experts_gate_up, *lw.experts_down, xe, Ie, oe, layer, static_cast<int>(e),
                e * 2 * Ie, e * 2 * Ie + Ie, e * H);
      b.scatter_rows(oe, std::span<const int32_t>(act.rows_out.data(), m), eo);
    }
    finish_moe(lw, eo, n, y);
  }

  // One token: every routed expert's gate and up rows in one matmul_slices call, then all
  // their down rows in another, expert k's output straight into row k of eo (slot t K + k,
  // t = 0): 2 calls where the loop over experts makes 3 K, each ending in a wait for the
  // slowest thread, and no gather or scatter. Each row has the per-expert path's bits.
  void moe_decode(int layer, const LayerWeights& lw, const View& u, const View& y) {
    Backend& b = *be;
    const int64_t H = s.hidden, K = s.top_k, Ie = s.moe_ff;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t e = act.ids[k];
      act.slices[k] = e * 2 * Ie;           // experts.gate_up_proj[e]: rows [0, Ie) gate,
      act.slices[K + k] = e * 2 * Ie + Ie;  // [Ie, 2 Ie) up
      trace(u, layer, LayerTensor::ExpertsGateUp, static_cast<int>(e));
    }
    const View gu = mat(act.eg, 2 * K, Ie), g = gu.sub_rows(0, K), up = gu.sub_rows(K, K);
    b.matmul_slices(*lw.experts_gate_up, u, gu, act.slices);
    b.gelu_mul(g, up);
    for (int64_t k = 0; k < K; ++k) {
      trace(g.sub_rows(k, 1), layer, LayerTensor::ExpertsDown, act.ids[k]);
      act.slices[k] = act.ids[k] * H;  // experts.down_proj[e]: [H, Ie]
    }
    const View eo = act.eo.sub_rows(0, K);
    b.matmul_slices(*lw.experts_down, g, eo, std::span<const int64_t>(act.slices.data(), static_cast<size_t>(K)));
    finish_moe(lw, eo, 1, y);
  }

  // The routed experts' outputs eo ([n K, H], slot t K + k) weighted into y.
  void finish_moe(const LayerWeights& lw, const View& eo, int64_t n, const View& y) {
    const View experts_out = act.eout.sub_rows(0, n);
    be->moe_combine(eo, act.weights.data(), s.top_k, experts_out);
    be->rms_norm(experts_out, lw.post_ffn_norm_2, s.rms_eps, experts_out);
    be->add(y, experts_out);
  }
};

Session::Session(const Model& model, ForwardOptions opt) : model_(model), opt_(opt) {
  if (!model.valid()) fail("{}: refusing to run a model that failed validation", model.path);
  impl_ = std::make_unique<Impl>(model, opt);
}
Session::~Session() = default;
Session::Session(Session&&) noexcept = default;

EvalOutput Session::eval(std::span<const int32_t> tokens, const EvalRequest& req) {
  Impl& im = *impl_;
  const int64_t n = static_cast<int64_t>(tokens.size()), V = im.s.vocab, H = im.s.hidden;
  EvalOutput out;
  if (n == 0) return out;
  const int64_t first = req.logits_from < 0 ? n - 1 : std::min(req.logits_from, n);
  if (req.hidden) out.hidden.resize(static_cast<size_t>((im.s.n_layers + 1) * n * H));
  if (req.logits_f64) out.logits64.resize(static_cast<size_t>((n - first) * V));
  else out.logits.resize(static_cast<size_t>((n - first) * V));
  // Steps of at most cap tokens; the KV cache holds the earlier steps' keys.
  for (int64_t t0 = 0; t0 < n; t0 += im.act.cap) {
    const int64_t len = std::min(im.act.cap, n - t0);
    const int64_t f = std::clamp(first - t0, int64_t{0}, len);  // first row of this step with logits
    const View logits = im.logits_rows(len - f);
    im.step(tokens.subspan(t0, len), f, &logits, req.hidden ? out.hidden.data() + t0 * H : nullptr, n * H);
    if (f == len) continue;
    const int64_t o = (t0 + f - first) * V;
    if (req.logits_f64) im.be->read(logits, out.logits64.data() + o);
    else im.be->read(logits, out.logits.data() + o);
  }
  return out;
}

std::span<const float> Session::decode(std::span<const int32_t> tokens) {
  Impl& im = *impl_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) fail("decode() needs at least one token");
  for (int64_t t0 = 0; t0 < n; t0 += im.act.cap) {
    const int64_t len = std::min(im.act.cap, n - t0);
    const bool last = t0 + len == n;
    const View logits = im.logits_rows(1);
    im.step(tokens.subspan(t0, len), last ? len - 1 : len, &logits, nullptr, 0);
    if (last) im.be->read(logits, im.host_logits.data());
  }
  return im.host_logits;
}

std::vector<float> Session::eval_last(std::span<const int32_t> tokens) {
  auto l = decode(tokens);
  return {l.begin(), l.end()};
}

std::span<const float> Session::step(std::span<const SeqTokens> batch) {
  Impl& im = *impl_;
  im.segs.clear();
  im.tokens_in.clear();
  im.out_rows.clear();
  for (const SeqTokens& e : batch) {
    const auto n = static_cast<int64_t>(e.tokens.size());
    if (n == 0) fail("step(): sequence {} has no tokens", e.seq);
    if (static_cast<int64_t>(im.tokens_in.size()) + n > im.act.cap)
      fail("step(): {}+ tokens in one step, more than n_batch = {}", im.tokens_in.size() + e.tokens.size(), im.act.cap);
    for (const Impl::Seg& g : im.segs)
      if (g.seq == e.seq) fail("step(): sequence {} appears twice in one step", e.seq);
    const int64_t row0 = static_cast<int64_t>(im.tokens_in.size());
    im.segs.push_back({e.seq, row0, n, im.be->n_past(e.seq)});
    im.tokens_in.insert(im.tokens_in.end(), e.tokens.begin(), e.tokens.end());
    if (e.logits) im.out_rows.push_back(static_cast<int32_t>(row0 + n - 1));
  }
  if (im.segs.empty()) return {};
  const int64_t k = static_cast<int64_t>(im.out_rows.size()), V = im.s.vocab;
  const View logits = im.logits_rows(std::max<int64_t>(k, 1));
  if (im.host_logits.size() < static_cast<size_t>(k * V)) im.host_logits.resize(static_cast<size_t>(k * V));
  im.forward(im.tokens_in, static_cast<int64_t>(im.tokens_in.size()), k ? &logits : nullptr, nullptr, 0);
  if (k) im.be->read(logits, im.host_logits.data());
  return std::span<const float>(im.host_logits.data(), static_cast<size_t>(k * V));
}

int Session::add_sequence(int64_t max_step) {
  return impl_->be->kv_seq_add(std::clamp<int64_t>(max_step, 1, impl_->act.cap));
}
void Session::free_sequence(int seq) {
  if (seq == 0) fail("sequence 0 belongs to the session and cannot be freed");
  impl_->be->kv_seq_free(seq);
}
void Session::reset(int seq) { impl_->be->kv_reset(seq); }
bool Session::truncate(int64_t n, int seq) { return impl_->be->kv_truncate(seq, n); }
int64_t Session::n_past(int seq) const { return impl_->be->n_past(seq); }
size_t Session::kv_bytes() const { return impl_->be->kv_bytes(); }
std::string Session::backend_name() const { return impl_->be->name(); }

}  // namespace g4
