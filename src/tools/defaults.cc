#include "tools/defaults.h"

#include <filesystem>

#include "util/json.h"
#include "util/mapped_file.h"

#ifndef G4_SOURCE_MODEL_DIR
#define G4_SOURCE_MODEL_DIR "models/brown-mini"
#endif

namespace g4 {

std::string default_model_path() {
  if (std::filesystem::exists("models/brown-mini/config.json")) return "models/brown-mini";
  return G4_SOURCE_MODEL_DIR;
}

SamplingParams model_sampling_defaults(const Model& m) {
  SamplingParams p;
  if (m.gguf) {
    if (auto v = m.gguf->get_float("general.sampling.temp")) p.temp = static_cast<float>(*v);
    if (auto v = m.gguf->get_int("general.sampling.top_k")) p.top_k = static_cast<int>(*v);
    if (auto v = m.gguf->get_float("general.sampling.top_p")) p.top_p = static_cast<float>(*v);
    return p;
  }
  const auto path = std::filesystem::path(m.path) / "generation_config.json";
  if (!std::filesystem::exists(path)) return p;
  json g = parse_json_strict(read_text_file(path.string()), path.string());
  if (!g.is_object()) return p;
  if (g.contains("temperature") && g["temperature"].is_number()) p.temp = g["temperature"].get<float>();
  if (g.contains("top_k") && g["top_k"].is_number_integer()) p.top_k = g["top_k"].get<int>();
  if (g.contains("top_p") && g["top_p"].is_number()) p.top_p = g["top_p"].get<float>();
  if (g.contains("do_sample") && g["do_sample"].is_boolean() && !g["do_sample"].get<bool>()) p.temp = 0;
  return p;
}

}  // namespace g4
