#include "runtime/constraint.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>

#include "tokenizer/gemma4_format.h"
#include "util/error.h"

namespace g4 {
namespace {

using Seq = Grammar::Seq;
using Set = std::bitset<256>;

// ---- building grammars --------------------------------------------------------------------

class Builder {
 public:
  Grammar g;
  int32_t charset(const Set& s) {
    for (size_t i = 0; i < g.charsets.size(); ++i)
      if (g.charsets[i] == s) return static_cast<int32_t>(i);
    g.charsets.push_back(s);
    return static_cast<int32_t>(g.charsets.size() - 1);
  }
  GrammarElem chars(const Set& s) { return {GrammarElem::Chars, charset(s)}; }
  GrammarElem byte(uint8_t c) { Set s; s.set(c); return chars(s); }
  GrammarElem range(uint8_t lo, uint8_t hi) {
    Set s;
    for (int c = lo; c <= hi; ++c) s.set(static_cast<size_t>(c));
    return chars(s);
  }
  GrammarElem token(int32_t id) {
    if (std::find(g.tokens.begin(), g.tokens.end(), id) == g.tokens.end()) g.tokens.push_back(id);
    return {GrammarElem::Token, id};
  }
  static GrammarElem ref(int32_t r) { return {GrammarElem::Rule, r}; }
  int32_t new_rule() { g.rules.emplace_back(); return static_cast<int32_t>(g.rules.size() - 1); }
  int32_t rule(std::vector<Seq> alts) {
    const int32_t r = new_rule();
    g.rules[static_cast<size_t>(r)] = std::move(alts);
    return r;
  }
  void lit(Seq& s, std::string_view text) { for (char c : text) s.push_back(byte(static_cast<uint8_t>(c))); }
  Seq lit(std::string_view text) { Seq s; lit(s, text); return s; }
  // elem repeated between lo and hi times (hi < 0: unbounded), right-recursive.
  int32_t repeat(const Seq& elem, int lo, int hi) {
    int32_t tail;
    if (hi < 0) {
      tail = new_rule();
      Seq more = elem;
      more.push_back(ref(tail));
      g.rules[static_cast<size_t>(tail)] = {more, {}};
    } else {
      tail = rule({{}});
      for (int k = 0; k < hi - lo; ++k) {
        Seq more = elem;
        more.push_back(ref(tail));
        tail = rule({more, {}});
      }
    }
    Seq s;
    for (int k = 0; k < lo; ++k) s.insert(s.end(), elem.begin(), elem.end());
    s.push_back(ref(tail));
    return rule({s});
  }
};

enum class Dialect { Json, Gemma };

class SchemaCompiler {
 public:
  SchemaCompiler(Builder& b, const json& root, Dialect d, int32_t quote) : b_(b), root_(root), d_(d), quote_(quote) {}

