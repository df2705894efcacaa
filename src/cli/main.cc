// g4: one binary, subcommands. Exit codes: 0 success, 1 an error while working (a
// g4::Error printed as one line), 2 a usage error (unknown flag, bad value, missing
// argument), as documented in the README.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <vector>

#include <fmt/format.h>
#include <omp.h>

#include "cli/commands.h"
#include "cli/common_flags.h"
#include "kernels/fast.h"
#include "util/error.h"

namespace g4 {
// build_info.cc, generated at build time (cmake/version.cmake).
const char* build_git_hash();
const char* build_type();
}  // namespace g4

std::string g4::cli::version_string() {
  return fmt::format("g4 {} (git {}, {} build)", G4_VERSION, g4::build_git_hash(), g4::build_type());
}

int main(int argc, char** argv) {
  std::vector<char*> args(argv, argv + argc);
  for (auto& a : args)
    if (const char* to = g4::cli::llama_dash_alias(a)) a = const_cast<char*>(to);
  argv = args.data();
  // A llama.cpp flag g4 deliberately does not take: why, before any work (usage error).
  if (const std::string why = g4::cli::llama_difference(argc, argv); !why.empty()) {
    std::fprintf(stderr, "g4: %s\n", why.c_str());
    return 2;
  }
  CLI::App app{"g4: a self-checking inference engine for Gemma 4 text models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", [] {
    return fmt::format("{}\nSIMD kernels: {} (available: {})\nOpenMP threads: {}", g4::cli::version_string(),
                       g4::fast_kernel_isa(), fmt::join(g4::fast_available_isas(), ", "), omp_get_max_threads());
  });
  g4::cli::register_inspect(app);
  g4::cli::register_logits(app);
  g4::cli::register_tokenize(app);
  g4::cli::register_detokenize(app);
  g4::cli::register_perplexity(app);
  g4::cli::register_quantize(app);
  g4::cli::register_run(app);
  g4::cli::register_serve(app);
  g4::cli::register_compare(app);
  g4::cli::register_forensics(app);
  g4::cli::register_grade(app);
  g4::cli::register_bench(app);
  g4::cli::register_synth(app);
  g4::cli::register_ladder(app);
  g4::cli::register_kv_study(app);
  g4::cli::register_niah(app);
  g4::cli::register_divergence(app);
  g4::cli::register_devices(app);
  g4::cli::register_imatrix(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" with code 0; every other one is a usage error.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const g4::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "g4: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "g4: error: out of memory\n");
    return 1;
  }
  return 0;
}
