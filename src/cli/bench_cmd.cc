#include <fmt/format.h>
#include <omp.h>

#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "cli/common_flags.h"
#include "kernels/fast.h"
#include "tools/bench.h"
#include "tools/synth.h"
#include "util/error.h"
#include "util/progress.h"

namespace g4::cli {

void register_bench(CLI::App& app) {
  struct Opts { CommonFlags c; BenchOptions b; bool json = false, membw = false; };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("bench", "Prompt processing and generation speed (llama-bench style)");
  add_common_flags(cmd, o->c, kModel | kThreads | kPrecisionDevice);
  // -p and -n as llama-bench spells them (token counts, not a prompt and a generation limit).
  cmd->add_option("-p,--n-prompt", o->b.n_prompt, "prompt tokens (default 512; 0 skips pp; llama-bench's -p)");
  cmd->add_option("-n,--n-gen", o->b.n_gen, "generated tokens (default 128; 0 skips tg; llama-bench's -n)");
  cmd->add_option("-r,--repetitions", o->b.reps, "repetitions (default 5)");
  cmd->add_option("-d,--n-depth", o->b.depth, "tokens already in the context before each pp/tg run (llama-bench's -d; default 0)");
  cmd->add_option("--n-parallel", o->b.n_parallel,
                  "batched decode: N sequences generate -n tokens each, one forward per step for all (llama-batched-bench's -npl; a list: -npl 1,4,16)")
      ->delimiter(',');
  cmd->add_flag("--no-warmup", [o](int64_t) { o->b.warmup = false; }, "skip the untimed warm-up run of each test (llama-bench's --no-warmup)");
  cmd->add_flag("--membw", o->membw, "also measure this machine's memory read bandwidth");
  cmd->add_flag("--json", o->json, "machine-readable output");
  cmd->final_callback([o] {
    Model m = load_model(o->c.model);
    std::string device;
    o->b.precision = apply_device_flags(o->c.fwd.dev, parse_precision(o->c.fwd.precision), o->c.fwd.precision_opt, &device);
    o->c.fwd.precision = precision_name(o->b.precision);
    const std::string backend = device == "cpu" ? fmt::format("cpu-{}", fast_kernel_isa()) : device;
    const BenchResult r = run_bench(m, o->b);
    const double bw = o->membw ? measure_read_bandwidth_gbps() : 0;
    const int threads = omp_get_max_threads();
    const std::string name = std::filesystem::path(o->c.model).filename().string();
    if (o->json) {
      json j{{"model", o->c.model}, {"n_params", r.n_params}, {"n_bytes", r.n_bytes}, {"threads", threads},
             {"precision", o->c.fwd.precision}, {"isa", fast_kernel_isa()}, {"device", device}, {"pp", o->b.n_prompt}, {"tg", o->b.n_gen}, {"depth", o->b.depth},
             {"pp_tps", r.pp_tps}, {"pp_tps_std", r.pp_std}, {"tg_tps", r.tg_tps}, {"tg_tps_std", r.tg_std},
             {"peak_rss_gb", r.peak_rss_gb}, {"decode_gbps", r.decode_gbps}, {"decode_bytes_per_token_gb", r.bytes_per_token_gb},
             {"decode_prefetch_bytes", fast_decode_prefetch_bytes()}};
      if (o->membw) j["memory_read_gbps"] = bw;
      json b = json::array();
      for (const auto& row : r.batched) b.push_back({{"n_seq", row.n_seq}, {"tps", row.tps}, {"tps_std", row.std}});
      if (!r.batched.empty()) j["batched"] = b;
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    std::printf("| %-28s | %10s | %8s | %-10s | %7s | %8s | %18s |\n", "model", "size", "params", "backend", "threads", "test", "t/s");
    std::printf("| %-28s | %10s | %8s | %-10s | %7s | %8s | %18s |\n", "---", "---:", "---:", "---", "---:", "---:", "---:");
    auto row = [&](const std::string& test, double tps, double sd) {
      std::printf("| %-28s | %7.2f GiB | %6.2f B | %-10s | %7d | %8s | %11.2f ± %4.2f |\n", name.c_str(), r.n_bytes / 1073741824.0,
                  r.n_params / 1e9, backend.c_str(), threads, test.c_str(), tps, sd);
    };
    const std::string at = o->b.depth ? fmt::format(" @ d{}", o->b.depth) : "";
    if (o->b.n_prompt > 0) row(fmt::format("pp{}{}", o->b.n_prompt, at), r.pp_tps, r.pp_std);
    if (o->b.n_gen > 0) row(fmt::format("tg{}{}", o->b.n_gen, at), r.tg_tps, r.tg_std);
    for (const auto& b : r.batched) row(fmt::format("tg{} x{}", o->b.n_gen, b.n_seq), b.tps, b.std);
    std::printf("\npeak RSS %.2f GB; decode reads %.3f GB of weights per token -> %.2f GB/s", r.peak_rss_gb, r.bytes_per_token_gb, r.decode_gbps);
    if (o->membw) std::printf(" (machine read bandwidth %.2f GB/s: %.0f%%)", bw, 100 * r.decode_gbps / bw);
    if (const int pf = fast_decode_prefetch_bytes(); pf > 0 && device == "cpu") std::printf("; prefetch %d B ahead", pf);
    std::printf("\n");
  });
}

void register_synth(CLI::App& app) {
  struct Opts { SynthOptions s; std::string out, type = "q4_0"; CommonFlags c; };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("synth", "Write a random-weight Gemma 4 GGUF with a real variant's dimensions (for bench)");
  cmd->add_option("--variant", o->s.variant, "e2b, e4b, 12b, 26b-a4b or 31b")->required();
  cmd->add_option("--layers", o->s.layers, "fewer layers than the variant (to fit RAM)");
  cmd->add_option("--vocab", o->s.vocab, "vocabulary size (default 262144)");
  cmd->add_option("--type", o->type, "weight type, or a recipe (q4_k_m, mixed-8-4) (default q4_0)");
  cmd->add_option("--format", o->s.format, "gguf (default), or safetensors: an HF checkpoint directory in BF16 (the reference)")
      ->check(CLI::IsMember({"gguf", "safetensors"}));
  cmd->add_option("--seed", o->s.seed, "RNG seed");
  cmd->add_option("-o,--out", o->out, "output .gguf (a directory with --format safetensors)")->required();
  add_common_flags(cmd, o->c, kThreads);
  cmd->final_callback([o] {
    if (o->type == "q4_k_m" || o->type == "mixed-8-4") o->s.quant.recipe = o->type;
    else o->s.quant.type = parse_dtype(o->type);
    o->s.quant.on_tensor = Progress::callback("synth");
    synth_model(o->s, o->out);
    std::printf("wrote %s\n", o->out.c_str());
  });
}

}  // namespace g4::cli
