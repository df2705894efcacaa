#include "cli/forward_flags.h"

#include <fmt/format.h>

#include "util/error.h"

namespace g4::cli {

namespace {
// The precision actually used: an f64 default becomes f32 on a GPU device.
Precision device_precision(const DeviceFlags& d, Precision p, const CLI::Option* precision_opt) {
  if (d.gpu_requested() && p == Precision::F64 && (!precision_opt || precision_opt->count() == 0)) return Precision::F32;
  return p;
}
}  // namespace

// An explicit GPU (auto keeps a default f64 on the CPU, and says so).
bool DeviceFlags::gpu_requested() const {
  if (ngl == 0 || device == "auto") return false;
  return device != "cpu" || ngl > 0;
}

std::string DeviceFlags::resolve(Precision p) const {
  if (ngl == 0) {
    if (device_opt && device_opt->count() && device != "cpu")
      fail("-ngl 0 puts no layer on the GPU, but --device {} asks for one: drop one of them", device);
    return "cpu";
  }
  // -ngl N > 0 without --device: the first Vulkan device.
  const std::string want = ngl > 0 && device == "cpu" && !(device_opt && device_opt->count()) ? "vulkan" : device;
  return resolve_device(want, p);
}

void add_device_flags(CLI::App* cmd, DeviceFlags& d) {
  d.device_opt = cmd->add_option("--device", d.device,
                                 "where the forward runs: cpu (default), vulkan (the first GPU), vulkan:N (`g4 devices` "
                                 "lists N) or auto (Vulkan if there is a device, else the CPU)");
  d.ngl_opt = cmd->add_option("--n-gpu-layers", d.ngl,
                              "llama.cpp's -ngl: layers on the GPU; all of them (any N >= the layer count) or 0 "
                              "(partial offload is not supported yet)");
}

Precision apply_device_flags(const DeviceFlags& d, Precision p, const CLI::Option* precision_opt, std::string* resolved) {
  const Precision q = device_precision(d, p, precision_opt);
  const std::string dev = d.resolve(q);
  if (resolved) *resolved = dev;
  set_default_device(dev, dev == "cpu" ? -1 : d.ngl);
  return q;
}

ForwardOptions ForwardFlags::options() const {
  ForwardOptions fo{device_precision(dev, parse_precision(precision), precision_opt)};
  fo.cache_type_k = parse_kv_type(cache_k);
  fo.cache_type_v = parse_kv_type(cache_v);
  fo.emulate = parse_engine_rounding(emulate);
  fo.device = dev.resolve(fo.precision);
  if (fo.device != "cpu") fo.n_gpu_layers = dev.ngl;
  return fo;
}

void add_precision_device_flags(CLI::App* cmd, ForwardFlags& f, const std::string& default_precision) {
  f.precision = default_precision;
  f.precision_opt =
      cmd->add_option("--precision", f.precision,
                      fmt::format("f64 (reference), f32, fast (SIMD kernels) or bf16 (HF's bf16 forward emulated); default {}{} "
                                  "(f32 with --device vulkan)",
                                  default_precision, default_precision == "f64" ? ", as this command computes the reference" : ""))
          ->check(CLI::IsMember(kPrecisionNames));
  add_device_flags(cmd, f.dev);
}

void resolve_precision(ForwardFlags& f) {
  f.precision = precision_name(device_precision(f.dev, parse_precision(f.precision), f.precision_opt));
}

void add_forward_flags(CLI::App* cmd, ForwardFlags& f, const std::string& default_precision) {
  add_precision_device_flags(cmd, f, default_precision);
  std::vector<std::string> kv;
  for (KvType t : all_kv_types()) kv.push_back(kv_type_name(t));
  cmd->add_option("--cache-type-k", f.cache_k, fmt::format("KV cache type for K: {} (default f32)", fmt::join(kv, ", ")))
      ->check(CLI::IsMember(kv));
  cmd->add_option("--cache-type-v", f.cache_v, "KV cache type for V (default f32; -ctk/-ctv also work)")->check(CLI::IsMember(kv));
  cmd->add_option("--emulate", f.emulate,
                  fmt::format("reproduce another engine's roundings in the f64/f32 reference, a comma-separated list of {}",
                              fmt::join(engine_rounding_items(), ", ")));
  // The precision the command reports is the one that runs.
  cmd->parse_complete_callback([&f] { resolve_precision(f); });
}

}  // namespace g4::cli
