#include "backends/backend.h"

#include <cstdio>
#include <mutex>

#include "backends/cpu_ref.h"
#include "backends/vulkan/vulkan.h"
#include "util/error.h"

namespace g4 {

std::unique_ptr<Backend> make_cpu_fast_backend(const Model& m, const BackendOptions& opt);
std::unique_ptr<Backend> make_cpu_bf16_backend(const Model& m, const BackendOptions& opt);

Precision parse_precision(const std::string& s) {
  if (s == "f64") return Precision::F64;
  if (s == "f32") return Precision::F32;
  if (s == "fast") return Precision::Fast;
  if (s == "bf16") return Precision::BF16;
  fail("unknown precision '{}' (use f64, f32, fast or bf16)", s);
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::F64: return "f64";
    case Precision::F32: return "f32";
    case Precision::Fast: return "fast";
    case Precision::BF16: return "bf16";
  }
  return "?";
}

namespace {
std::mutex g_device_mu;
std::string g_default_device = "cpu";
int g_default_ngl = -1;
}  // namespace

void set_default_device(const std::string& device, int n_gpu_layers) {
  std::lock_guard lk(g_device_mu);
  g_default_device = device;
  g_default_ngl = n_gpu_layers;
}

std::string resolve_device(const std::string& device, Precision precision) {
  if (device == "cpu") return device;
  if (device == "auto") {
    if (precision != Precision::F32 && precision != Precision::Fast) {
      std::fprintf(stderr, "g4: --device auto: precision %s runs on the CPU (the Vulkan backend computes in f32)\n",
                   precision_name(precision));
      return "cpu";
    }
    try {
      const auto devs = vulkan_devices();
      const int d = vulkan_default_device(devs);
      std::fprintf(stderr, "g4: --device auto: using Vulkan device %d (%s)\n", d, devs[d].name.c_str());
      return fmt::format("vulkan:{}", d);
    } catch (const Error& e) {
      std::fprintf(stderr, "g4: --device auto: no Vulkan device (%s); running on the CPU\n", e.what());
      return "cpu";
    }
  }
  if (device == "vulkan") {
    const auto devs = vulkan_devices();
    return fmt::format("vulkan:{}", vulkan_default_device(devs));
  }
  if (device.rfind("vulkan:", 0) == 0) {
    const std::string n = device.substr(7);
    if (n.empty() || n.size() > 3 || n.find_first_not_of("0123456789") != std::string::npos)
      fail("--device {}: expected vulkan:N with N a device number from `g4 devices`", device);
    return device;
  }
  fail("unknown device '{}' (use cpu, vulkan, vulkan:N or auto; `g4 devices` lists the Vulkan devices)", device);
}

std::unique_ptr<Backend> make_backend(const Model& model, const BackendOptions& opt) {
  if (opt.rounding.any() && opt.precision != Precision::F64 && opt.precision != Precision::F32)
    fail("engine-rounding emulation ({}) runs on the reference backends only: use --precision f64 or f32, not {}",
         engine_rounding_name(opt.rounding), precision_name(opt.precision));
  std::string device = opt.device;
  int ngl = opt.n_gpu_layers;
  if (device.empty()) {
    std::lock_guard lk(g_device_mu);
    device = g_default_device;
    ngl = g_default_ngl;
  }
  device = resolve_device(device, opt.precision);
  if (device != "cpu") {
    if (ngl >= 0 && ngl < model.spec.n_layers)
      fail("-ngl {}: partial offload is not supported yet (this model has {} layers); use -ngl {} (or more) for the "
           "whole model on the GPU, or -ngl 0 / --device cpu for the CPU",
           ngl, model.spec.n_layers, model.spec.n_layers);
    return make_vulkan_backend(model, opt, std::stoi(device.substr(7)));
  }
  switch (opt.precision) {
    case Precision::F64: return std::make_unique<RefBackend<double>>(model, opt);
    case Precision::F32: return std::make_unique<RefBackend<float>>(model, opt);
    case Precision::Fast: return make_cpu_fast_backend(model, opt);
    case Precision::BF16: return make_cpu_bf16_backend(model, opt);
  }
  fail("unknown precision");
}

}  // namespace g4
