// libFuzzer harness: an HTTP request body as g4 serve handles it, without running the
// model: bytes -> UTF-8 check -> strict JSON -> validated fields -> prompt token ids
// (chat template or completion prompt), with brown-mini's tokenizer. The first byte picks
// the endpoint. ApiError is the expected way out; anything else escaping is a bug.
#include <cstdint>
#include <string_view>

#include "server/request.h"

static const g4::Tokenizer& tokenizer() {
  static const g4::Tokenizer tok = g4::Tokenizer::from_hf_file(G4_FUZZ_TOKENIZER);
  return tok;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const g4::RequestContext ctx = [] {
    g4::RequestContext c;
    c.tok = &tokenizer();
    c.model_id = "brown-mini";
    c.model_path = "models/brown-mini";
    c.vocab = tokenizer().vocab_size();
    c.ctx_limit = 512;
    c.eog = tokenizer().eog_ids();
    return c;
  }();
  const bool chat = data[0] & 1;
  try {
    auto r = g4::parse_completion_request(std::string_view(reinterpret_cast<const char*>(data + 1), size - 1), chat, ctx);
    // What the server relies on after parsing.
    if (r.prompt.empty() || static_cast<int64_t>(r.prompt.size()) >= ctx.ctx_limit || r.gen.max_tokens < (r.echo ? 0 : 1)) __builtin_trap();
    for (int32_t id : r.prompt)
      if (id < 0 || id >= ctx.vocab) __builtin_trap();
  } catch (const g4::ApiError& e) {
    if (e.status != 400 && e.status != 404) __builtin_trap();
  }
  return 0;
}
