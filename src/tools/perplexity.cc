#include "tools/perplexity.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>

#include "tools/kld_base.h"
#include "tools/token_input.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace g4 {
namespace {

// Running mean +/- uncertainty as llama.cpp reports it.
struct Acc {
  double sum = 0, sum2 = 0;
  int64_t n = 0;
  void add(double x) { sum += x; sum2 += x * x; ++n; }
  double mean() const { return n ? sum / n : 0; }
  double unc() const {
    if (n <= 10) return 0;
    const double f = mean(), v = (sum2 / n - f * f) / (n - 1);
    return v > 0 ? std::sqrt(v) : 0;
  }
};

double percentile(const std::vector<double>& sorted, double f) {
  if (sorted.empty()) return 0;
  const double x = f * (sorted.size() - 1);
  const size_t i = static_cast<size_t>(std::floor(x));
  const double t = x - i;
  return (1 - t) * sorted[i] + t * sorted[std::min(i + 1, sorted.size() - 1)];
}

// Log-softmax pieces of one row: max, log-sum-exp (exp and sum in double for the
// f64 reference; llama.cpp's exp in f32 and sum in f64 otherwise).
template <typename T>
void row_stats(const T* z, int64_t V, double& mx, double& lse) {
  mx = z[0];
  for (int64_t v = 1; v < V; ++v) mx = std::max(mx, static_cast<double>(z[v]));
  double s = 0;
  if constexpr (std::is_same_v<T, double>) {
    for (int64_t v = 0; v < V; ++v) s += std::exp(z[v] - mx);
  } else {
    const float m = static_cast<float>(mx);
    for (int64_t v = 0; v < V; ++v) s += std::exp(z[v] - m);
  }
  lse = std::log(s);
}

size_t record_words(int64_t V) { return kld_record_words(V); }

template <typename T>
void quantize_log_probs(const T* z, int64_t V, uint16_t* out) {
  float mx = static_cast<float>(z[0]), mn = static_cast<float>(z[0]);
  for (int64_t v = 1; v < V; ++v) { mx = std::max(mx, static_cast<float>(z[v])); mn = std::min(mn, static_cast<float>(z[v])); }
  mn = std::max(mn, mx - 16.0f);
  double s = 0;
  for (int64_t v = 0; v < V; ++v) s += std::exp(static_cast<float>(z[v]) - mx);
  const float lse = static_cast<float>(std::log(s));
  const float min_log_prob = mn - mx - lse;
  const float scale = (mx - mn) / 65535.0f;
  std::memcpy(out, &scale, 4);
  std::memcpy(out + 2, &min_log_prob, 4);
  const float inv = scale > 0 ? 1.0f / scale : 0.0f;
  for (int64_t v = 0; v < V; ++v) {
    const float x = static_cast<float>(z[v]);
    out[4 + v] = x > mn ? static_cast<uint16_t>(std::min(65535.0f, std::nearbyint((x - mn) * inv))) : 0;
  }
  for (size_t w = 4 + static_cast<size_t>(V); w < record_words(V); ++w) out[w] = 0;
}

struct KldAcc {
  explicit KldAcc(int64_t bucket) : drift(bucket) {}
  Acc nll, nll_base, kld, dp, dp2;
  PositionDrift drift;
  double nll_x_base = 0;
  int64_t same = 0;
  std::vector<double> klds, dps;
};

template <typename T>
void kld_position(const T* z, int64_t V, const uint16_t* rec, int32_t target, int64_t pos, KldAcc& a) {
  double mx, lse;
  row_stats(z, V, mx, lse);
  float scale, min_lp;
  std::memcpy(&scale, rec, 4);
  std::memcpy(&min_lp, rec + 2, 4);
  const uint16_t* q = rec + 4;
  const double nll = mx + lse - static_cast<double>(z[target]);
  const double nll_base = -(static_cast<double>(scale) * q[target] + min_lp);
  double kld = 0;
  int64_t top = 0, top_base = 0;
  for (int64_t v = 0; v < V; ++v) {
    const double lb = static_cast<double>(scale) * q[v] + min_lp;
    if (lb > -16) kld += std::exp(lb) * (lb - (static_cast<double>(z[v]) - mx - lse));
    if (z[v] > z[top]) top = v;
    if (q[v] > q[top_base]) top_base = v;
  }
  const double dp = std::exp(-nll) - std::exp(-nll_base);
  a.nll.add(nll);
  a.nll_base.add(nll_base);
  a.nll_x_base += nll * nll_base;
  a.kld.add(kld);
  a.dp.add(dp);
  a.dp2.add(dp * dp);
  a.same += top == top_base;
  a.drift.add(pos, kld, top == top_base);
  a.klds.push_back(kld);
  a.dps.push_back(dp);
}

KldStats finish_kld(KldAcc& a) {
  KldStats k;
  const int64_t n = a.nll.n;
  k.n = n;
  const double uq = a.nll.unc(), ub = a.nll_base.unc();
  const double cov = n >= 10 ? (a.nll_x_base / n - a.nll.mean() * a.nll_base.mean()) / (n - 1) : 0;
  k.ppl = std::exp(a.nll.mean());
  k.ppl_err = uq * k.ppl;
  k.ppl_base = std::exp(a.nll_base.mean());
  k.ppl_base_err = ub * k.ppl_base;
  k.cor = uq > 0 && ub > 0 ? cov / (uq * ub) : 0;
  k.ln_ratio = a.nll.mean() - a.nll_base.mean();
  k.ln_ratio_err = std::sqrt(std::max(0.0, uq * uq + ub * ub - 2 * cov));
  k.ratio = std::exp(k.ln_ratio);
  k.ratio_err = k.ln_ratio_err * k.ratio;
  k.diff = k.ppl - k.ppl_base;
  k.diff_err = std::sqrt(std::max(0.0, k.ppl_err * k.ppl_err + k.ppl_base_err * k.ppl_base_err - 2 * k.ppl * k.ppl_base * cov));
  k.kld = a.kld.mean();
  k.kld_err = a.kld.unc();
  std::sort(a.klds.begin(), a.klds.end());
  std::sort(a.dps.begin(), a.dps.end());
  const std::pair<const char*, double> kp[] = {{"Maximum", 1.0}, {"99.9%", 0.999}, {"99.0%", 0.99}, {"95.0%", 0.95},
                                               {"90.0%", 0.90}, {"Median", 0.5}, {"10.0%", 0.10}, {"5.0%", 0.05},
                                               {"1.0%", 0.01}, {"0.1%", 0.001}, {"Minimum", 0.0}};
  for (const auto& [name, f] : kp) k.kld_pct.emplace_back(name, percentile(a.klds, f));
  const std::pair<const char*, double> dpp[] = {{"Maximum", 1.0}, {"99.9%", 0.999}, {"99.0%", 0.99}, {"95.0%", 0.95},
                                                {"90.0%", 0.90}, {"75.0%", 0.75}, {"Median", 0.5}, {"25.0%", 0.25},
                                                {"10.0%", 0.10}, {"5.0%", 0.05}, {"1.0%", 0.01}, {"0.1%", 0.001},
                                                {"Minimum", 0.0}};
  for (const auto& [name, f] : dpp) k.dp_pct.emplace_back(name, 100 * percentile(a.dps, f));
  k.dp_mean = 100 * a.dp.mean();
  k.dp_mean_err = 100 * a.dp.unc();
  k.dp_rms = 100 * std::sqrt(a.dp2.mean());
  k.dp_rms_err = k.dp_rms > 0 ? 100 * 0.5 / (k.dp_rms / 100) * a.dp2.unc() : 0;
  k.same_top = n ? static_cast<double>(a.same) / n : 0;
  k.same_top_err = n > 1 ? std::sqrt(k.same_top * (1 - k.same_top) / (n - 1)) : 0;
  k.by_position = a.drift.buckets();
  return k;
}

}  // namespace

