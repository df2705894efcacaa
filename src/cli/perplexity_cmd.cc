#include <fmt/format.h>
#include <omp.h>

#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "cli/common_flags.h"
#include "formats/safetensors.h"
#include "tools/kv_study.h"
#include "tools/perplexity.h"
#include "util/error.h"
#include "util/json.h"
#include "util/mapped_file.h"
#include "util/progress.h"

namespace g4::cli {

void set_threads(int n) {
  if (n < 0) fail("-t must be positive");
  if (n > 0) omp_set_num_threads(n);
}

void register_perplexity(CLI::App& app) {
  struct Opts {
    std::string file, nll_out, kld_base, kld;
    CommonFlags c;
    int chunks = -1, kld_bucket = 64;
    bool json = false, bf16_scale = false, lenient = false, llama_scoring = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("perplexity", "Teacher-forced perplexity (llama-perplexity protocol) and KL divergence");
  add_common_flags(cmd, o->c, kModel | kThreads | kEvalCtx | kBatch | kForward);
  add_text_file(cmd, o->file, "text file to evaluate");
  cmd->add_option("--chunks", o->chunks, "evaluate at most this many chunks (default: all)");
  cmd->add_flag("--bf16-embed-scale", o->bf16_scale, "round sqrt(H), sqrt(P) to bf16 as HF does on a bf16 checkpoint");
  cmd->add_option("--nll-out", o->nll_out, "write every prediction's NLL [chunks, n_ctx-1] to a safetensors file");
  cmd->add_option("--kl-divergence-base", o->kld_base, "save this model's log-probs (llama.cpp's uint16 format) / read them with --kl-divergence");
  cmd->add_flag("--kl-divergence", [o](int64_t) { o->kld = "1"; }, "compare against the --kl-divergence-base file");
  cmd->add_option("--kld-bucket", o->kld_bucket, "with --kl-divergence: KLD and top-1 per this many chunk positions (default 64)");
  cmd->add_flag("--llama-scoring", o->llama_scoring,
                "score llama-perplexity's n_ctx/2-1 predictions per chunk instead of the n_ctx/2 of the HF gold protocol");
  cmd->add_flag("--json", o->json, "machine-readable result");
  cmd->add_flag("--lenient", o->lenient, "load despite tensors that contradict the config");
  cmd->final_callback([o] {
    // Every input is checked before the model loads.
    if (!o->kld.empty() && o->kld_base.empty())
      throw CLI::ValidationError("--kl-divergence", "needs --kl-divergence-base FILE (made by a previous run)");
    if (o->kld.empty() && o->file.empty()) throw CLI::ValidationError("-f", "give the text to evaluate with -f FILE");
    if (!o->kld.empty() && !std::filesystem::is_regular_file(o->kld_base))
      throw CLI::ValidationError("--kl-divergence-base", fmt::format("{}: no such file", o->kld_base));
    PerplexityOptions po;
    po.forward = o->c.fwd.options();
    const std::string text = o->kld.empty() ? read_text_file(o->file) : std::string();
    Model m = load_model(o->c.model, LoadOptions{o->lenient});
    po.n_ctx = static_cast<int>(o->c.ctx);
    po.n_batch = o->c.batch;
    po.max_chunks = o->chunks;
    po.forward.bf16_embed_scale = o->bf16_scale;
    po.want_all_nll = !o->nll_out.empty();
    po.llama_scoring = o->llama_scoring;
    po.kld_bucket = o->kld_bucket;
    if (!o->kld.empty()) po.kld_base_in = o->kld_base;
    else po.kld_base_out = o->kld_base;
    // llama-perplexity's running values, [1]4.68,[2]5.01,...: on a terminal inside one bar
    // for the whole job (the latest values, rate and ETA); in logs as llama.cpp prints them.
    std::unique_ptr<Progress> bar;
    std::string running;
    po.on_chunk = [&](int c, int n, double ppl) {
      if (Progress::enabled()) {
        if (!bar) bar = std::make_unique<Progress>("perplexity", n);
        running += fmt::format("[{}]{:.4f},", c + 1, ppl);
        const size_t keep = running.size() > 60 ? running.find('[', running.size() - 60) : 0;
        bar->update(c + 1, "..." + running.substr(keep));
      } else if (!o->json) {
        std::fprintf(stderr, "[%d]%.4f%s", c + 1, ppl, c + 1 == n ? "\n" : ",");
      }
    };
    PerplexityResult r = run_perplexity(m, text, po);
    if (bar) {
      bar->finish();
      std::fprintf(stderr, "%s\n", running.substr(0, running.size() - 1).c_str());
    }
    if (!o->nll_out.empty())
      write_safetensors(o->nll_out, {st_f32("nll", {r.chunks, r.n_ctx - 1}, r.nll)},
                        {{"n_ctx", std::to_string(r.n_ctx)}, {"model", o->c.model}, {"precision", o->c.fwd.precision}});
    if (o->json) {
      json j{{"ppl", r.ppl}, {"ppl_err", r.ppl_err}, {"nll_mean", r.nll_mean}, {"chunks", r.chunks},
             {"tokens", r.tokens}, {"n_ctx", r.n_ctx}, {"seconds", r.seconds}, {"precision", o->c.fwd.precision},
             {"kv_bytes", r.kv_bytes},
             {"kv_bytes_per_token", kv_bytes_per_token(m.spec, po.forward.cache_type_k, po.forward.cache_type_v)}};
      if (r.kld) {
        const auto& k = *r.kld;
        json pct = json::object(), dpp = json::object();
        for (const auto& [n, v] : k.kld_pct) pct[n] = v;
        for (const auto& [n, v] : k.dp_pct) dpp[n] = v;
        j["kld"] = {{"mean", k.kld}, {"mean_err", k.kld_err}, {"percentiles", pct}, {"ppl_base", k.ppl_base},
                    {"ln_ppl_ratio", k.ln_ratio}, {"ln_ppl_ratio_err", k.ln_ratio_err}, {"same_top_p", k.same_top},
                    {"same_top_p_err", k.same_top_err}, {"delta_p_mean_pct", k.dp_mean}, {"delta_p_rms_pct", k.dp_rms},
                    {"delta_p_percentiles_pct", dpp}, {"positions", k.n},
                    {"by_position", position_buckets_json(k.by_position)}, {"bucket", o->kld_bucket}};
      }
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("%d chunks of %d tokens (%ld scored) from %ld tokens, %s, %.2f s\n", r.chunks, r.n_ctx,
                  static_cast<long>(r.tokens), static_cast<long>(r.n_text_tokens), o->c.fwd.precision.c_str(), r.seconds);
      std::printf("KV cache %s/%s: %.0f bytes per token as the fast backend stores it; %.1f KiB held at %d positions\n", kv_type_name(po.forward.cache_type_k),
                  kv_type_name(po.forward.cache_type_v), kv_bytes_per_token(m.spec, po.forward.cache_type_k, po.forward.cache_type_v),
                  r.kv_bytes / 1024.0, r.n_ctx);
      if (r.kld) std::fputs(format_kld_report(*r.kld).c_str(), stdout);
      std::printf("Final estimate: PPL = %.5f +/- %.5f\n", r.ppl, r.ppl_err);
    }
  });
}

}  // namespace g4::cli