  int32_t compile(const json& s, const std::string& path, int depth = 0) {
    if (depth > 64) fail("the JSON schema at {} is nested deeper than 64 levels", path);
    if (s.is_boolean()) {
      if (!s.get<bool>()) fail("the JSON schema at {} is 'false': nothing can match it", path);
      return any_value();
    }
    if (!s.is_object()) fail("the JSON schema at {} must be an object, got {}", path, s.type_name());
    static const std::set<std::string> known{"type", "properties", "required", "additionalProperties", "items", "minItems",
                                             "maxItems", "enum", "const", "anyOf", "oneOf", "$ref", "$defs", "definitions",
                                             "description", "title", "default", "examples", "$schema", "$id", "$comment",
                                             "strict", "name", "nullable", "minLength", "maxLength"};
    for (const auto& [k, v] : s.items())
      if (!known.count(k))
        fail("unsupported JSON-schema keyword '{}' at {} (supported: type, properties, required, additionalProperties, "
             "items, minItems, maxItems, minLength, maxLength, enum, const, anyOf, oneOf, local $ref)", k, path);
    if (auto r = s.find("$ref"); r != s.end()) return ref(*r, path, depth);
    if (auto c = s.find("const"); c != s.end()) return b_.rule({literal(*c)});
    if (auto e = s.find("enum"); e != s.end()) {
      if (!e->is_array() || e->empty()) fail("'enum' at {} must be a non-empty array", path);
      std::vector<Seq> alts;
      for (const auto& v : *e) alts.push_back(literal(v));
      return b_.rule(alts);
    }
    for (const char* k : {"anyOf", "oneOf"})
      if (auto a = s.find(k); a != s.end()) {
        if (!a->is_array() || a->empty()) fail("'{}' at {} must be a non-empty array of schemas", k, path);
        std::vector<Seq> alts;
        for (size_t i = 0; i < a->size(); ++i)
          alts.push_back({Builder::ref(compile((*a)[i], fmt::format("{}/{}/{}", path, k, i), depth + 1))});
        return b_.rule(alts);
      }
    auto t = s.find("type");
    if (t == s.end()) {
      if (s.contains("properties")) return object(s, path, depth);
      if (s.contains("items")) return array(s, path, depth);
      return any_value();
    }
    if (t->is_array()) {
      std::vector<Seq> alts;
      for (const auto& one : *t) {
        if (!one.is_string()) fail("'type' at {} must be a string or an array of strings", path);
        alts.push_back({Builder::ref(typed(one.get<std::string>(), s, path, depth))});
      }
      if (alts.empty()) fail("'type' at {} is an empty array", path);
      return b_.rule(alts);
    }
    if (!t->is_string()) fail("'type' at {} must be a string or an array of strings", path);
    const int32_t r = typed(t->get<std::string>(), s, path, depth);
    if (s.value("nullable", false)) return b_.rule({{Builder::ref(r)}, {Builder::ref(null_rule())}});
    return r;
  }

  int32_t any_value() {
    if (any_ >= 0) return any_;
    any_ = b_.new_rule();
    const int32_t member = b_.rule({key_then(string_rule(), any_)});
    Seq obj = b_.lit("{"), arr = b_.lit("[");
    obj.push_back(Builder::ref(list(member, 0, -1)));
    obj.push_back(b_.byte('}'));
    arr.push_back(Builder::ref(list(any_, 0, -1)));
    arr.push_back(b_.byte(']'));
    b_.g.rules[static_cast<size_t>(any_)] = {obj, arr, {Builder::ref(string_rule())}, {Builder::ref(number_rule(false))},
                                              b_.lit("true"), b_.lit("false"), {Builder::ref(null_rule())}};
    return any_;
  }
  int32_t any_object() {
    Seq obj = b_.lit("{");
    obj.push_back(Builder::ref(list(b_.rule({key_then(string_rule(), any_value())}), 0, -1)));
    obj.push_back(b_.byte('}'));
    return b_.rule({obj});
  }

  // Gemma tool arguments: `{k:v,...}` as the object rule of `params`, or any object.
  int32_t arguments(const json& params, const std::string& path) {
    if (params.is_object() && (params.contains("properties") || params.value("type", "") == "object"))
      return compile(params, path);
    return any_object();
  }

 private:
  int32_t typed(const std::string& type, const json& s, const std::string& path, int depth) {
    if (type == "string") {
      if (!s.contains("minLength") && !s.contains("maxLength")) return string_rule();
      const int64_t lo = s.value("minLength", int64_t{0}), hi = s.value("maxLength", int64_t{-1});
      if (lo < 0 || lo > 1000 || hi > 1000 || (hi >= 0 && hi < lo))
        fail("'minLength'/'maxLength' at {} must satisfy 0 <= minLength <= maxLength <= 1000, got {} and {}", path, lo, hi);
      return string_rule(static_cast<int>(lo), static_cast<int>(hi));
    }
    if (type == "integer") return number_rule(true);
    if (type == "number") return number_rule(false);
    if (type == "boolean") return b_.rule({b_.lit("true"), b_.lit("false")});
    if (type == "null") return null_rule();
    if (type == "object") return object(s, path, depth);
    if (type == "array") return array(s, path, depth);
    fail("unknown JSON-schema type '{}' at {}", type, path);
  }

