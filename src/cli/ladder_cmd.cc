#include <cstdio>

#include "cli/commands.h"
#include "cli/common_flags.h"
#include "tools/divergence.h"
#include "tools/kv_study.h"
#include "tools/ladder.h"
#include "util/error.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace g4::cli {

void register_ladder(CLI::App& app) {
  struct Opts {
    std::string file;
    LadderOptions l;
    CommonFlags c;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("ladder", "The precision ladder: f64, bf16 constants, f32, bf16 weights, bf16, fast against f64");
  add_common_flags(cmd, o->c, kModel | kThreads | kEvalCtx);
  add_text_file(cmd, o->file, "text to evaluate (not with --kl-divergence-base)");
  cmd->add_option("--chunks", o->l.max_chunks, "chunks to evaluate (default 4)");
  cmd->add_option("--engine", o->l.engine, "add the rungs that emulate an engine's roundings: llama.cpp or llama.cpp-fa")
      ->check(CLI::IsMember({"llama.cpp", "llama.cpp-fa"}));
  cmd->add_option("--kl-divergence-base", o->l.kld_base,
                  "an engine's llama-perplexity --kl-divergence-base file: its chunks are used, and every rung is also "
                  "compared with it");
  cmd->add_option("--kld-bucket", o->l.kld_bucket, "KLD by position per this many chunk positions (default 64)");
  cmd->add_flag("--json", o->json, "machine-readable result");
  cmd->final_callback([o] {
    if (o->file.empty() == o->l.kld_base.empty())
      throw CLI::ValidationError("-f", "give the text with -f FILE, or a base file with --kl-divergence-base (not both)");
    o->l.n_ctx = static_cast<int>(o->c.ctx);
    Model m = load_model(o->c.model);
    const LadderResult r = run_ladder(m, o->file.empty() ? std::string() : read_text_file(o->file), o->l);
    if (!o->json) {
      std::printf("%s", format_ladder(r, o->c.model).c_str());
      return;
    }
    json rungs = json::array();
    for (const auto& g : r.rungs)
    {
      json j{{"rung", g.name}, {"what", g.what}, {"nmse", g.nmse}, {"kld", g.kld}, {"top1", g.top1}, {"ppl", g.ppl},
             {"seconds", g.seconds}, {"by_position", position_buckets_json(g.by_position)}};
      if (r.base) {
        j["kld_engine"] = g.kld_base;
        j["top1_engine"] = g.top1_base;
      }
      rungs.push_back(j);
    }
    std::printf("%s\n", json{{"model", o->c.model}, {"n_ctx", r.n_ctx}, {"chunks", r.chunks}, {"rungs", rungs}}.dump(2).c_str());
  });
}

void register_divergence(CLI::App& app) {
  struct Opts {
    std::string base;
    CommonFlags c;
    DivergenceOptions d;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("divergence",
                                 "Why another engine differs from the reference: per-position KLD against its llama.cpp "
                                 "base file, router near-ties and forced expert swaps, a verdict");
  add_common_flags(cmd, o->c, kModel | kThreads | kForward, kReferencePrecision);
  cmd->add_option("--kl-divergence-base", o->base, "the engine's llama-perplexity --kl-divergence-base file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--chunks", o->d.max_chunks, "analyse at most this many chunks of the base file");
  cmd->add_option("--threshold", o->d.kld_threshold, "a position diverges above this KLD (default 1e-3)");
  cmd->add_option("--margin", o->d.margin, "router near-tie: k-th minus (k+1)-th logit below this (default 1e-3)");
  cmd->add_option("--candidates", o->d.max_candidates, "near-ties tried per round of the forced-swap search (default 48)");
  cmd->add_option("--top", o->d.top, "worst positions listed (default 10)");
  cmd->add_flag("--json", o->json, "machine-readable result (every position, every swap)");
  cmd->final_callback([o] {
    o->d.forward = o->c.fwd.options();
    Model m = load_model(o->c.model);
    const DivergenceReport r = run_divergence(m, o->base, o->d);
    if (o->json) std::printf("%s\n", divergence_json(r).dump(2).c_str());
    else std::printf("%s", format_divergence(r, m, o->d.top).c_str());
  });
}

void register_kv_study(CLI::App& app) {
  struct Opts {
    std::string file;
    std::vector<std::string> types;
    KvStudyOptions k;
    CommonFlags c;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("kv-study", "What each KV-cache type costs: PPL, KLD and top-1 against an f32 cache, bytes per token");
  add_common_flags(cmd, o->c, kModel | kThreads | kPrecisionDevice);
  add_text_file(cmd, o->file, "text to evaluate")->required();
  // A list here: the study's point is how the cost grows with the context.
  cmd->add_option("-c,--ctx-size", o->k.contexts, "context lengths (default 128 256 512)");
  cmd->add_option("--chunks", o->k.max_chunks, "chunks per context (default 4)");
  cmd->add_option("--types", o->types, "cache types (default: all; f32 is always the reference)");
  cmd->add_option("--kld-bucket", o->k.kld_bucket, "KLD by position per this many chunk positions (default 64)");
  cmd->final_callback([o] {
    for (const auto& t : o->types) o->k.types.push_back(parse_kv_type(t));
    o->k.precision = apply_device_flags(o->c.fwd.dev, parse_precision(o->c.fwd.precision), o->c.fwd.precision_opt);
    const std::string text = read_text_file(o->file);
    Model m = load_model(o->c.model);
    std::printf("%s", format_kv_study(run_kv_study(m, text, o->k), o->c.model).c_str());
  });
}

}  // namespace g4::cli
