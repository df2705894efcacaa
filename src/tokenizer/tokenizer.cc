#include "tokenizer/tokenizer.h"
#include "tokenizer/gemma4_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <queue>

#include "util/error.h"
#include "util/json.h"
#include "util/mapped_file.h"
#include "formats/gguf_keys.h"

namespace g4 {
namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581

// Length of the UTF-8 sequence at s[i], or 0 if it is not valid UTF-8.
size_t utf8_len(std::string_view s, size_t i) {
  const auto c = static_cast<uint8_t>(s[i]);
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) { n = 2; cp = c & 0x1F; }
  else if ((c & 0xF0) == 0xE0) { n = 3; cp = c & 0x0F; }
  else if ((c & 0xF8) == 0xF0) { n = 4; cp = c & 0x07; }
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    const auto d = static_cast<uint8_t>(s[i + k]);
    if ((d & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (d & 0x3F);
  }
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

uint32_t decode_cp(std::string_view s, size_t i, size_t n) {
  const auto c = static_cast<uint8_t>(s[i]);
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < n; ++k) cp = cp << 6 | (static_cast<uint8_t>(s[i + k]) & 0x3F);
  return cp;
}

constexpr uint32_t kSpaceMarkCp = 0x2581;

bool is_boundary_pair(uint32_t a, uint32_t b) {
  return (b == kSpaceMarkCp && a != kSpaceMarkCp) || ((a == '\n') != (b == '\n'));
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_len(s, i);
    if (!n) return false;
    i += n;
  }
  return true;
}

size_t count_code_points(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size();) {
    const size_t l = utf8_len(s, i);
    i += l ? l : 1;
    ++n;
  }
  return n;
}

uint64_t pair_key(int32_t a, int32_t b) { return static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32 | static_cast<uint32_t>(b); }

// Splits a merge written as "left right" (GGUF, old tokenizer.json) at the first space
// after position 0.
std::pair<std::string, std::string> split_merge(const std::string& m, const std::string& source) {
  const size_t sp = m.find(' ', 1);
  if (sp == std::string::npos) fail("{}: merge \"{}\" is not \"left right\"", source, m);
  return {m.substr(0, sp), m.substr(sp + 1)};
}

}  // namespace

void Tokenizer::MergeTable::reserve(size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap <<= 1;
  keys.assign(cap, kEmpty);
  vals.assign(cap, Merge{});
  mask = cap - 1;
  size = 0;
}

static inline uint64_t mix(uint64_t k) { return (k * 0x9E3779B97F4A7C15ull) ^ (k >> 29); }

bool Tokenizer::MergeTable::insert(uint64_t key, Merge m) {
  if (keys.empty() || 2 * (size + 1) > keys.size()) {
    MergeTable bigger;
    bigger.reserve(std::max<size_t>(16, 2 * (size + 1)));
    for_each([&](uint64_t k, const Merge& v) { bigger.insert(k, v); });
    *this = std::move(bigger);
  }
  for (uint64_t i = mix(key) & mask;; i = (i + 1) & mask) {
    if (keys[i] == key) return false;
    if (keys[i] == kEmpty) {
      keys[i] = key;
      vals[i] = m;
      ++size;
      return true;
    }
  }
}

const Tokenizer::Merge* Tokenizer::MergeTable::find(uint64_t key) const {
  if (keys.empty()) return nullptr;
  for (uint64_t i = mix(key) & mask;; i = (i + 1) & mask) {
    if (keys[i] == key) return &vals[i];
    if (keys[i] == kEmpty) return nullptr;
  }
}

int32_t Tokenizer::find(std::string_view piece) const {
  auto it = piece_to_id_.find(std::string(piece));
  return it == piece_to_id_.end() ? -1 : it->second;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < special_.size() && special_[id];
}

