#include "server/request.h"

#include <fmt/format.h>

#include <cmath>
#include <set>

#include "util/error.h"
#include "util/json.h"

namespace g4 {

void api_fail(int status, std::string message, std::string param, std::string code) {
  throw ApiError{status, std::move(message), status == 404 ? "not_found_error" : "invalid_request_error", std::move(param),
                 std::move(code)};
}

std::string api_error_body(const ApiError& e) {
  json err{{"message", e.message}, {"type", e.type}, {"param", e.param.empty() ? json(nullptr) : json(e.param)},
           {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  // replace: a message may quote client bytes; never let an error turn into another error.
  return json{{"error", err}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

size_t invalid_utf8_offset(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) { ++i; continue; }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
    else return i;  // a continuation byte out of place, or C0/C1/F5..FF
    if (n - i < len) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
      return i;  // overlong, beyond Unicode, or a surrogate
    i += len;
  }
  return std::string_view::npos;
}

namespace {

const char* kind(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a number with a fraction";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    default: return "another type";
  }
}

[[noreturn]] void wrong_type(const std::string& field, const char* expected, const json& got) {
  api_fail(400, fmt::format("'{}' must be {}, got {}", field, expected, kind(got)), field);
}

// A present, non-null member, or nullptr.
const json* field(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

std::optional<double> number(const json& b, const char* k, double lo, double hi) {
  const json* v = field(b, k);
  if (!v) return std::nullopt;
  if (!v->is_number()) wrong_type(k, "a number", *v);
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi)) api_fail(400, fmt::format("'{}' = {} is out of range [{}, {}]", k, x, lo, hi), k);
  return x;
}

std::optional<int64_t> integer(const json& b, const char* k, int64_t lo, int64_t hi) {
  const json* v = field(b, k);
  if (!v) return std::nullopt;
  // 3.0 is accepted as 3 (JavaScript clients have one number type); 3.5 is not.
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (d != std::floor(d) || !(d >= -9.2e18 && d <= 9.2e18)) wrong_type(k, "an integer", *v);
  } else if (!v->is_number_integer()) {
    wrong_type(k, "an integer", *v);
  }
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    api_fail(400, fmt::format("'{}' is out of range [{}, {}]", k, lo, hi), k);
  const int64_t x = v->is_number_float() ? static_cast<int64_t>(v->get<double>()) : v->get<int64_t>();
  if (x < lo || x > hi) api_fail(400, fmt::format("'{}' = {} is out of range [{}, {}]", k, x, lo, hi), k);
  return x;
}

std::optional<bool> boolean(const json& b, const char* k, const std::string& shown) {
  const json* v = field(b, k);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) wrong_type(shown, "a boolean", *v);
  return v->get<bool>();
}

std::vector<int32_t> token_ids(const json& arr, const RequestContext& ctx, const char* param) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < arr.size(); ++i) {
    const json& x = arr[i];
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= ctx.vocab)
      api_fail(400, fmt::format("'{}[{}]' must be a token id in [0, {}), got {}", param, i, ctx.vocab,
                                x.is_number_integer() ? std::to_string(x.get<int64_t>()) : kind(x)),
               param);
    ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
  }
  return ids;
}

}  // namespace