PerplexityResult run_perplexity(const Model& model, const std::string& text, const PerplexityOptions& opt) {
  if (!opt.kld_base_in.empty()) return run_perplexity_tokens(model, {}, opt);  // tokens come from the base file
  std::string t = text;
  if (!t.empty() && t.back() == '\n') t.pop_back();
  const Tokenizer tok = load_tokenizer(model);
  return run_perplexity_tokens(model, tok.encode(t, true, /*parse_special=*/false), opt);
}

PerplexityResult run_perplexity_tokens(const Model& model, const std::vector<int32_t>& text_tokens, const PerplexityOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  const int n_ctx = opt.n_ctx;
  if (n_ctx < 4) fail("-c {} is too small (at least 4)", n_ctx);
  if (n_ctx % 2 != 0) fail("-c {} is odd; the protocol scores positions n_ctx/2..n_ctx-2, use an even context", n_ctx);
  if (n_ctx > model.spec.max_ctx) fail("-c {} exceeds the model's context length {}", n_ctx, model.spec.max_ctx);
  if (opt.n_batch < 1) fail("-b must be positive");

  // Predictions made at positions first..n_ctx-2 (each predicts the next token) count.
  const int first = opt.llama_scoring ? n_ctx / 2 : n_ctx / 2 - 1;
  std::optional<KldBase> base;
  std::vector<int32_t> tokens = text_tokens;
  if (!opt.kld_base_in.empty()) {
    base = parse_kld_base(MappedFile::open(opt.kld_base_in), model.spec.vocab, n_ctx, first);
    tokens = base->tokens;
  }
  const int64_t n_tok = static_cast<int64_t>(tokens.size());
  if (n_tok < 2 * static_cast<int64_t>(n_ctx))
    fail("the text has {} tokens but -c {} needs at least 2*n_ctx = {}; use a longer text or a smaller -c", n_tok,
         n_ctx, 2 * n_ctx);
  int n_chunk = static_cast<int>(n_tok / n_ctx);
  if (opt.max_chunks >= 0) n_chunk = std::min(n_chunk, opt.max_chunks);
  if (n_chunk < 1) fail("--chunks {} leaves nothing to evaluate", opt.max_chunks);

  const int64_t V = model.spec.vocab;
  const size_t words = record_words(V);
  std::ofstream base_out;
  if (!opt.kld_base_out.empty()) {
    base_out.open(opt.kld_base_out + ".tmp", std::ios::binary);
    if (!base_out) fail("cannot write '{}'", opt.kld_base_out);
    const int32_t hdr[3] = {n_ctx, static_cast<int32_t>(V), n_chunk};
    base_out.write(kLogitsMagic, 8);
    base_out.write(reinterpret_cast<const char*>(hdr), 12);
    base_out.write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(4ll * n_chunk * n_ctx));
  }

  PerplexityResult r;
  r.n_ctx = n_ctx;
  r.chunks = n_chunk;
  r.n_text_tokens = n_tok;
  if (opt.want_all_nll) r.nll.assign(static_cast<size_t>(n_chunk) * (n_ctx - 1), 0.0f);
  Acc acc;
  KldAcc kacc(opt.kld_bucket);
  Session session(model, opt.forward);
  const bool f64 = opt.forward.precision == Precision::F64;
  std::vector<uint16_t> rec(words);
  for (int c = 0; c < n_chunk; ++c) {
    std::vector<int32_t> chunk(tokens.begin() + static_cast<int64_t>(c) * n_ctx, tokens.begin() + static_cast<int64_t>(c + 1) * n_ctx);
    chunk[0] = model.spec.bos_id;  // overwritten, never inserted; never scored
    session.reset();
    const int need_from = opt.want_all_nll ? 0 : first;
    std::vector<float> lf;
    std::vector<double> ld;
    for (int start = 0; start < n_ctx; start += opt.n_batch) {
      const int len = std::min(opt.n_batch, n_ctx - start);
      EvalRequest req;
      req.logits_from = std::max(0, need_from - start);
      req.logits_f64 = f64;
      auto out = session.eval(std::span<const int32_t>(chunk.data() + start, static_cast<size_t>(len)), req);
      lf.insert(lf.end(), out.logits.begin(), out.logits.end());
      ld.insert(ld.end(), out.logits64.begin(), out.logits64.end());
    }
    for (int p = need_from; p <= n_ctx - 2; ++p) {
      const int64_t row = p - need_from;
      const int32_t target = chunk[p + 1];
      double mx, lse, zt;
      if (f64) { row_stats(&ld[row * V], V, mx, lse); zt = ld[row * V + target]; }
      else { row_stats(&lf[row * V], V, mx, lse); zt = lf[row * V + target]; }
      const double nll = mx + lse - zt;
      // A NaN/Inf logit makes every statistic after it meaningless: stop with the place.
      if (!std::isfinite(nll))
        fail("non-finite logits at chunk {}, position {} (NLL = {}): the model produces NaN/Inf; run `g4 inspect` "
             "on it (non-finite weights) or `g4 compare` to find the layer", c, p, nll);
      if (opt.want_all_nll) r.nll[static_cast<size_t>(c) * (n_ctx - 1) + p] = static_cast<float>(nll);
      if (p < first) continue;
      acc.add(nll);
      if (base_out.is_open()) {
        if (f64) quantize_log_probs(&ld[row * V], V, rec.data());
        else quantize_log_probs(&lf[row * V], V, rec.data());
        base_out.write(reinterpret_cast<const char*>(rec.data()), static_cast<std::streamsize>(words * 2));
      }
      if (base) {
        const int64_t idx = static_cast<int64_t>(c) * (n_ctx - 1 - first) + (p - first);
        const auto* brec = reinterpret_cast<const uint16_t*>(base->records + idx * words * 2);
        std::memcpy(rec.data(), brec, words * 2);
        if (f64) kld_position(&ld[row * V], V, rec.data(), target, p, kacc);
        else kld_position(&lf[row * V], V, rec.data(), target, p, kacc);
      }
    }
    if (opt.on_chunk) opt.on_chunk(c, n_chunk, std::exp(acc.mean()));
  }
  if (base_out.is_open()) {
    base_out.close();
    if (!base_out) fail("write to '{}' failed (disk full?)", opt.kld_base_out);
    std::rename((opt.kld_base_out + ".tmp").c_str(), opt.kld_base_out.c_str());
  }
  r.tokens = acc.n;
  r.nll_mean = acc.mean();
  r.ppl = std::exp(r.nll_mean);
  const double var = acc.n > 1 ? (acc.sum2 / acc.n - r.nll_mean * r.nll_mean) / (acc.n - 1) : 0;
  r.ppl_err = std::sqrt(std::max(0.0, var)) * r.ppl;
  if (base) r.kld = finish_kld(kacc);
  r.kv_bytes = session.kv_bytes();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