  // Literal text of a value in the dialect (<|"|> are tokens in Gemma's).
  Seq literal(const json& v) {
    Seq s;
    if (d_ == Dialect::Json) { b_.lit(s, v.dump()); return s; }
    gemma_value(v, false, [&](const std::string& text, bool control) {
      if (control) s.push_back(b_.token(quote_));
      else b_.lit(s, text);
    });
    return s;
  }

  // A string of lo..hi characters (hi < 0: unbounded; Gemma's are counted in bytes).
  int32_t string_rule(int lo = 0, int hi = -1) {
    const bool plain_string = lo == 0 && hi < 0;
    if (plain_string && string_ >= 0) return string_;
    int32_t r;
    if (d_ == Dialect::Gemma) {  // any bytes between two <|"|> tokens
      Set all;
      all.set();
      Seq s{b_.token(quote_)};
      s.push_back(Builder::ref(b_.repeat({b_.chars(all)}, lo, hi)));
      s.push_back(b_.token(quote_));
      r = b_.rule({s});
    } else {
      r = json_string(lo, hi);
    }
    if (plain_string) string_ = r;
    return r;
  }
  int32_t json_string(int lo, int hi) {
    if (json_char_ < 0) json_char_ = json_char();
    Seq s{b_.byte('"'), Builder::ref(b_.repeat({Builder::ref(json_char_)}, lo, hi)), b_.byte('"')};
    return b_.rule({s});
  }
  // One character: printable ASCII, an escape, or a well-formed UTF-8 sequence.
  int32_t json_char() {
    Set plain;
    for (int c = 0x20; c < 0x7F; ++c) plain.set(static_cast<size_t>(c));
    plain.reset('"');
    plain.reset('\\');
    Set esc;
    for (char c : std::string("\"\\/bfnrt")) esc.set(static_cast<uint8_t>(c));
    Set hex;
    for (char c : std::string("0123456789abcdefABCDEF")) hex.set(static_cast<uint8_t>(c));
    Seq u{b_.byte('\\'), b_.byte('u'), b_.chars(hex), b_.chars(hex), b_.chars(hex), b_.chars(hex)};
    const GrammarElem cont = b_.range(0x80, 0xBF);
    return b_.rule({{b_.chars(plain)}, {b_.byte('\\'), b_.chars(esc)}, u, {b_.range(0xC2, 0xDF), cont},
                    {b_.range(0xE0, 0xEF), cont, cont}, {b_.range(0xF0, 0xF4), cont, cont, cont}});
  }

  // Bounded digit counts keep a model from writing numbers forever.
  int32_t number_rule(bool integer) {
    int32_t& cached = integer ? int_ : num_;
    if (cached >= 0) return cached;
    const GrammarElem digit = b_.range('0', '9');
    const int32_t minus = b_.rule({b_.lit("-"), {}});
    Seq nz{b_.range('1', '9'), Builder::ref(b_.repeat({digit}, 0, 15))};
    const int32_t intpart = b_.rule({b_.lit("0"), nz});
    Seq s{Builder::ref(minus), Builder::ref(intpart)};
    if (!integer) {
      Seq frac{b_.byte('.'), digit, Builder::ref(b_.repeat({digit}, 0, 15))};
      Set e;
      e.set('e');
      e.set('E');
      Set sign;
      sign.set('+');
      sign.set('-');
      // Two exponent digits at most: 16 digits and e99 stay inside a double.
      Seq exp{b_.chars(e), Builder::ref(b_.rule({{b_.chars(sign)}, {}})), digit, Builder::ref(b_.repeat({digit}, 0, 1))};
      s.push_back(Builder::ref(b_.rule({frac, {}})));
      s.push_back(Builder::ref(b_.rule({exp, {}})));
    }
    return cached = b_.rule({s});
  }