void Tokenizer::finish_init(const std::string& source) {
  if (pieces_.empty()) fail("{}: the vocabulary is empty", source);
  if (piece_to_id_.empty()) {
    piece_to_id_.reserve(pieces_.size() * 2);
    for (size_t i = 0; i < pieces_.size(); ++i) piece_to_id_.emplace(pieces_[i], static_cast<int32_t>(i));
  }
  for (int b = 0; b < 256; ++b) byte_ids_[b] = find(fmt::format("<0x{:02X}>", b));
  cp_id_.assign(0x110000, -1);
  for (size_t i = 0; i < pieces_.size(); ++i) {
    const std::string& p = pieces_[i];
    const size_t n = p.empty() ? 0 : utf8_len(p, 0);
    if (n && n == p.size()) {
      int32_t& slot = cp_id_[decode_cp(p, 0, n)];
      if (slot < 0) slot = static_cast<int32_t>(i);
    }
  }
  special_.assign(pieces_.size(), 0);
  for (const auto& a : added_) {
    if (a.text.empty()) fail("{}: added token {} has empty content", source, a.id);
    special_[a.id] = a.special;
    first_byte_may_start_added_[static_cast<uint8_t>(a.text[0])] = true;
  }
  // Longest first, so the first match at a position is the longest one.
  std::sort(added_.begin(), added_.end(), [](const Added& x, const Added& y) {
    return x.text.size() != y.text.size() ? x.text.size() > y.text.size() : x.text < y.text;
  });
  unk_ = find("<unk>");
  find_word_boundaries();
}

void Tokenizer::find_word_boundaries() {
  merges_.for_each([&](uint64_t, const Merge& m) {
    const std::string& p = pieces_[m.result];
    uint32_t prev = 0;
    for (size_t i = 0; i < p.size();) {
      size_t n = utf8_len(p, i);
      if (!n) { prev = 0; ++i; continue; }
      const uint32_t cp = decode_cp(p, i, n);
      if (i > 0 && prev && is_boundary_pair(prev, cp)) crossing_bigrams_[static_cast<uint64_t>(prev) << 32 | cp] = true;
      prev = cp;
      i += n;
    }
  });
}

namespace {

// Streams tokenizer.json into what the tokenizer needs (no DOM: the Gemma 3 file is
// 33 MB with 262k vocab entries and 515k merges). Everything else is skipped.
class TokenizerJsonSax : public nlohmann::json_sax<json> {
 public:
  explicit TokenizerJsonSax(std::string source) : src_(std::move(source)) {}

  std::string model_type;
  bool saw_model = false, saw_vocab = false, saw_merges = false;
  std::vector<std::pair<std::string, int64_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  struct AddedTok { std::string content; int64_t id = -1; bool special = false; bool has_content = false; };
  std::vector<AddedTok> added;

  bool null() override { return scalar(); }
  bool boolean(bool v) override {
    if (in_added_obj() && key_ == "special") added.back().special = v;
    return scalar();
  }
  bool number_integer(number_integer_t v) override { return integer(v); }
  bool number_unsigned(number_unsigned_t v) override {
    return integer(v > static_cast<uint64_t>(INT64_MAX) ? -1 : static_cast<int64_t>(v));
  }
  bool number_float(number_float_t, const string_t&) override {
    if (in_vocab()) fail("{}: vocab[\"{}\"] is not an integer id", src_, key_);
    return scalar();
  }
  bool string(string_t& v) override {
    if (depth() == 2 && path_[1] == "model" && key_ == "type") model_type = v;
    else if (in_merges_top()) merge_as_string(v);
    else if (in_merge_pair()) pair_.push_back(std::move(v));
    else if (in_added_obj() && key_ == "content") { added.back().content = std::move(v); added.back().has_content = true; }
    else if (in_vocab()) fail("{}: vocab[\"{}\"] is not an integer id", src_, key_);
    return scalar();
  }
  bool binary(binary_t&) override { return scalar(); }
  bool start_object(std::size_t) override {
    if (depth() > 64) fail("{}: JSON nested too deeply", src_);
    if (in_added_top()) added.emplace_back();
    if (depth() == 1 && key_ == "model") saw_model = true;
    if (depth() == 2 && path_[1] == "model" && key_ == "vocab") saw_vocab = true;
    push();
    return true;
  }
  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool end_object() override { return pop(); }
  bool start_array(std::size_t) override {
    if (depth() > 64) fail("{}: JSON nested too deeply", src_);
    if (depth() == 2 && path_[1] == "model" && key_ == "merges") saw_merges = true;
    if (in_merges_top()) pair_.clear();
    push();
    return true;
  }
  bool end_array() override {
    if (in_merge_pair()) {
      if (pair_.size() != 2) fail("{}: merge {} is neither \"a b\" nor [\"a\", \"b\"]", src_, merges.size());
      merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
    }
    return pop();
  }
  bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& ex) override {
    fail("{}: invalid JSON at byte {}: {}", src_, pos, ex.what());
  }

