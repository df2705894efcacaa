#include "server/server.h"

#include <fmt/format.h>
#include <httplib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <omp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <csignal>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "runtime/generate.h"
#include "runtime/scheduler.h"
#include "server/request.h"
#include "tools/defaults.h"
#include "tools/token_input.h"
#include "util/error.h"
#include "util/json.h"

namespace g4 {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Constant-time comparison of a presented credential with the expected one.
bool same_secret(std::string_view got, std::string_view want) {
  unsigned diff = got.size() != want.size();
  for (size_t i = 0; i < want.size(); ++i) diff |= static_cast<unsigned char>(want[i]) ^ static_cast<unsigned char>(i < got.size() ? got[i] : 0);
  return diff == 0;
}

// True when the peer closed its end (or the connection broke). Pipelined bytes waiting
// to be read do not count as gone.
bool peer_gone(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

void send_raw(int fd, int status, const char* reason, const std::string& body) {
  const std::string msg = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nConnection: close\r\n"
                                      "Retry-After: 1\r\nContent-Length: {}\r\n\r\n{}", status, reason, body.size(), body);
  [[maybe_unused]] auto n = ::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
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
  std::atomic<uint64_t> conn_accepted{0}, conn_rejected{0}, conn_timed_out{0};

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

// One open connection. `fd` is our own dup() of the socket, so shutdown() from the
// watchdog always reaches this connection even after httplib closed its descriptor.
struct Conn {
  int fd = -1;
  Clock::time_point deadline;  // the next request must be read by then (not while handling)
  bool handling = false;
};

// What a completion handler learned, for the request's log line. The handler, the
// streaming provider and httplib's logger all run on the connection's worker thread.
struct RequestLog {
  std::string id;
  Clock::time_point t0;
  int status = 0;  // overrides the HTTP status (499: the client left mid-generation)
  int64_t prompt = -1, completion = -1;
  double queue_s = -1, ttft_s = -1;
  std::string finish, error;
};
thread_local RequestLog tl_log;
thread_local uint64_t tl_conn = 0;
thread_local int tl_fd = -1;

// Why a generation stopped early.
enum class Cancel { None, ClientGone, Deadline, Shutdown };

class Server;

// cpp-httplib 0.11 (Debian 12) has no public hook on an accepted connection, and its
// per-connection entry point, Server::process_and_close_socket, is private. Explicit
// instantiation may name private members ([temp.spec]), which gives us a pointer to it.
struct ProcessTag {
  using type = bool (httplib::Server::*)(socket_t);
  friend type get(ProcessTag);
};
template <typename Tag, typename Tag::type M>
struct Expose {
  friend typename Tag::type get(Tag) { return M; }
};
template struct Expose<ProcessTag, &httplib::Server::process_and_close_socket>;

// Holds the routes; never listens itself. It shares the front's listening socket so its
// keep-alive loop runs while the server does.
class RoutedHttp : public httplib::Server {
 public:
  void share_listener(socket_t s) { svr_sock_ = s; }
};

// Owns the listening socket and the accept loop; hands each connection to the owner for
// bookkeeping (cap, deadline, TCP_NODELAY), which then lets `routes` process it.
class FrontHttp : public httplib::Server {
 public:
  FrontHttp(g4::Server& owner, RoutedHttp& routes) : owner_(owner), routes_(routes) {}
  socket_t listener() const { return svr_sock_; }
  bool process_and_close_socket(socket_t sock) override;

 private:
  g4::Server& owner_;
  RoutedHttp& routes_;
};

class Server {
 public:
  explicit Server(const ServeOptions& o) : opt_(o) {}

  void run() {
    // Signals go to one thread (sigwait) so the drain can use mutexes and condition variables.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

    RoutedHttp svr;
    FrontHttp front(*this, svr);
    http_ = &front;
    routes_ = &svr;
    // A thread per connection up to the cap, so slow connections never starve others.
    const size_t pool = static_cast<size_t>(opt_.max_connections) + 4;
    front.new_task_queue = [pool] { return new httplib::ThreadPool(pool); };
    for (httplib::Server* h : {static_cast<httplib::Server*>(&front), static_cast<httplib::Server*>(&svr)}) {
      h->set_read_timeout(opt_.read_timeout_s, 0);
      h->set_write_timeout(30, 0);
    }
    svr.set_payload_max_length(opt_.max_body_bytes);
    svr.set_keep_alive_timeout(opt_.keep_alive_timeout_s);
    svr.set_keep_alive_max_count(static_cast<size_t>(opt_.keep_alive_max));
    svr.set_tcp_nodelay(true);
    svr.set_exception_handler([this](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string msg = "internal error";
      try { std::rethrow_exception(ep); } catch (const std::exception& e) { msg = e.what(); } catch (...) {}
      tl_log.error = msg;
      res.status = 500;
      res.set_content(api_error_body({500, msg, "server_error", "", ""}), "application/json");
    });
    svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      const int s = res.status;
      const std::string msg = s == 404 ? fmt::format("no route {} {}", req.method, req.path)
                              : s == 413 ? "request body too large"
                                         : fmt::format("HTTP {}", s);
      res.set_content(api_error_body({s, msg, s == 404 ? "not_found_error" : "invalid_request_error", "", ""}), "application/json");
    });
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) { return pre_route(req, res); });
    svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) { log_request(req, res); });
    svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      if (!ready_) {
        res.status = 503;
        res.set_content(R"({"status":"loading model"})", "application/json");
        return;
      }
      res.set_content(R"({"status":"ok"})", "application/json");
    });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) { res.set_content(metrics_text(), "text/plain; version=0.0.4"); });
    svr.Get("/props", [this](const httplib::Request&, httplib::Response& res) {
      if (!ready(res)) return;
      res.set_content(props().dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
    });
    svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      if (!ready(res)) return;
      // context_length (OpenRouter, LM Studio), max_model_len (vLLM), meta (llama-server).
      json m{{"id", ctx_.model_id}, {"object", "model"}, {"created", created_}, {"owned_by", "g4"},
             {"context_length", ctx_.ctx_limit}, {"max_model_len", ctx_.ctx_limit},
             {"meta", {{"n_ctx_train", model_->spec.max_ctx}, {"n_vocab", ctx_.vocab}}}};
      res.set_content(json{{"object", "list"}, {"data", json::array({m})}}.dump(), "application/json");
    });
    svr.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) { tokenize(req, res); });
    svr.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) { detokenize(req, res); });
    svr.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { handle(req, res, false); });
    svr.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { handle(req, res, true); });

    if (!front.bind_to_port(opt_.host, opt_.port))
      fail("cannot listen on {}:{} (in use, or no permission)", opt_.host, opt_.port);
    // Debian's compiled cpp-httplib listens with a backlog of 5: a burst of new connections
    // (64 clients at once) overflowed it and the kernel reset some. Linux takes a second
    // listen() on the bound socket as a new backlog (capped by net.core.somaxconn).
    ::listen(front.listener(), opt_.max_connections + 64);
    svr.share_listener(front.listener());
    std::thread watchdog([this] { watch_connections(); });
    std::thread signals([this, sigs] { wait_for_signal(sigs); });
    std::thread loader([this] { load(); });
    std::fprintf(stderr, "g4 serve: listening on http://%s:%d (loading %s)\n", opt_.host.c_str(), opt_.port,
                 opt_.model_path.c_str());
    front.listen_after_bind();  // returns after stop(), once every connection's thread is done
    loader.join();
    stopping_ = true;
    pthread_kill(signals.native_handle(), SIGUSR1);
    signals.join();
    watchdog.join();
    svr.share_listener(INVALID_SOCKET);
    http_ = nullptr;
    routes_ = nullptr;
    if (!load_error_.empty()) fail("{}", load_error_);
    std::fprintf(stderr, "g4 serve: stopped\n");
  }

  // Called by GuardedHttp on the connection's worker thread.
  bool serve_connection(socket_t sock, const std::function<bool()>& process) {
    const int one = 1;
    ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // small replies leave at once (no Nagle delay)
    uint64_t id = 0;
    {
      std::lock_guard<std::mutex> l(conn_mu_);
      if (static_cast<int>(conns_.size()) >= opt_.max_connections || draining_) {
        metrics_.conn_rejected++;
        send_raw(sock, 503, "Service Unavailable",
                 api_error_body({503, draining_ ? "the server is shutting down"
                                                : fmt::format("too many connections (--max-connections {})", opt_.max_connections),
                                 "server_error", "", "overloaded"}));
        ::shutdown(sock, SHUT_RDWR);
        ::close(sock);
        return true;
      }
      id = ++conn_seq_;
      tl_fd = ::dup(sock);
      conns_[id] = Conn{tl_fd, Clock::now() + idle_allowance(), false};
    }
    metrics_.conn_accepted++;
    tl_conn = id;
    const bool ret = process();  // httplib: read requests, answer them, close the socket
    {
      std::lock_guard<std::mutex> l(conn_mu_);
      auto it = conns_.find(id);
      if (it != conns_.end()) {
        if (it->second.fd >= 0) ::close(it->second.fd);
        conns_.erase(it);
      }
    }
    tl_conn = 0;
    tl_fd = -1;
    conn_cv_.notify_all();
    return ret;
  }

 private:
  std::chrono::seconds idle_allowance() const {
    return std::chrono::seconds(opt_.keep_alive_timeout_s + opt_.read_timeout_s);
  }
  void set_handling(bool on) {
    std::lock_guard<std::mutex> l(conn_mu_);
    auto it = conns_.find(tl_conn);
    if (it == conns_.end()) return;
    it->second.handling = on;
    if (!on) it->second.deadline = Clock::now() + idle_allowance();
  }

  // Slowloris defence: a connection that has not delivered its request (headers and body)
  // within keep-alive + read timeout is answered 408 and shut down, freeing its thread.
  // While draining, idle connections are closed at once; after the shutdown timeout, all.
  void watch_connections() {
    std::unique_lock<std::mutex> l(conn_mu_);
    while (!stopping_) {
      conn_cv_.wait_for(l, std::chrono::milliseconds(100));
      const auto now = Clock::now();
      for (auto& [id, c] : conns_) {
        if (c.fd < 0) continue;
        const bool expired = !c.handling && now > c.deadline;
        // Cancelled requests get a moment to write their error event before their socket
        // is shut (which only unblocks a handler stuck writing to a client that never reads).
        const bool cut = cancel_all_ && (!c.handling || now > cancel_at_ + std::chrono::seconds(2));
        if (!expired && !(draining_ && !c.handling) && !cut) continue;
        if (expired) {
          metrics_.conn_timed_out++;
          send_raw(c.fd, 408, "Request Timeout",
                   api_error_body({408, fmt::format("the request did not arrive within {} s (--read-timeout)", opt_.read_timeout_s),
                                   "invalid_request_error", "", "timeout"}));
        }
        ::shutdown(c.fd, SHUT_RDWR);
        c.deadline = Clock::time_point::max();
      }
    }
  }

  // SIGTERM/SIGINT: stop accepting, let in-flight requests finish for --shutdown-timeout,
  // then cancel what is left; listen() returns once every connection thread is done.
  void wait_for_signal(sigset_t sigs) {
    int sig = 0;
    if (sigwait(&sigs, &sig) != 0 || sig == SIGUSR1) return;
    std::fprintf(stderr, "g4 serve: %s received: draining (up to %d s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
                 opt_.shutdown_timeout_s);
    const auto deadline = Clock::now() + std::chrono::seconds(opt_.shutdown_timeout_s);
    {
      std::lock_guard<std::mutex> l(conn_mu_);
      draining_ = true;
    }
    stop_http();
    std::unique_lock<std::mutex> l(conn_mu_);
    while (!stopping_) {
      int handling = 0;
      for (auto& [id, c] : conns_) handling += c.handling;
      if (handling == 0) break;
      if (Clock::now() >= deadline && !cancel_all_) {
        std::fprintf(stderr, "g4 serve: shutdown timeout: cancelling %d in-flight request%s\n", handling, handling == 1 ? "" : "s");
        cancel_at_ = Clock::now();
        cancel_all_ = true;
      }
      conn_cv_.wait_for(l, std::chrono::milliseconds(50));
    }
  }

  // httplib's stop() is a no-op before listen() has started; wait for it.
  void stop_http() {
    while (http_ && !http_->is_running() && !stopping_) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (routes_) routes_->share_listener(INVALID_SOCKET);  // keep-alive loops end after their current request
    if (http_) http_->stop();
  }

  void load() {
    try {
      if (opt_.load_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(opt_.load_delay_ms));
      model_ = std::make_unique<Model>(load_model(opt_.model_path));
      tok_ = std::make_unique<Tokenizer>(load_tokenizer(*model_));
      ctx_.tok = tok_.get();
      ctx_.model_id = std::filesystem::path(opt_.model_path).filename().string();
      if (ctx_.model_id.empty()) ctx_.model_id = opt_.model_path;
      ctx_.model_path = opt_.model_path;
      ctx_.vocab = model_->spec.vocab;
      ctx_.ctx_limit = opt_.ctx > 0 ? std::min(opt_.ctx, model_->spec.max_ctx) : model_->spec.max_ctx;
      ctx_.max_tokens_limit = opt_.max_tokens_limit;
      ctx_.defaults = model_sampling_defaults(*model_);
      ctx_.eog = tok_->eog_ids(model_->spec.eos_ids);
      ctx_.empty_thought_channel = model_->spec.ple_dim == 0;
      ctx_.reasoning = opt_.reasoning;
      ctx_.allow_inject = opt_.debug_inject;
      ctx_.trie = std::make_shared<TokenTrie>(*tok_);  // once: every constrained request walks it
      created_ = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
      // One session for every request: the scheduler batches them into its forward steps.
      ForwardOptions fo{parse_precision(opt_.precision)};
      fo.n_batch = opt_.batch_size;
      fo.cache_type_k = parse_kv_type(opt_.cache_type_k);
      fo.cache_type_v = parse_kv_type(opt_.cache_type_v);
      session_ = std::make_unique<Session>(*model_, fo);
      SchedulerOptions so;
      so.threads = opt_.threads;
      so.max_active = opt_.parallel;
      so.n_batch = opt_.batch_size;
      // Each sequence's KV cache holds a step buffer of max_chunk positions: a quarter of
      // the step keeps 64 sequences' buffers small while prompts still go in large chunks.
      so.max_chunk = std::max(16, opt_.batch_size / 4);
      so.max_cached = opt_.prompt_cache >= 0 ? opt_.prompt_cache : opt_.parallel;
      so.max_queue = opt_.max_queue;
      scheduler_ = std::make_unique<Scheduler>(*session_, *tok_, so);
      ready_ = true;
      std::fprintf(stderr, "g4 serve: ready (%d sequences batched, %d tokens per step, context %lld)\n", opt_.parallel,
                   opt_.batch_size, static_cast<long long>(ctx_.ctx_limit));
    } catch (const std::exception& e) {
      // The loader runs on its own thread: an escaping exception would abort the process.
      // Stop the server instead; run() reports the message and `g4` exits 1.
      load_error_ = e.what();
      stop_http();
    }
  }

  // The small JSON endpoints: a body parsed strictly, errors in OpenAI's shape.
  json small_body(const httplib::Request& req, httplib::Response& res) {
    if (!ready(res)) return nullptr;
    try {
      if (const size_t at = invalid_utf8_offset(req.body); at != std::string::npos)
        api_fail(400, fmt::format("the request body is not valid UTF-8 at offset {}", at));
      json b = parse_json_strict(req.body, "request body");
      if (!b.is_object()) api_fail(400, "the request body must be a JSON object");
      return b;
    } catch (const ApiError& e) {
      res.status = e.status;
      res.set_content(api_error_body(e), "application/json");
    } catch (const Error& e) {
      res.status = 400;
      res.set_content(api_error_body({400, e.what(), "invalid_request_error", "", ""}), "application/json");
    }
    return nullptr;
  }
  static void bad(httplib::Response& res, const std::string& msg, const std::string& param) {
    res.status = 400;
    res.set_content(api_error_body({400, msg, "invalid_request_error", param, ""}), "application/json");
  }

  // llama-server's shape: {"content", "add_special", "parse_special", "with_pieces"} -> {"tokens"}.
  void tokenize(const httplib::Request& req, httplib::Response& res) {
    const json b = small_body(req, res);
    if (b.is_null()) return;
    auto c = b.find("content");
    if (c == b.end() || !c->is_string()) return bad(res, "'content' must be a string", "content");
    auto flag = [&](const char* k, bool dflt) {
      auto it = b.find(k);
      return it == b.end() || !it->is_boolean() ? dflt : it->get<bool>();
    };
    const auto ids = tok_->encode(c->get<std::string>(), flag("add_special", false), flag("parse_special", true));
    json toks = json::array();
    for (int32_t id : ids) {
      if (flag("with_pieces", false)) toks.push_back({{"id", id}, {"piece", tok_->token_text(id)}});
      else toks.push_back(id);
    }
    res.set_content(json{{"tokens", toks}}.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
  }

  void detokenize(const httplib::Request& req, httplib::Response& res) {
    const json b = small_body(req, res);
    if (b.is_null()) return;
    auto t = b.find("tokens");
    if (t == b.end() || !t->is_array()) return bad(res, "'tokens' must be an array of token ids", "tokens");
    std::vector<int32_t> ids;
    for (size_t i = 0; i < t->size(); ++i) {
      const json& x = (*t)[i];
      if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= ctx_.vocab)
        return bad(res, fmt::format("'tokens[{}]' must be a token id in [0, {})", i, ctx_.vocab), "tokens");
      ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
    }
    res.set_content(json{{"content", tok_->decode(ids)}}.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
  }

  bool ready(httplib::Response& res) {
    if (ready_) return true;
    res.status = 503;
    res.set_content(api_error_body({503, "the model is still loading", "server_error", "", "model_loading"}), "application/json");
    return false;
  }

  httplib::Server::HandlerResponse pre_route(const httplib::Request& req, httplib::Response& res) {
    tl_log = RequestLog{};
    tl_log.id = fmt::format("req-{:x}", ++request_seq_);
    tl_log.t0 = Clock::now();
    res.set_header("X-Request-Id", tl_log.id);
    const std::string origin = req.get_header_value("Origin");
    const bool cors = !origin.empty() && std::any_of(opt_.cors_origins.begin(), opt_.cors_origins.end(),
                                                     [&](const std::string& o) { return o == "*" || o == origin; });
    if (cors) {
      res.set_header("Access-Control-Allow-Origin", origin);
      res.set_header("Vary", "Origin");
    }
    if (req.method == "OPTIONS") {  // CORS preflight: no credentials are sent with it
      res.status = 204;
      if (cors) {
        res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
        res.set_header("Access-Control-Max-Age", "600");
      }
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!opt_.api_key.empty() && req.path != "/health") {
      const std::string auth = req.get_header_value("Authorization");
      if (!same_secret(auth, "Bearer " + opt_.api_key)) {
        res.status = 401;
        res.set_header("WWW-Authenticate", "Bearer");
        res.set_content(api_error_body({401, auth.empty() ? "missing API key: send 'Authorization: Bearer KEY'" : "invalid API key",
                                        "authentication_error", "", "invalid_api_key"}), "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (draining_) {
      res.status = 503;
      res.set_header("Connection", "close");
      res.set_content(api_error_body({503, "the server is shutting down", "server_error", "", "shutting_down"}), "application/json");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  }

  void log_request(const httplib::Request& req, const httplib::Response& res) {
    set_handling(false);
    const int status = tl_log.status ? tl_log.status : res.status;
    const double total_ms = tl_log.t0 == Clock::time_point{} ? 0 : 1000 * since(tl_log.t0);
    if (opt_.log_format == "json") {
      json j{{"ts", std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count()},
             {"id", tl_log.id}, {"method", req.method}, {"path", req.path}, {"status", status},
             {"client", req.remote_addr}, {"total_ms", total_ms}};
      if (tl_log.prompt >= 0) j["prompt_tokens"] = tl_log.prompt;
      if (tl_log.completion >= 0) j["completion_tokens"] = tl_log.completion;
      if (tl_log.queue_s >= 0) j["queue_ms"] = 1000 * tl_log.queue_s;
      if (tl_log.ttft_s >= 0) j["ttft_ms"] = 1000 * tl_log.ttft_s;
      if (!tl_log.finish.empty()) j["finish_reason"] = tl_log.finish;
      if (!tl_log.error.empty()) j["error"] = tl_log.error;
      std::fprintf(stderr, "%s\n", j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    } else {
      std::string line = fmt::format("g4 serve: {} {} {} {} {:.1f} ms", tl_log.id, req.method, req.path, status, total_ms);
      if (tl_log.prompt >= 0) line += fmt::format(" prompt={} completion={}", tl_log.prompt, std::max<int64_t>(0, tl_log.completion));
      if (tl_log.queue_s >= 0) line += fmt::format(" queue={:.1f}ms", 1000 * tl_log.queue_s);
      if (tl_log.ttft_s >= 0) line += fmt::format(" ttft={:.1f}ms", 1000 * tl_log.ttft_s);
      if (!tl_log.finish.empty()) line += " finish=" + tl_log.finish;
      if (!tl_log.error.empty()) line += " error=\"" + tl_log.error + "\"";
      std::fprintf(stderr, "%s client=%s\n", line.c_str(), req.remote_addr.c_str());
    }
  }

  Cancel cancelled(Clock::time_point deadline) const {
    if (cancel_all_) return Cancel::Shutdown;
    if (peer_gone(tl_fd)) return Cancel::ClientGone;
    if (Clock::now() > deadline) return Cancel::Deadline;
    return Cancel::None;
  }

  std::string new_id(bool chat) {
    return fmt::format("{}-{:x}{:06x}", chat ? "chatcmpl" : "cmpl", created_, completion_seq_++);
  }

  static std::string cancel_message(Cancel c, int timeout_s) {
    switch (c) {
      case Cancel::Deadline: return fmt::format("the request ran past its deadline of {} s (--request-timeout)", timeout_s);
      case Cancel::Shutdown: return "the server is shutting down";
      default: return "cancelled";
    }
  }

  // Queues a request in the scheduler; 429 when the queue is full. A prompt the model
  // cannot take throws g4::Error.
  std::shared_ptr<BatchRequest> submit(const CompletionRequest& r) {
    std::shared_ptr<BatchRequest> q = scheduler_->submit(r.prompt, r.gen);
    if (!q)
      api_fail(429, fmt::format("the server is busy: {} requests are already waiting (--max-queue); retry shortly",
                                scheduler_->stats().waiting), "", "rate_limit_exceeded");
    return q;
  }

  // Follows a queued request to its end, reporting each token's event (text, thoughts,
  // tool calls, logprob) to `on_event` (false: stop) from this connection's thread, so a
  // slow client never holds up the batch. Sets `why` when it stopped because the client
  // left, the deadline passed or the server stops.
  GenerateResult run_generation(BatchRequest& q, Clock::time_point deadline, Cancel& why,
                                const std::function<bool(const BatchEvent&)>& on_event) {
    struct CancelOnExit {  // an exception (or a gone client) takes the sequence out of the batch
      BatchRequest& q;
      ~CancelOnExit() { q.cancel(); }
    } guard{q};
    int pieces = 0;
    std::vector<BatchEvent> events;
    for (bool done = false; !done;) {
      done = q.wait(events, std::chrono::milliseconds(50));
      if (tl_log.queue_s < 0 && q.queued_s() >= 0) tl_log.queue_s = q.queued_s();
      for (const BatchEvent& e : events) {
        if (!e.text.empty() || !e.reasoning.empty() || !e.tool_calls.empty()) {
          if (pieces++ == 0) tl_log.ttft_s = since(tl_log.t0);
          if (opt_.debug_fail_after > 0 && pieces >= opt_.debug_fail_after)
            throw std::runtime_error(fmt::format("injected failure after {} pieces (--debug-fail-after)", pieces));
        }
        if (why == Cancel::None && on_event && !on_event(e)) why = Cancel::ClientGone;
      }
      events.clear();
      if (!done && why == Cancel::None) why = cancelled(deadline);
      if (!done && why != Cancel::None) {
        q.cancel();
        while (!q.wait(events, std::chrono::milliseconds(50))) events.clear();
        break;
      }
    }
    if (q.error()) std::rethrow_exception(q.error());
    if (why == Cancel::None && q.result().finish_reason == "cancelled") why = Cancel::Shutdown;  // the scheduler stopped
    // A malformed tool call went back as text; the operator hears about it.
    for (const auto& w : q.result().warnings) std::fprintf(stderr, "g4 serve: %s: warning: %s\n", tl_log.id.c_str(), w.c_str());
    return q.result();
  }

  // /v1/completions with echo + logprobs: the prompt's own log-probabilities, position by
  // position (what lm-eval-harness's loglikelihood requests read). Evaluated from scratch
  // on a scoring session of its own (the batch's session belongs to the scheduler's
  // thread), one request at a time, in steps of 64 tokens, so at most 64 x vocab logits
  // are held at once.
  std::vector<TokenLogprob> prompt_logprobs(const CompletionRequest& r) {
    std::lock_guard<std::mutex> l(score_mu_);
    if (!score_session_) {
      ForwardOptions fo{parse_precision(opt_.precision)};
      fo.n_batch = 64;
      score_session_ = std::make_unique<Session>(*model_, fo);
    }
    Session& s = *score_session_;
    s.reset();
    std::vector<TokenLogprob> out;
    const size_t n = r.prompt.size(), V = static_cast<size_t>(ctx_.vocab);
    std::vector<float> prev;  // logits of the token before the current step
    for (size_t at = 0; at < n; at += 64) {
      const size_t len = std::min<size_t>(64, n - at);
      EvalRequest er;
      er.logits_from = 0;
      const EvalOutput o = s.eval(std::span(r.prompt).subspan(at, len), er);
      for (size_t k = 0; k < len; ++k) {
        if (at + k > 0) out.push_back(token_logprob(prev, r.prompt[at + k], r.top_logprobs));
        prev.assign(o.logits.begin() + static_cast<std::ptrdiff_t>(k * V), o.logits.begin() + static_cast<std::ptrdiff_t>((k + 1) * V));
      }
    }
    return out;
  }

  void echo_logprobs(const CompletionRequest& r, json& lp, size_t& offset) {
    const auto scores = prompt_logprobs(r);
    for (size_t i = 0; i < r.prompt.size(); ++i) add_completion_logprob(lp, i ? &scores[i - 1] : nullptr, r.prompt[i], offset);
  }

  // OpenAI's logprob shapes: chat {"content": [{token, logprob, bytes, top_logprobs}]};
  // completions {"tokens", "token_logprobs", "top_logprobs", "text_offset"}.
  json chat_logprob(const TokenLogprob& lp) const {
    auto entry = [&](int32_t id, float v) {
      const std::string t = tok_->token_text(id);
      return json{{"token", t}, {"logprob", v}, {"bytes", std::vector<int>(t.begin(), t.end())}};
    };
    json e = entry(lp.id, lp.logprob);
    for (auto& b : e["bytes"]) b = static_cast<uint8_t>(b.get<int>());
    json top = json::array();
    for (const auto& [id, v] : lp.top) {
      json t = entry(id, v);
      for (auto& b : t["bytes"]) b = static_cast<uint8_t>(b.get<int>());
      top.push_back(t);
    }
    e["top_logprobs"] = top;
    return e;
  }
  void add_completion_logprob(json& lp, const TokenLogprob* x, int32_t id, size_t& offset) const {
    const std::string t = tok_->token_text(id);
    lp["tokens"].push_back(t);
    lp["text_offset"].push_back(offset);
    offset += t.size();
    if (!x) {
      lp["token_logprobs"].push_back(nullptr);
      lp["top_logprobs"].push_back(nullptr);
      return;
    }
    lp["token_logprobs"].push_back(x->logprob);
    json top = json::object();
    for (const auto& [tid, v] : x->top) top[tok_->token_text(tid)] = v;
    lp["top_logprobs"].push_back(top);
  }
  static json empty_completion_logprobs() {
    return json{{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()}, {"text_offset", json::array()}};
  }
  std::string call_id() { return fmt::format("call_{:x}{:06x}", created_, completion_seq_++); }
  json tool_call_json(const ParsedToolCall& c, const std::string& id) const {
    return json{{"id", id}, {"type", "function"},
                {"function", {{"name", c.name}, {"arguments", c.arguments.dump(-1, ' ', false, json::error_handler_t::replace)}}}};
  }

  void handle(const httplib::Request& req, httplib::Response& res, bool chat) {
    set_handling(true);
    const std::string endpoint = chat ? "/v1/chat/completions" : "/v1/completions";
    const auto t0 = tl_log.t0;
    const auto deadline = t0 + std::chrono::seconds(opt_.request_timeout_s);
    auto fail_with = [&](const ApiError& e) {
      res.status = e.status;
      if (e.status == 429) res.set_header("Retry-After", "1");
      res.set_content(api_error_body(e), "application/json");
      tl_log.error = e.message;
      metrics_.record(endpoint, e.status, since(t0), 0, 0);
    };
    if (!ready(res)) { metrics_.record(endpoint, 503, since(t0), 0, 0); return; }
    CompletionRequest r;
    try {
      r = parse_completion_request(req.body, chat, ctx_);
    } catch (const ApiError& e) {
      fail_with(e);
      return;
    } catch (const std::exception& e) {  // tokenizer trouble: still the request's fault, not a crash
      fail_with({400, e.what(), "invalid_request_error", "", ""});
      return;
    }
    tl_log.prompt = static_cast<int64_t>(r.prompt.size());
    const std::string id = new_id(chat);
    const int64_t created = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    auto usage = [](int64_t p, int64_t c) { return json{{"prompt_tokens", p}, {"completion_tokens", c}, {"total_tokens", p + c}}; };
    const int64_t pt = static_cast<int64_t>(r.prompt.size());
    // echo: the prompt's text (and, with logprobs, its scores) comes first.
    const std::string echo_text = r.echo ? tok_->decode(r.prompt, true) : "";

    if (!r.stream) {
      Cancel why = Cancel::None;
      GenerateResult g;
      json lp = empty_completion_logprobs();
      size_t offset = 0;
      try {
        if (r.echo && r.logprobs) echo_logprobs(r, lp, offset);
        if (r.gen.max_tokens > 0) g = run_generation(*submit(r), deadline, why, nullptr);
        else g.finish_reason = "length";
      } catch (const ApiError& e) {
        fail_with(e);
        return;
      } catch (const std::exception& e) {
        fail_with({500, fmt::format("generation failed: {}", e.what()), "server_error", "", ""});
        return;
      }
      const int64_t ct = static_cast<int64_t>(g.tokens.size());
      tl_log.completion = ct;
      if (why != Cancel::None) {
        tl_log.finish = "cancelled";
        if (why == Cancel::ClientGone) {  // nobody to answer; the log and metrics say 499
          tl_log.status = 499;
          metrics_.record(endpoint, 499, since(t0), pt, ct);
          res.status = 499;
          return;
        }
        const int status = why == Cancel::Deadline ? 504 : 503;
        fail_with({status, cancel_message(why, opt_.request_timeout_s), "server_error", "", why == Cancel::Deadline ? "timeout" : "shutting_down"});
        return;
      }
      tl_log.finish = g.finish_reason;
      json choice{{"index", 0}, {"finish_reason", g.finish_reason}, {"logprobs", nullptr}};
      if (chat) {
        json msg{{"role", "assistant"}, {"content", g.text.empty() && !g.tool_calls.empty() ? json(nullptr) : json(g.text)}};
        if (!g.reasoning.empty()) msg["reasoning_content"] = g.reasoning;
        if (!g.tool_calls.empty()) {
          msg["tool_calls"] = json::array();
          for (const auto& c : g.tool_calls) msg["tool_calls"].push_back(tool_call_json(c, call_id()));
        }
        choice["message"] = msg;
        if (r.logprobs) {
          json content = json::array();
          for (const auto& x : g.logprobs) content.push_back(chat_logprob(x));
          choice["logprobs"] = {{"content", content}, {"refusal", nullptr}};
        }
      } else {
        choice["text"] = echo_text + g.text;
        if (r.logprobs) {
          for (size_t i = 0; i < g.logprobs.size(); ++i) add_completion_logprob(lp, &g.logprobs[i], g.logprobs[i].id, offset);
          choice["logprobs"] = lp;
        }
      }
      json out{{"id", id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", created},
               {"model", ctx_.model_id}, {"choices", json::array({choice})}, {"usage", usage(pt, ct)}};
      res.set_content(out.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
      metrics_.record(endpoint, 200, since(t0), pt, ct);
      return;
    }

    // Streaming: queued before the header goes out, so a full queue is still a plain 429.
    std::shared_ptr<BatchRequest> queued;
    try {
      if (r.gen.max_tokens > 0) queued = submit(r);
    } catch (const ApiError& e) {
      fail_with(e);
      return;
    } catch (const std::exception& e) {
      fail_with({500, fmt::format("generation failed: {}", e.what()), "server_error", "", ""});
      return;
    }
    // Should httplib never call the provider (the connection broke), the sequence still leaves.
    std::shared_ptr<void> cancel_if_dropped(nullptr, [queued](void*) {
      if (queued) queued->cancel();
    });
    res.set_header("Cache-Control", "no-cache");
    auto provider = [this, r, id, created, chat, endpoint, t0, deadline, pt, usage, queued, cancel_if_dropped, echo_text](httplib::DataSink& sink) {
      auto send_line = [&sink](const std::string& line) { return sink.is_writable() && sink.write(line.data(), line.size()); };
      auto send = [&](const json& j) { return send_line("data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n"); };
      auto chunk = [&](const json& delta_or_text, const json& finish) {
        json c{{"index", 0}, {"finish_reason", finish}, {"logprobs", nullptr}};
        if (chat) c["delta"] = delta_or_text;
        else c["text"] = delta_or_text;
        return json{{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
                    {"model", ctx_.model_id}, {"choices", json::array({c})}};
      };
      // An error after the 200 header went out: one SSE event in OpenAI's error shape
      // (the official clients raise it), then the end of the stream.
      auto send_error = [&](int status, const std::string& message, const char* type, const char* code) {
        tl_log.status = status;
        tl_log.error = message;
        send(json::parse(api_error_body({status, message, type, "", code})));
        send_line("data: [DONE]\n\n");
        sink.done();
        metrics_.record(endpoint, status, since(t0), pt, tl_log.completion);
        return true;
      };
      Cancel why = Cancel::None;
      bool alive = !chat || send(chunk(json{{"role", "assistant"}, {"content", ""}}, nullptr));
      GenerateResult g;
      int calls = 0;
      size_t offset = 0;
      // Logprobs of tokens that produced no text yet (held back, inside a tool call) ride
      // on the next chunk.
      std::vector<TokenLogprob> pending;
      auto attach = [&](json& c) {
        if (!r.logprobs || pending.empty()) return;
        json& choice = c["choices"][0];
        if (chat) {
          json content = json::array();
          for (const auto& x : pending) content.push_back(chat_logprob(x));
          choice["logprobs"] = {{"content", content}, {"refusal", nullptr}};
        } else {
          json lp = empty_completion_logprobs();
          for (const auto& x : pending) add_completion_logprob(lp, &x, x.id, offset);
          choice["logprobs"] = lp;
        }
        pending.clear();
      };
      try {
        if (alive && r.echo) {
          json lp = empty_completion_logprobs();
          if (r.logprobs) echo_logprobs(r, lp, offset);
          json c = chunk(json(echo_text), nullptr);
          if (r.logprobs) c["choices"][0]["logprobs"] = lp;
          alive = send(c);
        }
        if (alive && r.gen.max_tokens > 0)
          g = run_generation(*queued, deadline, why, [&](const BatchEvent& e) {
            if (e.logprob) pending.push_back(*e.logprob);
            if (!chat) {
              if (e.text.empty()) return true;
              json c = chunk(json(e.text), nullptr);
              attach(c);
              return alive = send(c);
            }
            if (!e.reasoning.empty()) {
              json c = chunk(json{{"reasoning_content", e.reasoning}}, nullptr);
              attach(c);
              if (!(alive = send(c))) return false;
            }
            if (!e.text.empty()) {
              json c = chunk(json{{"content", e.text}}, nullptr);
              attach(c);
              if (!(alive = send(c))) return false;
            }
            for (const auto& call : e.tool_calls) {
              json tc = tool_call_json(call, call_id());
              tc["index"] = calls++;
              json c = chunk(json{{"tool_calls", json::array({tc})}}, nullptr);
              attach(c);
              if (!(alive = send(c))) return false;
            }
            return true;
          });
        else if (r.gen.max_tokens == 0) g.finish_reason = "length";
        if (queued && (!alive || r.gen.max_tokens == 0)) queued->cancel();
      } catch (const std::exception& e) {
        return send_error(500, fmt::format("generation failed: {}", e.what()), "server_error", "generation_failed");
      }
      const int64_t ct = static_cast<int64_t>(g.tokens.size());
      tl_log.completion = ct;
      if (!alive || why == Cancel::ClientGone) {  // the client went away: its slot is already free
        tl_log.status = 499;
        tl_log.finish = "cancelled";
        metrics_.record(endpoint, 499, since(t0), pt, ct);
        return false;
      }
      if (why != Cancel::None) {
        tl_log.finish = "cancelled";
        return send_error(why == Cancel::Deadline ? 504 : 503, cancel_message(why, opt_.request_timeout_s), "server_error",
                          why == Cancel::Deadline ? "timeout" : "shutting_down");
      }
      tl_log.finish = g.finish_reason;
      json last = chunk(chat ? json::object() : json(""), g.finish_reason);
      attach(last);
      if (r.include_usage) last["usage"] = usage(pt, ct);
      send(last);
      send_line("data: [DONE]\n\n");
      sink.done();
      metrics_.record(endpoint, 200, since(t0), pt, ct);
      return true;
    };
    // httplib calls the provider outside its own try/catch: an exception escaping here would
    // terminate the process and every other client's request with it.
    res.set_chunked_content_provider("text/event-stream", [provider, endpoint, t0, pt, this](size_t, httplib::DataSink& sink) {
      try {
        return provider(sink);
      } catch (...) {
        tl_log.status = 500;
        tl_log.error = "internal error while streaming";
        metrics_.record(endpoint, 500, since(t0), pt, 0);
        return false;
      }
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
    const Scheduler::Stats st = scheduler_ && ready_ ? scheduler_->stats() : Scheduler::Stats{};
    o += fmt::format("# HELP g4_slots_busy Requests generating now (in the batch).\n# TYPE g4_slots_busy gauge\ng4_slots_busy {}\n", st.active);
    o += fmt::format("# HELP g4_slots_total Requests that may generate at once (--parallel).\n# TYPE g4_slots_total gauge\ng4_slots_total {}\n", opt_.parallel);
    o += fmt::format("# HELP g4_batch_sequences Sequences in the last forward step.\n# TYPE g4_batch_sequences gauge\ng4_batch_sequences {}\n", st.last_batch_seqs);
    o += fmt::format("# HELP g4_batch_tokens Tokens in the last forward step.\n# TYPE g4_batch_tokens gauge\ng4_batch_tokens {}\n", st.last_batch_tokens);
    o += fmt::format("# HELP g4_steps_total Forward steps run.\n# TYPE g4_steps_total counter\ng4_steps_total {}\n", st.steps);
    o += fmt::format("# HELP g4_prompt_tokens_processed_total Prompt tokens evaluated (after prefix reuse).\n# TYPE g4_prompt_tokens_processed_total counter\n"
                     "g4_prompt_tokens_processed_total {}\n", st.prompt_tokens);
    o += fmt::format("# HELP g4_prompt_tokens_per_second Prompt tokens evaluated per second (last 5 s).\n# TYPE g4_prompt_tokens_per_second gauge\n"
                     "g4_prompt_tokens_per_second {:.1f}\n", st.prompt_tps);
    o += fmt::format("# HELP g4_generation_tokens_per_second Tokens generated per second, all requests (last 5 s).\n# TYPE g4_generation_tokens_per_second gauge\n"
                     "g4_generation_tokens_per_second {:.1f}\n", st.generated_tps);
    o += fmt::format("# HELP g4_prompt_cache_sequences Finished requests' KV caches kept for prefix reuse.\n# TYPE g4_prompt_cache_sequences gauge\n"
                     "g4_prompt_cache_sequences {}\n", st.cached);
    o += fmt::format("# HELP g4_model_loaded 1 once the model is loaded.\n# TYPE g4_model_loaded gauge\ng4_model_loaded {}\n", ready_ ? 1 : 0);
    o += "# HELP g4_connections_total Connections by outcome (rejected: over --max-connections; timed_out: request not read in time).\n"
         "# TYPE g4_connections_total counter\n";
    o += fmt::format("g4_connections_total{{outcome=\"accepted\"}} {}\n", metrics_.conn_accepted.load());
    o += fmt::format("g4_connections_total{{outcome=\"rejected\"}} {}\n", metrics_.conn_rejected.load());
    o += fmt::format("g4_connections_total{{outcome=\"timed_out\"}} {}\n", metrics_.conn_timed_out.load());
    {
      std::lock_guard<std::mutex> c(conn_mu_);
      o += fmt::format("# HELP g4_connections_open Open connections.\n# TYPE g4_connections_open gauge\ng4_connections_open {}\n", conns_.size());
    }
    o += fmt::format("# HELP g4_queue_waiting Requests waiting to join the batch.\n# TYPE g4_queue_waiting gauge\ng4_queue_waiting {}\n", st.waiting);
    return o;
  }

  // The serving settings (llama-server's /props names where they exist).
  json props() const {
    const SamplingParams& d = ctx_.defaults;
    const SchedulerOptions& so = scheduler_->options();
    const bool tools = tok_->find("<|tool_call>") >= 0 && tok_->find("<|\"|>") >= 0;
    return json{{"model", ctx_.model_id},
                {"model_path", ctx_.model_path},
                {"total_slots", opt_.parallel},
                {"n_batch", so.n_batch},
                {"max_prompt_chunk", so.max_chunk},
                {"prompt_cache_sequences", so.max_cached},
                {"n_ctx", ctx_.ctx_limit},
                {"max_queue", opt_.max_queue},
                {"max_tokens_limit", opt_.max_tokens_limit},
                {"precision", opt_.precision},
                {"cache_type_k", opt_.cache_type_k},
                {"cache_type_v", opt_.cache_type_v},
                {"threads", scheduler_->forward_threads()},
                {"backend", session_->backend_name()},
                {"request_timeout_s", opt_.request_timeout_s},
                {"n_ctx_train", model_->spec.max_ctx},
                {"n_vocab", ctx_.vocab},
                {"chat_template", "gemma4 (built-in renderer: turns, system, thinking, tools, tool calls and responses)"},
                {"chat_template_caps", {{"supports_tools", tools}, {"supports_tool_calls", tools},
                                        {"supports_thinking", tok_->find("<|think|>") >= 0}, {"supports_system_role", true}}},
                {"reasoning", opt_.reasoning},
                {"bos_token", tok_->piece(tok_->bos_id())},
                {"eog_token_ids", ctx_.eog},
                {"default_generation_settings",
                 {{"temperature", d.temp}, {"top_k", d.top_k}, {"top_p", d.top_p}, {"min_p", d.min_p},
                  {"repeat_penalty", d.repeat_penalty}, {"repeat_last_n", d.repeat_last_n}}}};
  }

  ServeOptions opt_;
  httplib::Server* http_ = nullptr;  // the front (accepts)
  RoutedHttp* routes_ = nullptr;      // the routes (processes)
  std::atomic<bool> ready_{false};
  std::string load_error_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tok_;
  RequestContext ctx_;
  int64_t created_ = 0;
  std::unique_ptr<Session> session_;      // one KV cache per sequence inside
  std::unique_ptr<Scheduler> scheduler_;  // declared after what it uses: destroyed first
  std::mutex score_mu_;                   // echo + logprobs: one prompt scored at a time
  std::unique_ptr<Session> score_session_;
  Metrics metrics_;
  std::atomic<uint64_t> request_seq_{0}, completion_seq_{0};
  // Connections, the watchdog and the drain.
  std::mutex conn_mu_;
  std::condition_variable conn_cv_;
  std::map<uint64_t, Conn> conns_;
  uint64_t conn_seq_ = 0;
  std::atomic<bool> draining_{false}, cancel_all_{false}, stopping_{false};
  Clock::time_point cancel_at_;  // when cancel_all_ was set (under conn_mu_)
};

bool FrontHttp::process_and_close_socket(socket_t sock) {
  // `routes_` is a plain httplib::Server underneath, so this call runs httplib's own code.
  return owner_.serve_connection(sock, [this, sock] { return (routes_.*get(ProcessTag{}))(sock); });
}

}  // namespace

void serve(const ServeOptions& opt) {
  if (opt.parallel < 1 || opt.parallel > 256) fail("--parallel must be in [1, 256]");
  if (opt.batch_size < opt.parallel || opt.batch_size > 8192)
    fail("--batch-size {} must be in [--parallel = {}, 8192]: every generating request adds a token to each step",
         opt.batch_size, opt.parallel);
  if (opt.port < 0 || opt.port > 65535) fail("--port {} is not a port number", opt.port);
  if (opt.max_connections < 1) fail("--max-connections must be at least 1");
  if (opt.max_queue < 0) fail("--max-queue must not be negative");
  if (opt.read_timeout_s < 1 || opt.keep_alive_timeout_s < 0 || opt.request_timeout_s < 1 || opt.shutdown_timeout_s < 0)
    fail("timeouts must be positive (--read-timeout, --request-timeout >= 1 s; --keep-alive-timeout, --shutdown-timeout >= 0)");
  if (opt.keep_alive_max < 1) fail("--keep-alive-max must be at least 1");
  if (opt.log_format != "text" && opt.log_format != "json") fail("--log-format must be text or json");
  Server(opt).run();
}

}  // namespace g4
