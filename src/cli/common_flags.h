// The options every command that runs a model shares, declared once: the same names
// (g4's and llama.cpp's spellings), the same defaults and the same help text on every
// command that takes them (`--help` prints the defaults). A command picks the groups
// that apply to it; what is specific to one command stays in its own file.
#pragma once
#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "cli/forward_flags.h"
#include "runtime/sampler.h"

namespace g4::cli {

// One default per flag, the same on every command.
inline constexpr int kDefaultThreads = 0;   // -t: all cores
inline constexpr int kDefaultBatch = 512;   // -b: tokens per forward call / per serve step
inline constexpr int kDefaultPredict = 256; // -n: tokens generated per answer
inline constexpr int kDefaultEvalCtx = 512; // -c of the evaluation commands: tokens per chunk
// -c of the generation commands (run, serve): 0 = the model's context.
// --precision: fast everywhere, except on the reference tools (logits, compare,
// divergence), whose job is the float64 reference; they say so in --help.
inline constexpr const char* kDefaultPrecision = "fast";
inline constexpr const char* kReferencePrecision = "f64";

enum CommonGroup : unsigned {
  kModel = 1u << 0,          // -m/--model, required
  kModelOrBundled = 1u << 1, // -m/--model, default: the bundled brown-mini
  kThreads = 1u << 2,        // -t/--threads
  kGenCtx = 1u << 3,         // -c/--ctx-size, default 0 = the model's
  kEvalCtx = 1u << 4,        // -c/--ctx-size, default kDefaultEvalCtx tokens per chunk
  kBatch = 1u << 5,          // -b/--batch-size
  kPredict = 1u << 6,        // -n/--n-predict
  kSampling = 1u << 7,       // --temp --top-k --top-p --min-p --repeat-penalty --repeat-last-n
                             // --presence-penalty --frequency-penalty -s/--seed
  kForward = 1u << 8,        // --precision, -ctk/-ctv, --emulate, --device/-ngl, -fa, --jinja
  kPrecisionDevice = 1u << 9 // --precision, --device/-ngl, -fa, --jinja (tools that build their own forward)
};

struct CommonFlags {
  std::string model;
  int threads = kDefaultThreads;
  int64_t ctx = 0;
  int batch = kDefaultBatch;
  int n_predict = kDefaultPredict;
  std::optional<float> temp, top_p, min_p, repeat_penalty, presence_penalty, frequency_penalty;
  std::optional<int> top_k, repeat_last_n;
  std::optional<uint64_t> seed;
  ForwardFlags fwd;
  std::string flash_attn = "auto";  // accepted for llama.cpp habits; g4's attention is exact either way
  bool jinja = false;               // accepted; g4 always renders Gemma 4's own template
  // The model's sampling defaults (generation_config) with the flags given on top.
  SamplingParams sampling(SamplingParams model_defaults) const;
};

// Declares the groups in `which` on `cmd`; with a precision group, `precision_default` is
// kDefaultPrecision or kReferencePrecision. After parsing (before the command's work) it
// checks the values, sets the thread count and resolves the precision.
void add_common_flags(CLI::App* cmd, CommonFlags& c, unsigned which, const char* precision_default = kDefaultPrecision);

// -f/--file naming a text file that must exist (checked before any work).
CLI::Option* add_text_file(CLI::App* cmd, std::string& file, const std::string& help);

// llama.cpp flags g4 deliberately does not take: if one is in argv, returns the message
// ("--mlock: g4 does not ... because ...") to print before exiting 2; empty otherwise.
std::string llama_difference(int argc, char** argv);

// llama.cpp's multi-letter single-dash spellings (-ngl, -ctk, -fa, -cnv, ...), which CLI11
// cannot declare: rewritten to their long names before parsing. nullptr when not one.
const char* llama_dash_alias(const char* arg);

}  // namespace g4::cli
