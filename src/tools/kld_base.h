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
  std::vector<int32_t> tokens;       // [n_chunk * n_ctx]
  const uint8_t* records = nullptr;  // [n_chunk * (n_ctx - 1 - first)] records
};

// `first`: the first scored position of a chunk (n_ctx/2 - 1, or n_ctx/2 with llama
// scoring); n_ctx and vocab: what this run uses. Throws g4::Error naming the file, the
// field or record and what was expected.
KldBase parse_kld_base(std::shared_ptr<MappedFile> file, int64_t vocab, int n_ctx, int first);

}  // namespace g4
