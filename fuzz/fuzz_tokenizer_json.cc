// libFuzzer harness: loading an HF tokenizer.json (strict JSON, vocab, merges, added
// tokens), then encoding and decoding a fixed text with whatever loaded.
#include <cstdint>
#include <string>

#include "tokenizer/tokenizer.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto tok = g4::Tokenizer::from_hf_json(std::string(reinterpret_cast<const char*>(data), size), "fuzz tokenizer.json");
    const auto ids = tok.encode("The jury said <|turn>user\n héllo\t\t  wörld 12345 🙂", true);
    for (int32_t id : ids)
      if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
    (void)tok.decode(ids);
  } catch (const g4::Error&) {
  }
  return 0;
}
