#include <fmt/format.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/common_flags.h"
#include "formats/safetensors.h"
#include "runtime/session.h"
#include "tools/token_input.h"
#include "util/error.h"

namespace g4::cli {

void register_logits(CLI::App& app) {
  struct Opts {
    std::string tokens, tokens_file, prompt, out;
    CommonFlags c;
    bool hidden = false, step = false, bf16_scale = false, lenient = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("logits", "Run the forward pass on tokens and write logits (and hidden states) to safetensors");
  add_common_flags(cmd, o->c, kModel | kThreads | kForward, kReferencePrecision);
  auto* tk = cmd->add_option("--tokens", o->tokens, "comma-separated token ids, e.g. 2,17,9");
  auto* tf = cmd->add_option("--tokens-file", o->tokens_file, "JSON array of token ids")->check(CLI::ExistingFile);
  auto* pr = cmd->add_option("-p,--prompt", o->prompt, "text to tokenize (BOS prepended)");
  tk->excludes(tf)->excludes(pr);
  tf->excludes(pr);
  cmd->add_flag("--hidden", o->hidden, "also write hidden_states [n_layers+1, T, hidden] (HF convention)");
  cmd->add_flag("--step", o->step, "feed tokens one at a time through the KV cache");
  cmd->add_flag("--bf16-embed-scale", o->bf16_scale, "round sqrt(H), sqrt(P) to bf16 as HF does on a bf16 checkpoint");
  cmd->add_flag("--lenient", o->lenient, "load despite tensors that contradict the config");
  cmd->add_option("-o,--out", o->out, "output .safetensors file")->required();
  cmd->final_callback([o] {
    if (o->tokens.empty() && o->tokens_file.empty() && o->prompt.empty())
      throw CLI::ValidationError("--tokens/--tokens-file/-p", "no tokens given: use one of them");
    ForwardOptions fo = o->c.fwd.options();
    Model m = load_model(o->c.model, LoadOptions{o->lenient});
    std::vector<int32_t> ids = resolve_token_input(m, o->tokens, o->tokens_file, o->prompt);
    if (ids.empty()) fail("no tokens given: use --tokens, --tokens-file or -p");
    fo.bf16_embed_scale = o->bf16_scale;
    Session session(m, fo);
    const int64_t T = static_cast<int64_t>(ids.size()), V = m.spec.vocab, H = m.spec.hidden, L = m.spec.n_layers;
    std::vector<float> logits, hidden;
    if (o->step) {
      if (o->hidden) hidden.resize(static_cast<size_t>((L + 1) * T * H));
      for (int64_t t = 0; t < T; ++t) {
        EvalOutput r = session.eval(std::span<const int32_t>(&ids[t], 1), EvalRequest{o->hidden});
        logits.insert(logits.end(), r.logits.begin(), r.logits.end());
        for (int64_t e = 0; o->hidden && e <= L; ++e)
          std::copy_n(&r.hidden[e * H], H, &hidden[(e * T + t) * H]);
      }
    } else {
      EvalOutput r = session.eval(ids, EvalRequest{o->hidden});
      logits = std::move(r.logits);
      hidden = std::move(r.hidden);
    }
    std::vector<SafetensorsOut> out{st_f32("logits", {T, V}, logits), st_i32("input_ids", {T}, ids)};
    if (o->hidden) out.push_back(st_f32("hidden_states", {L + 1, T, H}, hidden));
    write_safetensors(o->out, out, {{"precision", o->c.fwd.precision}, {"model", o->c.model}, {"step", o->step ? "1" : "0"}});
    std::fprintf(stderr, "wrote %s: logits [%ld, %ld]%s\n", o->out.c_str(), static_cast<long>(T), static_cast<long>(V),
                 o->hidden ? " + hidden_states" : "");
  });
}

}  // namespace g4::cli
