// The Vulkan entry points of a build without Vulkan (no headers or glslc at configure time).
#include "backends/vulkan/vulkan.h"
#include "util/error.h"

namespace g4 {

namespace {
[[noreturn]] void not_built() {
  fail("this g4 was built without Vulkan (CMake found no Vulkan headers or glslc): install libvulkan-dev, glslc "
       "and mesa-vulkan-drivers (scripts/setup.sh does), then reconfigure with -DG4_VULKAN=ON");
}
}  // namespace

bool vulkan_built() { return false; }
std::vector<VulkanDeviceInfo> vulkan_devices() { not_built(); }
int vulkan_default_device(const std::vector<VulkanDeviceInfo>&) { not_built(); }
std::unique_ptr<Backend> make_vulkan_backend(const Model&, const BackendOptions&, int) { not_built(); }

}  // namespace g4
