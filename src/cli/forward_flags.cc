#include "cli/forward_flags.h"

#include <fmt/format.h>

namespace g4::cli {

ForwardOptions ForwardFlags::options() const {
  ForwardOptions fo{parse_precision(precision)};
  fo.cache_type_k = parse_kv_type(cache_k);
  fo.cache_type_v = parse_kv_type(cache_v);
  fo.emulate = parse_engine_rounding(emulate);
  return fo;
}

void add_forward_flags(CLI::App* cmd, ForwardFlags& f, const std::string& default_precision) {
  f.precision = default_precision;
  std::vector<std::string> kv;
  for (KvType t : all_kv_types()) kv.push_back(kv_type_name(t));
  cmd->add_option("--precision", f.precision,
                  fmt::format("f64 (reference), f32, fast (SIMD kernels) or bf16 (HF's bf16 forward emulated); default {}",
                              default_precision))
      ->check(CLI::IsMember(kPrecisionNames));
  cmd->add_option("--cache-type-k", f.cache_k, fmt::format("KV cache type for K: {} (default f32)", fmt::join(kv, ", ")))
      ->check(CLI::IsMember(kv));
  cmd->add_option("--cache-type-v", f.cache_v, "KV cache type for V (default f32; -ctk/-ctv also work)")->check(CLI::IsMember(kv));
  cmd->add_option("--emulate", f.emulate,
                  fmt::format("reproduce another engine's roundings in the f64/f32 reference, a comma-separated list of {}",
                              fmt::join(engine_rounding_items(), ", ")));
}

}  // namespace g4::cli
