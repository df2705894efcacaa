#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "cli/forward_flags.h"
#include "runtime/generate.h"
#include "tools/defaults.h"
#include "tools/token_input.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace g4::cli {
namespace {

struct RunOpts {
  std::string model, prompt, file, system, reasoning = "auto";
  ForwardFlags fwd;
  int n_predict = 256, threads = 0;
  bool chat = false, no_stats = false;
  std::optional<float> temp, top_p, min_p, repeat_penalty;
  std::optional<int> top_k, repeat_last_n;
  std::optional<uint64_t> seed;
};

SamplingParams sampling_from(const RunOpts& o, const Model& m) {
  SamplingParams p = model_sampling_defaults(m);
  if (o.temp) p.temp = *o.temp;
  if (o.top_k) p.top_k = *o.top_k;
  if (o.top_p) p.top_p = *o.top_p;
  if (o.min_p) p.min_p = *o.min_p;
  if (o.repeat_penalty) p.repeat_penalty = *o.repeat_penalty;
  if (o.repeat_last_n) p.repeat_last_n = *o.repeat_last_n;
  if (o.seed) p.seed = *o.seed;
  return p;
}

bool print_piece(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
  return true;
}

}  // namespace

void register_run(CLI::App& app) {
  auto o = std::make_shared<RunOpts>();
  auto* cmd = app.add_subcommand("run", "Generate text (streams tokens); --chat for a conversation");
  cmd->alias("generate");
  cmd->add_option("-m,--model", o->model, "HF checkpoint directory or .gguf (default: the bundled brown-mini)");
  auto* p = cmd->add_option("-p,--prompt", o->prompt, "prompt text");
  auto* f = cmd->add_option("-f,--file", o->file, "read the prompt from a file");
  p->excludes(f);
  cmd->add_option("-n,--n-predict", o->n_predict, "tokens to generate per answer (default 256)");
  cmd->add_option("--temp", o->temp, "temperature (0 = greedy; default 0.8 or the model's)");
  cmd->add_option("--top-k", o->top_k, "top-k (default 40 or the model's)");
  cmd->add_option("--top-p", o->top_p, "top-p (default 0.95)");
  cmd->add_option("--min-p", o->min_p, "min-p (default 0.05)");
  cmd->add_option("--repeat-penalty", o->repeat_penalty, "repetition penalty (default 1.0 = off)");
  cmd->add_option("--repeat-last-n", o->repeat_last_n, "tokens the penalty looks back (default 64)");
  cmd->add_option("-s,--seed", o->seed, "RNG seed (default random)");
  cmd->add_flag("--chat", o->chat, "chat with the Gemma 4 template (interactive unless -p is given)");
  cmd->add_option("--system", o->system, "system message for --chat");
  cmd->add_option("--reasoning", o->reasoning, "thinking for --chat: on, off or auto (= off); thoughts print between <|channel> and <channel|> and are dropped from the history")
      ->check(CLI::IsMember({"on", "off", "auto"}));
  add_forward_flags(cmd, o->fwd, "fast");
  cmd->add_option("-t,--threads", o->threads, "threads");
  cmd->add_flag("--no-stats", o->no_stats, "do not print timing to stderr");
  cmd->final_callback([o] {
    set_threads(o->threads);
    const std::string path = o->model.empty() ? default_model_path() : o->model;
    Model m = load_model(path);
    Tokenizer tok = load_tokenizer(m);
    Session session(m, o->fwd.options());
    GenerateOptions go;
    go.max_tokens = o->n_predict;
    go.sampling = sampling_from(*o, m);
    go.stop_ids = tok.eog_ids(m.spec.eos_ids);
    std::vector<int32_t> cached;
    auto stats = [&](const GenerateResult& r, double secs) {
      if (!o->no_stats)
        std::fprintf(stderr, "\n[%zu tokens in %.2f s, %.1f tokens/s; prompt %ld tokens; %s]\n", r.tokens.size(), secs,
                     r.tokens.size() / std::max(secs, 1e-9), static_cast<long>(r.prompt_tokens), r.finish_reason.c_str());
    };
    auto timed = [&](const std::vector<int32_t>& ctx) {
      const auto t0 = std::chrono::steady_clock::now();
      auto r = generate(session, cached, ctx, tok, go, print_piece);
      stats(r, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      return r;
    };
    std::string prompt = o->prompt;
    if (!o->file.empty()) prompt = read_text_file(o->file);
    if (!o->chat) {
      if (prompt.empty()) fail("give a prompt with -p TEXT or -f FILE (or use --chat)");
      print_piece(prompt);
      timed(tok.encode(prompt, true));
      std::printf("\n");
      return;
    }
    ChatTemplateOptions co;
    co.empty_thought_channel = m.spec.ple_dim == 0;  // the large-model template (12B/26B/31B)
    co.enable_thinking = o->reasoning == "on";
    std::vector<ChatMessage> conv;
    if (!o->system.empty()) conv.push_back({"system", o->system});
    const bool interactive = prompt.empty();
    const bool tty = isatty(STDIN_FILENO) != 0;
    for (;;) {
      std::string user = prompt;
      if (interactive) {
        if (tty) std::fputs("\n> ", stdout), std::fflush(stdout);
        if (!std::getline(std::cin, user)) break;
        if (user == "/exit" || user == "/quit") break;
        if (user.empty()) continue;
      }
      conv.push_back({"user", user});
      // Control tokens only from the template: what the user types stays text.
      auto r = timed(encode_chat(tok, conv, co));
      conv.push_back({"assistant", r.text});
      if (!interactive) { std::printf("\n"); break; }
    }
  });
}

}  // namespace g4::cli