 private:
  // path_ holds the key (or "[]" for arrays) of each open container.
  size_t depth() const { return path_.size(); }
  void push() {
    path_.push_back(key_);
    key_.clear();
  }
  bool pop() {
    path_.pop_back();
    key_.clear();
    return true;
  }
  bool scalar() { return true; }
  bool integer(int64_t v) {
    if (in_vocab()) {
      if (v < 0) fail("{}: vocab[\"{}\"] = {} is not a valid id", src_, key_, v);
      vocab.emplace_back(key_, v);
    } else if (in_added_obj() && key_ == "id") {
      added.back().id = v;
    } else if (in_merges_top() || in_merge_pair()) {
      fail("{}: merge {} is neither \"a b\" nor [\"a\", \"b\"]", src_, merges.size());
    }
    return scalar();
  }
  void merge_as_string(const std::string& m) {
    const size_t sp = m.find(' ', 1);
    if (sp == std::string::npos) fail("{}: merge \"{}\" is not \"left right\"", src_, m);
    merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
  }
  // path_[0] is the root object.
  bool in_vocab() const { return depth() == 3 && path_[1] == "model" && path_[2] == "vocab"; }
  bool in_merges_top() const { return depth() == 3 && path_[1] == "model" && path_[2] == "merges"; }
  bool in_merge_pair() const { return depth() == 4 && path_[1] == "model" && path_[2] == "merges"; }
  bool in_added_top() const { return depth() == 2 && path_[1] == "added_tokens"; }
  bool in_added_obj() const { return depth() == 3 && path_[1] == "added_tokens"; }

  std::string src_;
  std::vector<std::string> path_;
  std::string key_;
  std::vector<std::string> pair_;
};

}  // namespace

Tokenizer Tokenizer::from_hf_json(const std::string& text, const std::string& source) {
  TokenizerJsonSax sax(source);
  try {
    json::sax_parse(text, &sax);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", source, e.what());
  }
  if (!sax.saw_model) fail("{}: not a tokenizer.json (no \"model\" object)", source);
  if (sax.model_type != "BPE")
    fail("{}: model type \"{}\" is not supported (Gemma uses BPE with byte fallback)", source, sax.model_type);
  if (!sax.saw_vocab) fail("{}: model.vocab must be an object", source);
  if (!sax.saw_merges) fail("{}: model.merges must be an array", source);
  Tokenizer t;
  const size_t n = sax.vocab.size();
  t.pieces_.assign(n, std::string());
  std::vector<uint8_t> seen(n, 0);
  t.piece_to_id_.reserve(n * 2);
  for (auto& [piece, id] : sax.vocab) {
    if (static_cast<size_t>(id) >= n)
      fail("{}: vocab id {} of \"{}\" is outside [0, {}); ids must be dense", source, id, piece, n);
    if (seen[id]) fail("{}: vocab id {} is used twice", source, id);
    if (!t.piece_to_id_.emplace(piece, static_cast<int32_t>(id)).second)
      fail("{}: duplicate vocab entry \"{}\"", source, piece);
    seen[id] = 1;
    t.pieces_[id] = std::move(piece);
  }
  for (const auto& a : sax.added) {
    if (a.id < 0 || !a.has_content) fail("{}: added_tokens entries need an integer \"id\" and a string \"content\"", source);
    // Added tokens may extend the model vocabulary (HF appends them), but only densely.
    if (static_cast<size_t>(a.id) > t.pieces_.size())
      fail("{}: added token \"{}\" has id {}, not in [0, {}]", source, a.content, a.id, t.pieces_.size());
    if (static_cast<size_t>(a.id) == t.pieces_.size()) {
      t.pieces_.push_back(a.content);
      t.piece_to_id_.emplace(a.content, static_cast<int32_t>(a.id));
    }
    t.added_.push_back({a.content, static_cast<int32_t>(a.id), a.special});
  }
  t.merges_.reserve(sax.merges.size() * 2);
  std::string joined;
  for (size_t r = 0; r < sax.merges.size(); ++r) {
    const auto& [left, right] = sax.merges[r];
    joined.assign(left).append(right);
    auto l = t.piece_to_id_.find(left), rr = t.piece_to_id_.find(right), res = t.piece_to_id_.find(joined);
    if (l == t.piece_to_id_.end() || rr == t.piece_to_id_.end() || res == t.piece_to_id_.end())
      fail("{}: merge {} (\"{}\" + \"{}\") names a token that is not in the vocabulary", source, r, left, right);
    t.merges_.insert(pair_key(l->second, rr->second), Merge{static_cast<int32_t>(r), res->second});  // first rank wins
    t.merge_order_.emplace_back(l->second, rr->second);
  }
  // tokenizer_config.json beside tokenizer.json decides add_bos; default true (Gemma's post-processor adds <bos>).
  t.bos_ = t.find("<bos>") >= 0 ? t.find("<bos>") : 2;
  t.finish_init(source);
  return t;
}

