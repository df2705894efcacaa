#include "backends/vulkan/vk_context.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "backends/vulkan/vulkan.h"
#include "util/error.h"

namespace g4 {
namespace vk {

namespace {

const char* result_name(VkResult r) {
  switch (r) {
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    default: return "VkResult error";
  }
}

void check(VkResult r, const char* what) {
  if (r != VK_SUCCESS) fail("Vulkan: {} failed: {} ({})", what, result_name(r), static_cast<int>(r));
}

std::string icd_search() {
  if (const char* e = std::getenv("VK_ICD_FILENAMES")) return fmt::format("VK_ICD_FILENAMES={}", e);
  if (const char* e = std::getenv("VK_DRIVER_FILES")) return fmt::format("VK_DRIVER_FILES={}", e);
  return "the ICD manifests in /usr/share/vulkan/icd.d and /etc/vulkan/icd.d";
}

std::string version_str(uint32_t v) {
  return fmt::format("{}.{}.{}", VK_API_VERSION_MAJOR(v), VK_API_VERSION_MINOR(v), VK_API_VERSION_PATCH(v));
}

// What the backend needs of a device; "" when it has it all.
std::string missing_features(const Fns& f, VkPhysicalDevice pd, uint32_t* family) {
  uint32_t n = 0;
  f.vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, nullptr);
  std::vector<VkQueueFamilyProperties> q(n);
  f.vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, q.data());
  bool compute = false;
  for (uint32_t i = 0; i < n && !compute; ++i)
    if (q[i].queueFlags & VK_QUEUE_COMPUTE_BIT) {
      compute = true;
      if (family) *family = i;
    }
  if (!compute) return "a compute queue";
  uint32_t ne = 0;
  f.vkEnumerateDeviceExtensionProperties(pd, nullptr, &ne, nullptr);
  std::vector<VkExtensionProperties> ext(ne);
  f.vkEnumerateDeviceExtensionProperties(pd, nullptr, &ne, ext.data());
  const bool push = std::any_of(ext.begin(), ext.end(), [](const VkExtensionProperties& e) {
    return std::strcmp(e.extensionName, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME) == 0;
  });
  if (!push) return VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME;
  return "";
}

}  // namespace

Instance::Instance() {
  for (const char* name : {"libvulkan.so.1", "libvulkan.so"}) {
    lib_ = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib_) break;
  }
  if (!lib_)
    fail("no Vulkan loader: dlopen(\"libvulkan.so.1\") failed ({}); install libvulkan1 and a driver "
         "(mesa-vulkan-drivers brings lavapipe, a Vulkan device on the CPU)", dlerror());
  f.vkGetInstanceProcAddr = reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib_, "vkGetInstanceProcAddr"));
  if (!f.vkGetInstanceProcAddr) fail("the Vulkan loader libvulkan.so.1 has no vkGetInstanceProcAddr");
#define G4_VK_LOAD(fn) f.fn = reinterpret_cast<PFN_##fn>(f.vkGetInstanceProcAddr(nullptr, #fn));
  G4_VK_GLOBAL_FNS(G4_VK_LOAD)
#undef G4_VK_LOAD
  if (f.vkEnumerateInstanceVersion) {
    uint32_t v = 0;
    if (f.vkEnumerateInstanceVersion(&v) == VK_SUCCESS && v >= VK_API_VERSION_1_2) api = VK_API_VERSION_1_2;
  }
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "g4";
  app.apiVersion = api;
  VkInstanceCreateInfo ci{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  ci.pApplicationInfo = &app;
  const VkResult r = f.vkCreateInstance(&ci, nullptr, &inst);
  if (r == VK_ERROR_INCOMPATIBLE_DRIVER)
    fail("no Vulkan driver: the loader found no ICD in {}; install mesa-vulkan-drivers (lavapipe) or your GPU's "
         "Vulkan driver", icd_search());
  check(r, "vkCreateInstance");
#define G4_VK_LOAD(fn) f.fn = reinterpret_cast<PFN_##fn>(f.vkGetInstanceProcAddr(inst, #fn));
  G4_VK_INSTANCE_FNS(G4_VK_LOAD)
#undef G4_VK_LOAD
  uint32_t n = 0;
  check(f.vkEnumeratePhysicalDevices(inst, &n, nullptr), "vkEnumeratePhysicalDevices");
  phys.resize(n);
  check(f.vkEnumeratePhysicalDevices(inst, &n, phys.data()), "vkEnumeratePhysicalDevices");
  if (n == 0)
    fail("no Vulkan device: the loader's drivers ({}) report none; install mesa-vulkan-drivers (lavapipe) or your "
         "GPU's Vulkan driver", icd_search());
}

