// The flags that choose how the forward runs, the same on every command that runs one:
// --precision, --cache-type-k/-ctk, --cache-type-v/-ctv (llama.cpp's spellings), and
// where it runs: --device cpu|vulkan|vulkan:N|auto, -ngl/--n-gpu-layers N.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "runtime/session.h"

namespace g4::cli {

// Every --precision value.
inline const std::vector<std::string> kPrecisionNames{"f64", "f32", "fast", "bf16"};

// --device and -ngl. With a GPU device and no explicit --precision, f32 replaces a
// default of f64 (the Vulkan backend computes in float32).
struct DeviceFlags {
  std::string device = "cpu";
  int ngl = -1;
  CLI::Option *device_opt = nullptr, *ngl_opt = nullptr;
  // "cpu" or "vulkan:N" (auto resolved and reported on stderr); throws when a named
  // device is not there.
  std::string resolve(Precision p) const;
  bool gpu_requested() const;
};
void add_device_flags(CLI::App* cmd, DeviceFlags& d);
// For commands whose tools build their own ForwardOptions (serve, bench, compare): resolves
// the flags and makes them the process default (set_default_device). Returns the precision
// to use (f32 instead of the default f64 on a GPU when --precision was not given) and the
// resolved device in `resolved`.
Precision apply_device_flags(const DeviceFlags& d, Precision p, const CLI::Option* precision_opt,
                             std::string* resolved = nullptr);

struct ForwardFlags {
  std::string precision;
  std::string cache_k = "f32", cache_v = "f32";
  std::string emulate;  // engine roundings (backends/emulation.h)
  DeviceFlags dev;
  CLI::Option* precision_opt = nullptr;
  ForwardOptions options() const;  // throws on an unknown value
};

void add_forward_flags(CLI::App* cmd, ForwardFlags& f, const std::string& default_precision);
// Only --precision and --device/-ngl (tools that build their own ForwardOptions).
void add_precision_device_flags(CLI::App* cmd, ForwardFlags& f, const std::string& default_precision);
// After parsing: the precision that runs (an f64 default becomes f32 on a GPU).
void resolve_precision(ForwardFlags& f);

}  // namespace g4::cli
