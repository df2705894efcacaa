#include <cstdio>

#include "cli/commands.h"
#include "tools/kv_study.h"
#include "tools/ladder.h"
#include "util/error.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace g4::cli {

void register_ladder(CLI::App& app) {
  struct Opts {
    std::string model, file;
    LadderOptions l;
    int threads = 0;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("ladder", "The precision ladder: f64, bf16 constants, f32, bf16 weights, bf16, fast against f64");
  cmd->add_option("-m,--model", o->model, "HF checkpoint directory or .gguf file")->required();
  cmd->add_option("-f,--file", o->file, "text to evaluate")->required();
  cmd->add_option("-c,--ctx-size", o->l.n_ctx, "context per chunk (default 128)");
  cmd->add_option("--chunks", o->l.max_chunks, "chunks to evaluate (default 4)");
  cmd->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  cmd->add_flag("--json", o->json, "machine-readable result");
  cmd->final_callback([o] {
    set_threads(o->threads);
    Model m = load_model(o->model);
    const LadderResult r = run_ladder(m, read_text_file(o->file), o->l);
    if (!o->json) {
      std::printf("%s", format_ladder(r, o->model).c_str());
      return;
    }
    json rungs = json::array();
    for (const auto& g : r.rungs)
      rungs.push_back({{"rung", g.name}, {"what", g.what}, {"nmse", g.nmse}, {"kld", g.kld}, {"top1", g.top1},
                       {"ppl", g.ppl}, {"seconds", g.seconds}});
    std::printf("%s\n", json{{"model", o->model}, {"n_ctx", r.n_ctx}, {"chunks", r.chunks}, {"rungs", rungs}}.dump(2).c_str());
  });
}

void register_kv_study(CLI::App& app) {
  struct Opts {
    std::string model, file, precision = "fast";
    std::vector<std::string> types;
    KvStudyOptions k;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("kv-study", "What each KV-cache type costs: PPL, KLD and top-1 against an f32 cache, bytes per token");
  cmd->add_option("-m,--model", o->model, "HF checkpoint directory or .gguf file")->required();
  cmd->add_option("-f,--file", o->file, "text to evaluate")->required();
  cmd->add_option("-c,--ctx-size", o->k.contexts, "context lengths (default 128 256 512)");
  cmd->add_option("--chunks", o->k.max_chunks, "chunks per context (default 4)");
  cmd->add_option("--types", o->types, "cache types (default: all; f32 is always the reference)");
  cmd->add_option("--precision", o->precision, "compute precision (default fast)");
  cmd->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  cmd->final_callback([o] {
    set_threads(o->threads);
    Model m = load_model(o->model);
    o->k.precision = parse_precision(o->precision);
    for (const auto& t : o->types) o->k.types.push_back(parse_kv_type(t));
    std::printf("%s", format_kv_study(run_kv_study(m, read_text_file(o->file), o->k), o->model).c_str());
  });
}

}  // namespace g4::cli