Tokenizer Tokenizer::from_hf_file(const std::string& path) {
  Tokenizer t = from_hf_json(read_text_file(path), path);
  const auto cfg = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(cfg)) {
    json c = parse_json_strict(read_text_file(cfg.string()), cfg.string());
    if (c.is_object() && c.contains("add_bos_token") && c["add_bos_token"].is_boolean()) t.add_bos_ = c["add_bos_token"].get<bool>();
  }
  return t;
}

Tokenizer Tokenizer::from_gguf(const GgufFile& g) {
  const std::string src = g.path + " (tokenizer.ggml.*)";
  const auto model = g.get_string(gk::kTokenizerModel);
  if (!model) fail("{}: no tokenizer.ggml.model key; this GGUF carries no tokenizer", g.path);
  if (*model != "gemma4" && *model != "llama" && *model != "gpt2")
    fail("{}: tokenizer.ggml.model \"{}\" is not supported (expected gemma4)", g.path, *model);
  const auto* tokens = g.find(gk::kTokens);
  const auto* merges = g.find(gk::kMerges);
  const auto* types = g.find(gk::kTokenType);
  if (!tokens || tokens->elem_type != GgufType::STRING) fail("{}: tokenizer.ggml.tokens must be a string array", src);
  if (!merges || merges->elem_type != GgufType::STRING) fail("{}: tokenizer.ggml.merges must be a string array", src);
  Tokenizer t;
  t.pieces_ = tokens->as;
  std::unordered_map<std::string, int32_t> ids;
  for (size_t i = 0; i < t.pieces_.size(); ++i)
    if (!ids.emplace(t.pieces_[i], static_cast<int32_t>(i)).second) fail("{}: token \"{}\" appears twice", src, t.pieces_[i]);
  std::vector<uint8_t> produced(t.pieces_.size(), 0);
  for (size_t r = 0; r < merges->as.size(); ++r) {
    auto [left, right] = split_merge(merges->as[r], src);
    auto l = ids.find(left), rr = ids.find(right), res = ids.find(left + right);
    if (l == ids.end() || rr == ids.end() || res == ids.end())
      fail("{}: merge {} (\"{}\" + \"{}\") names a token that is not in the vocabulary", src, r, left, right);
    t.merges_.insert(pair_key(l->second, rr->second), Merge{static_cast<int32_t>(r), res->second});  // first rank wins
    t.merge_order_.emplace_back(l->second, rr->second);
    produced[res->second] = 1;
  }
  if (types && types->ai.size() != t.pieces_.size())
    fail("{}: token_type has {} entries for {} tokens", src, types->ai.size(), t.pieces_.size());
  for (size_t i = 0; i < t.pieces_.size(); ++i) {
    const int64_t type = types ? types->ai[i] : 1;
    const std::string& p = t.pieces_[i];
    if (type == 3) t.added_.push_back({p, static_cast<int32_t>(i), true});  // CONTROL
    else if (type == 4) t.added_.push_back({p, static_cast<int32_t>(i), false});  // USER_DEFINED
    else if (type == 1 && !produced[i] && count_code_points(p) > 1 && p.front() == '<' && p.back() == '>')
      // HF added tokens that llama.cpp's converter typed NORMAL (e.g. <|turn>): BPE can
      // never produce them, so HF matches them verbatim; do the same.
      t.added_.push_back({p, static_cast<int32_t>(i), false});
  }
  t.bos_ = static_cast<int32_t>(g.get_int(gk::kBosId).value_or(2));
  t.add_bos_ = g.get_bool(gk::kAddBos).value_or(true);
  t.finish_init(src);
  if (t.bos_ < 0 || t.bos_ >= t.vocab_size()) fail("{}: bos_token_id {} is outside the vocabulary", src, t.bos_);
  return t;
}