  int32_t null_rule() {
    if (null_ < 0) null_ = b_.rule({b_.lit(d_ == Dialect::Json ? "null" : "None")});
    return null_;
  }

  // key_rule ':' value
  Seq key_then(int32_t key_rule, int32_t value) {
    Seq s{Builder::ref(key_rule), b_.byte(':'), Builder::ref(value)};
    return s;
  }
  Seq key_literal(const std::string& name) {
    if (d_ == Dialect::Json) return b_.lit(json(name).dump());
    return b_.lit(name);
  }
  // item (',' item){lo-1..hi-1}, or nothing when lo == 0.
  int32_t list(int32_t item, int lo, int hi) {
    Seq more{b_.byte(','), Builder::ref(item)};
    Seq one{Builder::ref(item), Builder::ref(b_.repeat(more, std::max(lo, 1) - 1, hi < 0 ? -1 : hi - 1))};
    if (lo == 0) return b_.rule({one, {}});
    return b_.rule({one});
  }

  int32_t object(const json& s, const std::string& path, int depth) {
    const json props = s.value("properties", json::object());
    if (!props.is_object()) fail("'properties' at {} must be an object", path);
    std::set<std::string> required;
    if (auto r = s.find("required"); r != s.end()) {
      if (!r->is_array()) fail("'required' at {} must be an array of property names", path);
      for (const auto& x : *r) {
        if (!x.is_string()) fail("'required' at {} must be an array of property names", path);
        if (!props.contains(x.get<std::string>()))
          fail("'required' at {} names '{}', which is not in 'properties'", path, x.get<std::string>());
        required.insert(x.get<std::string>());
      }
    }
    const json extra = s.value("additionalProperties", json(props.empty()));
    if (!extra.is_boolean() && !extra.is_object()) fail("'additionalProperties' at {} must be a boolean or a schema", path);
    // F(i, c): the members from property i on; c says whether a member came before (a comma is due).
    std::vector<std::pair<std::string, int32_t>> members;
    for (const auto& [k, v] : props.items()) members.push_back({k, compile(v, path + "/properties/" + k, depth + 1)});
    const size_t n = members.size();
    std::vector<std::array<int32_t, 2>> f(n + 1);
    for (auto& x : f) x = {b_.new_rule(), b_.new_rule()};
    for (int c = 0; c < 2; ++c) {
      std::vector<Seq> tail{{}};
      if (!(extra.is_boolean() && !extra.get<bool>())) {
        const int32_t v = extra.is_object() ? compile(extra, path + "/additionalProperties", depth + 1) : any_value();
        Seq more;
        if (c) more.push_back(b_.byte(','));
        const Seq kv = key_then(d_ == Dialect::Json ? string_rule() : bare_key(), v);
        more.insert(more.end(), kv.begin(), kv.end());
        more.push_back(Builder::ref(f[n][1]));
        tail.push_back(more);
      }
      b_.g.rules[static_cast<size_t>(f[n][c])] = tail;
    }
    for (size_t i = n; i-- > 0;)
      for (int c = 0; c < 2; ++c) {
        Seq take;
        if (c) take.push_back(b_.byte(','));
        Seq key = key_literal(members[i].first);
        take.insert(take.end(), key.begin(), key.end());
        take.push_back(b_.byte(':'));
        take.push_back(Builder::ref(members[i].second));
        take.push_back(Builder::ref(f[i + 1][1]));
        std::vector<Seq> alts{take};
        if (!required.count(members[i].first)) alts.push_back({Builder::ref(f[i + 1][c])});
        b_.g.rules[static_cast<size_t>(f[i][c])] = alts;
      }
    Seq obj{b_.byte('{'), Builder::ref(f[0][0]), b_.byte('}')};
    return b_.rule({obj});
  }