Instance::~Instance() {
  if (inst) f.vkDestroyInstance(inst, nullptr);
  if (lib_) dlclose(lib_);
}

Context::Context(int device_index) : f_(in_.f) {
  if (device_index < 0 || device_index >= static_cast<int>(in_.phys.size()))
    fail("--device vulkan:{}: there are {} Vulkan devices (0..{}); `g4 devices` lists them", device_index,
         in_.phys.size(), in_.phys.size() - 1);
  pd_ = in_.phys[device_index];
  VkPhysicalDeviceProperties props;
  f_.vkGetPhysicalDeviceProperties(pd_, &props);
  device_name = props.deviceName;
  max_buffer = props.limits.maxStorageBufferRange;
  offset_align = static_cast<uint32_t>(std::max<VkDeviceSize>(props.limits.minStorageBufferOffsetAlignment, 4));
  const std::string missing = missing_features(f_, pd_, &family_);
  if (!missing.empty()) fail("Vulkan device {} ({}) lacks {}, which the backend needs", device_index, device_name, missing);
  f_.vkGetPhysicalDeviceMemoryProperties(pd_, &mem_);
  // Unified memory (lavapipe, integrated GPUs): device-local memory the host can map.
  for (uint32_t i = 0; i < mem_.memoryTypeCount; ++i) {
    const auto fl = mem_.memoryTypes[i].propertyFlags;
    if ((fl & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) && (fl & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) &&
        (fl & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT) && props.deviceType != VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU)
      unified_ = true;
  }

  const float prio = 1.0f;
  VkDeviceQueueCreateInfo qi{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  qi.queueFamilyIndex = family_;
  qi.queueCount = 1;
  qi.pQueuePriorities = &prio;
  const char* exts[] = {VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME};
  VkDeviceCreateInfo di{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  di.queueCreateInfoCount = 1;
  di.pQueueCreateInfos = &qi;
  di.enabledExtensionCount = 1;
  di.ppEnabledExtensionNames = exts;
  check(f_.vkCreateDevice(pd_, &di, nullptr, &dev_), "vkCreateDevice");
#define G4_VK_LOAD(fn) f_.fn = reinterpret_cast<PFN_##fn>(f_.vkGetDeviceProcAddr(dev_, #fn));
  G4_VK_DEVICE_FNS(G4_VK_LOAD)
#undef G4_VK_LOAD
  f_.vkGetDeviceQueue(dev_, family_, 0, &queue_);
  VkCommandPoolCreateInfo pi{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pi.queueFamilyIndex = family_;
  check(f_.vkCreateCommandPool(dev_, &pi, nullptr, &pool_), "vkCreateCommandPool");
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.commandPool = pool_;
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = 1;
  check(f_.vkAllocateCommandBuffers(dev_, &ai, &cmd_), "vkAllocateCommandBuffers");
  VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  check(f_.vkCreateFence(dev_, &fi, nullptr, &fence_), "vkCreateFence");
}

Context::~Context() {
  if (!dev_) return;
  f_.vkDeviceWaitIdle(dev_);
  for (auto& b : deferred_) release(b);
  release(staging_);
  for (auto& [_, p] : pipes_) {
    f_.vkDestroyPipeline(dev_, p.pipe, nullptr);
    f_.vkDestroyPipelineLayout(dev_, p.layout, nullptr);
    f_.vkDestroyDescriptorSetLayout(dev_, p.dsl, nullptr);
  }
  f_.vkDestroyFence(dev_, fence_, nullptr);
  f_.vkDestroyCommandPool(dev_, pool_, nullptr);
  f_.vkDestroyDevice(dev_, nullptr);
}

uint32_t Context::memory_type(uint32_t bits, VkMemoryPropertyFlags want, VkMemoryPropertyFlags avoid) const {
  for (uint32_t i = 0; i < mem_.memoryTypeCount; ++i)
    if ((bits & (1u << i)) && (mem_.memoryTypes[i].propertyFlags & want) == want && !(mem_.memoryTypes[i].propertyFlags & avoid))
      return i;
  for (uint32_t i = 0; i < mem_.memoryTypeCount; ++i)
    if ((bits & (1u << i)) && (mem_.memoryTypes[i].propertyFlags & want) == want) return i;
  return UINT32_MAX;
}

Buffer Context::make_buffer(uint64_t bytes, VkBufferUsageFlags usage, VkMemoryPropertyFlags props, const std::string& what) {
  Buffer b;
  b.size = std::max<uint64_t>(bytes, 16);
  VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bi.size = b.size;
  bi.usage = usage;
  bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  check(f_.vkCreateBuffer(dev_, &bi, nullptr, &b.buf), "vkCreateBuffer");
  VkMemoryRequirements req;
  f_.vkGetBufferMemoryRequirements(dev_, b.buf, &req);
  uint32_t type = memory_type(req.memoryTypeBits, props);
  // Fall back to plain device memory (no unified memory), then to uncached host memory.
  if (type == UINT32_MAX && (props & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT))
    type = memory_type(req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
  if (type == UINT32_MAX && (props & VK_MEMORY_PROPERTY_HOST_CACHED_BIT))
    type = memory_type(req.memoryTypeBits, props & ~VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
  if (type == UINT32_MAX) fail("Vulkan: no memory type for {} ({} bytes)", what, bytes);
  VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ai.allocationSize = req.size;
  ai.memoryTypeIndex = type;
  const VkResult r = f_.vkAllocateMemory(dev_, &ai, nullptr, &b.mem);
  if (r != VK_SUCCESS) {
    f_.vkDestroyBuffer(dev_, b.buf, nullptr);
    fail("Vulkan: cannot allocate {} bytes for {} on {}: {}", bytes, what, device_name, result_name(r));
  }
  check(f_.vkBindBufferMemory(dev_, b.buf, b.mem, 0), "vkBindBufferMemory");
  if (mem_.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)
    check(f_.vkMapMemory(dev_, b.mem, 0, VK_WHOLE_SIZE, 0, &b.map), "vkMapMemory");
  return b;
}

Buffer Context::device_buffer(uint64_t bytes, const std::string& what) {
  if (bytes > max_buffer)
    fail("{} needs a buffer of {} bytes; {} allows at most {} (maxStorageBufferRange)", what, bytes, device_name, max_buffer);
  const VkBufferUsageFlags usage =
      VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  return make_buffer(bytes, usage,
                     unified_ ? VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT
                              : VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT,
                     what);
}

Buffer Context::host_buffer(uint64_t bytes, const std::string& what) {
  const VkBufferUsageFlags usage =
      VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  return make_buffer(bytes, usage,
                     VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT | VK_MEMORY_PROPERTY_HOST_CACHED_BIT,
                     what);
}

void Context::release(Buffer& b, bool deferred) {
  if (!b.buf) return;
  if (deferred && recorded_) {
    deferred_.push_back(b);
  } else {
    if (b.map) f_.vkUnmapMemory(dev_, b.mem);
    f_.vkDestroyBuffer(dev_, b.buf, nullptr);
    f_.vkFreeMemory(dev_, b.mem, nullptr);
  }
  b = Buffer{};
}

void Context::upload_now(const Buffer& dst, uint64_t offset, const void* src, uint64_t bytes) {
  if (dst.map) {
    if (recorded_) submit();  // commands in flight may read the old bytes
    std::memcpy(static_cast<char*>(dst.map) + offset, src, bytes);
    return;
  }
  constexpr uint64_t kChunk = 64ull << 20;
  if (!staging_.buf) staging_ = host_buffer(kChunk, "the upload staging buffer");
  for (uint64_t done = 0; done < bytes; done += kChunk) {
    const uint64_t n = std::min(kChunk, bytes - done);
    if (recorded_) submit();
    std::memcpy(staging_.map, static_cast<const char*>(src) + done, n);
    const VkBufferCopy r{0, offset + done, n};
    copy(staging_.buf, dst.buf, {&r, 1});
    submit();
  }
}

const Pipeline& Context::pipeline(const std::string& shader, int n_bindings, uint32_t push_bytes) {
  auto it = pipes_.find(shader);
  if (it != pipes_.end()) return it->second;
  const auto code = spirv(shader);
  if (code.empty()) fail("internal: no SPIR-V for shader '{}'", shader);
  Pipeline p;
  p.n_bindings = n_bindings;
  std::vector<VkDescriptorSetLayoutBinding> b(static_cast<size_t>(n_bindings));
  for (int i = 0; i < n_bindings; ++i)
    b[i] = {static_cast<uint32_t>(i), VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
  VkDescriptorSetLayoutCreateInfo dl{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  dl.flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR;
  dl.bindingCount = static_cast<uint32_t>(n_bindings);
  dl.pBindings = b.data();
  check(f_.vkCreateDescriptorSetLayout(dev_, &dl, nullptr, &p.dsl), "vkCreateDescriptorSetLayout");
  VkPushConstantRange pr{VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes};
  VkPipelineLayoutCreateInfo pl{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  pl.setLayoutCount = 1;
  pl.pSetLayouts = &p.dsl;
  pl.pushConstantRangeCount = 1;
  pl.pPushConstantRanges = &pr;
  check(f_.vkCreatePipelineLayout(dev_, &pl, nullptr, &p.layout), "vkCreatePipelineLayout");
  VkShaderModuleCreateInfo si{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  si.codeSize = code.size() * 4;
  si.pCode = code.data();
  VkShaderModule mod;
  check(f_.vkCreateShaderModule(dev_, &si, nullptr, &mod), "vkCreateShaderModule");
  VkComputePipelineCreateInfo ci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
  ci.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO};
  ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  ci.stage.module = mod;
  ci.stage.pName = "main";
  ci.layout = p.layout;
  const VkResult r = f_.vkCreateComputePipelines(dev_, VK_NULL_HANDLE, 1, &ci, nullptr, &p.pipe);
  f_.vkDestroyShaderModule(dev_, mod, nullptr);
  check(r, "vkCreateComputePipelines");
  return pipes_.emplace(shader, p).first->second;
}

void Context::begin() {
  if (begun_) return;
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  check(f_.vkBeginCommandBuffer(cmd_, &bi), "vkBeginCommandBuffer");
  begun_ = true;
}

// Every command sees the writes of the ones before it (compute and transfer alike).
void Context::barrier() {
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                     VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_HOST_READ_BIT;
  const VkPipelineStageFlags st = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  f_.vkCmdPipelineBarrier(cmd_, st, st | VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

void Context::dispatch(const Pipeline& p, std::initializer_list<VkBuffer> bufs, const void* push, uint32_t push_bytes,
                       uint64_t groups, uint32_t z) {
  if (groups == 0 || z == 0) return;
  if (static_cast<int>(bufs.size()) != p.n_bindings) fail("internal: pipeline wants {} buffers, got {}", p.n_bindings, bufs.size());
  begin();
  f_.vkCmdBindPipeline(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p.pipe);
  VkDescriptorBufferInfo info[8];
  VkWriteDescriptorSet w[8];
  int i = 0;
  for (VkBuffer b : bufs) {
    info[i] = {b, 0, VK_WHOLE_SIZE};
    w[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    w[i].dstBinding = static_cast<uint32_t>(i);
    w[i].descriptorCount = 1;
    w[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    w[i].pBufferInfo = &info[i];
    ++i;
  }
  f_.vkCmdPushDescriptorSetKHR(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout, 0, static_cast<uint32_t>(i), w);
  f_.vkCmdPushConstants(cmd_, p.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes, push);
  constexpr uint64_t kMaxX = 65535;
  const uint64_t x = std::min(groups, kMaxX), y = (groups + x - 1) / x;
  if (y > kMaxX) fail("internal: dispatch of {} workgroups is too large", groups);
  f_.vkCmdDispatch(cmd_, static_cast<uint32_t>(x), static_cast<uint32_t>(y), z);
  barrier();
  recorded_ = true;
}

void Context::copy(VkBuffer src, VkBuffer dst, std::span<const VkBufferCopy> regions) {
  if (regions.empty()) return;
  begin();
  f_.vkCmdCopyBuffer(cmd_, src, dst, static_cast<uint32_t>(regions.size()), regions.data());
  barrier();
  recorded_ = true;
}

void Context::fill_zero(VkBuffer dst, uint64_t offset, uint64_t bytes) {
  begin();
  f_.vkCmdFillBuffer(cmd_, dst, offset, bytes, 0);
  barrier();
  recorded_ = true;
}

void Context::submit() {
  if (begun_) {
    check(f_.vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
    VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.commandBufferCount = 1;
    si.pCommandBuffers = &cmd_;
    check(f_.vkQueueSubmit(queue_, 1, &si, fence_), "vkQueueSubmit");
    check(f_.vkWaitForFences(dev_, 1, &fence_, VK_TRUE, UINT64_MAX), "vkWaitForFences");
    check(f_.vkResetFences(dev_, 1, &fence_), "vkResetFences");
    check(f_.vkResetCommandBuffer(cmd_, 0), "vkResetCommandBuffer");
    begun_ = false;
  }
  recorded_ = false;
  for (auto& b : deferred_) release(b);
  deferred_.clear();
  if (after_submit) after_submit();
}

}  // namespace vk

bool vulkan_built() { return true; }

std::vector<VulkanDeviceInfo> vulkan_devices() {
  vk::Instance in;
  std::vector<VulkanDeviceInfo> out;
  for (size_t i = 0; i < in.phys.size(); ++i) {
    VulkanDeviceInfo d;
    d.index = static_cast<int>(i);
    VkPhysicalDeviceProperties p;
    in.f.vkGetPhysicalDeviceProperties(in.phys[i], &p);
    d.name = p.deviceName;
    switch (p.deviceType) {
      case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: d.type = "discrete"; break;
      case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: d.type = "integrated"; break;
      case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: d.type = "virtual"; break;
      case VK_PHYSICAL_DEVICE_TYPE_CPU: d.type = "cpu"; break;
      default: d.type = "other";
    }
    d.api = vk::version_str(p.apiVersion);
    d.driver = fmt::format("version {:#x}", p.driverVersion);
    if (in.api >= VK_API_VERSION_1_2 && p.apiVersion >= VK_API_VERSION_1_2 && in.f.vkGetPhysicalDeviceProperties2) {
      VkPhysicalDeviceDriverProperties dp{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
      VkPhysicalDeviceProperties2 p2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
      p2.pNext = &dp;
      in.f.vkGetPhysicalDeviceProperties2(in.phys[i], &p2);
      d.driver = fmt::format("{} {}", dp.driverName, dp.driverInfo);
    }
    VkPhysicalDeviceMemoryProperties mp;
    in.f.vkGetPhysicalDeviceMemoryProperties(in.phys[i], &mp);
    for (uint32_t h = 0; h < mp.memoryHeapCount; ++h)
      if (mp.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) d.memory += mp.memoryHeaps[h].size;
    d.missing = vk::missing_features(in.f, in.phys[i], nullptr);
    d.usable = d.missing.empty();
    out.push_back(d);
  }
  return out;
}

int vulkan_default_device(const std::vector<VulkanDeviceInfo>& devs) {
  for (const char* type : {"discrete", "integrated", "virtual", "cpu", "other"})
    for (const auto& d : devs)
      if (d.usable && d.type == type) return d.index;
  fail("no usable Vulkan device: {} found, none has {}", devs.size(), devs.empty() ? "" : devs[0].missing);
}

}  // namespace g4
