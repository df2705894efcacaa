#include <cstdio>
#include <fstream>

#include "cli/commands.h"
#include "cli/common_flags.h"
#include "tools/niah.h"
#include "tools/token_input.h"
#include "util/error.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace g4::cli {

void register_niah(CLI::App& app) {
  struct Opts {
    std::string file, svg, chat = "auto";
    NiahOptions n;
    CommonFlags c;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("niah", "Needle in a haystack: a fact hidden at chosen depths of filler text, retrieval scored");
  add_common_flags(cmd, o->c, kModel | kThreads | kForward);
  add_text_file(cmd, o->file, "filler text (repeated when shorter than a prompt)")->required();
  cmd->add_option("--lengths", o->n.lengths, "prompt lengths in tokens (default 256 512 1024)");
  cmd->add_option("--depths", o->n.depths, "needle depths, fractions of the haystack (default 0 0.25 0.5 0.75 1)");
  cmd->add_option("--needle", o->n.needle, "the hidden fact; {answer} marks the answer (default \"The secret number is {answer}.\")");
  cmd->add_option("--question", o->n.question, "the question at the end (default \"What is the secret number?\")");
  cmd->add_option("--answer", o->n.answer, "the answer (default: a 4-digit number drawn from --seed)");
  cmd->add_option("--seed", o->n.seed, "seed for the default answer (default 1)");
  // Not the shared -n: an answer here is a short fact, and 16 tokens hold it.
  cmd->add_option("-n,--n-predict", o->n.max_tokens, "tokens generated per answer (default 16)");
  cmd->add_option("--chat", o->chat, "Gemma 4 chat template: on, off or auto (auto: when the tokenizer has it)")
      ->check(CLI::IsMember({"on", "off", "auto"}));
  cmd->add_option("--svg", o->svg, "write the depth x length grid as an SVG image");
  cmd->add_flag("--json", o->json, "machine-readable result");
  cmd->final_callback([o] {
    o->n.fwd = o->c.fwd.options();
    o->n.chat = o->chat == "on" ? 1 : o->chat == "off" ? 0 : -1;
    const std::string filler = read_text_file(o->file);
    Model m = load_model(o->c.model);
    const Tokenizer tok = load_tokenizer(m);
    const NiahResult r = run_niah(m, tok, filler, o->n);
    if (!o->svg.empty()) {
      std::ofstream f(o->svg, std::ios::binary);
      f << niah_svg(r, o->c.model);
      f.close();
      if (!f) fail("{}: cannot write the SVG", o->svg);
    }
    if (!o->json) {
      std::printf("%s", format_niah(r, o->c.model).c_str());
      if (!o->svg.empty()) std::printf("grid written to %s\n", o->svg.c_str());
      return;
    }
    json cells = json::array();
    for (const auto& c : r.cells)
      cells.push_back({{"length", c.length}, {"tokens", c.tokens}, {"depth", c.depth}, {"depth_actual", c.depth_actual},
                       {"needle_pos", c.needle_pos}, {"hit", c.hit}, {"answer_logprob", c.answer_logprob}, {"output", c.output}});
    std::printf("%s\n", json{{"model", o->c.model}, {"answer", r.answer}, {"chat", r.chat}, {"cells", cells}}.dump(2).c_str());
  });
}

}  // namespace g4::cli