void Tokenizer::bpe(std::string_view s, std::vector<int32_t>& out) const {
  // Initial symbols: one per code point, or its UTF-8 bytes as <0xNN> tokens.
  std::vector<int32_t> ids;
  ids.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_len(s, i);
    const bool valid = n != 0;
    if (!valid) n = 1;
    const int32_t id = valid ? cp_id_[decode_cp(s, i, n)] : -1;
    if (id >= 0) {
      ids.push_back(id);
    } else {
      bool all = true;
      for (size_t k = 0; k < n; ++k) all &= byte_ids_[static_cast<uint8_t>(s[i + k])] >= 0;
      if (all) for (size_t k = 0; k < n; ++k) ids.push_back(byte_ids_[static_cast<uint8_t>(s[i + k])]);
      else if (unk_ >= 0 && (ids.empty() || ids.back() != unk_)) ids.push_back(unk_);  // fuse_unk
    }
    i += n;
  }
  // Repeatedly merge the adjacent pair of lowest rank (leftmost on ties).
  constexpr int32_t kNone = INT32_MAX;
  auto rank_of = [&](size_t i) {
    const Merge* m = merges_.find(pair_key(ids[i], ids[i + 1]));
    return m ? m->rank : kNone;
  };
  if (ids.size() <= 256) {
    // Short words: a rank per adjacent pair and a linear scan beat a heap.
    std::vector<int32_t> ranks(ids.size() > 1 ? ids.size() - 1 : 0);
    for (size_t i = 0; i < ranks.size(); ++i) ranks[i] = rank_of(i);
    while (!ranks.empty()) {
      const size_t best = static_cast<size_t>(std::min_element(ranks.begin(), ranks.end()) - ranks.begin());
      if (ranks[best] == kNone) break;
      ids[best] = merges_.find(pair_key(ids[best], ids[best + 1]))->result;
      ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(best) + 1);
      ranks.erase(ranks.begin() + static_cast<std::ptrdiff_t>(best));
      if (best > 0) ranks[best - 1] = rank_of(best - 1);
      if (best < ranks.size()) ranks[best] = rank_of(best);
    }
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }
  // Long words: linked symbols and a heap of candidate merges.
  struct Sym { int32_t id; int32_t prev, next; };
  std::vector<Sym> syms(ids.size());
  for (size_t i = 0; i < ids.size(); ++i)
    syms[i] = {ids[i], static_cast<int32_t>(i) - 1, i + 1 < ids.size() ? static_cast<int32_t>(i + 1) : -1};
  struct Cand { int32_t rank, pos, result; };
  auto cmp = [](const Cand& a, const Cand& b) { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; };
  std::priority_queue<Cand, std::vector<Cand>, decltype(cmp)> heap(cmp);
  auto consider = [&](int32_t pos) {
    if (pos < 0 || syms[pos].next < 0) return;
    if (const Merge* m = merges_.find(pair_key(syms[pos].id, syms[syms[pos].next].id))) heap.push({m->rank, pos, m->result});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms.size()); ++i) consider(i);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Sym& a = syms[c.pos];
    if (a.id < 0 || a.next < 0) continue;
    const Merge* m = merges_.find(pair_key(a.id, syms[a.next].id));
    if (!m || m->rank != c.rank) continue;  // stale entry
    Sym& b = syms[a.next];
    a.id = c.result;
    b.id = -1;
    a.next = b.next;
    if (b.next >= 0) syms[b.next].prev = c.pos;
    consider(a.prev);
    consider(c.pos);
  }
  for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
}

