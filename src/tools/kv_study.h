// `g4 kv-study`: what each KV-cache type costs. For every cache type and several context
// lengths: PPL, KL divergence and top-1 agreement against the same model with an f32
// cache, and the cache's bytes per token.
#pragma once
#include <string>
#include <vector>

#include "tools/ladder.h"

namespace g4 {

struct KvStudyOptions {
  std::vector<int> contexts{128, 256, 512};
  int max_chunks = 4;
  Precision precision = Precision::Fast;
  std::vector<KvType> types;  // empty: every type the model's head dims allow
  int kld_bucket = 64;        // drift by position over every position of the chunks
};

struct KvStudyRow {
  KvType type;
  double bytes_per_token = 0;
  std::vector<LadderRung> at;  // one per context length
};

struct KvStudyResult {
  std::vector<int> contexts;
  std::vector<int> chunks;  // per context
  std::vector<KvStudyRow> rows;
  std::vector<std::string> skipped;  // types the model cannot use, with the reason
};

// Bytes the cache holds per token (K and V of every layer that owns a cache), as the
// fast backend's packed store holds them (kv_row_bytes per head row).
double kv_bytes_per_token(const ModelSpec& s, KvType k, KvType v);
inline double kv_bytes_per_token(const ModelSpec& s, KvType t) { return kv_bytes_per_token(s, t, t); }
KvStudyResult run_kv_study(const Model& m, const std::string& text, const KvStudyOptions& opt);
std::string format_kv_study(const KvStudyResult& r, const std::string& model);

}  // namespace g4
