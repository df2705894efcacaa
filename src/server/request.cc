#include "server/request.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <optional>
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

// Thinking, tools, tool_choice and response_format of a chat request.
void parse_chat_features(const json& b, const RequestContext& ctx, CompletionRequest& r) {
  // Thinking: reasoning_effort, or chat_template_kwargs.enable_thinking (vLLM, llama.cpp).
  std::optional<bool> think;
  if (const json* e = field(b, "reasoning_effort")) {
    static const std::set<std::string> on{"low", "medium", "high"}, off{"none", "minimal"};
    if (!e->is_string() || (!on.count(e->get<std::string>()) && !off.count(e->get<std::string>())))
      api_fail(400, fmt::format("'reasoning_effort' must be one of none, minimal, low, medium, high; got {}", e->dump()),
               "reasoning_effort");
    think = on.count(e->get<std::string>()) > 0;
  }
  if (const json* k = field(b, "chat_template_kwargs")) {
    if (!k->is_object()) wrong_type("chat_template_kwargs", "an object", *k);
    if (auto t = boolean(*k, "enable_thinking", "chat_template_kwargs.enable_thinking")) think = *t;
  }
  r.thinking = ctx.reasoning == "off" ? false : think.value_or(ctx.reasoning == "on");

  if (const json* t = field(b, "tools")) {
    if (!t->is_array()) wrong_type("tools", "an array of tools", *t);
    if (t->size() > 128) api_fail(400, fmt::format("'tools' has {} entries; at most 128 are allowed", t->size()), "tools");
    std::set<std::string> names;
    for (size_t i = 0; i < t->size(); ++i) {
      const json& tool = (*t)[i];
      const std::string at = fmt::format("tools[{}]", i);
      if (!tool.is_object()) wrong_type(at, "an object", tool);
      const json* type = field(tool, "type");
      if (!type || *type != "function") api_fail(400, fmt::format("'{}.type' must be \"function\"", at), "tools");
      const json* fn = field(tool, "function");
      if (!fn || !fn->is_object()) wrong_type(at + ".function", "an object", fn ? *fn : json(nullptr));
      const json* name = field(*fn, "name");
      if (!name || !name->is_string()) wrong_type(at + ".function.name", "a string", name ? *name : json(nullptr));
      const std::string n = name->get<std::string>();
      const bool ok = !n.empty() && n.size() <= 64 &&
                      std::all_of(n.begin(), n.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'; });
      if (!ok) api_fail(400, fmt::format("'{}.function.name' is '{}'; names are 1-64 of a-z, A-Z, 0-9, _, -, .", at, n), "tools");
      if (!names.insert(n).second) api_fail(400, fmt::format("'{}.function.name' '{}' is declared twice", at, n), "tools");
      if (const json* d = field(*fn, "description"); d && !d->is_string()) wrong_type(at + ".function.description", "a string", *d);
      if (const json* p = field(*fn, "parameters"); p && !p->is_object()) wrong_type(at + ".function.parameters", "an object", *p);
    }
    r.tools = *t;
  }
  if (const json* c = field(b, "tool_choice")) {
    if (c->is_string()) {
      r.tool_choice = c->get<std::string>();
      if (r.tool_choice != "none" && r.tool_choice != "auto" && r.tool_choice != "required")
        api_fail(400, fmt::format("'tool_choice' must be none, auto, required or a function object; got '{}'", r.tool_choice), "tool_choice");
    } else if (c->is_object()) {
      const json* fn = field(*c, "function");
      const json* name = fn && fn->is_object() ? field(*fn, "name") : nullptr;
      if (!name || !name->is_string()) api_fail(400, "'tool_choice.function.name' must be a string", "tool_choice");
      r.tool_choice = name->get<std::string>();
      bool found = false;
      for (const auto& t : r.tools) found |= t["function"]["name"] == r.tool_choice;
      if (!found) api_fail(400, fmt::format("'tool_choice' names '{}', which is not in 'tools'", r.tool_choice), "tool_choice");
    } else {
      wrong_type("tool_choice", "a string or an object", *c);
    }
    if (r.tool_choice != "none" && r.tool_choice != "auto" && r.tools.empty())
      api_fail(400, "'tool_choice' requires 'tools'", "tool_choice");
  }
  if (r.tool_choice == "none") r.tools = json::array();
  boolean(b, "parallel_tool_calls", "parallel_tool_calls");  // accepted; several calls per turn are allowed

  auto need_trie = [&](const char* param) {
    if (!ctx.trie) api_fail(400, "constrained decoding is not available on this server", param);
  };
  if (r.tool_choice != "none" && r.tool_choice != "auto") {
    need_trie("tool_choice");
    try {
      r.grammar = std::make_shared<Grammar>(tool_call_grammar(*ctx.tok, r.tools, r.tool_choice == "required" ? "" : r.tool_choice));
    } catch (const Error& e) {
      api_fail(400, e.what(), "tool_choice");
    }
    r.grammar_kind = "tools";
  }
  if (const json* f = field(b, "response_format")) {
    if (!f->is_object()) wrong_type("response_format", "an object", *f);
    const json* type = field(*f, "type");
    if (!type || !type->is_string()) api_fail(400, "'response_format.type' must be text, json_object or json_schema", "response_format");
    const std::string t = type->get<std::string>();
    if (t == "text") return;
    json schema;  // null: any JSON object
    if (t == "json_schema") {
      const json* js = field(*f, "json_schema");
      if (!js || !js->is_object()) api_fail(400, "'response_format.json_schema' must be an object with a 'schema'", "response_format");
      const json* sc = field(*js, "schema");
      if (!sc || !sc->is_object()) api_fail(400, "'response_format.json_schema.schema' must be an object", "response_format");
      schema = *sc;
    } else if (t != "json_object") {
      api_fail(400, fmt::format("'response_format.type' must be text, json_object or json_schema; got '{}'", t), "response_format");
    }
    if (r.grammar) api_fail(400, "'response_format' cannot be combined with tool_choice required or a named tool", "response_format");
    need_trie("response_format");
    try {
      r.grammar = std::make_shared<Grammar>(json_schema_grammar(schema));
    } catch (const Error& e) {
      api_fail(400, fmt::format("response_format: {}", e.what()), "response_format");
    }
    r.grammar_kind = "json";
  }
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

  CompletionRequest r;
  auto& sp = r.gen.sampling;
  sp = ctx.defaults;
  sp.temp = static_cast<float>(number(b, "temperature", 0.0, 2.0).value_or(1.0));  // OpenAI's default is 1
  sp.top_p = static_cast<float>(number(b, "top_p", 0.0, 1.0).value_or(1.0));
  sp.min_p = static_cast<float>(number(b, "min_p", 0.0, 1.0).value_or(0.0));
  sp.top_k = static_cast<int>(integer(b, "top_k", 0, 1'000'000).value_or(0));
  sp.repeat_penalty = static_cast<float>(number(b, "repeat_penalty", 0.0, 10.0).value_or(1.0));
  if (auto rp = number(b, "repetition_penalty", 0.0, 10.0)) sp.repeat_penalty = static_cast<float>(*rp);  // vLLM's name
  if (!(sp.repeat_penalty > 0)) api_fail(400, "the repetition penalty must be > 0 (1 is off)", "repeat_penalty");
  sp.presence_penalty = static_cast<float>(number(b, "presence_penalty", -2, 2).value_or(0.0));
  sp.frequency_penalty = static_cast<float>(number(b, "frequency_penalty", -2, 2).value_or(0.0));
  if (auto n = integer(b, "repeat_last_n", -1, 1'000'000)) sp.repeat_last_n = static_cast<int>(*n);
  if (const json* lb = field(b, "logit_bias")) {
    if (!lb->is_object()) wrong_type("logit_bias", "an object mapping token ids to biases", *lb);
    if (lb->size() > 1024) api_fail(400, fmt::format("'logit_bias' has {} entries; at most 1024 are allowed", lb->size()), "logit_bias");
    for (const auto& [k, v] : lb->items()) {
      char* end = nullptr;
      const long id = std::strtol(k.c_str(), &end, 10);
      if (k.empty() || end != k.c_str() + k.size() || id < 0 || id >= ctx.vocab)
        api_fail(400, fmt::format("'logit_bias' key '{}' must be a token id in [0, {})", k, ctx.vocab), "logit_bias");
      if (!v.is_number()) wrong_type(fmt::format("logit_bias.{}", k), "a number", v);
      const double x = v.get<double>();
      if (!(x >= -100 && x <= 100)) api_fail(400, fmt::format("'logit_bias.{}' = {} is out of range [-100, 100]", k, x), "logit_bias");
      sp.logit_bias.push_back({static_cast<int32_t>(id), static_cast<float>(x)});
    }
  }
  if (auto s = integer(b, "seed", INT64_MIN, INT64_MAX)) sp.seed = static_cast<uint64_t>(*s);
  // Scores. Chat: logprobs (boolean) + top_logprobs; completions: logprobs (the number of
  // alternatives) + echo.
  r.chat = chat;
  if (chat) {
    r.logprobs = boolean(b, "logprobs", "logprobs").value_or(false);
    if (auto t = integer(b, "top_logprobs", 0, 20)) {
      if (!r.logprobs) api_fail(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs");
      r.top_logprobs = static_cast<int>(*t);
    }
  } else {
    if (const json* lp = field(b, "logprobs"); lp && lp->is_boolean()) r.logprobs = lp->get<bool>();
    else if (auto n = integer(b, "logprobs", 0, 20)) { r.logprobs = true; r.top_logprobs = static_cast<int>(*n); }
    r.echo = boolean(b, "echo", "echo").value_or(false);
  }
  const char* max_key = field(b, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  // max_tokens 0 with echo: score the prompt only (lm-eval's loglikelihood requests).
  r.gen.max_tokens = static_cast<int>(integer(b, max_key, r.echo ? 0 : 1, ctx.max_tokens_limit).value_or(chat ? 256 : 16));
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
      if (const json* name = field(m, "name")) cm.name = name->get<std::string>();
      for (const char* k : {"reasoning_content", "reasoning"})
        if (const json* rc = field(m, k)) {
          if (!rc->is_string()) wrong_type(at + "." + k, "a string", *rc);
          cm.reasoning = rc->get<std::string>();
        }
      if (const json* id = field(m, "tool_call_id")) {
        if (!id->is_string()) wrong_type(at + ".tool_call_id", "a string", *id);
        cm.tool_call_id = id->get<std::string>();
      }
      if (const json* tc = field(m, "tool_calls")) {
        if (!tc->is_array()) wrong_type(at + ".tool_calls", "an array", *tc);
        if (cm.role != "assistant") api_fail(400, fmt::format("'{}.tool_calls' is only allowed on assistant messages", at), "messages");
        for (size_t k = 0; k < tc->size(); ++k) {
          const json& c = (*tc)[k];
          const std::string cat = fmt::format("{}.tool_calls[{}]", at, k);
          if (!c.is_object()) wrong_type(cat, "an object", c);
          const json* fn = field(c, "function");
          if (!fn || !fn->is_object()) wrong_type(cat + ".function", "an object", fn ? *fn : json(nullptr));
          const json* fname = field(*fn, "name");
          if (!fname || !fname->is_string()) wrong_type(cat + ".function.name", "a string", fname ? *fname : json(nullptr));
          ChatToolCall call;
          call.name = fname->get<std::string>();
          if (const json* id = field(c, "id")) {
            if (!id->is_string()) wrong_type(cat + ".id", "a string", *id);
            call.id = id->get<std::string>();
          }
          if (const json* args = field(*fn, "arguments")) {
            if (args->is_object()) call.arguments = *args;
            else if (!args->is_string()) wrong_type(cat + ".function.arguments", "a JSON string", *args);
            else {
              try {
                call.arguments = parse_json_strict(args->get<std::string>(), cat + ".function.arguments");
              } catch (const Error& e) {
                api_fail(400, e.what(), "messages");
              }
              if (!call.arguments.is_object())
                api_fail(400, fmt::format("'{}.function.arguments' must encode a JSON object", cat), "messages");
            }
          }
          cm.tool_calls.push_back(std::move(call));
        }
      }
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
    parse_chat_features(b, ctx, r);
    co.enable_thinking = r.thinking;
    co.tools = r.tools;
    // Message content is plain text: special-token text in it cannot forge a turn.
    r.prompt = encode_chat(*ctx.tok, list, co);
  } else {
    for (const char* k : {"tools", "tool_choice", "response_format", "reasoning_effort", "chat_template_kwargs"})
      if (field(b, k)) api_fail(400, fmt::format("'{}' is a chat field: use /v1/chat/completions", k), k);
    const json* p = field(b, "prompt");
    if (!p) api_fail(400, "'prompt' is required", "prompt");
    const char* what = "a string, an array of one string, or an array of token ids";
    if (p->is_string()) r.prompt = ctx.tok->encode(p->get_ref<const std::string&>(), true);
    else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) r.prompt = ctx.tok->encode((*p)[0].get_ref<const std::string&>(), true);
    else if (p->is_array() && !p->empty() && (*p)[0].is_number()) r.prompt = token_ids(*p, ctx, "prompt");
    // A batch of one token-id list (lm-eval-harness's local-completions sends [[ids]]).
    else if (p->is_array() && p->size() == 1 && (*p)[0].is_array() && !(*p)[0].empty()) r.prompt = token_ids((*p)[0], ctx, "prompt[0]");
    else if (p->is_array() && p->size() > 1 && ((*p)[0].is_array() || (*p)[0].is_string()))
      api_fail(400, fmt::format("'prompt' holds {} prompts; send one per request", p->size()), "prompt");
    else if (p->is_array() && p->empty()) api_fail(400, "'prompt' must not be empty", "prompt");
    else wrong_type("prompt", what, *p);
  }
  if (r.prompt.empty()) api_fail(400, "the prompt is empty after tokenization", chat ? "messages" : "prompt");
  if (static_cast<int64_t>(r.prompt.size()) + 1 > ctx.ctx_limit)
    api_fail(400, fmt::format("the prompt has {} tokens; this server's context is {} tokens", r.prompt.size(), ctx.ctx_limit),
             chat ? "messages" : "prompt", "context_length_exceeded");
  r.gen.max_tokens = static_cast<int>(std::min<int64_t>(r.gen.max_tokens, ctx.ctx_limit - static_cast<int64_t>(r.prompt.size())));
  r.gen.parse_chat = chat;
  r.gen.grammar = r.grammar;
  r.gen.trie = ctx.trie;
  r.gen.logprobs = r.logprobs ? r.top_logprobs : -1;
  if (const json* d = field(b, "g4_debug_output")) {
    if (!ctx.allow_inject) api_fail(400, "'g4_debug_output' is for tests: start g4 serve with --debug-inject", "g4_debug_output");
    if (!d->is_string()) wrong_type("g4_debug_output", "a string", *d);
    r.gen.forced = ctx.tok->encode(d->get<std::string>(), false, true);
  }
  return r;
}

}  // namespace g4
