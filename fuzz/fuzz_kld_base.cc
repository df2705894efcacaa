// libFuzzer harness: llama.cpp's KL-divergence base file (perplexity --kl-divergence).
// The expected n_ctx and vocabulary are taken from the header itself so the checks past
// the header (sizes, token ids, per-record scale/min) are reached.
#include <cstdint>
#include <cstring>
#include <string>

#include "tools/kld_base.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 21) return 0;
  int32_t n_ctx, n_vocab;
  std::memcpy(&n_ctx, data + 8, 4);
  std::memcpy(&n_vocab, data + 12, 4);
  if (n_ctx < 4 || n_ctx > (1 << 20)) n_ctx = 8;
  auto file = g4::MappedFile::from_memory("fuzz.kld", std::string(reinterpret_cast<const char*>(data), size));
  for (const int first : {n_ctx / 2 - 1, n_ctx / 2}) {  // both scoring protocols
    try {
      auto b = g4::parse_kld_base(file, n_vocab, n_ctx, first);
      const size_t words = g4::kld_record_words(b.n_vocab);
      const size_t n_rec = static_cast<size_t>(b.n_chunk) * static_cast<size_t>(b.n_ctx - 1 - first);
      if (b.records + n_rec * words * 2 != b.file->data() + b.file->size()) __builtin_trap();
    } catch (const g4::Error&) {
    }
  }
  return 0;
}