void Tokenizer::encode_fragment(std::string_view raw, std::vector<int32_t>& out, WordCache& cache) const {
  if (raw.empty()) return;
  std::string norm;
  norm.reserve(raw.size() + raw.size() / 2);
  for (char c : raw) {
    if (c == ' ') norm += kSpaceMark;
    else norm += c;
  }
  // Split into words where no merge can cross (see crossing_bigrams_), BPE each word
  // once per encode() call. A boundary next to a character that needs byte fallback is never used.
  size_t word = 0;
  uint32_t prev = 0;
  bool prev_in_vocab = false;
  auto emit = [&](size_t end) {
    const std::string_view w(norm.data() + word, end - word);
    auto it = cache.find(w);
    if (it == cache.end()) {
      std::vector<int32_t> ids;
      bpe(w, ids);
      it = cache.emplace(std::string(w), std::move(ids)).first;
    }
    out.insert(out.end(), it->second.begin(), it->second.end());
    word = end;
  };
  for (size_t i = 0; i < norm.size();) {
    const size_t n = utf8_len(norm, i);
    if (!n) { prev = 0; prev_in_vocab = false; ++i; continue; }
    const uint32_t cp = decode_cp(norm, i, n);
    const bool in_vocab = cp_id_[cp] >= 0;
    if (i > word && prev_in_vocab && in_vocab && is_boundary_pair(prev, cp) &&
        !crossing_bigrams_.count(static_cast<uint64_t>(prev) << 32 | cp))
      emit(i);
    prev = cp;
    prev_in_vocab = in_vocab;
    i += n;
  }
  if (word < norm.size()) emit(norm.size());
}

namespace {
// Chat-format markers (<|turn>, <turn|>, <start_of_turn>, <bos>, ...). Some tokenizer.json
// files list them as non-special added tokens, so parse_special = false alone would still
// let a user's text become a turn boundary.
bool is_chat_marker(const std::string& t) {
  if (t.size() < 3 || t.front() != '<' || t.back() != '>') return false;
  return t.find('|') != std::string::npos || t.find("_of_turn") != std::string::npos || t == "<bos>" || t == "<eos>" ||
         t == "<pad>";
}
}  // namespace

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  return encode_impl(text, add_bos, parse_special, false);
}

std::vector<int32_t> Tokenizer::encode_untrusted(std::string_view text) const { return encode_impl(text, false, false, true); }

std::vector<int32_t> Tokenizer::encode_impl(std::string_view text, bool add_bos, bool parse_special, bool untrusted) const {
  std::vector<int32_t> out;
  WordCache cache;
  if (add_bos) out.push_back(bos_);
  size_t frag = 0;
  for (size_t i = 0; i < text.size();) {
    const Added* hit = nullptr;
    if (first_byte_may_start_added_[static_cast<uint8_t>(text[i])]) {
      for (const auto& a : added_) {  // longest first
        if ((a.special && !parse_special) || (untrusted && is_chat_marker(a.text)) || a.text.size() > text.size() - i) continue;
        if (text.compare(i, a.text.size(), a.text) == 0) { hit = &a; break; }
      }
    }
    if (!hit) { ++i; continue; }
    encode_fragment(text.substr(frag, i - frag), out, cache);
    out.push_back(hit->id);
    i += hit->text.size();
    frag = i;
  }
  encode_fragment(text.substr(frag), out, cache);
  return out;
}

