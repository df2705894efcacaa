#include <fmt/format.h>

#include <cstdio>

#include "cli/commands.h"
#include "tools/quantize.h"
#include "util/error.h"
#include "util/progress.h"

namespace g4::cli {

void register_quantize(CLI::App& app) {
  struct Opts {
    std::string in, out, type, recipe;
    std::vector<std::string> overrides;
    bool no_verify = false, lenient = false;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("quantize", "Write a GGUF (F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K) and verify it tensor by tensor");
  cmd->add_option("-m,--model", o->in, "source: HF checkpoint directory or GGUF")->required();
  cmd->add_option("-o,--out", o->out, "output .gguf")->required();
  auto* t = cmd->add_option("--type", o->type, "one type for every quantizable tensor");
  auto* r = cmd->add_option("--recipe", o->recipe, "q8_0, q4_0, q4_k_m (llama.cpp's mix) or mixed-8-4");
  t->excludes(r);
  cmd->add_option("--tensor-type", o->overrides, "REGEX=TYPE for tensors whose GGUF name matches (repeatable)");
  cmd->add_flag("--no-verify", o->no_verify, "skip the verify gate");
  cmd->add_flag("--lenient", o->lenient, "load the source despite tensors that contradict its config");
  cmd->add_option("-t,--threads", o->threads, "threads");
  cmd->final_callback([o] {
    set_threads(o->threads);
    Model src = load_model(o->in, LoadOptions{o->lenient});
    QuantizeOptions qo;
    if (!o->type.empty()) qo.type = parse_dtype(o->type);
    qo.recipe = o->recipe;
    for (const auto& s : o->overrides) qo.overrides.push_back(parse_override(s));
    qo.verify = !o->no_verify;
    qo.on_tensor = Progress::callback("quantize");
    VerifyReport rep = quantize_model(src, o->out, qo);
    if (!qo.verify) {
      std::printf("wrote %s (not verified)\n", o->out.c_str());
      return;
    }
    std::fputs(rep.table().c_str(), stdout);
    if (!rep.passed()) fail("verify gate failed: {} was not written (see the table above)", o->out);
    std::printf("wrote %s\n", o->out.c_str());
  });
}

}  // namespace g4::cli
