#include "cli/common_flags.h"

#include <fmt/format.h>

#include <cstring>

#include "cli/commands.h"

namespace g4::cli {

namespace {

// llama.cpp flags g4 does not take, and why (each is a deliberate difference).
struct Difference {
  std::vector<const char*> names;
  const char* what;
};
const std::vector<Difference>& differences() {
  static const std::vector<Difference> d{
      {{"--mlock"}, "lock the model in RAM, because it maps model files read-only and leaves paging to the kernel"},
      {{"--no-mmap"}, "read model files into allocated memory, because it always maps them (memory stays bounded by what is touched)"},
      {{"--numa"}, "place threads or memory per NUMA node; run it under `numactl --interleave=all` instead"},
      {{"-sm", "--split-mode", "-ts", "--tensor-split", "-mg", "--main-gpu"},
       "split a model across GPUs, because it runs on one device (--device picks it)"},
      {{"-ub", "--ubatch-size"}, "have a separate micro-batch, because one batch size (-b) covers both"},
      {{"--rope-freq-base", "--rope-freq-scale", "--rope-scaling", "--yarn-orig-ctx"},
       "override RoPE parameters, because they come from the model's config and the reference must stay the model's"},
      {{"-hf", "--hf-repo", "-hff", "--hf-file", "-mu", "--model-url"},
       "download models, because it never touches the network; download with huggingface-cli and pass -m"},
      {{"--lora", "--lora-scaled", "--control-vector"}, "apply adapters, because it runs the released weights only"},
      {{"-nkvo", "--no-kv-offload"}, "keep the KV cache off the GPU, because the KV cache lives where the forward runs"},
  };
  return d;
}

constexpr std::pair<const char*, const char*> kDashAliases[] = {
    {"-ctk", "--cache-type-k"}, {"-ctv", "--cache-type-v"}, {"-ngl", "--n-gpu-layers"}, {"-fa", "--flash-attn"},
    {"-cnv", "--conversation"}, {"-np", "--parallel"},     {"-dev", "--device"}, {"-npl", "--n-parallel"},
};

}  // namespace

const char* llama_dash_alias(const char* arg) {
  for (const auto& [from, to] : kDashAliases)
    if (std::strcmp(arg, from) == 0) return to;
  return nullptr;
}

std::string llama_difference(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") break;
    const std::string name = a.substr(0, a.find('='));
    for (const auto& d : differences())
      for (const char* n : d.names)
        if (name == n) return fmt::format("{}: g4 does not {}; drop the flag", n, d.what);
  }
  return {};
}

SamplingParams CommonFlags::sampling(SamplingParams p) const {
  if (temp) p.temp = *temp;
  if (top_k) p.top_k = *top_k;
  if (top_p) p.top_p = *top_p;
  if (min_p) p.min_p = *min_p;
  if (repeat_penalty) p.repeat_penalty = *repeat_penalty;
  if (repeat_last_n) p.repeat_last_n = *repeat_last_n;
  if (presence_penalty) p.presence_penalty = *presence_penalty;
  if (frequency_penalty) p.frequency_penalty = *frequency_penalty;
  if (seed) p.seed = *seed;
  return p;
}

CLI::Option* add_text_file(CLI::App* cmd, std::string& file, const std::string& help) {
  return cmd->add_option("-f,--file", file, help)->check(CLI::ExistingFile);
}

void add_common_flags(CLI::App* cmd, CommonFlags& c, unsigned which, const char* precision_default) {
  if (which & (kModel | kModelOrBundled)) {
    auto* m = cmd->add_option("-m,--model", c.model,
                              which & kModel ? "HF checkpoint directory or .gguf file"
                                             : "HF checkpoint directory or .gguf file (default: the bundled brown-mini)")
                  ->check(CLI::ExistingPath);
    if (which & kModel) m->required();
  }
  if (which & kThreads)
    cmd->add_option("-t,--threads", c.threads, "threads (default 0 = all cores)")->check(CLI::NonNegativeNumber);
  if (which & kGenCtx) {
    c.ctx = 0;
    cmd->add_option("-c,--ctx-size,--ctx", c.ctx, "context size in tokens (default 0 = the model's)")->check(CLI::NonNegativeNumber);
  }
  if (which & kEvalCtx) {
    c.ctx = kDefaultEvalCtx;
    cmd->add_option("-c,--ctx-size", c.ctx, fmt::format("context per evaluated chunk in tokens (default {})", kDefaultEvalCtx))
        ->check(CLI::PositiveNumber);
  }
  if (which & kBatch)
    cmd->add_option("-b,--batch-size", c.batch, fmt::format("tokens per forward call (default {})", kDefaultBatch))
        ->check(CLI::PositiveNumber);
  if (which & kPredict)
    cmd->add_option("-n,--n-predict", c.n_predict,
                    fmt::format("tokens to generate per answer (default {}; -1 = until the context is full)", kDefaultPredict))
        ->check(CLI::Range(-1, 1 << 30));
  if (which & kSampling) {
    cmd->add_option("--temp", c.temp, "temperature (0 = greedy; default 0.8 or the model's)")->check(CLI::Range(0.0, 100.0));
    cmd->add_option("--top-k", c.top_k, "top-k (default 40 or the model's; 0 = off)")->check(CLI::NonNegativeNumber);
    cmd->add_option("--top-p", c.top_p, "top-p (default 0.95 or the model's; 1 = off)")->check(CLI::Range(0.0, 1.0));
    cmd->add_option("--min-p", c.min_p, "min-p (default 0.05; 0 = off)")->check(CLI::Range(0.0, 1.0));
    cmd->add_option("--repeat-penalty", c.repeat_penalty, "repetition penalty (default 1.0 = off)")->check(CLI::Range(0.0, 100.0));
    cmd->add_option("--repeat-last-n", c.repeat_last_n, "tokens the penalties look back (default 64; -1 = all)")->check(CLI::Range(-1, 1 << 30));
    cmd->add_option("--presence-penalty", c.presence_penalty, "presence penalty (default 0 = off)")->check(CLI::Range(-2.0, 2.0));
    cmd->add_option("--frequency-penalty", c.frequency_penalty, "frequency penalty (default 0 = off)")->check(CLI::Range(-2.0, 2.0));
    cmd->add_option("-s,--seed", c.seed, "RNG seed (default random)");
  }
  if (which & kForward) add_forward_flags(cmd, c.fwd, precision_default);
  else if (which & kPrecisionDevice) add_precision_device_flags(cmd, c.fwd, precision_default);
  if (which & (kForward | kPrecisionDevice)) {
    cmd->add_option("--flash-attn", c.flash_attn,
                    "llama.cpp's -fa on|off|auto, accepted: g4's attention is exact either way (the result does not depend on it)")
        ->expected(0, 1)
        ->check(CLI::IsMember({"", "on", "off", "auto"}));
    cmd->add_flag("--jinja", c.jinja, "accepted for llama.cpp habits: g4 always renders Gemma 4's own chat template");
  }
  // After parsing, before the command's work: threads, and the precision that runs.
  cmd->parse_complete_callback([&c, which] {
    set_threads(c.threads);
    if (which & (kForward | kPrecisionDevice)) resolve_precision(c.fwd);
  });
}

}  // namespace g4::cli