std::string Tokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= vocab_size()) fail("token id {} is outside the vocabulary [0, {})", id, vocab_size());
  const std::string& p = pieces_[id];
  if (p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p[5] == '>') {
    for (int b = 0; b < 256; ++b)
      if (byte_ids_[b] == id) return std::string(1, static_cast<char>(b));
  }
  std::string s;
  for (size_t i = 0; i < p.size();) {
    if (p.compare(i, 3, kSpaceMark) == 0) { s += ' '; i += 3; }
    else s += p[i++];
  }
  return s;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out, bytes;
  auto flush = [&] {
    if (bytes.empty()) return;
    // HF ByteFallback: a run of byte tokens that is not valid UTF-8 becomes one U+FFFD per byte.
    if (valid_utf8(bytes)) out += bytes;
    else for (size_t k = 0; k < bytes.size(); ++k) out += "\xEF\xBF\xBD";
    bytes.clear();
  };
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) fail("token id {} is outside the vocabulary [0, {})", id, vocab_size());
    if (skip_special && special_[id]) continue;
    const std::string& p = pieces_[id];
    const bool is_byte = p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p[5] == '>' && !special_[id];
    if (is_byte) { bytes += token_text(id); continue; }
    flush();
    out += token_text(id);
  }
  flush();
  return out;
}

std::vector<std::string> Tokenizer::merges_text() const {
  std::vector<std::string> out;
  out.reserve(merge_order_.size());
  for (const auto& [l, r] : merge_order_) out.push_back(pieces_[l] + " " + pieces_[r]);
  return out;
}

int32_t Tokenizer::token_type(int32_t id) const {
  if (is_special(id)) return 3;
  for (int b = 0; b < 256; ++b)
    if (byte_ids_[b] == id) return 6;
  // llama.cpp's converter forces these to USER_DEFINED so they are always rendered.
  static const char* kUserDefined[] = {"<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>",
                                       "<|tool_response>", "<tool_response|>", "<|\"|>"};
  for (const char* u : kUserDefined)
    if (pieces_[id] == u) return 4;
  for (const auto& a : added_)
    if (a.id == id) return 4;
  return 1;
}

std::vector<int32_t> Tokenizer::eog_ids(std::span<const int> extra) const {
  std::vector<int32_t> v;
  for (const char* p : {"<eos>", "<turn|>", "<|tool_response>"})
    if (int32_t id = find(p); id >= 0) v.push_back(id);
  for (int e : extra)
    if (e >= 0 && e < vocab_size() && std::find(v.begin(), v.end(), e) == v.end()) v.push_back(e);
  return v;
}

namespace {
std::string trim(std::string_view s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return "";
  const size_t e = s.find_last_not_of(ws);
  return std::string(s.substr(b, e - b + 1));
}
std::string strip_thought_channels(std::string s) {
  for (size_t b; (b = s.find("<|channel>")) != std::string::npos;) {
    const size_t e = s.find("<channel|>", b);
    s.erase(b, e == std::string::npos ? std::string::npos : e + 10 - b);
  }
  return s;
}
}  // namespace

