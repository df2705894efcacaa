// llama.cpp's KL-divergence base file (llama-perplexity --kl-divergence-base): "_logits_",
// int32 n_ctx, n_vocab, n_chunk, the tokens [n_chunk * n_ctx], then per scored position a
// record of two floats (scale, min_log_prob) and n_vocab uint16 quantized log-probs.
// The file is input from elsewhere, so every number in it is checked before use.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "util/mapped_file.h"

namespace g4 {

inline constexpr char kLogitsMagic[8] = {'_', 'l', 'o', 'g', 'i', 't', 's', '_'};

// uint16 words of one record: 4 for the two floats, then n_vocab padded to an even count.
inline size_t kld_record_words(int64_t n_vocab) { return static_cast<size_t>(2 * ((n_vocab + 1) / 2) + 4); }

struct KldBase {
  std::shared_ptr<MappedFile> file;
  int32_t n_ctx = 0, n_vocab = 0, n_chunk = 0;
  int first = 0;                     // first scored position of a chunk
  std::vector<int32_t> tokens;       // [n_chunk * n_ctx]
  const uint8_t* records = nullptr;  // [n_chunk * (n_ctx - 1 - first)] records
};

// `first`: the first scored position of a chunk (n_ctx/2 - 1, or n_ctx/2 with llama
// scoring); n_ctx and vocab: what this run uses. Throws g4::Error naming the file, the
// field or record and what was expected.
KldBase parse_kld_base(std::shared_ptr<MappedFile> file, int64_t vocab, int n_ctx, int first);

// The same, with n_ctx from the header and the scoring protocol from the size: `first`
// becomes n_ctx/2 (llama-perplexity's) or n_ctx/2 - 1 (the gold protocol).
KldBase open_kld_base(const std::string& path, int64_t vocab, int& first);

// One scored position against record `index` of a base file: KL(base || p) summed as
// llama-perplexity sums it (base log-probs below -16 left out), the base's NLL of
// `target` and both top-1 tokens. logits: the model's row of n_vocab.
struct BaseMatch {
  double kld = 0, nll = 0, nll_base = 0;
  int32_t top = 0, top_base = 0;
};
BaseMatch match_base_record(const KldBase& b, int64_t index, const double* logits, int32_t target);

}  // namespace g4
