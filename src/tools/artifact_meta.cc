#include "tools/artifact_meta.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <optional>
#include <set>
#include <unordered_map>

#include "model/hparams.h"
#include "tools/token_input.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace g4 {
namespace {

// NaN marks "not applicable" (a per-type value on a layer of the other type): never a difference.
bool same_value(double a, double b) {
  return a == b || std::isnan(a) || std::isnan(b) || std::abs(a - b) <= 1e-6 * std::max(std::abs(a), std::abs(b));
}

std::string num(double x) { if (std::isnan(x)) return "-"; return x == std::floor(x) && std::abs(x) < 1e15 ? fmt::format("{}", static_cast<int64_t>(x)) : fmt::format("{:.9g}", x); }

std::string list(const std::vector<double>& v) {
  std::string s;
  for (double x : v) s += fmt::format("{}{}", s.empty() ? "" : ",", num(x));
  return v.size() == 1 ? s : fmt::format("[{}]", s);
}

// Printable token string: control bytes escaped, long strings cut.
std::string show(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) o += fmt::format("\\x{:02x}", c);
    else o += static_cast<char>(c);
  }
  if (o.size() > 40) o = fmt::format("{}...", o.substr(0, 37));
  return fmt::format("'{}'", o);
}

// What a tokenizer is configured with, beyond its vocabulary.
struct TokSettings {
  int64_t bos = -1, eos = -1, unk = -1, pad = -1;
  bool add_bos = true, add_eos = false;
  std::string pre, normalizer, model;  // compared only between files of the same format
  std::vector<double> scores;          // GGUF only
};

TokSettings settings_of(const Model& m, const Tokenizer& t) {
  TokSettings s;
  s.bos = t.bos_id();
  s.add_bos = t.add_bos_default();
  s.unk = t.find("<unk>");
  s.eos = m.spec.eos_ids.empty() ? -1 : m.spec.eos_ids[0];
  s.pad = m.spec.pad_id;
  if (m.gguf) {
    const auto& g = *m.gguf;
    if (auto v = g.get_int(gk::kUnkId)) s.unk = *v;
    if (auto v = g.get_int(gk::kEosId)) s.eos = *v;
    if (auto v = g.get_int(gk::kPadId)) s.pad = *v;
    s.add_eos = g.get_bool(gk::kAddEos).value_or(false);
    s.pre = g.get_string(gk::kTokenizerPre).value_or("");
    s.model = g.get_string(gk::kTokenizerModel).value_or("");
    if (const auto* sc = g.find(gk::kScores); sc && sc->is_array()) s.scores = sc->af;
  } else {
    const auto dir = std::filesystem::path(m.path);
    if (std::filesystem::exists(dir / "tokenizer.json")) {
      const json j = parse_json_strict(read_text_file((dir / "tokenizer.json").string()), (dir / "tokenizer.json").string());
      if (j.contains("pre_tokenizer")) s.pre = j["pre_tokenizer"].dump();
      if (j.contains("normalizer")) s.normalizer = j["normalizer"].dump();
      if (j.contains("model") && j["model"].is_object() && j["model"].contains("type")) s.model = j["model"]["type"].dump();
    }
    if (std::filesystem::exists(dir / "tokenizer_config.json")) {
      const json c = parse_json_strict(read_text_file((dir / "tokenizer_config.json").string()), (dir / "tokenizer_config.json").string());
      if (c.contains("add_eos_token") && c["add_eos_token"].is_boolean()) s.add_eos = c["add_eos_token"].get<bool>();
    }
  }
  return s;
}

}  // namespace

