// The Vulkan backend's public face: which devices there are (`g4 devices`) and the
// backend itself (backends/vulkan/vulkan_backend.cc). The loader (libvulkan.so.1) is
// opened at run time, so a binary built with Vulkan still runs where there is none.
// Built without Vulkan headers or glslc (G4_VULKAN=OFF or not found), every function
// here says so (vulkan_stub.cc).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"

namespace g4 {

struct VulkanDeviceInfo {
  int index = 0;       // the N of --device vulkan:N
  std::string name;    // "NVIDIA H200", "llvmpipe (LLVM 15.0.6, 256 bits)"
  std::string type;    // discrete, integrated, virtual, cpu, other
  std::string driver;  // driver name and version
  std::string api;     // Vulkan version the device supports
  uint64_t memory = 0;  // bytes of device-local heaps
  bool usable = true;   // has what the backend needs (compute queue, push descriptors)
  std::string missing;  // what it lacks when !usable
};

// False when this binary was built without Vulkan.
bool vulkan_built();
// Every Vulkan device; throws g4::Error naming what was looked for (the loader, the ICD
// manifests) when there is no loader or no driver.
std::vector<VulkanDeviceInfo> vulkan_devices();
// The device `--device vulkan` picks: the first usable discrete GPU, else integrated, else any.
int vulkan_default_device(const std::vector<VulkanDeviceInfo>& devs);

std::unique_ptr<Backend> make_vulkan_backend(const Model& model, const BackendOptions& opt, int device);

}  // namespace g4
