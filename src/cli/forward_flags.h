// The flags that choose how the forward runs, the same on every command that runs one:
// --precision, --cache-type-k/-ctk, --cache-type-v/-ctv (llama.cpp's spellings).
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "runtime/session.h"

namespace g4::cli {

// Every --precision value.
inline const std::vector<std::string> kPrecisionNames{"f64", "f32", "fast", "bf16"};

struct ForwardFlags {
  std::string precision;
  std::string cache_k = "f32", cache_v = "f32";
  std::string emulate;  // engine roundings (backends/emulation.h)
  ForwardOptions options() const;  // throws on an unknown value
};

void add_forward_flags(CLI::App* cmd, ForwardFlags& f, const std::string& default_precision);

}  // namespace g4::cli