std::vector<HparamFinding> compare_hparams(const ModelSpec& a, const ModelSpec& r) {
  std::vector<HparamFinding> out;
  for (const auto& h : hparam_table()) {
    const auto va = h.get(a), vr = h.get(r);
    bool same = va.size() == vr.size();
    for (size_t i = 0; same && i < va.size(); ++i) same = same_value(va[i], vr[i]);
    if (same) continue;
    HparamFinding f{h.what, h.gguf, h.hf, list(va), list(vr)};
    // Per-layer values of the same length: name the layers that differ.
    if (va.size() == vr.size() && va.size() > 1) {
      std::string la, lr;
      int shown = 0, n = 0;
      for (size_t i = 0; i < va.size(); ++i) {
        if (same_value(va[i], vr[i])) continue;
        ++n;
        if (shown++ < 8) {
          la += fmt::format("{}#{}={}", la.empty() ? "" : " ", i, num(va[i]));
          lr += fmt::format("{}#{}={}", lr.empty() ? "" : " ", i, num(vr[i]));
        }
      }
      if (n > 8) la += fmt::format(" (+{} more)", n - 8), lr += " ...";
      f.artifact = la;
      f.reference = lr;
    }
    out.push_back(f);
  }
  return out;
}

json hparams_json(const std::vector<HparamFinding>& f) {
  json a = json::array();
  for (const auto& x : f)
    a.push_back({{"what", x.what}, {"gguf", x.gguf_key}, {"config", x.hf_field}, {"artifact", x.artifact}, {"reference", x.reference}});
  return a;
}

