#include "backends/backend.h"

#include "backends/cpu_ref.h"
#include "util/error.h"

namespace g4 {

std::unique_ptr<Backend> make_cpu_fast_backend(const Model& m, const BackendOptions& opt);

Precision parse_precision(const std::string& s) {
  if (s == "f64") return Precision::F64;
  if (s == "f32") return Precision::F32;
  if (s == "fast") return Precision::Fast;
  fail("unknown precision '{}' (use f64, f32 or fast)", s);
}

const char* precision_name(Precision p) { return p == Precision::F64 ? "f64" : p == Precision::F32 ? "f32" : "fast"; }

std::unique_ptr<Backend> make_backend(const Model& model, const BackendOptions& opt) {
  switch (opt.precision) {
    case Precision::F64: return std::make_unique<RefBackend<double>>(model, opt);
    case Precision::F32: return std::make_unique<RefBackend<float>>(model, opt);
    case Precision::Fast: return make_cpu_fast_backend(model, opt);
  }
  fail("unknown precision");
}

}  // namespace g4
