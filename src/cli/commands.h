// Subcommand registration; each lives in its own file under src/cli/.
#pragma once
#include <CLI/CLI.hpp>

namespace g4::cli {

void register_inspect(CLI::App& app);
void register_logits(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_detokenize(CLI::App& app);
void register_perplexity(CLI::App& app);
void register_quantize(CLI::App& app);
void register_run(CLI::App& app);
void register_serve(CLI::App& app);
void register_compare(CLI::App& app);
void register_forensics(CLI::App& app);
void register_grade(CLI::App& app);
void register_bench(CLI::App& app);
void register_synth(CLI::App& app);
void register_ladder(CLI::App& app);
void register_kv_study(CLI::App& app);
void register_niah(CLI::App& app);
void register_divergence(CLI::App& app);
void register_devices(CLI::App& app);
void register_imatrix(CLI::App& app);

// -t N (0 = all cores).
void set_threads(int n);

// "g4 VERSION (git HASH, TYPE build)": what --version prints first, and what reports record.
std::string version_string();

}  // namespace g4::cli
