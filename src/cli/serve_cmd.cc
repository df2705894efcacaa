#include "cli/commands.h"
#include "server/server.h"
#include "tools/defaults.h"

namespace g4::cli {

void register_serve(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, /metrics)");
  cmd->add_option("-m,--model", o->model_path, "HF checkpoint directory or .gguf (default: the bundled brown-mini)");
  cmd->add_option("--host", o->host, "address to listen on (default 127.0.0.1)");
  cmd->add_option("--port", o->port, "port (default 8080)");
  cmd->add_option("--parallel", o->parallel, "concurrent requests, one KV cache each (default 4)");
  cmd->add_option("-c,--ctx", o->ctx, "context limit per request (default: the model's)");
  cmd->add_option("--max-tokens-limit", o->max_tokens_limit, "largest max_tokens a request may ask for (default 4096)");
  cmd->add_option("--max-body-bytes", o->max_body_bytes, "largest request body (default 1 MiB)");
  cmd->add_option("--precision", o->precision, "fast (default), f32 or f64")->check(CLI::IsMember({"f64", "f32", "fast"}));
  cmd->add_option("--debug-load-delay-ms", o->load_delay_ms, "testing: report 503 on /health this long")->group("");
  cmd->final_callback([o] {
    if (o->model_path.empty()) o->model_path = default_model_path();
    serve(*o);
  });
}

}  // namespace g4::cli
