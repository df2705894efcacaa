#include "tools/kv_study.h"

#include <fmt/format.h>

#include "util/error.h"

namespace g4 {

double kv_bytes_per_token(const ModelSpec& s, KvType k, KvType v) {
  double b = 0;
  for (const auto& l : s.layers)
    if (l.owns_kv) b += static_cast<double>(l.n_kv_heads) * (kv_row_bytes(k, l.head_dim) + kv_row_bytes(v, l.head_dim));
  return b;
}

KvStudyResult run_kv_study(const Model& m, const std::string& text, const KvStudyOptions& opt) {
  KvStudyResult r;
  std::vector<KvType> types = opt.types.empty() ? all_kv_types() : opt.types;
  if (types.front() != KvType::F32) types.insert(types.begin(), KvType::F32);  // the reference
  std::vector<LadderRung> rungs;
  for (KvType t : types) {
    try {  // a type the head dims do not allow is reported, not fatal
      for (const auto& l : m.spec.layers) KvCodec(t, l.head_dim);
    } catch (const Error& e) {
      r.skipped.push_back(fmt::format("{}: {}", kv_type_name(t), e.what()));
      continue;
    }
    ForwardOptions fo{opt.precision};
    fo.cache_type_k = fo.cache_type_v = t;
    rungs.push_back({kv_type_name(t), "", fo});
    r.rows.push_back({t, kv_bytes_per_token(m.spec, t), {}});
  }
  const std::vector<int32_t> tokens = ladder_tokens(m, text);
  for (int c : opt.contexts) {
    LadderOptions lo;
    lo.n_ctx = c;
    lo.max_chunks = opt.max_chunks;
    lo.kld_bucket = opt.kld_bucket;
    lo.drift_all_positions = true;
    const LadderResult lr = compare_rungs(m, tokens, lo, rungs);
    r.contexts.push_back(c);
    r.chunks.push_back(lr.chunks);
    for (size_t i = 0; i < lr.rungs.size(); ++i) r.rows[i].at.push_back(lr.rungs[i]);
  }
  return r;
}

std::string format_kv_study(const KvStudyResult& r, const std::string& model) {
  std::string s = fmt::format("KV-cache types: {} (both K and V of the type; KLD and top-1 against the f32 cache)\n\n", model);
  s += "| cache | bytes/token |";
  for (size_t i = 0; i < r.contexts.size(); ++i)
    s += fmt::format(" c={} PPL | KLD | top-1 |", r.contexts[i]);
  s += "\n| --- | ---: |";
  for (size_t i = 0; i < r.contexts.size(); ++i) s += " ---: | ---: | ---: |";
  s += "\n";
  for (const auto& row : r.rows) {
    s += fmt::format("| {} | {:.0f} |", kv_type_name(row.type), row.bytes_per_token);
    for (const auto& g : row.at) s += fmt::format(" {:.4f} | {:.2e} | {:.2f}% |", g.ppl, g.kld, 100 * g.top1);
    s += "\n";
  }
  s += "\nKLD against the f32 cache by position in the chunk (every position 0..c-2, pooled over chunks):\n";
  for (size_t i = 0; i < r.contexts.size(); ++i)
    for (const auto& row : r.rows) {
      if (row.type == KvType::F32) continue;
      s += fmt::format("c={} {}: {}\n", r.contexts[i], kv_type_name(row.type), position_buckets_line(row.at[i].by_position));
    }
  s += fmt::format("\nchunks per context:");
  for (size_t i = 0; i < r.contexts.size(); ++i) s += fmt::format(" c={}: {}", r.contexts[i], r.chunks[i]);
  s += "\n";
  for (const auto& k : r.skipped) s += fmt::format("skipped {}\n", k);
  return s;
}

}  // namespace g4
