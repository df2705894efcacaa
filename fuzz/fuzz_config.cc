// libFuzzer harness: strict JSON + HF config.json -> model description.
#include <cstdint>
#include <string_view>

#include "model/config_hf.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto j = g4::parse_json_strict(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz config.json");
    g4::spec_from_hf_config(j, "fuzz config.json");
  } catch (const g4::Error&) {
  }
  return 0;
}
