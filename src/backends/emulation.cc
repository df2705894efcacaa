#include "backends/emulation.h"

#include <sstream>

#include "util/error.h"

namespace g4 {

std::vector<std::string> engine_rounding_items() {
  return {"gelu-f16", "kv-f16", "q-f16", "probs-f16", "flash-f16", "llama.cpp", "llama.cpp-fa", "none"};
}

EngineRounding parse_engine_rounding(const std::string& list) {
  EngineRounding r;
  std::stringstream ss(list);
  std::string item;
  auto set_attn = [&](EngineRounding::Attn a) {
    if (r.attn != EngineRounding::Attn::Exact && r.attn != a)
      fail("--emulate '{}': probs-f16 (no flash attention) and flash-f16 exclude each other", list);
    r.attn = a;
  };
  while (std::getline(ss, item, ',')) {
    if (item.empty() || item == "none") continue;
    if (item == "gelu-f16") r.gelu_f16 = true;
    else if (item == "kv-f16") r.kv_f16 = true;
    else if (item == "q-f16") r.q_f16 = true;
    else if (item == "probs-f16") set_attn(EngineRounding::Attn::F16Probs);
    else if (item == "flash-f16") set_attn(EngineRounding::Attn::F16Flash);
    else if (item == "llama.cpp" || item == "llama.cpp-fa") {
      r.gelu_f16 = r.kv_f16 = r.q_f16 = true;
      set_attn(item == "llama.cpp" ? EngineRounding::Attn::F16Probs : EngineRounding::Attn::F16Flash);
    } else {
      std::string names;
      for (const auto& n : engine_rounding_items()) names += (names.empty() ? "" : ", ") + n;
      fail("--emulate: unknown engine rounding '{}' (use a comma-separated list of {})", item, names);
    }
  }
  return r;
}

std::string engine_rounding_name(const EngineRounding& r) {
  std::string s;
  auto add = [&](bool on, const char* n) {
    if (on) s += (s.empty() ? "" : ",") + std::string(n);
  };
  add(r.gelu_f16, "gelu-f16");
  add(r.kv_f16, "kv-f16");
  add(r.q_f16, "q-f16");
  add(r.attn == EngineRounding::Attn::F16Probs, "probs-f16");
  add(r.attn == EngineRounding::Attn::F16Flash, "flash-f16");
  return s.empty() ? "none" : s;
}

}  // namespace g4
