// libFuzzer harness: the safetensors header parser.
#include <cstdint>
#include <string>

#include "formats/safetensors.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    g4::read_safetensors(g4::MappedFile::from_memory("fuzz.safetensors", std::string(reinterpret_cast<const char*>(data), size)));
  } catch (const g4::Error&) {
  }
  return 0;
}
