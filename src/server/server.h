// OpenAI-compatible HTTP server (cpp-httplib): /health, /v1/models, /v1/completions,
// /v1/chat/completions (stream and not), /metrics, /props. Continuous batching
// (runtime/scheduler.h): up to --parallel requests decode together, one forward per step
// for all of them; requests beyond that wait in a bounded queue (429 when full).
// Built to survive hostile clients: per-connection read deadlines and a connection cap
// (slowloris), cancellation when a client leaves, no exception can take the process down.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace g4 {

struct ServeOptions {
  std::string model_path;
  std::string host = "127.0.0.1";
  int port = 8080;
  int parallel = 4;               // sequences generating at once (each with its own KV cache)
  int batch_size = 512;           // tokens per forward step: decode tokens plus prompt chunks
  int prompt_cache = -1;          // finished sequences kept for prefix reuse (-1: --parallel)
  int ctx = 0;                    // per-request context limit (0 = the model's)
  int max_tokens_limit = 4096;    // largest max_tokens a request may ask for
  size_t max_body_bytes = 1 << 20;
  std::string precision = "fast";
  std::string cache_type_k = "f32", cache_type_v = "f32";  // KV cache types of every sequence
  int threads = 0;                // OpenMP threads of the forward (0 = all cores), set on the scheduler's thread
  std::string api_key;                    // non-empty: every route but /health needs "Authorization: Bearer KEY"
  std::vector<std::string> cors_origins;  // origins answered with CORS headers ("*": any)
  int max_connections = 256;      // open connections; more are answered 503 and closed
  int max_queue = 64;             // requests waiting for a slot; more are answered 429
  int read_timeout_s = 10;        // a request's headers and body must arrive within this
  int keep_alive_timeout_s = 5;   // idle time allowed between requests on one connection
  int keep_alive_max = 1000;      // requests per connection
  int request_timeout_s = 600;    // a completion request's deadline, queueing included
  int shutdown_timeout_s = 30;    // SIGTERM/SIGINT: in-flight requests get this long, then are cancelled
  std::string log_format = "text";  // one line per request: text or json
  std::string reasoning = "auto";   // thinking: on (default on), off (never), auto (requests decide; default off)
  int load_delay_ms = 0;          // testing: keep /health at 503 for this long
  int debug_fail_after = 0;       // testing: throw inside generation after this many text pieces
  bool debug_inject = false;      // testing: a request's "g4_debug_output" replaces the model's output
};

// Blocks until the server stops (SIGINT/SIGTERM: drains, then returns). Throws g4::Error
// if it cannot bind or the model cannot be loaded.
void serve(const ServeOptions& opt);

}  // namespace g4