  int32_t bare_key() {
    Set k;
    for (int c = 'a'; c <= 'z'; ++c) k.set(static_cast<size_t>(c));
    for (int c = 'A'; c <= 'Z'; ++c) k.set(static_cast<size_t>(c));
    for (int c = '0'; c <= '9'; ++c) k.set(static_cast<size_t>(c));
    k.set('_');
    return b_.rule({{b_.chars(k), Builder::ref(b_.repeat({b_.chars(k)}, 0, 63))}});
  }

  int32_t array(const json& s, const std::string& path, int depth) {
    const int64_t lo = s.value("minItems", int64_t{0}), hi = s.value("maxItems", int64_t{-1});
    if (lo < 0 || lo > 1000 || hi > 1000 || (hi >= 0 && hi < lo))
      fail("'minItems'/'maxItems' at {} must satisfy 0 <= minItems <= maxItems <= 1000, got {} and {}", path, lo, hi);
    const int32_t item = s.contains("items") ? compile(s["items"], path + "/items", depth + 1) : any_value();
    Seq arr{b_.byte('['), Builder::ref(list(item, static_cast<int>(lo), static_cast<int>(hi))), b_.byte(']')};
    return b_.rule({arr});
  }

  int32_t ref(const json& r, const std::string& path, int depth) {
    if (!r.is_string()) fail("'$ref' at {} must be a string", path);
    const std::string target = r.get<std::string>();
    if (auto it = refs_.find(target); it != refs_.end()) return it->second;
    if (target.empty() || target[0] != '#') fail("'$ref' at {} is '{}': only local references (#/...) are supported", path, target);
    json::json_pointer ptr;
    try {
      ptr = json::json_pointer(target.substr(1));
    } catch (const std::exception&) {
      fail("'$ref' at {} is '{}', not a JSON pointer", path, target);
    }
    if (!root_.contains(ptr)) fail("'$ref' at {} points to '{}', which the schema does not have", path, target);
    // Registered before compiling, so recursive schemas refer back to it.
    const int32_t rule = b_.new_rule();
    refs_[target] = rule;
    const int32_t body = compile(root_.at(ptr), target, depth + 1);
    b_.g.rules[static_cast<size_t>(rule)] = {{Builder::ref(body)}};
    return rule;
  }