VocabReport compare_tokenizers(const Model& art, const Model& ref) {
  VocabReport r;
  std::optional<Tokenizer> ta, tr;
  try {
    tr = load_tokenizer(ref);
  } catch (const Error& e) {
    return r;  // no reference tokenizer: nothing to compare against (said by grade)
  }
  try {
    ta = load_tokenizer(art);
  } catch (const Error& e) {
    r.findings.push_back(fmt::format("the artifact's tokenizer does not load: {}", e.what()));
    return r;
  }
  const int32_t na = ta->vocab_size(), nr = tr->vocab_size();
  if (na != nr) r.findings.push_back(fmt::format("vocabulary size {} vs reference {}", na, nr));
  // Token strings: a moved string is named with both ids; pairs of swapped ids as one finding.
  // Between a GGUF and an HF tokenizer, CONTROL (3) vs USER_DEFINED (4) on the same string is
  // a converter convention (llama.cpp's makes <mask> and the tool tokens user-defined), and
  // "special" is derived from the type on one side only: those are compared within a format.
  const bool same_format = art.format == ref.format;
  auto types_differ = [&](int32_t i) {
    const int32_t x = ta->token_type(i), y = tr->token_type(i);
    if (x == y) return false;
    return same_format || !((x == 3 || x == 4) && (y == 3 || y == 4));
  };
  std::vector<int32_t> diff_ids;
  for (int32_t i = 0; i < std::min(na, nr); ++i)
    if (ta->piece(i) != tr->piece(i) || types_differ(i) || (same_format && ta->is_special(i) != tr->is_special(i)))
      diff_ids.push_back(i);
  r.tokens_differ = static_cast<int>(diff_ids.size()) + std::abs(na - nr);
  int shown = 0;
  std::set<int32_t> done;
  for (int32_t i : diff_ids) {
    if (done.count(i)) continue;
    std::string line;
    if (ta->piece(i) != tr->piece(i)) {
      const int32_t j = tr->find(ta->piece(i));
      if (j >= 0 && j < na && ta->piece(j) == tr->piece(i)) {
        line = fmt::format("ids {} and {} swapped: {} <-> {}", i, j, show(tr->piece(i)), show(tr->piece(j)));
        done.insert(j);
      } else {
        line = fmt::format("id {}: {} -> {}{}", i, show(tr->piece(i)), show(ta->piece(i)),
                           j >= 0 ? fmt::format(" (the reference has that string at id {})", j) : "");
      }
    } else if (types_differ(i)) {
      line = fmt::format("id {} {}: token type {} -> {}", i, show(tr->piece(i)), tr->token_type(i), ta->token_type(i));
    } else {
      line = fmt::format("id {} {}: special {} -> {}", i, show(tr->piece(i)), tr->is_special(i), ta->is_special(i));
    }
    done.insert(i);
    if (shown++ < 12) r.findings.push_back(line);
  }
  if (shown > 12) r.findings.push_back(fmt::format("... {} more token differences", shown - 12));
  // Merges, rank by rank.
  const auto ma = ta->merges_text(), mr = tr->merges_text();
  size_t first = std::min(ma.size(), mr.size());
  for (size_t k = 0; k < std::min(ma.size(), mr.size()); ++k)
    if (ma[k] != mr[k]) { r.merges_differ++; first = std::min(first, k); }
  r.merges_differ += static_cast<int>(std::max(ma.size(), mr.size()) - std::min(ma.size(), mr.size()));
  if (r.merges_differ)
    r.findings.push_back(fmt::format("merges: {} of {} differ ({} vs reference {}); first at rank {}: {} -> {}", r.merges_differ,
                                     mr.size(), ma.size(), mr.size(), first, first < mr.size() ? show(mr[first]) : "(none)",
                                     first < ma.size() ? show(ma[first]) : "(none)"));
  // Special ids and flags.
  const TokSettings sa = settings_of(art, *ta), sr = settings_of(ref, *tr);
  auto id_line = [&](const char* what, int64_t a, int64_t b) {
    if (a == b) return;
    auto name = [](const Tokenizer& t, int64_t id) { return id >= 0 && id < t.vocab_size() ? show(t.piece(static_cast<int32_t>(id))) : "(none)"; };
    r.findings.push_back(fmt::format("{} id {} {} vs reference {} {}", what, a, name(*ta, a), b, name(*tr, b)));
  };
  id_line("BOS", sa.bos, sr.bos);
  id_line("EOS", sa.eos, sr.eos);
  id_line("UNK", sa.unk, sr.unk);
  id_line("PAD", sa.pad, sr.pad);
  if (sa.add_bos != sr.add_bos) r.findings.push_back(fmt::format("add_bos_token {} vs reference {}", sa.add_bos, sr.add_bos));
  if (sa.add_eos != sr.add_eos) r.findings.push_back(fmt::format("add_eos_token {} vs reference {}", sa.add_eos, sr.add_eos));
  if (art.format == ref.format) {
    if (sa.pre != sr.pre) r.findings.push_back(fmt::format("pre-tokenizer {} vs reference {}", show(sa.pre), show(sr.pre)));
    if (sa.normalizer != sr.normalizer) r.findings.push_back(fmt::format("normalizer {} vs reference {}", show(sa.normalizer), show(sr.normalizer)));
    if (sa.model != sr.model) r.findings.push_back(fmt::format("tokenizer model {} vs reference {}", show(sa.model), show(sr.model)));
  }
  if (!sa.scores.empty() && !sr.scores.empty()) {
    int n = 0;
    size_t at = 0;
    for (size_t i = 0; i < std::min(sa.scores.size(), sr.scores.size()); ++i)
      if (sa.scores[i] != sr.scores[i] && n++ == 0) at = i;
    if (n) r.findings.push_back(fmt::format("scores: {} differ, first at id {} ({} vs reference {})", n, at, sa.scores[at], sr.scores[at]));
  }
  return r;
}

double retokenized_fraction(const Tokenizer& a, const Tokenizer& r, const std::string& text) {
  const auto ia = a.encode(text, false, false), ir = r.encode(text, false, false);
  // (byte start, id) of each token of the artifact; a reference token counts as kept
  // when the artifact has the same id starting at the same byte and ending at the same byte.
  std::unordered_map<uint64_t, int64_t> at;  // start << 32 | id -> end
  int64_t pos = 0;
  for (int32_t id : ia) {
    const int64_t len = static_cast<int64_t>(a.token_text(id).size());
    at[static_cast<uint64_t>(pos) << 32 | static_cast<uint32_t>(id)] = pos + len;
    pos += len;
  }
  if (ir.empty()) return 0;
  int64_t kept = 0;
  pos = 0;
  for (int32_t id : ir) {
    const int64_t len = static_cast<int64_t>(r.token_text(id).size());
    auto it = at.find(static_cast<uint64_t>(pos) << 32 | static_cast<uint32_t>(id));
    kept += it != at.end() && it->second == pos + len;
    pos += len;
  }
  return 1.0 - static_cast<double>(kept) / static_cast<double>(ir.size());
}

}  // namespace g4
