#include "backends/backend.h"

#include "backends/cpu_ref.h"
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

std::unique_ptr<Backend> make_backend(const Model& model, const BackendOptions& opt) {
  if (opt.rounding.any() && opt.precision != Precision::F64 && opt.precision != Precision::F32)
    fail("engine-rounding emulation ({}) runs on the reference backends only: use --precision f64 or f32, not {}",
         engine_rounding_name(opt.rounding), precision_name(opt.precision));
  switch (opt.precision) {
    case Precision::F64: return std::make_unique<RefBackend<double>>(model, opt);
    case Precision::F32: return std::make_unique<RefBackend<float>>(model, opt);
    case Precision::Fast: return make_cpu_fast_backend(model, opt);
    case Precision::BF16: return make_cpu_bf16_backend(model, opt);
  }
  fail("unknown precision");
}

}  // namespace g4