  Builder& b_;
  const json& root_;
  Dialect d_;
  int32_t quote_;
  std::map<std::string, int32_t> refs_;
  int32_t any_ = -1, string_ = -1, json_char_ = -1, int_ = -1, num_ = -1, null_ = -1;
};

// ---- matching -----------------------------------------------------------------------------

uint64_t pos(uint32_t rule, uint32_t alt, uint32_t idx) { return (uint64_t{rule} << 32) | (uint64_t{alt} << 16) | idx; }
uint32_t pos_rule(uint64_t p) { return static_cast<uint32_t>(p >> 32); }
uint32_t pos_alt(uint64_t p) { return static_cast<uint32_t>((p >> 16) & 0xFFFF); }
uint32_t pos_idx(uint64_t p) { return static_cast<uint32_t>(p & 0xFFFF); }

const Seq& seq_of(const Grammar& g, uint64_t p) { return g.rules[pos_rule(p)][pos_alt(p)]; }

// Expands a stack until its top is a terminal (or it is empty: the grammar is complete).
void expand(const Grammar& g, Constraint::Stack stack, Constraint::State& out, int depth = 0) {
  if (depth > 256) return;  // a runaway (left-recursive) grammar: drop this path
  while (!stack.empty() && pos_idx(stack.back()) >= seq_of(g, stack.back()).size()) stack.pop_back();
  if (stack.empty()) { out.push_back(std::move(stack)); return; }
  const uint64_t top = stack.back();
  const GrammarElem e = seq_of(g, top)[pos_idx(top)];
  if (e.kind != GrammarElem::Rule) { out.push_back(std::move(stack)); return; }
  stack.back() = top + 1;
  // Tail position: drop the finished frame so right recursion does not grow the stack.
  if (pos_idx(stack.back()) >= seq_of(g, stack.back()).size()) stack.pop_back();
  const auto& alts = g.rules[static_cast<size_t>(e.arg)];
  for (size_t a = 0; a < alts.size(); ++a) {
    Constraint::Stack s = stack;
    s.push_back(pos(static_cast<uint32_t>(e.arg), static_cast<uint32_t>(a), 0));
    expand(g, std::move(s), out, depth + 1);
  }
}

void dedupe(Constraint::State& s) {
  std::sort(s.begin(), s.end());
  s.erase(std::unique(s.begin(), s.end()), s.end());
}

// The state after one byte (or special token, byte < 0 with token id).
Constraint::State advance(const Grammar& g, const Constraint::State& st, int byte, int32_t token = -1) {
  Constraint::State out;
  for (const auto& stack : st) {
    if (stack.empty()) continue;
    const GrammarElem e = seq_of(g, stack.back())[pos_idx(stack.back())];
    const bool ok = byte >= 0 ? e.kind == GrammarElem::Chars && g.charsets[static_cast<size_t>(e.arg)].test(static_cast<size_t>(byte))
                              : e.kind == GrammarElem::Token && e.arg == token;
    if (!ok) continue;
    Constraint::Stack s = stack;
    s.back() += 1;
    expand(g, std::move(s), out);
  }
  dedupe(out);
  if (out.size() > 4096) fail("the grammar is too ambiguous: {} parse stacks after one step", out.size());
  return out;
}

// A rule that can reach itself before consuming a byte or token (a schema like
// {"$ref": "#"}) would make expansion loop; such grammars are refused when built.
void check_not_left_recursive(const Grammar& g) {
  const size_t n = g.rules.size();
  std::vector<uint8_t> nullable(n, 0);
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t r = 0; r < n; ++r) {
      if (nullable[r]) continue;
      for (const auto& alt : g.rules[r]) {
        bool all = true;
        for (const auto& e : alt) all = all && e.kind == GrammarElem::Rule && nullable[static_cast<size_t>(e.arg)];
        if (all) { nullable[r] = 1; changed = true; break; }
      }
    }
  }
  std::vector<std::vector<int32_t>> first(n);  // rules that can start rule r
  for (size_t r = 0; r < n; ++r)
    for (const auto& alt : g.rules[r])
      for (const auto& e : alt) {
        if (e.kind != GrammarElem::Rule) break;
        first[r].push_back(e.arg);
        if (!nullable[static_cast<size_t>(e.arg)]) break;
      }
  std::vector<uint8_t> color(n, 0);  // 0 new, 1 on the path, 2 done
  std::function<void(size_t)> visit = [&](size_t r) {
    color[r] = 1;
    for (int32_t x : first[r]) {
      if (color[static_cast<size_t>(x)] == 1)
        fail("the schema refers to itself before anything is written (a left-recursive $ref or anyOf): it cannot be generated");
      if (color[static_cast<size_t>(x)] == 0) visit(static_cast<size_t>(x));
    }
    color[r] = 2;
  };
  for (size_t r = 0; r < n; ++r)
    if (color[r] == 0) visit(r);
}

}  // namespace

Grammar json_schema_grammar(const json& schema) {
  Builder b;
  const int32_t root = b.new_rule();
  SchemaCompiler c(b, schema, Dialect::Json, -1);
  const int32_t body = schema.is_null() ? c.any_object() : c.compile(schema, "#");
  b.g.rules[static_cast<size_t>(root)] = {{Builder::ref(body)}};
  b.g.root = root;
  check_not_left_recursive(b.g);
  return std::move(b.g);
}