std::string format_kld_report(const KldStats& k) {
  std::string o;
  o += fmt::format("====== Perplexity statistics ======\n");
  o += fmt::format("Mean PPL(Q)                   : {:10.6f} ± {:10.6f}\n", k.ppl, k.ppl_err);
  o += fmt::format("Mean PPL(base)                : {:10.6f} ± {:10.6f}\n", k.ppl_base, k.ppl_base_err);
  o += fmt::format("Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2f}%\n", 100 * k.cor);
  o += fmt::format("Mean ln(PPL(Q)/PPL(base))     : {:10.6f} ± {:10.6f}\n", k.ln_ratio, k.ln_ratio_err);
  o += fmt::format("Mean PPL(Q)/PPL(base)         : {:10.6f} ± {:10.6f}\n", k.ratio, k.ratio_err);
  o += fmt::format("Mean PPL(Q)-PPL(base)         : {:10.6f} ± {:10.6f}\n\n", k.diff, k.diff_err);
  o += fmt::format("====== KL divergence statistics ======\n");
  o += fmt::format("Mean    KLD: {:10.6f} ± {:10.6f}\n", k.kld, k.kld_err);
  for (const auto& [name, v] : k.kld_pct) o += fmt::format("{:<7} KLD: {:10.6f}\n", name, v);
  o += fmt::format("\n====== Token probability statistics ======\n");
  o += fmt::format("Mean    Δp: {:8.3f} ± {:.3f} %\n", k.dp_mean, k.dp_mean_err);
  for (const auto& [name, v] : k.dp_pct) o += fmt::format("{:<7} Δp: {:8.3f}%\n", name, v);
  o += fmt::format("RMS Δp    : {:8.3f} ± {:.3f} %\n", k.dp_rms, k.dp_rms_err);
  o += fmt::format("Same top p: {:8.3f} ± {:.3f} %  ({} positions)\n", 100 * k.same_top, 100 * k.same_top_err, k.n);
  o += fmt::format("\n====== KLD and top-1 by position in the chunk (pooled over chunks) ======\n");
  o += position_buckets_table(k.by_position);
  return o;
}

}  // namespace g4
