#include "server/server.h"

#include <fmt/format.h>
#include <httplib.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "runtime/generate.h"
#include "tools/defaults.h"
#include "tools/token_input.h"
#include "util/error.h"
#include "util/json.h"

namespace g4 {
namespace {

// An OpenAI-style error: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int status;
  std::string message, type, param, code;
};

[[noreturn]] void api_fail(int status, std::string message, std::string param = "", std::string code = "") {
  throw ApiError{status, std::move(message), status == 404 ? "not_found_error" : "invalid_request_error", std::move(param),
                 std::move(code)};
}

std::string error_body(const ApiError& e) {
  json err{{"message", e.message}, {"type", e.type}, {"param", e.param.empty() ? json(nullptr) : json(e.param)},
           {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  return json{{"error", err}}.dump();
}

// Counters for /metrics.
struct Metrics {
  std::mutex mu;
  std::map<std::pair<std::string, int>, uint64_t> requests;  // (endpoint, status) -> count
  uint64_t prompt_tokens = 0, completion_tokens = 0;
  double latency_sum = 0;
  uint64_t latency_count = 0;
  std::vector<double> buckets{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  std::vector<uint64_t> bucket_counts = std::vector<uint64_t>(9, 0);

  void record(const std::string& endpoint, int status, double seconds, int64_t prompt, int64_t completion) {
    std::lock_guard<std::mutex> l(mu);
    requests[{endpoint, status}]++;
    prompt_tokens += static_cast<uint64_t>(std::max<int64_t>(0, prompt));
    completion_tokens += static_cast<uint64_t>(std::max<int64_t>(0, completion));
    latency_sum += seconds;
    latency_count++;
    for (size_t i = 0; i < buckets.size(); ++i)
      if (seconds <= buckets[i]) bucket_counts[i]++;
  }
};

struct Slot {
  std::unique_ptr<Session> session;
  std::vector<int32_t> cached;
  bool busy = false;
};

class Server {
 public:
  explicit Server(const ServeOptions& o) : opt_(o) {}

  void run() {
    httplib::Server svr;
    svr.set_payload_max_length(opt_.max_body_bytes);
    const size_t pool = static_cast<size_t>(std::max(8, 4 * opt_.parallel + 16));
    svr.new_task_queue = [pool] { return new httplib::ThreadPool(pool); };
    svr.set_read_timeout(30, 0);
    svr.set_write_timeout(30, 0);
    svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string msg = "internal error";
      try { std::rethrow_exception(ep); } catch (const std::exception& e) { msg = e.what(); } catch (...) {}
      res.status = 500;
      res.set_content(error_body({500, msg, "server_error", "", ""}), "application/json");
    });
    svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      const int s = res.status;
      const std::string msg = s == 404 ? fmt::format("no route {} {}", req.method, req.path)
                              : s == 413 ? "request body too large"
                                         : fmt::format("HTTP {}", s);
      res.set_content(error_body({s, msg, s == 404 ? "not_found_error" : "invalid_request_error", "", ""}), "application/json");
    });
    svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      if (!ready_) {
        res.status = 503;
        res.set_content(R"({"status":"loading model"})", "application/json");
        return;
      }
      res.set_content(R"({"status":"ok"})", "application/json");
    });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) { res.set_content(metrics_text(), "text/plain; version=0.0.4"); });
    svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      if (!ready(res)) return;
      json m{{"id", model_id_}, {"object", "model"}, {"created", created_}, {"owned_by", "g4"}};
      res.set_content(json{{"object", "list"}, {"data", json::array({m})}}.dump(), "application/json");
    });
    svr.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { handle(req, res, false); });
    svr.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { handle(req, res, true); });

    if (!svr.bind_to_port(opt_.host, opt_.port))
      fail("cannot listen on {}:{} (in use, or no permission)", opt_.host, opt_.port);
    std::thread loader([this] { load(); });
    static httplib::Server* active = nullptr;
    active = &svr;
    std::signal(SIGINT, [](int) { if (active) active->stop(); });
    std::signal(SIGTERM, [](int) { if (active) active->stop(); });
    std::fprintf(stderr, "g4 serve: listening on http://%s:%d (loading %s)\n", opt_.host.c_str(), opt_.port,
                 opt_.model_path.c_str());
    svr.listen_after_bind();
    loader.join();
    active = nullptr;
  }

 private:
  void load() {
    if (opt_.load_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(opt_.load_delay_ms));
    model_ = std::make_unique<Model>(load_model(opt_.model_path));
    tok_ = std::make_unique<Tokenizer>(load_tokenizer(*model_));
    model_id_ = std::filesystem::path(opt_.model_path).filename().string();
    if (model_id_.empty()) model_id_ = opt_.model_path;
    created_ = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    ctx_limit_ = opt_.ctx > 0 ? std::min(opt_.ctx, model_->spec.max_ctx) : model_->spec.max_ctx;
    for (int i = 0; i < opt_.parallel; ++i) {
      auto s = std::make_unique<Slot>();
      s->session = std::make_unique<Session>(*model_, ForwardOptions{parse_precision(opt_.precision)});
      slots_.push_back(std::move(s));
    }
    eog_ = tok_->eog_ids(model_->spec.eos_ids);
    ready_ = true;
    std::fprintf(stderr, "g4 serve: ready (%d slots, context %d)\n", opt_.parallel, ctx_limit_);
  }

  bool ready(httplib::Response& res) {
    if (ready_) return true;
    res.status = 503;
    res.set_content(error_body({503, "the model is still loading", "server_error", "", "model_loading"}), "application/json");
    return false;
  }

  Slot* acquire() {
    std::unique_lock<std::mutex> l(slot_mu_);
    slot_cv_.wait(l, [this] {
      for (auto& s : slots_) if (!s->busy) return true;
      return false;
    });
    for (auto& s : slots_)
      if (!s->busy) { s->busy = true; busy_++; return s.get(); }
    return nullptr;
  }
  void release(Slot* s) {
    {
      std::lock_guard<std::mutex> l(slot_mu_);
      s->busy = false;
      busy_--;
    }
    slot_cv_.notify_one();
  }

  // Request parsing with type checks that name the parameter.
  struct Request {
    std::vector<int32_t> prompt;
    GenerateOptions gen;
    bool stream = false, include_usage = false;
  };

  static double num(const json& b, const char* k, double def, double lo, double hi) {
    if (!b.contains(k) || b[k].is_null()) return def;
    if (!b[k].is_number()) api_fail(400, fmt::format("'{}' must be a number", k), k);
    const double v = b[k].get<double>();
    if (!(v >= lo && v <= hi)) api_fail(400, fmt::format("'{}' = {} is out of range [{}, {}]", k, v, lo, hi), k);
    return v;
  }

  Request parse(const std::string& body, bool chat) {
    json b;
    try {
      b = parse_json_strict(body, "request body");
    } catch (const Error& e) {
      api_fail(400, e.what());
    }
    if (!b.is_object()) api_fail(400, "the request body must be a JSON object");
    if (b.contains("model") && !b["model"].is_null()) {
      if (!b["model"].is_string()) api_fail(400, "'model' must be a string", "model");
      const auto m = b["model"].get<std::string>();
      if (m != model_id_ && m != opt_.model_path)
        api_fail(404, fmt::format("The model '{}' does not exist; this server serves '{}'", m, model_id_), "model", "model_not_found");
    }
    if (b.contains("n") && !b["n"].is_null() && (!b["n"].is_number_integer() || b["n"].get<int64_t>() != 1))
      api_fail(400, "only n = 1 is supported", "n");
    Request r;
    const SamplingParams defaults = model_sampling_defaults(*model_);
    auto& sp = r.gen.sampling;
    sp = defaults;
    sp.temp = static_cast<float>(num(b, "temperature", 1.0, 0.0, 2.0));  // OpenAI default 1
    sp.top_p = static_cast<float>(num(b, "top_p", 1.0, 0.0, 1.0));
    sp.min_p = 0;
    sp.top_k = static_cast<int>(num(b, "top_k", 0, 0, 1e6));
    sp.repeat_penalty = static_cast<float>(num(b, "repeat_penalty", 1.0, 0.0, 10.0));
    if (b.contains("seed") && !b["seed"].is_null()) {
      if (!b["seed"].is_number_integer()) api_fail(400, "'seed' must be an integer", "seed");
      sp.seed = static_cast<uint64_t>(b["seed"].get<int64_t>());
    }
    const char* max_key = b.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if (b.contains(max_key) && !b[max_key].is_null() && !b[max_key].is_number_integer())
      api_fail(400, fmt::format("'{}' must be an integer", max_key), max_key);
    r.gen.max_tokens = static_cast<int>(num(b, max_key, chat ? 256 : 16, 1, opt_.max_tokens_limit));
    if (b.contains("stop") && !b["stop"].is_null()) {
      const auto& s = b["stop"];
      if (s.is_string()) r.gen.stop_strings.push_back(s.get<std::string>());
      else if (s.is_array() && s.size() <= 4) {
        for (const auto& x : s) {
          if (!x.is_string()) api_fail(400, "'stop' must be a string or an array of up to 4 strings", "stop");
          r.gen.stop_strings.push_back(x.get<std::string>());
        }
      } else api_fail(400, "'stop' must be a string or an array of up to 4 strings", "stop");
    }
    if (b.contains("stream") && !b["stream"].is_null()) {
      if (!b["stream"].is_boolean()) api_fail(400, "'stream' must be true or false", "stream");
      r.stream = b["stream"].get<bool>();
    }
    if (b.contains("stream_options") && b["stream_options"].is_object())
      r.include_usage = b["stream_options"].value("include_usage", false);
    r.gen.stop_ids = eog_;
    if (chat) {
      if (!b.contains("messages") || !b["messages"].is_array() || b["messages"].empty())
        api_fail(400, "'messages' must be a non-empty array", "messages");
      std::vector<ChatMessage> msgs;
      for (const auto& m : b["messages"]) {
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
          api_fail(400, "each message needs a string 'role'", "messages");
        ChatMessage cm{m["role"].get<std::string>(), ""};
        static const std::set<std::string> roles{"system", "developer", "user", "assistant", "tool"};
        if (!roles.count(cm.role)) api_fail(400, fmt::format("unknown role '{}'", cm.role), "messages");
        const json& c = m.contains("content") ? m["content"] : json(nullptr);
        if (c.is_string()) cm.content = c.get<std::string>();
        else if (c.is_array()) {
          for (const auto& part : c) {
            if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
              api_fail(400, "only text content parts are supported", "messages");
            cm.content += part["text"].get<std::string>();
          }
        } else if (!c.is_null()) api_fail(400, "message 'content' must be a string or an array of text parts", "messages");
        msgs.push_back(std::move(cm));
      }
      ChatTemplateOptions co;
      co.empty_thought_channel = model_->spec.ple_dim == 0;
      const std::string text = render_chat(msgs, co);
      r.prompt = tok_->encode(std::string_view(text).substr(text.rfind("<bos>", 0) == 0 ? 5 : 0), true);
    } else {
      if (!b.contains("prompt")) api_fail(400, "'prompt' is required", "prompt");
      const auto& p = b["prompt"];
      if (p.is_string()) r.prompt = tok_->encode(p.get<std::string>(), true);
      else if (p.is_array() && p.size() == 1 && p[0].is_string()) r.prompt = tok_->encode(p[0].get<std::string>(), true);
      else if (p.is_array() && !p.empty() && p[0].is_number_integer()) {
        for (const auto& x : p) {
          if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= model_->spec.vocab)
            api_fail(400, "'prompt' token ids must be integers inside the vocabulary", "prompt");
          r.prompt.push_back(static_cast<int32_t>(x.get<int64_t>()));
        }
      } else api_fail(400, "'prompt' must be a string (or one string, or token ids)", "prompt");
    }
    if (static_cast<int64_t>(r.prompt.size()) + 1 > ctx_limit_)
      api_fail(400, fmt::format("the prompt has {} tokens; this server's context is {} tokens", r.prompt.size(), ctx_limit_),
               chat ? "messages" : "prompt", "context_length_exceeded");
    r.gen.max_tokens = std::min<int64_t>(r.gen.max_tokens, ctx_limit_ - static_cast<int64_t>(r.prompt.size()));
    return r;
  }

  std::string new_id(bool chat) {
    static std::atomic<uint64_t> counter{0};
    return fmt::format("{}-{:x}{:06x}", chat ? "chatcmpl" : "cmpl", created_, counter++);
  }

  void handle(const httplib::Request& req, httplib::Response& res, bool chat) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string endpoint = chat ? "/v1/chat/completions" : "/v1/completions";
    auto seconds = [t0] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    if (!ready(res)) { metrics_.record(endpoint, 503, seconds(), 0, 0); return; }
    Request r;
    try {
      r = parse(req.body, chat);
    } catch (const ApiError& e) {
      res.status = e.status;
      res.set_content(error_body(e), "application/json");
      metrics_.record(endpoint, e.status, seconds(), 0, 0);
      return;
    }
    const std::string id = new_id(chat);
    const int64_t created = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    auto usage = [](int64_t p, int64_t c) { return json{{"prompt_tokens", p}, {"completion_tokens", c}, {"total_tokens", p + c}}; };
    if (!r.stream) {
      Slot* slot = acquire();
      GenerateResult g;
      try {
        omp_set_num_threads(std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / opt_.parallel));
        g = generate(*slot->session, slot->cached, r.prompt, *tok_, r.gen);
      } catch (...) {
        release(slot);
        throw;
      }
      release(slot);
      const int64_t pt = static_cast<int64_t>(r.prompt.size()), ct = static_cast<int64_t>(g.tokens.size());
      json choice{{"index", 0}, {"finish_reason", g.finish_reason}, {"logprobs", nullptr}};
      if (chat) choice["message"] = {{"role", "assistant"}, {"content", g.text}};
      else choice["text"] = g.text;
      json out{{"id", id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", created},
               {"model", model_id_}, {"choices", json::array({choice})}, {"usage", usage(pt, ct)}};
      res.set_content(out.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
      metrics_.record(endpoint, 200, seconds(), pt, ct);
      return;
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider("text/event-stream", [this, r, id, created, chat, endpoint, t0, usage](size_t, httplib::DataSink& sink) {
      auto send = [&sink](const json& j) {
        const std::string line = "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
        return sink.is_writable() && sink.write(line.data(), line.size());
      };
      auto chunk = [&](const json& delta_or_text, const json& finish) {
        json c{{"index", 0}, {"finish_reason", finish}, {"logprobs", nullptr}};
        if (chat) c["delta"] = delta_or_text;
        else c["text"] = delta_or_text;
        return json{{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
                    {"model", model_id_}, {"choices", json::array({c})}};
      };
      Slot* slot = acquire();
      bool alive = !chat || send(chunk(json{{"role", "assistant"}, {"content", ""}}, nullptr));
      GenerateResult g;
      try {
        omp_set_num_threads(std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / opt_.parallel));
        if (alive)
          g = generate(*slot->session, slot->cached, r.prompt, *tok_, r.gen, [&](const std::string& piece) {
            return alive = send(chunk(chat ? json{{"content", piece}} : json(piece), nullptr));
          });
      } catch (...) {
        release(slot);
        throw;
      }
      release(slot);
      const int64_t pt = static_cast<int64_t>(r.prompt.size()), ct = static_cast<int64_t>(g.tokens.size());
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!alive || g.finish_reason == "cancelled") {  // the client went away: its slot is already free
        metrics_.record(endpoint, 499, secs, pt, ct);
        return false;
      }
      json last = chunk(chat ? json::object() : json(""), g.finish_reason);
      if (r.include_usage) last["usage"] = usage(pt, ct);
      send(last);
      const std::string done = "data: [DONE]\n\n";
      sink.write(done.data(), done.size());
      sink.done();
      metrics_.record(endpoint, 200, secs, pt, ct);
      return true;
    });
  }

  std::string metrics_text() {
    std::lock_guard<std::mutex> l(metrics_.mu);
    std::string o;
    o += "# HELP g4_requests_total Requests by endpoint and HTTP status (499: client disconnected).\n# TYPE g4_requests_total counter\n";
    for (const auto& [k, v] : metrics_.requests)
      o += fmt::format("g4_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", k.first, k.second, v);
    o += fmt::format("# HELP g4_prompt_tokens_total Prompt tokens received.\n# TYPE g4_prompt_tokens_total counter\ng4_prompt_tokens_total {}\n", metrics_.prompt_tokens);
    o += fmt::format("# HELP g4_completion_tokens_total Tokens generated.\n# TYPE g4_completion_tokens_total counter\ng4_completion_tokens_total {}\n", metrics_.completion_tokens);
    o += "# HELP g4_request_duration_seconds Completion request latency.\n# TYPE g4_request_duration_seconds histogram\n";
    for (size_t i = 0; i < metrics_.buckets.size(); ++i)
      o += fmt::format("g4_request_duration_seconds_bucket{{le=\"{}\"}} {}\n", metrics_.buckets[i], metrics_.bucket_counts[i]);
    o += fmt::format("g4_request_duration_seconds_bucket{{le=\"+Inf\"}} {}\n", metrics_.latency_count);
    o += fmt::format("g4_request_duration_seconds_sum {}\ng4_request_duration_seconds_count {}\n", metrics_.latency_sum, metrics_.latency_count);
    o += fmt::format("# HELP g4_slots_busy Slots generating now.\n# TYPE g4_slots_busy gauge\ng4_slots_busy {}\n", busy_.load());
    o += fmt::format("# HELP g4_slots_total Slots (--parallel).\n# TYPE g4_slots_total gauge\ng4_slots_total {}\n", opt_.parallel);
    o += fmt::format("# HELP g4_model_loaded 1 once the model is loaded.\n# TYPE g4_model_loaded gauge\ng4_model_loaded {}\n", ready_ ? 1 : 0);
    return o;
  }

  ServeOptions opt_;
  std::atomic<bool> ready_{false};
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tok_;
  std::string model_id_;
  int64_t created_ = 0;
  int ctx_limit_ = 0;
  std::vector<int32_t> eog_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::mutex slot_mu_;
  std::condition_variable slot_cv_;
  std::atomic<int> busy_{0};
  Metrics metrics_;
};

}  // namespace

void serve(const ServeOptions& opt) {
  if (opt.parallel < 1 || opt.parallel > 256) fail("--parallel must be in [1, 256]");
  if (opt.port < 0 || opt.port > 65535) fail("--port {} is not a port number", opt.port);
  Server(opt).run();
}

}  // namespace g4
