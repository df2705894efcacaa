#include <cstdio>

#include "cli/commands.h"
#include "cli/common_flags.h"
#include "tools/inspect.h"

namespace g4::cli {

void register_inspect(CLI::App& app) {
  struct Opts { CommonFlags c; bool json = false; bool lenient = false; };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("inspect", "Describe a model (HF directory or GGUF) and validate it; exit 0 only if valid");
  add_common_flags(cmd, o->c, kModel | kThreads);
  cmd->add_flag("--json", o->json, "machine-readable output");
  cmd->add_flag("--lenient", o->lenient, "report tensors that contradict the config as warnings, not errors");
  cmd->final_callback([o] {
    Model m = open_model(o->c.model, LoadOptions{o->lenient});
    const auto non_finite = check_finite_weights(m);
    if (o->json) std::printf("%s\n", inspect_json(m, non_finite).dump(2).c_str());
    else std::fputs(inspect_text(m).c_str(), stdout);
    if (!m.valid()) std::exit(1);
  });
}

}  // namespace g4::cli
