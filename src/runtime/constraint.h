// Constrained decoding: a grammar over bytes and special tokens, matched like llama.cpp's
// (a set of parse stacks), and a token mask computed by walking a trie of the vocabulary's
// byte strings, pruning every branch the grammar rejects, so no step scans all tokens.
// Grammars come from JSON schemas (response_format) and from OpenAI tools (tool_choice
// required/named: Gemma 4 tool-call syntax with arguments from the tool's schema).
#pragma once
#include <bitset>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "util/json.h"

namespace g4 {

struct GrammarElem {
  enum Kind : uint8_t { Chars, Rule, Token } kind;
  int32_t arg;  // Chars: charset index; Rule: rule index; Token: token id
};
struct Grammar {
  using Seq = std::vector<GrammarElem>;
  std::vector<std::vector<Seq>> rules;  // rule -> alternatives
  std::vector<std::bitset<256>> charsets;
  int32_t root = 0;
  std::vector<int32_t> tokens;  // special tokens the grammar uses
};

// Grammars for response_format and tools. Throw g4::Error naming an unsupported keyword
// and where it is (`unsupported JSON-schema keyword 'pattern' at #/properties/id`).
Grammar json_schema_grammar(const json& schema);  // any JSON object when schema is null
// Gemma 4 tool calls: one or more `<|tool_call>call:NAME{args}<tool_call|>` for the given
// tools (each one's `parameters` schema shapes its arguments); `only` names one tool.
Grammar tool_call_grammar(const Tokenizer& tok, const json& tools, const std::string& only);

// The vocabulary as a byte trie, built once per tokenizer (special tokens excluded).
class TokenTrie {
 public:
  explicit TokenTrie(const Tokenizer& tok);
  struct Node {
    uint32_t edge_begin, edge_end;    // into edges_
    uint32_t token_begin, token_end;  // into tokens_ (tokens whose text ends here)
  };
  const std::vector<Node>& nodes() const { return nodes_; }
  std::span<const std::pair<uint8_t, uint32_t>> edges(const Node& n) const {
    return {edges_.data() + n.edge_begin, n.edge_end - n.edge_begin};
  }
  std::span<const int32_t> tokens(const Node& n) const { return {tokens_.data() + n.token_begin, n.token_end - n.token_begin}; }
  const std::vector<std::string>& texts() const { return texts_; }

 private:
  std::vector<Node> nodes_;
  std::vector<std::pair<uint8_t, uint32_t>> edges_;
  std::vector<int32_t> tokens_;
  std::vector<std::string> texts_;  // per id; empty for special tokens
};

// One sequence's position in a grammar.
class Constraint {
 public:
  Constraint(std::shared_ptr<const Grammar> g, std::shared_ptr<const TokenTrie> trie, std::vector<int32_t> eog);
  // Sets the logits of every token the grammar does not allow next to -inf; returns how
  // many are allowed (end-of-generation tokens only once the grammar is complete).
  size_t apply(std::span<float> logits, int64_t* nodes_visited = nullptr) const;
  // Advances past a sampled token; false if the grammar does not allow it.
  bool accept(int32_t id);
  bool complete() const;  // the text so far is a full sentence of the grammar
  bool finished() const;  // complete, and nothing more may follow

  using Stack = std::vector<uint64_t>;
  using State = std::vector<Stack>;

 private:
  std::shared_ptr<const Grammar> g_;
  std::shared_ptr<const TokenTrie> trie_;
  std::vector<int32_t> eog_;
  State state_;
};

}  // namespace g4