Grammar tool_call_grammar(const Tokenizer& tok, const json& tools, const std::string& only) {
  const int32_t open = tok.find("<|tool_call>"), close = tok.find("<tool_call|>"), quote = tok.find("<|\"|>");
  if (open < 0 || close < 0 || quote < 0)
    fail("the tokenizer has no <|tool_call>, <tool_call|> or <|\"|> token: this model cannot call tools");
  Builder b;
  const int32_t root = b.new_rule();
  std::vector<Seq> calls;
  for (size_t i = 0; i < tools.size(); ++i) {
    const json fn = tools[i].value("function", json::object());
    const std::string name = fn.value("name", "");
    if (!only.empty() && name != only) continue;
    const json params = fn.value("parameters", json());
    SchemaCompiler c(b, params, Dialect::Gemma, quote);
    Seq s{b.token(open)};
    b.lit(s, "call:" + name);
    s.push_back(Builder::ref(c.arguments(params, fmt::format("tools[{}].function.parameters", i))));
    s.push_back(b.token(close));
    calls.push_back(s);
  }
  if (calls.empty()) fail("tool_choice names '{}', which is not among the request's tools", only);
  const int32_t call = b.rule(calls);
  // One call when a tool is named; one or more for "required".
  b.g.rules[static_cast<size_t>(root)] = {{Builder::ref(only.empty() ? b.repeat({Builder::ref(call)}, 1, -1) : call)}};
  b.g.root = root;
  check_not_left_recursive(b.g);
  return std::move(b.g);
}

TokenTrie::TokenTrie(const Tokenizer& tok) {
  const int32_t V = tok.vocab_size();
  texts_.resize(static_cast<size_t>(V));
  std::vector<int32_t> ids;
  for (int32_t id = 0; id < V; ++id) {
    // Control tokens and the chat markers: only a grammar's Token elements emit them.
    static const std::set<std::string> markers{"<|turn>", "<turn|>", "<|tool>", "<tool|>", "<|tool_call>", "<tool_call|>",
                                               "<|tool_response>", "<tool_response|>", "<|\"|>", "<|think|>", "<|channel>",
                                               "<channel|>", "<start_of_turn>", "<end_of_turn>"};
    if (tok.is_special(id) || markers.count(tok.piece(id))) continue;
    texts_[static_cast<size_t>(id)] = tok.token_text(id);
    if (!texts_[static_cast<size_t>(id)].empty()) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return texts_[static_cast<size_t>(a)] < texts_[static_cast<size_t>(b)]; });
  // Built recursively over the sorted texts: each node's range of ids shares its prefix.
  std::function<uint32_t(size_t, size_t, size_t)> build = [&](size_t lo, size_t hi, size_t depth) -> uint32_t {
    const uint32_t me = static_cast<uint32_t>(nodes_.size());
    nodes_.push_back({});
    size_t i = lo;
    nodes_[me].token_begin = static_cast<uint32_t>(tokens_.size());
    while (i < hi && texts_[static_cast<size_t>(ids[i])].size() == depth) tokens_.push_back(ids[i++]);
    nodes_[me].token_end = static_cast<uint32_t>(tokens_.size());
    std::vector<std::pair<uint8_t, uint32_t>> kids;
    while (i < hi) {
      const uint8_t c = static_cast<uint8_t>(texts_[static_cast<size_t>(ids[i])][depth]);
      size_t j = i;
      while (j < hi && static_cast<uint8_t>(texts_[static_cast<size_t>(ids[j])][depth]) == c) ++j;
      kids.push_back({c, build(i, j, depth + 1)});
      i = j;
    }
    nodes_[me].edge_begin = static_cast<uint32_t>(edges_.size());
    edges_.insert(edges_.end(), kids.begin(), kids.end());
    nodes_[me].edge_end = static_cast<uint32_t>(edges_.size());
    return me;
  };
  build(0, ids.size(), 0);
}

