// HF transformers' native bf16 forward, emulated on the CPU: weights in bf16, and every
// op's output rounded to bf16 exactly where a bf16 PyTorch model rounds it (the module
// code of modeling_gemma4.py, eager attention). Inside an op the arithmetic is float32
// (PyTorch's "opmath" for bf16), matmuls accumulate in wider precision (as cuBLAS does
// in f32) and round once; the MoE router's probabilities and weights stay float32 as in
// HF. Where HF rounds twice in one of our ops (x * scale * root in
// the router, gelu(g) * u, q*cos + rotate_half(q)*sin, the softcap's three steps) the
// emulation rounds at each step.
// With bf16_weights_only, only the weights are rounded and activations stay float32:
// a rung between f32 and full bf16 in `g4 ladder`.
#include <omp.h>

#include <algorithm>

#include "backends/cpu_ref.h"
#include "util/half.h"

namespace g4 {
namespace {

inline float bf(float x) { return bf16_to_f32(f32_to_bf16(x)); }

class Bf16Backend final : public RefBackend<float> {
 public:
  Bf16Backend(const Model& m, const BackendOptions& opt) : RefBackend<float>(m, opt), full_(!opt.bf16_weights_only) {
    for (auto& [t, v] : consts_)
      for (float& x : v) x = bf(x);
  }

  std::string name() const override { return full_ ? "cpu-bf16 (HF bf16 emulation)" : "cpu-bf16-weights"; }

