// `g4 devices`: the compute devices this binary can use (--device).
#include <cstdio>

#include "backends/vulkan/vulkan.h"
#include "cli/commands.h"
#include "util/error.h"
#include "util/json.h"

namespace g4::cli {

void register_devices(CLI::App& app) {
  auto json_out = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("devices", "List the compute devices (--device cpu, vulkan:N)");
  cmd->add_flag("--json", *json_out, "machine-readable output");
  cmd->final_callback([json_out] {
    std::vector<VulkanDeviceInfo> devs;
    std::string why;
    if (!vulkan_built()) why = "this g4 was built without Vulkan";
    else {
      try {
        devs = vulkan_devices();
      } catch (const Error& e) {
        why = e.what();
      }
    }
    if (*json_out) {
      json j{{"cpu", true}, {"vulkan_built", vulkan_built()}, {"vulkan", json::array()}};
      for (const auto& d : devs)
        j["vulkan"].push_back({{"index", d.index}, {"name", d.name}, {"type", d.type}, {"driver", d.driver}, {"api", d.api},
                               {"memory_bytes", d.memory}, {"usable", d.usable}, {"missing", d.missing}});
      if (!why.empty()) j["vulkan_error"] = why;
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    std::printf("cpu          the CPU (--device cpu; --precision f64, f32, fast, bf16)\n");
    if (!why.empty()) {
      std::printf("vulkan       none: %s\n", why.c_str());
      return;
    }
    for (const auto& d : devs) {
      std::printf("vulkan:%-5d %s (%s, %.1f GiB, Vulkan %s, driver %s)%s\n", d.index, d.name.c_str(), d.type.c_str(),
                  d.memory / 1073741824.0, d.api.c_str(), d.driver.c_str(),
                  d.usable ? "" : (" - not usable: lacks " + d.missing).c_str());
    }
  });
}

}  // namespace g4::cli