CompletionRequest parse_completion_request(std::string_view body, bool chat, const RequestContext& ctx) {
  if (const size_t at = invalid_utf8_offset(body); at != std::string_view::npos)
    api_fail(400, fmt::format("the request body is not valid UTF-8: byte 0x{:02x} at offset {}", static_cast<uint8_t>(body[at]), at));
  json b;
  try {
    b = parse_json_strict(body, "request body");
  } catch (const Error& e) {
    api_fail(400, e.what());
  }
  if (!b.is_object()) api_fail(400, fmt::format("the request body must be a JSON object, got {}", kind(b)));
  if (const json* m = field(b, "model")) {
    if (!m->is_string()) wrong_type("model", "a string", *m);
    const auto& name = m->get_ref<const std::string&>();
    if (name != ctx.model_id && name != ctx.model_path)
      api_fail(404, fmt::format("The model '{}' does not exist; this server serves '{}'", name, ctx.model_id), "model",
               "model_not_found");
  }
  if (auto n = integer(b, "n", 1, 1); n && *n != 1) api_fail(400, "only n = 1 is supported", "n");
  if (const json* u = field(b, "user"); u && !u->is_string()) wrong_type("user", "a string", *u);
  number(b, "presence_penalty", -2, 2);   // accepted for compatibility, not applied
  number(b, "frequency_penalty", -2, 2);  // likewise

  CompletionRequest r;
  auto& sp = r.gen.sampling;
  sp = ctx.defaults;
  sp.temp = static_cast<float>(number(b, "temperature", 0.0, 2.0).value_or(1.0));  // OpenAI's default is 1
  sp.top_p = static_cast<float>(number(b, "top_p", 0.0, 1.0).value_or(1.0));
  sp.min_p = static_cast<float>(number(b, "min_p", 0.0, 1.0).value_or(0.0));
  sp.top_k = static_cast<int>(integer(b, "top_k", 0, 1'000'000).value_or(0));
  sp.repeat_penalty = static_cast<float>(number(b, "repeat_penalty", 0.0, 10.0).value_or(1.0));
  if (auto s = integer(b, "seed", INT64_MIN, INT64_MAX)) sp.seed = static_cast<uint64_t>(*s);
  const char* max_key = field(b, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  r.gen.max_tokens = static_cast<int>(integer(b, max_key, 1, ctx.max_tokens_limit).value_or(chat ? 256 : 16));
  if (const json* s = field(b, "stop")) {
    const char* what = "a string or an array of up to 4 strings";
    if (s->is_string()) r.gen.stop_strings.push_back(s->get<std::string>());
    else if (s->is_array() && s->size() <= 4) {
      for (size_t i = 0; i < s->size(); ++i) {
        if (!(*s)[i].is_string()) wrong_type(fmt::format("stop[{}]", i), "a string", (*s)[i]);
        r.gen.stop_strings.push_back((*s)[i].get<std::string>());
      }
    } else if (s->is_array()) api_fail(400, fmt::format("'stop' has {} strings; at most 4 are allowed", s->size()), "stop");
    else wrong_type("stop", what, *s);
  }
  r.stream = boolean(b, "stream", "stream").value_or(false);
  if (const json* so = field(b, "stream_options")) {
    if (!so->is_object()) wrong_type("stream_options", "an object", *so);
    r.include_usage = boolean(*so, "include_usage", "stream_options.include_usage").value_or(false);
  }
  r.gen.stop_ids = ctx.eog;
  // llama.cpp's extension: keep generating through end-of-generation tokens.
  if (boolean(b, "ignore_eos", "ignore_eos").value_or(false)) r.gen.stop_ids.clear();

  if (chat) {
    const json* msgs = field(b, "messages");
    if (!msgs) api_fail(400, "'messages' is required", "messages");
    if (!msgs->is_array()) wrong_type("messages", "an array of messages", *msgs);
    if (msgs->empty()) api_fail(400, "'messages' must not be empty", "messages");
    std::vector<ChatMessage> list;
    static const std::set<std::string> roles{"system", "developer", "user", "assistant", "tool"};
    for (size_t i = 0; i < msgs->size(); ++i) {
      const json& m = (*msgs)[i];
      const std::string at = fmt::format("messages[{}]", i);
      if (!m.is_object()) wrong_type(at, "an object", m);
      const json* role = field(m, "role");
      if (!role) api_fail(400, fmt::format("'{}.role' is required", at), "messages");
      if (!role->is_string()) wrong_type(at + ".role", "a string", *role);
      ChatMessage cm{role->get<std::string>(), ""};
      if (!roles.count(cm.role))
        api_fail(400, fmt::format("'{}.role' is '{}'; expected system, developer, user, assistant or tool", at, cm.role),
                 "messages");
      if (const json* name = field(m, "name"); name && !name->is_string()) wrong_type(at + ".name", "a string", *name);
      if (const json* c = field(m, "content")) {
        if (c->is_string()) cm.content = c->get<std::string>();
        else if (c->is_array()) {
          for (size_t k = 0; k < c->size(); ++k) {
            const json& part = (*c)[k];
            const std::string pat = fmt::format("{}.content[{}]", at, k);
            if (!part.is_object()) wrong_type(pat, "a content part object", part);
            const json* type = field(part, "type");
            if (!type || !type->is_string() || type->get_ref<const std::string&>() != "text")
              api_fail(400, fmt::format("'{}.type' must be \"text\": only text content parts are supported", pat), "messages");
            const json* text = field(part, "text");
            if (!text || !text->is_string()) wrong_type(pat + ".text", "a string", text ? *text : json(nullptr));
            cm.content += text->get<std::string>();
          }
        } else {
          wrong_type(at + ".content", "a string or an array of text parts", *c);
        }
      }
      list.push_back(std::move(cm));
    }
    ChatTemplateOptions co;
    co.empty_thought_channel = ctx.empty_thought_channel;
    // Message content is plain text: special-token text in it cannot forge a turn.
    r.prompt = encode_chat(*ctx.tok, list, co);
  } else {
    const json* p = field(b, "prompt");
    if (!p) api_fail(400, "'prompt' is required", "prompt");
    const char* what = "a string, an array of one string, or an array of token ids";
    if (p->is_string()) r.prompt = ctx.tok->encode(p->get_ref<const std::string&>(), true);
    else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) r.prompt = ctx.tok->encode((*p)[0].get_ref<const std::string&>(), true);
    else if (p->is_array() && !p->empty() && (*p)[0].is_number()) r.prompt = token_ids(*p, ctx, "prompt");
    else if (p->is_array() && p->empty()) api_fail(400, "'prompt' must not be empty", "prompt");
    else wrong_type("prompt", what, *p);
  }
  if (r.prompt.empty()) api_fail(400, "the prompt is empty after tokenization", chat ? "messages" : "prompt");
  if (static_cast<int64_t>(r.prompt.size()) + 1 > ctx.ctx_limit)
    api_fail(400, fmt::format("the prompt has {} tokens; this server's context is {} tokens", r.prompt.size(), ctx.ctx_limit),
             chat ? "messages" : "prompt", "context_length_exceeded");
  r.gen.max_tokens = static_cast<int>(std::min<int64_t>(r.gen.max_tokens, ctx.ctx_limit - static_cast<int64_t>(r.prompt.size())));
  return r;
}

}  // namespace g4
