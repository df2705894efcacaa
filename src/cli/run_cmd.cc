#include <fmt/format.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "cli/commands.h"
#include "cli/common_flags.h"
#include "runtime/generate.h"
#include "tools/defaults.h"
#include "tools/token_input.h"
#include "util/error.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace g4::cli {
namespace {

struct RunOpts {
  std::string prompt, file, system, reasoning = "auto";
  CommonFlags c;
  bool chat = false, no_stats = false, ignore_eos = false, think = false;
};

// Ctrl-C in a chat: the first stops the answer being generated; a second within a
// second, or one at the prompt, ends the program (llama.cpp's interactive behaviour).
std::atomic<bool> g_stop{false}, g_generating{false};
std::atomic<int64_t> g_last_sigint_ms{-10000};

int64_t monotonic_ms() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);  // async-signal-safe
  return static_cast<int64_t>(t.tv_sec) * 1000 + t.tv_nsec / 1000000;
}

void on_sigint(int) {
  const int64_t now = monotonic_ms();
  if (!g_generating.load() || now - g_last_sigint_ms.load() < 1000) {
    const char nl = '\n';
    (void)!write(STDOUT_FILENO, &nl, 1);
    _exit(130);
  }
  g_last_sigint_ms.store(now);
  g_stop.store(true);
}

bool print_piece(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
  return !g_stop.load();
}

constexpr const char* kChatHelp =
    "commands: /clear (forget the conversation), /think on|off, /save FILE, /load FILE, /exit; "
    "end a line with \\ to continue on the next; Ctrl-C stops an answer, twice exits";

json conversation_json(const std::vector<ChatMessage>& conv) {
  json a = json::array();
  for (const auto& m : conv) a.push_back({{"role", m.role}, {"content", m.content}});
  return json{{"messages", a}};
}

std::vector<ChatMessage> conversation_from_json(const std::string& path) {
  const json j = parse_json_strict(read_text_file(path), path);
  if (!j.is_object() || !j.contains("messages") || !j["messages"].is_array())
    fail("{}: expected {{\"messages\": [{{\"role\": ..., \"content\": ...}}, ...]}} (as /save writes)", path);
  std::vector<ChatMessage> conv;
  for (size_t i = 0; i < j["messages"].size(); ++i) {
    const json& m = j["messages"][i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") || !m["content"].is_string())
      fail("{}: messages[{}] needs string fields \"role\" and \"content\"", path, i);
    const std::string role = m["role"];
    if (role != "system" && role != "user" && role != "assistant")
      fail("{}: messages[{}].role is \"{}\"; expected system, user or assistant", path, i, role);
    conv.push_back({role, m["content"]});
  }
  return conv;
}

}  // namespace