namespace {
// The official Gemma 4 template (protocols.md §d.2, §f) as a sequence of pieces:
// emit(text, control). Control pieces are the special tokens the template itself inserts;
// everything else (role names, newlines, message content, tool arguments) is plain text.
void render_chat_parts(std::span<const ChatMessage> messages, const ChatTemplateOptions& opt, const ChatEmit& emit) {
  emit("<bos>", true);
  size_t first = 0;
  const bool has_system = !messages.empty() && (messages[0].role == "system" || messages[0].role == "developer");
  const bool tools = opt.tools.is_array() && !opt.tools.empty();
  enum class Prev { None, Think, Tool, ToolCall, ToolResponse } prev = Prev::None;
  if (opt.enable_thinking || tools || has_system) {
    emit("<|turn>", true);
    emit("system\n", false);
    if (opt.enable_thinking) { emit("<|think|>", true); emit("\n", false); prev = Prev::Think; }
    if (has_system) { emit(trim(messages[0].content), false); first = 1; }
    for (const auto& t : tools ? opt.tools : json::array()) {
      emit("<|tool>", true);
      gemma_tool_declaration(t, emit);
      emit("<tool|>", true);
      prev = Prev::Tool;
    }
    emit("<turn|>", true);
    emit("\n", false);
  }
  size_t last_user = SIZE_MAX;
  for (size_t i = first; i < messages.size(); ++i)
    if (messages[i].role == "user") last_user = i;
  for (size_t i = first; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (m.role == "tool") continue;  // rendered inside the assistant turn that called it
    prev = Prev::None;
    const bool assistant = m.role == "assistant" || m.role == "model";
    // An assistant message right after another (tool messages between) continues its turn.
    size_t j = i;
    while (j > first && messages[j - 1].role == "tool") --j;
    const bool continues = assistant && j > first && messages[j - 1].role == "assistant";
    if (!continues) {
      emit("<|turn>", true);
      emit((assistant ? std::string("model") : m.role) + "\n", false);
    }
    if (!m.reasoning.empty() && (last_user == SIZE_MAX || i > last_user) && !m.tool_calls.empty()) {
      emit("<|channel>", true);
      emit("thought\n", false);
      emit(m.reasoning, false);
      emit("\n", false);
      emit("<channel|>", true);
    }
    for (const auto& c : m.tool_calls) {
      emit("<|tool_call>", true);
      gemma_tool_call(c.name, c.arguments, emit);
      emit("<tool_call|>", true);
      prev = Prev::ToolCall;
    }
    bool responses = false;
    if (!m.tool_calls.empty())
      for (size_t k = i + 1; k < messages.size() && messages[k].role == "tool"; ++k) {
        std::string name = messages[k].name.empty() ? "unknown" : messages[k].name;
        for (const auto& c : m.tool_calls)
          if (!c.id.empty() && c.id == messages[k].tool_call_id) name = c.name;
        emit("<|tool_response>", true);
        gemma_tool_response(name, json(messages[k].content), emit);
        emit("<tool_response|>", true);
        responses = true;
        prev = Prev::ToolResponse;
      }
    emit(assistant ? trim(strip_thought_channels(m.content)) : trim(m.content), false);
    if (prev == Prev::ToolCall && !responses) emit("<|tool_response>", true);
    else if (!(responses && m.content.empty())) { emit("<turn|>", true); emit("\n", false); }
  }
  if (opt.add_generation_prompt && prev != Prev::ToolResponse && prev != Prev::ToolCall) {
    emit("<|turn>", true);
    emit("model\n", false);
    if (opt.empty_thought_channel && !opt.enable_thinking) {
      emit("<|channel>", true);
      emit("thought\n", false);
      emit("<channel|>", true);
    }
  }
}
}  // namespace

std::string render_chat(std::span<const ChatMessage> messages, const ChatTemplateOptions& opt) {
  std::string out;
  render_chat_parts(messages, opt, [&](const std::string& s, bool) { out += s; });
  return out;
}

std::vector<int32_t> encode_chat(const Tokenizer& tok, std::span<const ChatMessage> messages, const ChatTemplateOptions& opt) {
  std::vector<int32_t> out;
  std::string text;  // plain text since the last control token, encoded as one fragment
  auto flush = [&] {
    if (text.empty()) return;
    const auto ids = tok.encode_untrusted(text);
    out.insert(out.end(), ids.begin(), ids.end());
    text.clear();
  };
  render_chat_parts(messages, opt, [&](const std::string& s, bool control) {
    if (!control) { text += s; return; }
    flush();
    const int32_t id = s == "<bos>" ? tok.bos_id() : tok.find(s);
    if (id >= 0) out.push_back(id);
    else { const auto ids = tok.encode(s, false, true); out.insert(out.end(), ids.begin(), ids.end()); }
  });
  flush();
  return out;
}

}  // namespace g4
