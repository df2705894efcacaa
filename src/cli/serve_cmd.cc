#include <cstdlib>

#include "cli/commands.h"
#include "cli/common_flags.h"
#include "server/server.h"
#include "tools/defaults.h"

namespace g4::cli {

void register_serve(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  auto c = std::make_shared<CommonFlags>();
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, /metrics)");
  // -b is the step budget (decode tokens plus prompt chunks); -c the per-request limit;
  // -t reaches the scheduler thread, where the forward runs (ServeOptions::threads).
  add_common_flags(cmd, *c, kModelOrBundled | kThreads | kGenCtx | kBatch | kPrecisionDevice);
  cmd->add_option("--host", o->host, "address to listen on (default 127.0.0.1)");
  cmd->add_option("--port", o->port, "port (default 8080)");
  cmd->add_option("--parallel", o->parallel, "requests generating at once, batched in one forward per step, one KV cache each (default 4; llama.cpp's -np)");
  cmd->add_option("--prompt-cache", o->prompt_cache, "finished requests whose KV caches are kept for prefix reuse (default: --parallel)");
  cmd->add_option("--max-tokens-limit", o->max_tokens_limit, "largest max_tokens a request may ask for (default 4096)");
  cmd->add_option("--max-body-bytes", o->max_body_bytes, "largest request body (default 1 MiB)");
  std::vector<std::string> kv;
  for (KvType t : all_kv_types()) kv.push_back(kv_type_name(t));
  cmd->add_option("--cache-type-k", o->cache_type_k, "KV cache type for K (default f32; -ctk)")->check(CLI::IsMember(kv));
  cmd->add_option("--cache-type-v", o->cache_type_v, "KV cache type for V (default f32; -ctv)")->check(CLI::IsMember(kv));
  cmd->add_option("--api-key", o->api_key, "require 'Authorization: Bearer KEY' on every route but /health (default: $G4_API_KEY)");
  cmd->add_option("--cors-origin", o->cors_origins, "answer CORS requests from this origin (repeatable; '*' for any)");
  cmd->add_option("--max-connections", o->max_connections, "open connections; more are answered 503 (default 256)");
  cmd->add_option("--max-queue", o->max_queue, "requests waiting for a slot; more are answered 429 + Retry-After (default 64)");
  cmd->add_option("--read-timeout", o->read_timeout_s, "seconds a request's headers and body may take to arrive (default 10)");
  cmd->add_option("--keep-alive-timeout", o->keep_alive_timeout_s, "idle seconds between requests on one connection (default 5)");
  cmd->add_option("--keep-alive-max", o->keep_alive_max, "requests per keep-alive connection (default 1000)");
  cmd->add_option("--request-timeout", o->request_timeout_s, "deadline of a completion request in seconds, queueing included (default 600)");
  cmd->add_option("--shutdown-timeout", o->shutdown_timeout_s, "on SIGTERM/SIGINT, seconds in-flight requests get before they are cancelled (default 30)");
  cmd->add_option("--log-format", o->log_format, "one line per request: text (default) or json")->check(CLI::IsMember({"text", "json"}));
  cmd->add_option("--reasoning", o->reasoning, "thinking: on (requests may turn it off), off (never), auto (requests turn it on; default)")
      ->check(CLI::IsMember({"on", "off", "auto"}));
  cmd->add_option("--debug-load-delay-ms", o->load_delay_ms, "testing: report 503 on /health this long")->group("");
  cmd->add_flag("--debug-inject", o->debug_inject, "testing: honour a request's g4_debug_output (forced model output)")->group("");
  cmd->add_option("--debug-fail-after", o->debug_fail_after, "testing: throw inside generation after N text pieces")->group("");
  cmd->final_callback([o, c] {
    o->precision = precision_name(apply_device_flags(c->fwd.dev, parse_precision(c->fwd.precision), c->fwd.precision_opt));
    o->model_path = c->model.empty() ? default_model_path() : c->model;
    o->threads = c->threads;
    o->batch_size = c->batch;
    o->ctx = static_cast<int>(c->ctx);
    if (o->api_key.empty())
      if (const char* k = std::getenv("G4_API_KEY")) o->api_key = k;
    serve(*o);
  });
}

}  // namespace g4::cli
