// libFuzzer harness: the GGUF reader plus the gemma4 metadata -> spec step.
#include <cstdint>
#include <string>

#include "formats/gguf.h"
#include "model/config_gguf.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto g = g4::read_gguf(g4::MappedFile::from_memory("fuzz.gguf", std::string(reinterpret_cast<const char*>(data), size)));
    try { g4::spec_from_gguf(g); } catch (const g4::Error&) {}
  } catch (const g4::Error&) {
  }
  return 0;
}
