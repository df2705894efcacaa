// Gemma BPE tokenizer (protocols.md §c): added tokens matched first (leftmost-longest),
// spaces -> U+2581, BPE by merge rank over code points, byte fallback to <0xNN>, no
// dummy prefix. Loaded from an HF tokenizer.json or from GGUF tokenizer.ggml.* keys.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "formats/gguf.h"
#include "util/json.h"

namespace g4 {

class Tokenizer {
 public:
  static Tokenizer from_hf_json(const std::string& tokenizer_json, const std::string& source);
  static Tokenizer from_hf_file(const std::string& path);  // tokenizer.json (+ tokenizer_config.json beside it)
  static Tokenizer from_gguf(const GgufFile& g);

  // parse_special: match special (CONTROL) tokens written in the text, as HF does; llama.cpp's
  // perplexity passes false. Non-special added tokens are always matched.
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = true) const;
  // Text from an untrusted party (a chat message): no special token and no chat-format
  // marker (<|turn>, <start_of_turn>, ...) is matched, whatever tokenizer.json calls it.
  std::vector<int32_t> encode_untrusted(std::string_view text) const;
  // skip_special drops special tokens (HF skip_special_tokens=True).
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // The text of one token as it would appear in decoded output (byte tokens as raw bytes).
  std::string token_text(int32_t id) const;
  const std::string& piece(int32_t id) const { return pieces_.at(static_cast<size_t>(id)); }

  int32_t vocab_size() const { return static_cast<int32_t>(pieces_.size()); }
  int32_t bos_id() const { return bos_; }
  bool add_bos_default() const { return add_bos_; }
  bool is_special(int32_t id) const;
  // Id of a token string, or -1.
  int32_t find(std::string_view piece) const;
  // Merges in rank order as "left right" (GGUF tokenizer.ggml.merges).
  std::vector<std::string> merges_text() const;
  // llama.cpp token type: 1 normal, 3 control (special), 4 user-defined, 6 byte.
  int32_t token_type(int32_t id) const;
  // End-of-generation ids: <eos>, <turn|>, <|tool_response>, plus `extra`.
  std::vector<int32_t> eog_ids(std::span<const int> extra = {}) const;

 private:
  struct Added {
    std::string text;
    int32_t id;
    bool special;
  };
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  void finish_init(const std::string& source);
  void bpe(std::string_view normalized, std::vector<int32_t>& out) const;
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using WordCache = std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>>;
  void encode_fragment(std::string_view raw, std::vector<int32_t>& out, WordCache& cache) const;
  std::vector<int32_t> encode_impl(std::string_view text, bool add_bos, bool parse_special, bool untrusted) const;
  void find_word_boundaries();

  std::vector<std::string> pieces_;
  std::unordered_map<std::string, int32_t> piece_to_id_;
  // (left id << 32 | right id) -> merge; open addressing, one cache miss per lookup.
  struct MergeTable {
    std::vector<uint64_t> keys;  // kEmpty marks a free slot
    std::vector<Merge> vals;
    uint64_t mask = 0;
    size_t size = 0;
    static constexpr uint64_t kEmpty = ~uint64_t{0};
    void reserve(size_t n);
    bool insert(uint64_t key, Merge m);  // false if the key is already present
    const Merge* find(uint64_t key) const;
    template <typename F> void for_each(F f) const {
      for (size_t i = 0; i < keys.size(); ++i) if (keys[i] != kEmpty) f(keys[i], vals[i]);
    }
  };
  MergeTable merges_;
  std::vector<std::pair<int32_t, int32_t>> merge_order_;  // rank -> (left, right)
  std::vector<Added> added_;                    // sorted for matching
  std::vector<uint8_t> special_;                // per id
  int32_t byte_ids_[256];
  std::vector<int32_t> cp_id_;  // code point -> id of its single-character token, or -1
  int32_t unk_ = -1, bos_ = 2;
  bool add_bos_ = true;
  bool first_byte_may_start_added_[256] = {};
  // Code-point bigrams (a << 32 | b) at word boundaries (b = U+2581, or a newline next to
  // a non-newline) that occur inside some merge result: BPE may merge across those, so
  // the text is only split into independently encoded words at the other boundaries.
  std::unordered_map<uint64_t, bool> crossing_bigrams_;
};

// Gemma 4 chat template (protocols.md §d.2), rendered without a Jinja engine.
struct ChatToolCall {
  std::string id, name;
  json arguments = json::object();  // an object (OpenAI sends it as a JSON string; parsed by the caller)
};
struct ChatMessage {
  ChatMessage(std::string r = "", std::string c = "") : role(std::move(r)), content(std::move(c)) {}
  std::string role;  // system, developer, user, assistant (rendered "model"), tool
  std::string content;
  std::string reasoning;                // assistant: reasoning_content (kept only on tool-calling turns after the last user turn)
  std::vector<ChatToolCall> tool_calls; // assistant
  std::string tool_call_id, name;       // tool: which call this answers (its function name is looked up by id)
};
struct ChatTemplateOptions {
  bool add_generation_prompt = true;
  bool enable_thinking = false;
  // Large-model template (31B, 26B-A4B, 12B): an empty thought channel after the
  // generation prompt when thinking is off. The E2B/E4B template does not add it.
  bool empty_thought_channel = false;
  json tools = json::array();  // OpenAI tool objects, declared in the system turn
};
std::string render_chat(std::span<const ChatMessage> messages, const ChatTemplateOptions& opt);
// The same conversation as token ids, BOS first. Control tokens come only from the template;
// message content goes through encode_untrusted, so "<|turn>" typed by a user stays text and
// cannot forge a turn (llama.cpp's parse_special = false for content).
std::vector<int32_t> encode_chat(const Tokenizer& tok, std::span<const ChatMessage> messages, const ChatTemplateOptions& opt);

}  // namespace g4
