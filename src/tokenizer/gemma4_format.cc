#include "tokenizer/gemma4_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <map>

namespace g4 {
namespace {

constexpr std::string_view kQuote = "<|\"|>";

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
std::string str_or_empty(const json& o, const char* k) {
  auto it = o.find(k);
  return it != o.end() && it->is_string() ? it->get<std::string>() : "";
}
bool truthy(const json& o, const char* k) {
  auto it = o.find(k);
  if (it == o.end() || it->is_null()) return false;
  if (it->is_boolean()) return it->get<bool>();
  if (it->is_string() || it->is_array() || it->is_object()) return !it->empty();
  return true;
}
void quoted(const std::string& s, const ChatEmit& emit) {
  emit(std::string(kQuote), true);
  emit(s, false);
  emit(std::string(kQuote), true);
}
// Jinja's dictsort: keys in byte order (nlohmann's object is already a std::map).
void required_list(const json& req, const ChatEmit& emit) {
  emit("required:[", false);
  bool first = true;
  for (const auto& r : req) {
    if (!first) emit(",", false);
    first = false;
    quoted(r.is_string() ? r.get<std::string>() : r.dump(), emit);
  }
  emit("]", false);
}

// The template's format_parameters macro, keyword for keyword.
void format_parameters(const json& properties, const ChatEmit& emit) {
  static const char* standard[] = {"description", "type", "properties", "required", "nullable"};
  bool found_first = false;
  for (const auto& [key, value] : properties.items()) {
    if (std::find(std::begin(standard), std::end(standard), key) != std::end(standard)) continue;
    if (!value.is_object()) continue;
    if (found_first) emit(",", false);
    found_first = true;
    emit(key + ":{", false);
    bool comma = false;
    auto sep = [&] { if (comma) emit(",", false); comma = true; };
    if (truthy(value, "description")) {
      emit("description:", false);
      quoted(str_or_empty(value, "description"), emit);
      comma = true;
    }
    const std::string type = upper(str_or_empty(value, "type"));
    if (type == "STRING") {
      if (truthy(value, "enum")) { sep(); emit("enum:", false); gemma_value(value["enum"], true, emit); }
    } else if (type == "ARRAY") {
      const json items = value.value("items", json());
      if (items.is_object() && !items.empty()) {
        sep();
        emit("items:{", false);
        bool first_item = true;
        for (const auto& [ik, iv] : items.items()) {
          if (iv.is_null()) continue;
          if (!first_item) emit(",", false);
          first_item = false;
          if (ik == "properties") {
            emit("properties:{", false);
            if (iv.is_object()) format_parameters(iv, emit);
            emit("}", false);
          } else if (ik == "required") {
            required_list(iv, emit);
          } else if (ik == "type") {
            emit("type:", false);
            if (iv.is_string()) gemma_value(upper(iv.get<std::string>()), true, emit);
            else {
              json u = json::array();
              for (const auto& t : iv) u.push_back(t.is_string() ? upper(t.get<std::string>()) : t.dump());
              gemma_value(u, true, emit);
            }
          } else {
            emit(ik + ":", false);
            gemma_value(iv, true, emit);
          }
        }
        emit("}", false);
      }
    }
    if (truthy(value, "nullable")) { sep(); emit("nullable:true", false); }
    if (type == "OBJECT") {
      sep();
      emit("properties:{", false);
      auto p = value.find("properties");
      format_parameters(p != value.end() && p->is_object() ? *p : value, emit);
      emit("}", false);
      if (truthy(value, "required")) { sep(); required_list(value["required"], emit); }
    }
    sep();
    emit("type:", false);
    quoted(type, emit);
    emit("}", false);
  }
}

// ---- the parser ---------------------------------------------------------------------------

struct Parser {
  std::string_view s;
  size_t i = 0;
  std::string error;
  bool fail(const std::string& what) {
    if (error.empty()) error = fmt::format("at byte {}: {}", i, what);
    return false;
  }
  void ws() { while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i; }
  bool eat(std::string_view t) {
    if (s.substr(i, t.size()) != t) return false;
    i += t.size();
    return true;
  }
  bool quoted_string(std::string& out) {
    if (!eat(kQuote)) return fail("expected <|\"|>");
    const size_t e = s.find(kQuote, i);
    if (e == std::string_view::npos) return fail("unterminated <|\"|> string");
    out = std::string(s.substr(i, e - i));
    i = e + kQuote.size();
    return true;
  }
  bool members(json& obj, int depth) {
    obj = json::object();
    ws();
    if (eat("}")) return true;
    for (;;) {
      ws();
      std::string key;
      if (s.substr(i, kQuote.size()) == kQuote) {
        if (!quoted_string(key)) return false;
      } else {
        const size_t c = s.find(':', i);
        if (c == std::string_view::npos) return fail("expected KEY: in an object");
        key = std::string(s.substr(i, c - i));
        while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
        if (key.empty() || key.find_first_of("{}[],") != std::string::npos) return fail("expected a key before ':'");
        i = c;
      }
      ws();
      if (!eat(":")) return fail("expected ':' after key '" + key + "'");
      json v;
      if (!value(v, depth + 1)) return false;
      if (obj.contains(key)) return fail("duplicate key '" + key + "'");
      obj[key] = std::move(v);
      ws();
      if (eat(",")) continue;
      if (eat("}")) return true;
      return fail("expected ',' or '}' in an object");
    }
  }
  bool value(json& v, int depth) {
    if (depth > 64) return fail("nested deeper than 64 levels");
    ws();
    if (i >= s.size()) return fail("expected a value, found the end");
    if (s.substr(i, kQuote.size()) == kQuote) {
      std::string str;
      if (!quoted_string(str)) return false;
      v = std::move(str);
      return true;
    }
    if (eat("{")) return members(v, depth);
    if (eat("[")) {
      v = json::array();
      ws();
      if (eat("]")) return true;
      for (;;) {
        json x;
        if (!value(x, depth + 1)) return false;
        v.push_back(std::move(x));
        ws();
        if (eat(",")) continue;
        if (eat("]")) return true;
        return fail("expected ',' or ']' in an array");
      }
    }
    if (eat("true")) { v = true; return true; }
    if (eat("false")) { v = false; return true; }
    if (eat("null") || eat("None")) { v = nullptr; return true; }
    size_t e = i;
    while (e < s.size() && (std::isdigit(static_cast<unsigned char>(s[e])) || std::strchr("+-.eE", s[e]))) ++e;
    if (e == i) return fail(fmt::format("unexpected '{}' where a value was expected", s[i]));
    const std::string num(s.substr(i, e - i));
    char* end = nullptr;
    if (num.find_first_of(".eE") == std::string::npos) {
      errno = 0;
      const long long x = std::strtoll(num.c_str(), &end, 10);
      if (end == num.c_str() + num.size() && errno == 0) { v = x; i = e; return true; }
    }
    const double d = std::strtod(num.c_str(), &end);
    if (end != num.c_str() + num.size() || !std::isfinite(d)) return fail("malformed number '" + num + "'");
    v = d;
    i = e;
    return true;
  }
};

}  // namespace

void gemma_value(const json& v, bool escape_keys, const ChatEmit& emit) {
  switch (v.type()) {
    case json::value_t::string: quoted(v.get<std::string>(), emit); return;
    case json::value_t::boolean: emit(v.get<bool>() ? "true" : "false", false); return;
    case json::value_t::object: {
      emit("{", false);
      bool first = true;
      for (const auto& [k, x] : v.items()) {
        if (!first) emit(",", false);
        first = false;
        if (escape_keys) quoted(k, emit);
        else emit(k, false);
        emit(":", false);
        gemma_value(x, escape_keys, emit);
      }
      emit("}", false);
      return;
    }
    case json::value_t::array: {
      emit("[", false);
      for (size_t k = 0; k < v.size(); ++k) {
        if (k) emit(",", false);
        gemma_value(v[k], escape_keys, emit);
      }
      emit("]", false);
      return;
    }
    case json::value_t::null: emit("None", false); return;  // Jinja prints Python's None
    default: emit(v.dump(), false); return;
  }
}

void gemma_tool_declaration(const json& tool, const ChatEmit& emit) {
  const json fn = tool.value("function", json::object());
  emit("declaration:" + str_or_empty(fn, "name") + "{description:", false);
  quoted(str_or_empty(fn, "description"), emit);
  const json params = fn.value("parameters", json());
  if (params.is_object() && !params.empty()) {
    emit(",parameters:{", false);
    if (truthy(params, "properties") && params["properties"].is_object()) {
      emit("properties:{", false);
      format_parameters(params["properties"], emit);
      emit("},", false);
    }
    if (truthy(params, "required")) { required_list(params["required"], emit); emit(",", false); }
    // As in the template: parameters' closing brace comes with its type.
    if (truthy(params, "type")) { emit("type:", false); quoted(upper(str_or_empty(params, "type")), emit); emit("}", false); }
  }
  emit("}", false);
}

void gemma_tool_call(const std::string& name, const json& arguments, const ChatEmit& emit) {
  emit("call:" + name + "{", false);
  bool first = true;
  if (arguments.is_object())
    for (const auto& [k, v] : arguments.items()) {
      if (!first) emit(",", false);
      first = false;
      emit(k + ":", false);
      gemma_value(v, false, emit);
    }
  emit("}", false);
}

void gemma_tool_response(const std::string& name, const json& response, const ChatEmit& emit) {
  emit("response:" + name + "{", false);
  if (response.is_object()) {
    bool first = true;
    for (const auto& [k, v] : response.items()) {
      if (!first) emit(",", false);
      first = false;
      emit(k + ":", false);
      gemma_value(v, false, emit);
    }
  } else {
    emit("value:", false);
    gemma_value(response, false, emit);
  }
  emit("}", false);
}

bool parse_gemma_call(std::string_view text, std::string& name, json& arguments, std::string& error) {
  Parser p{text, 0, {}};
  p.ws();
  if (!p.eat("call:")) { p.fail("expected 'call:NAME{'"); error = p.error; return false; }
  const size_t b = text.find('{', p.i);
  if (b == std::string_view::npos) { p.fail("expected '{' after the function name"); error = p.error; return false; }
  name = std::string(text.substr(p.i, b - p.i));
  while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
  if (name.empty() || name.find_first_of(" \n<>:,") != std::string::npos) {
    p.fail("expected a function name after 'call:'");
    error = p.error;
    return false;
  }
  p.i = b + 1;
  if (!p.members(arguments, 0)) { error = p.error; return false; }
  p.ws();
  if (p.i != text.size()) { p.fail("unexpected text after the call's closing '}'"); error = p.error; return false; }
  return true;
}

}  // namespace g4