  void embed(const TensorView& table, std::span<const int32_t> tokens, double scale, const View& out) override {
    const float s = full_ ? bf(static_cast<float>(scale)) : static_cast<float>(scale);
    for (size_t t = 0; t < tokens.size(); ++t) {
      float* o = row(out, static_cast<int64_t>(t));
      ops::weight_row(table, tokens[t], out.cols, o);
      for (int64_t i = 0; i < out.cols; ++i) o[i] = round(bf(o[i]) * s);
    }
  }
  // Gemma4RMSNorm: x.float() * pow(mean(x^2) + eps, -0.5) * weight.float(), then type_as(x).
  void rms_norm(const View& x, const TensorView* w, double eps, const View& out) override {
    if (!full_) return RefBackend<float>::rms_norm(x, w, eps, out);
    const float* wv = w ? constant(*w) : nullptr;
    for (int64_t r = 0; r < x.rows; ++r) {
      const float* p = row(x, r);
      float* o = row(out, r);
      float ss = 0;
      for (int64_t j = 0; j < x.cols; ++j) ss += p[j] * p[j];
      const float inv = std::pow(ss / static_cast<float>(x.cols) + static_cast<float>(eps), -0.5f);
      for (int64_t j = 0; j < x.cols; ++j) o[j] = bf(wv ? p[j] * inv * wv[j] : p[j] * inv);
    }
  }
  void matmul(const TensorView& w, const View& x, const View& y, int64_t row0) override {
    contiguous(x, "matmul input");
    contiguous(y, "matmul output");
    const int64_t n_in = x.cols, n_out = y.cols;
    const float* xp = row(x, 0);
    float* yp = row(y, 0);
#pragma omp parallel
    {
      std::vector<float> wr(static_cast<size_t>(n_in));
#pragma omp for schedule(static)
      for (int64_t o = 0; o < n_out; ++o) {
        ops::weight_row(w, row0 + o, n_in, wr.data());
        for (float& v : wr) v = bf(v);
        for (int64_t t = 0; t < x.rows; ++t) {
          double acc = 0;
          for (int64_t i = 0; i < n_in; ++i) acc += static_cast<double>(wr[i]) * xp[t * n_in + i];
          yp[t * n_out + o] = round(static_cast<float>(acc));
        }
      }
    }
  }
  // cos/sin in float32, cast to bf16; q*cos + rotate_half(q)*sin with each product and
  // the sum rounded.
  void rope(int layer, const View& x, int64_t heads, int64_t pos0) override {
    if (!full_) return RefBackend<float>::rope(layer, x, heads, pos0);
    const std::vector<float>& f = inv_freq_[layer];
    const int64_t half = x.cols / 2;
    for (int64_t r = 0; r < x.rows; ++r) {
      float* v = row(x, r);
      const int64_t pos = pos0 + r / heads;
      for (int64_t j = 0; j < half; ++j) {
        if (f[j] == 0.0f) continue;  // cos 1, sin 0: unchanged
        const float angle = f[j] * static_cast<float>(pos);
        const float cs = bf(std::cos(angle)), sn = bf(std::sin(angle));
        const float a = v[j], b = v[j + half];
        v[j] = bf(bf(a * cs) + bf(-b * sn));
        v[j + half] = bf(bf(b * cs) + bf(a * sn));
      }
    }
  }
  void gelu_mul(const View& g, const View& u) override {
    for (int64_t r = 0; r < g.rows; ++r) {
      float* gp = row(g, r);
      const float* up = row(u, r);
      for (int64_t j = 0; j < g.cols; ++j) gp[j] = round(round(ops::gelu_tanh(gp[j])) * up[j]);
    }
  }
  void scale(const View& x, double s) override {
    const float sc = static_cast<float>(s);
    for_each(x, [&](float& v) { v = round(v * sc); });
  }
  void mul(const View& x, const TensorView& w, double s) override {
    const float* wv = constant(w);
    const float sc = static_cast<float>(s);
    for (int64_t r = 0; r < x.rows; ++r) {
      float* p = row(x, r);
      for (int64_t j = 0; j < x.cols; ++j) p[j] = round(round(p[j] * wv[j]) * sc);
    }
  }
  void add(const View& dst, const View& src) override {
    for (int64_t r = 0; r < dst.rows; ++r) {
      float* d = row(dst, r);
      const float* p = row(src, r);
      for (int64_t j = 0; j < dst.cols; ++j) d[j] = round(d[j] + p[j]);
    }
  }
  void softcap(const View& x, double c) override {
    const float cc = static_cast<float>(c);
    for_each(x, [&](float& v) { v = round(round(std::tanh(round(v / cc))) * cc); });
  }
  // Eager attention: scores = q k^T in bf16, softmax in float32 cast to bf16, p v in bf16.
  void attention(int seq, int layer, const View& q, int64_t heads, const View& out) override {
    if (!full_) return RefBackend<float>::attention(seq, layer, q, heads, out);
    for_each_query(seq, layer, q, heads, out, [&](const Query& a) {
      float* sc = scores_[omp_get_thread_num()].data();
      for (int64_t kp = a.lo; kp <= a.pos; ++kp) {
        const float* kh = a.key(kp);
        double s = 0;
        for (int64_t d = 0; d < a.hd; ++d) s += static_cast<double>(a.q[d]) * kh[d];
        sc[kp - a.lo] = bf(static_cast<float>(s));
      }
      ops::softmax(sc, a.pos - a.lo + 1, false);
      for (int64_t kp = a.lo; kp <= a.pos; ++kp) sc[kp - a.lo] = bf(sc[kp - a.lo]);
      for (int64_t d = 0; d < a.hd; ++d) {
        double acc = 0;
        for (int64_t kp = a.lo; kp <= a.pos; ++kp) acc += static_cast<double>(sc[kp - a.lo]) * a.val(kp)[d];
        a.out[d] = bf(static_cast<float>(acc));
      }
    });
  }
  // Gemma4TextRouter: no override. The router computes in float32 from its bf16 logits:
  // softmax(dtype=float32), topk on the float32 probabilities, the renormalisation and the
  // product with per_expert_scale (a bf16 parameter, promoted) in float32, which is
  // RefBackend<float>::moe_route with the bf16-rounded constants. Rounding the
  // probabilities to bf16 instead (softmax in the activation dtype, as two transformers
  // revisions we read have it, 0246b4f and c308a30) makes tied probabilities common and
  // misses HF's logits_bf16 on tiny-moe by 5x HF's own gap; float32 reproduces its
  // first 11 positions bit for bit (README, "Precision").
  // Gemma4TextExperts (grouped_mm, transformers >= 5 with torch >= 2.9): each bf16 output
  // times its float32 weight, rounded to bf16, then the k outputs of a token summed in
  // float32 and rounded once (index_add_ into bf16 rounds after each add: equal for k = 2).
  void moe_combine(const View& eo, const double* w, int64_t K, const View& out) override {
    if (!full_) return RefBackend<float>::moe_combine(eo, w, K, out);
    for (int64_t t = 0; t < out.rows; ++t) {
      float* o = row(out, t);
      for (int64_t j = 0; j < out.cols; ++j) {
        float acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += bf(row(eo, t * K + k)[j] * static_cast<float>(w[t * K + k]));
        o[j] = bf(acc);
      }
    }
  }

 private:
  float round(float x) const { return full_ ? bf(x) : x; }
  template <typename F>
  void for_each(const View& x, F f) {
    for (int64_t r = 0; r < x.rows; ++r) {
      float* p = row(x, r);
      for (int64_t j = 0; j < x.cols; ++j) f(p[j]);
    }
  }

  bool full_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_bf16_backend(const Model& m, const BackendOptions& opt) {
  return std::make_unique<Bf16Backend>(m, opt);
}

}  // namespace g4
