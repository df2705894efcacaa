// The Vulkan plumbing under the backend: the loader opened with dlopen and the entry
// points it resolves, one device with one compute queue, buffers, compute pipelines
// (push descriptors + push constants, the SPIR-V embedded at build time), and one command
// buffer that collects dispatches until a sync point (submit() waits for it).
#pragma once
#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace g4::vk {

#define G4_VK_GLOBAL_FNS(X) X(vkCreateInstance) X(vkEnumerateInstanceVersion)
#define G4_VK_INSTANCE_FNS(X)                                                                                 \
  X(vkDestroyInstance) X(vkEnumeratePhysicalDevices) X(vkGetPhysicalDeviceProperties)                         \
  X(vkGetPhysicalDeviceProperties2) X(vkGetPhysicalDeviceMemoryProperties) X(vkGetPhysicalDeviceQueueFamilyProperties) \
  X(vkCreateDevice) X(vkGetDeviceProcAddr) X(vkEnumerateDeviceExtensionProperties)
#define G4_VK_DEVICE_FNS(X)                                                                                   \
  X(vkDestroyDevice) X(vkGetDeviceQueue) X(vkCreateBuffer) X(vkDestroyBuffer) X(vkGetBufferMemoryRequirements) \
  X(vkAllocateMemory) X(vkFreeMemory) X(vkBindBufferMemory) X(vkMapMemory) X(vkUnmapMemory)                    \
  X(vkCreateShaderModule) X(vkDestroyShaderModule) X(vkCreateDescriptorSetLayout) X(vkDestroyDescriptorSetLayout) \
  X(vkCreatePipelineLayout) X(vkDestroyPipelineLayout) X(vkCreateComputePipelines) X(vkDestroyPipeline)       \
  X(vkCreateCommandPool) X(vkDestroyCommandPool) X(vkAllocateCommandBuffers) X(vkBeginCommandBuffer)          \
  X(vkEndCommandBuffer) X(vkResetCommandBuffer) X(vkCmdBindPipeline) X(vkCmdPushConstants)                    \
  X(vkCmdPushDescriptorSetKHR) X(vkCmdDispatch) X(vkCmdCopyBuffer) X(vkCmdPipelineBarrier) X(vkCmdFillBuffer) \
  X(vkQueueSubmit) X(vkCreateFence) X(vkDestroyFence) X(vkWaitForFences) X(vkResetFences) X(vkDeviceWaitIdle)

struct Fns {
  PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr = nullptr;
#define G4_VK_DECL(f) PFN_##f f = nullptr;
  G4_VK_GLOBAL_FNS(G4_VK_DECL) G4_VK_INSTANCE_FNS(G4_VK_DECL) G4_VK_DEVICE_FNS(G4_VK_DECL)
#undef G4_VK_DECL
};

// An instance with its physical devices. Throws g4::Error naming the loader or the ICD
// search when Vulkan is not there.
class Instance {
 public:
  Instance();
  ~Instance();
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;
  Fns f;
  VkInstance inst = VK_NULL_HANDLE;
  std::vector<VkPhysicalDevice> phys;
  uint32_t api = VK_API_VERSION_1_1;

 private:
  void* lib_ = nullptr;
};

struct Buffer {
  VkBuffer buf = VK_NULL_HANDLE;
  VkDeviceMemory mem = VK_NULL_HANDLE;
  uint64_t size = 0;
  void* map = nullptr;  // host-visible buffers only
};

struct Pipeline {
  VkPipeline pipe = VK_NULL_HANDLE;
  VkPipelineLayout layout = VK_NULL_HANDLE;
  VkDescriptorSetLayout dsl = VK_NULL_HANDLE;
  int n_bindings = 0;
};

// The SPIR-V of shader `name` (generated spirv.cc); empty if unknown.
std::span<const uint32_t> spirv(const std::string& name);

class Context {
 public:
  Context(int device_index);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  std::string device_name;
  uint64_t max_buffer = 0;  // maxStorageBufferRange
  uint32_t offset_align = 16;

  // Device-local storage buffer (`what` names it in errors); host-visible one for transfers.
  Buffer device_buffer(uint64_t bytes, const std::string& what);
  Buffer host_buffer(uint64_t bytes, const std::string& what);
  // Freed now, or after the commands recorded so far have run.
  void release(Buffer& b, bool deferred = false);
  // Copies host bytes into a device buffer (staged through host memory when needed; waits).
  void upload_now(const Buffer& dst, uint64_t offset, const void* src, uint64_t bytes);

  const Pipeline& pipeline(const std::string& shader, int n_bindings, uint32_t push_bytes);
  // Records pipeline + buffers (whole) + push constants + dispatch of `groups` workgroups
  // (spread over x/y when more than 65535) and z; then a barrier.
  void dispatch(const Pipeline& p, std::initializer_list<VkBuffer> bufs, const void* push, uint32_t push_bytes,
                uint64_t groups, uint32_t z = 1);
  void copy(VkBuffer src, VkBuffer dst, std::span<const VkBufferCopy> regions);
  void fill_zero(VkBuffer dst, uint64_t offset, uint64_t bytes);
  // Submits what was recorded and waits; runs the deferred releases and `after_submit`.
  void submit();
  bool pending() const { return recorded_; }
  std::function<void()> after_submit;

 private:
  void begin();
  void barrier();
  uint32_t memory_type(uint32_t bits, VkMemoryPropertyFlags want, VkMemoryPropertyFlags avoid = 0) const;
  Buffer make_buffer(uint64_t bytes, VkBufferUsageFlags usage, VkMemoryPropertyFlags props, const std::string& what);

  Instance in_;
  Fns& f_;
  VkPhysicalDevice pd_ = VK_NULL_HANDLE;
  VkDevice dev_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t family_ = 0;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  VkPhysicalDeviceMemoryProperties mem_{};
  bool recorded_ = false, begun_ = false, unified_ = false;
  std::map<std::string, Pipeline> pipes_;
  std::vector<Buffer> deferred_;
  Buffer staging_;
};

}  // namespace g4::vk