Constraint::Constraint(std::shared_ptr<const Grammar> g, std::shared_ptr<const TokenTrie> trie, std::vector<int32_t> eog)
    : g_(std::move(g)), trie_(std::move(trie)), eog_(std::move(eog)) {
  // The root may have several alternatives; start from each.
  for (size_t a = 0; a < g_->rules[static_cast<size_t>(g_->root)].size(); ++a)
    expand(*g_, Stack{pos(static_cast<uint32_t>(g_->root), static_cast<uint32_t>(a), 0)}, state_);
  dedupe(state_);
}

bool Constraint::complete() const {
  return std::any_of(state_.begin(), state_.end(), [](const Stack& s) { return s.empty(); });
}
bool Constraint::finished() const {
  return std::all_of(state_.begin(), state_.end(), [](const Stack& s) { return s.empty(); });
}

size_t Constraint::apply(std::span<float> logits, int64_t* nodes_visited) const {
  std::vector<uint8_t> allowed(logits.size(), 0);
  int64_t visited = 0;
  const auto& nodes = trie_->nodes();
  // Parse states are interned and their byte transitions memoized: inside free text most
  // trie nodes lead back to one of a few states, so a node costs a hash lookup.
  std::map<State, int32_t> ids;
  std::vector<const State*> states;
  std::unordered_map<uint64_t, int32_t> trans;
  auto intern = [&](State st) {
    auto [it, fresh] = ids.emplace(std::move(st), static_cast<int32_t>(states.size()));
    if (fresh) states.push_back(&it->first);
    return it->second;
  };
  std::function<void(const TokenTrie::Node&, int32_t)> walk = [&](const TokenTrie::Node& n, int32_t sid) {
    for (const auto& [c, child] : trie_->edges(n)) {
      ++visited;
      const uint64_t key = (static_cast<uint64_t>(sid) << 8) | c;
      auto t = trans.find(key);
      if (t == trans.end()) {
        State next = advance(*g_, *states[static_cast<size_t>(sid)], c);
        t = trans.emplace(key, next.empty() ? -1 : intern(std::move(next))).first;
      }
      if (t->second < 0) continue;  // the whole subtree is rejected
      const auto& node = nodes[child];
      for (int32_t id : trie_->tokens(node))
        if (static_cast<size_t>(id) < allowed.size()) allowed[static_cast<size_t>(id)] = 1;
      walk(node, t->second);
    }
  };
  if (!finished()) walk(nodes[0], intern(state_));
  for (int32_t id : g_->tokens)
    if (static_cast<size_t>(id) < allowed.size() && !advance(*g_, state_, -1, id).empty()) allowed[static_cast<size_t>(id)] = 1;
  if (complete())
    for (int32_t id : eog_)
      if (static_cast<size_t>(id) < allowed.size()) allowed[static_cast<size_t>(id)] = 1;
  size_t n = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (allowed[i]) ++n;
    else logits[i] = -std::numeric_limits<float>::infinity();
  }
  if (nodes_visited) *nodes_visited = visited;
  return n;
}

bool Constraint::accept(int32_t id) {
  if (std::find(eog_.begin(), eog_.end(), id) != eog_.end()) return complete();
  State st;
  if (std::find(g_->tokens.begin(), g_->tokens.end(), id) != g_->tokens.end()) {
    st = advance(*g_, state_, -1, id);
  } else {
    const auto& texts = trie_->texts();
    if (id < 0 || static_cast<size_t>(id) >= texts.size() || texts[static_cast<size_t>(id)].empty()) return false;
    st = state_;
    for (unsigned char c : texts[static_cast<size_t>(id)]) {
      st = advance(*g_, st, c);
      if (st.empty()) return false;
    }
  }
  if (st.empty()) return false;
  state_ = std::move(st);
  return true;
}

}  // namespace g4