void register_run(CLI::App& app) {
  auto o = std::make_shared<RunOpts>();
  auto* cmd = app.add_subcommand("run", "Generate text (streams tokens); --chat for a conversation");
  cmd->alias("generate");
  add_common_flags(cmd, o->c, kModelOrBundled | kThreads | kGenCtx | kPredict | kSampling | kForward);
  auto* p = cmd->add_option("-p,--prompt", o->prompt, "prompt text");
  auto* f = add_text_file(cmd, o->file, "read the prompt from a file");
  p->excludes(f);
  cmd->add_flag("--ignore-eos", o->ignore_eos, "keep generating past end-of-turn/end-of-text tokens");
  cmd->add_flag("--think", o->think, "--chat: the same as --reasoning on (also /think on|off in the chat)");
  cmd->add_flag("--chat,--conversation", o->chat,
                "chat with the Gemma 4 template (interactive unless -p is given); llama.cpp's -cnv/--conversation");
  cmd->add_option("--system", o->system, "system message for --chat");
  cmd->add_option("--reasoning", o->reasoning, "thinking for --chat: on, off or auto (= off); thoughts print between <|channel> and <channel|> and are dropped from the history")
      ->check(CLI::IsMember({"on", "off", "auto"}));
  cmd->add_flag("--no-stats", o->no_stats, "do not print timing to stderr");
  cmd->final_callback([o] {
    const CommonFlags& c = o->c;
    if ((o->system.size() || o->think || o->reasoning != "auto") && !o->chat)
      throw CLI::ValidationError("--system/--think/--reasoning", "these apply to --chat only; add --chat");
    if (!o->chat && o->prompt.empty() && o->file.empty())
      throw CLI::ValidationError("-p/-f", "give a prompt with -p TEXT or -f FILE (or use --chat)");
    ForwardOptions fo = c.fwd.options();  // a bad device or type fails before the model loads
    // The prompt file is read before the model loads: a bad file costs nothing.
    std::string prompt = o->prompt;
    if (!o->file.empty()) prompt = read_text_file(o->file);
    const std::string path = c.model.empty() ? default_model_path() : c.model;
    Model m = load_model(path);
    Tokenizer tok = load_tokenizer(m);
    if (c.ctx > m.spec.max_ctx)
      fail("-c {} is outside [0, {}] (0 = the model's context, max_position_embeddings)", c.ctx, m.spec.max_ctx);
    const int64_t n_ctx = c.ctx ? c.ctx : m.spec.max_ctx;
    fo.n_ctx = c.ctx;
    Session session(m, fo);
    GenerateOptions go;
    go.sampling = c.sampling(model_sampling_defaults(m));
    if (!o->ignore_eos) go.stop_ids = tok.eog_ids(m.spec.eos_ids);
    // Tokens to generate after a prompt of n: -n, bounded by the context.
    auto budget = [&](size_t n) {
      const int64_t room = n_ctx - static_cast<int64_t>(n);
      return static_cast<int>(c.n_predict < 0 ? room : std::min<int64_t>(c.n_predict, room));
    };
    std::vector<int32_t> cached;
    auto stats = [&](const GenerateResult& r, double secs) {
      if (!o->no_stats)
        std::fprintf(stderr, "\n[%zu tokens in %.2f s, %.1f tokens/s; prompt %ld tokens; %s]\n", r.tokens.size(), secs,
                     r.tokens.size() / std::max(secs, 1e-9), static_cast<long>(r.prompt_tokens), r.finish_reason.c_str());
    };
    auto timed = [&](const std::vector<int32_t>& ctx) {
      go.max_tokens = budget(ctx.size());
      const auto t0 = std::chrono::steady_clock::now();
      auto r = generate(session, cached, ctx, tok, go, print_piece);
      stats(r, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      return r;
    };
    if (!o->chat) {
      if (prompt.empty()) fail("the prompt is empty ({})", o->file.empty() ? "-p" : o->file);
      const auto ids = tok.encode(prompt, true);
      if (static_cast<int64_t>(ids.size()) >= n_ctx)
        fail("the prompt has {} tokens; the context is {} (-c)", ids.size(), n_ctx);
      print_piece(prompt);
      timed(ids);
      std::printf("\n");
      return;
    }
    ChatTemplateOptions co;
    co.empty_thought_channel = m.spec.ple_dim == 0;  // the large-model template (12B/26B/31B)
    co.enable_thinking = o->think || o->reasoning == "on";
    std::vector<ChatMessage> conv;
    if (!o->system.empty()) conv.push_back({"system", o->system});
    const bool interactive = prompt.empty();
    const bool tty = isatty(STDIN_FILENO) != 0;
    if (interactive) {
      struct sigaction sa {};
      sa.sa_handler = on_sigint;
      sigemptyset(&sa.sa_mask);
      sigaction(SIGINT, &sa, nullptr);
      if (tty) std::printf("%s\n", kChatHelp);
    }
    auto note = [](const std::string& s) { std::printf("[%s]\n", s.c_str()), std::fflush(stdout); };
    // One input: lines ending with a backslash continue on the next line.
    auto read_input = [&](std::string& out) {
      out.clear();
      if (tty) std::fputs("\n> ", stdout), std::fflush(stdout);
      for (std::string line; std::getline(std::cin, line);) {
        if (!line.empty() && line.back() == '\\') {
          out += line.substr(0, line.size() - 1) + "\n";
          if (tty) std::fputs(". ", stdout), std::fflush(stdout);
          continue;
        }
        out += line;
        return true;
      }
      return !out.empty();
    };
    for (;;) {
      std::string user = prompt;
      if (interactive) {
        if (!read_input(user)) break;
        if (user == "/exit" || user == "/quit") break;
        if (user.empty()) continue;
        if (user[0] == '/') {
          const auto sp = user.find(' ');
          const std::string c = user.substr(0, sp), arg = sp == std::string::npos ? "" : user.substr(sp + 1);
          try {
            if (c == "/help") note(kChatHelp);
            else if (c == "/clear") {
              std::erase_if(conv, [](const ChatMessage& x) { return x.role != "system"; });
              note("conversation cleared");
            } else if (c == "/think" && (arg == "on" || arg == "off")) {
              co.enable_thinking = arg == "on";
              note(fmt::format("thinking {}", arg));
            } else if (c == "/save" && !arg.empty()) {
              std::ofstream f(arg, std::ios::binary);
              f << conversation_json(conv).dump(2) << "\n";
              f.close();
              if (!f) fail("{}: cannot write", arg);
              note(fmt::format("saved {} messages to {}", conv.size(), arg));
            } else if (c == "/load" && !arg.empty()) {
              conv = conversation_from_json(arg);
              note(fmt::format("loaded {} messages from {}", conv.size(), arg));
            } else {
              note(fmt::format("unknown command {}; {}", user, kChatHelp));
            }
          } catch (const Error& e) {
            note(fmt::format("error: {}", e.what()));
          }
          continue;
        }
      }
      conv.push_back({"user", user});
      // Context shift: drop the oldest turns (the system turn stays) until the
      // conversation and at least a few answer tokens fit.
      std::vector<int32_t> ids = encode_chat(tok, conv, co);
      const int64_t want = std::min<int64_t>(c.n_predict < 0 ? 64 : c.n_predict, 64);
      int dropped = 0;
      while (static_cast<int64_t>(ids.size()) + want > n_ctx) {
        const auto first = std::find_if(conv.begin(), conv.end(), [](const ChatMessage& x) { return x.role != "system"; });
        if (first == conv.end() || first + 1 == conv.end()) break;  // only the new message is left
        auto last = first + 1;
        while (last != conv.end() - 1 && last->role != "user") ++last;  // the whole oldest turn
        dropped += static_cast<int>(last - first);
        conv.erase(first, last);
        ids = encode_chat(tok, conv, co);
      }
      if (dropped) note(fmt::format("context full: dropped the oldest {} messages", dropped));
      if (static_cast<int64_t>(ids.size()) + want > n_ctx) {
        conv.pop_back();
        note(fmt::format("error: the message needs {} tokens; the context is {} (-c)", ids.size(), n_ctx));
        if (!interactive) fail("the message does not fit in the context of {} tokens", n_ctx);
        continue;
      }
      g_stop = false;
      g_last_sigint_ms = -10000;  // "twice quickly" counts within one answer
      g_generating = true;
      // Control tokens only from the template: what the user types stays text.
      auto r = timed(ids);
      g_generating = false;
      if (r.finish_reason == "cancelled") note("stopped");
      conv.push_back({"assistant", r.text});
      if (!interactive) { std::printf("\n"); break; }
    }
  });
}

}  // namespace g4::cli
