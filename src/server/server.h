// OpenAI-compatible HTTP server (cpp-httplib): /health, /v1/models, /v1/completions,
// /v1/chat/completions (stream and not), /metrics. One KV-cache slot per concurrent
// request (--parallel); requests beyond that wait for a free slot.
#pragma once
#include <cstdint>
#include <string>

namespace g4 {

struct ServeOptions {
  std::string model_path;
  std::string host = "127.0.0.1";
  int port = 8080;
  int parallel = 4;
  int ctx = 0;                    // per-request context limit (0 = the model's)
  int max_tokens_limit = 4096;    // largest max_tokens a request may ask for
  size_t max_body_bytes = 1 << 20;
  std::string precision = "fast";
  int load_delay_ms = 0;          // testing: keep /health at 503 for this long
};

// Blocks until the server stops (SIGINT/SIGTERM). Throws g4::Error if it cannot bind.
void serve(const ServeOptions& opt);

}  // namespace g4
