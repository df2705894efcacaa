#include "tools/kld_base.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "util/error.h"

namespace g4 {

KldBase parse_kld_base(std::shared_ptr<MappedFile> file, int64_t vocab, int n_ctx, int first) {
  KldBase b;
  b.file = std::move(file);
  const std::string& path = b.file->path();
  const auto* d = b.file->data();
  const size_t size = b.file->size();
  if (size < 20 || std::memcmp(d, kLogitsMagic, 8) != 0)
    fail("{}: not a KL-divergence base file (no '_logits_' magic); make one with --kl-divergence-base", path);
  std::memcpy(&b.n_ctx, d + 8, 4);
  std::memcpy(&b.n_vocab, d + 12, 4);
  std::memcpy(&b.n_chunk, d + 16, 4);
  if (b.n_vocab != vocab)
    fail("{}: base logits have n_vocab = {} but the model has a vocabulary of {}; compare models that share a tokenizer",
         path, b.n_vocab, vocab);
  if (b.n_ctx != n_ctx) fail("{}: base file was made with -c {}, this run uses -c {}; use the same context", path, b.n_ctx, n_ctx);
  if (b.n_ctx < 4 || b.n_chunk <= 0 || b.n_vocab <= 0)
    fail("{}: header has n_ctx = {}, n_vocab = {}, n_chunk = {}", path, b.n_ctx, b.n_vocab, b.n_chunk);
  if (first < 1 || first > b.n_ctx - 2) fail("{}: first scored position {} is outside the chunk of {}", path, first, b.n_ctx);
  const uint64_t rec_bytes = kld_record_words(b.n_vocab) * 2;
  // Up to 2^83 for hostile headers: computed in 128 bits so no wrapped size can match.
  auto file_size = [&](int first_pos) {
    using u128 = unsigned __int128;
    const u128 per_chunk = static_cast<u128>(b.n_ctx - 1 - first_pos) * rec_bytes;
    return 20 + 4 * static_cast<u128>(b.n_chunk) * static_cast<u128>(b.n_ctx) + per_chunk * static_cast<u128>(b.n_chunk);
  };
  if (file_size(first) != size) {
    const bool other = file_size(first == b.n_ctx / 2 ? b.n_ctx / 2 - 1 : b.n_ctx / 2) == size;
    fail("{}: {} bytes, but n_ctx {}, n_vocab {}, {} chunks need {}; {}", path, size, b.n_ctx, b.n_vocab, b.n_chunk,
         file_size(first) > UINT64_MAX ? std::string("over 2^64") : std::to_string(static_cast<uint64_t>(file_size(first))),
         other ? "the file was made with the other scoring protocol: add or drop --llama-scoring"
               : "the file is truncated or not from llama-perplexity/g4");
  }
  b.tokens.resize(static_cast<size_t>(b.n_chunk) * static_cast<size_t>(b.n_ctx));
  std::memcpy(b.tokens.data(), d + 20, b.tokens.size() * 4);
  for (size_t i = 0; i < b.tokens.size(); ++i)
    if (b.tokens[i] < 0 || b.tokens[i] >= vocab)
      fail("{}: token {} (chunk {}) has id {}, outside the vocabulary of {}", path, i, i / static_cast<size_t>(b.n_ctx),
           b.tokens[i], vocab);
  b.records = d + 20 + b.tokens.size() * 4;
  b.first = first;
  // Each record stores log p = scale * q + min_log_prob, q in [0, 65535]. llama.cpp writes
  // scale = (max - min) / 65535 with max - min <= 16, and min_log_prob = min - max - logsumexp,
  // which lies in [-16 - ln(n_vocab), 0]. Anything else (NaN, Inf, a negative scale, a
  // positive log-prob) is a corrupt file and would silently poison every statistic.
  const double max_scale = 16.0 / 65535.0 * (1 + 1e-5);
  const double min_lp_floor = -16.0 - std::log(static_cast<double>(b.n_vocab)) - 1e-3;
  const uint64_t n_rec = static_cast<uint64_t>(b.n_chunk) * static_cast<uint64_t>(b.n_ctx - 1 - first);
  for (uint64_t r = 0; r < n_rec; ++r) {
    float scale, min_lp;
    std::memcpy(&scale, b.records + r * rec_bytes, 4);
    std::memcpy(&min_lp, b.records + r * rec_bytes + 4, 4);
    const uint64_t chunk = r / static_cast<uint64_t>(b.n_ctx - 1 - first);
    const uint64_t pos = first + r % static_cast<uint64_t>(b.n_ctx - 1 - first);
    if (!std::isfinite(scale) || !std::isfinite(min_lp))
      fail("{}: record {} (chunk {}, position {}) has scale = {}, min_log_prob = {}: not finite; the base run produced "
           "NaN/Inf logits, make the base file again with a healthy model", path, r, chunk, pos, scale, min_lp);
    if (scale < 0 || scale > max_scale || min_lp > 1e-3 || min_lp < min_lp_floor)
      fail("{}: record {} (chunk {}, position {}) has scale = {}, min_log_prob = {}; expected scale in [0, {:.3g}] and "
           "min_log_prob in [{:.3g}, 0]: the file is corrupt or not a log-softmax base file",
           path, r, chunk, pos, scale, min_lp, max_scale, min_lp_floor);
  }
  return b;
}

KldBase open_kld_base(const std::string& path, int64_t vocab, int& first) {
  auto file = MappedFile::open(path);
  if (file->size() < 20 || std::memcmp(file->data(), kLogitsMagic, 8) != 0)
    fail("{}: not a KL-divergence base file (no '_logits_' magic); make one with --kl-divergence-base", path);
  int32_t hdr[3];
  std::memcpy(hdr, file->data() + 8, 12);
  const int n_ctx = hdr[0];
  if (n_ctx < 4 || hdr[2] <= 0 || hdr[1] <= 0) fail("{}: header has n_ctx = {}, n_vocab = {}, n_chunk = {}", path, hdr[0], hdr[1], hdr[2]);
  // llama-perplexity's files have n_ctx - 1 - n_ctx/2 records per chunk; the gold protocol one more.
  const uint64_t rec = kld_record_words(hdr[1]) * 2, per_chunk = 4ull * static_cast<uint64_t>(n_ctx);
  const uint64_t llama = 20 + static_cast<uint64_t>(hdr[2]) * (per_chunk + static_cast<uint64_t>(n_ctx - 1 - n_ctx / 2) * rec);
  first = file->size() == llama ? n_ctx / 2 : n_ctx / 2 - 1;
  return parse_kld_base(std::move(file), vocab, n_ctx, first);
}

BaseMatch match_base_record(const KldBase& b, int64_t index, const double* z, int32_t target) {
  const int64_t V = b.n_vocab;
  const uint8_t* r = b.records + static_cast<uint64_t>(index) * kld_record_words(V) * 2;
  float scale, min_lp;
  std::memcpy(&scale, r, 4);
  std::memcpy(&min_lp, r + 4, 4);
  const auto* q = reinterpret_cast<const uint16_t*>(r + 8);
  double mx = z[0];
  for (int64_t v = 1; v < V; ++v) mx = std::max(mx, z[v]);
  double s = 0;
  for (int64_t v = 0; v < V; ++v) s += std::exp(z[v] - mx);
  const double lse = mx + std::log(s);
  BaseMatch m;
  for (int64_t v = 0; v < V; ++v) {
    const double lb = static_cast<double>(scale) * q[v] + min_lp;
    if (lb > -16) m.kld += std::exp(lb) * (lb - (z[v] - lse));
    if (z[v] > z[m.top]) m.top = static_cast<int32_t>(v);
    if (q[v] > q[m.top_base]) m.top_base = static_cast<int32_t>(v);
  }
  m.nll = lse - z[target];
  m.nll_base = -(static_cast<double>(scale) * q[target] + min_lp);
  return m;
}

}  // namespace g4
