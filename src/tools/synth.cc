#include "tools/synth.h"

#include <fmt/format.h>

#include <cmath>
#include <map>

#include "formats/gguf_writer.h"
#include "kernels/quantize.h"
#include "util/error.h"

namespace g4 {

ModelSpec synth_spec(const std::string& v, int layers, int vocab) {
  ModelSpec s;
  s.source_format = "gguf";
  s.vocab = vocab > 0 ? vocab : 262144;
  s.head_dim = 256;
  s.global_head_dim = 512;
  s.rope_sliding = {"default", 10000.0, 1.0};
  s.rope_full = {"proportional", 1e6, 0.25};
  s.final_softcap = 30.0;
  int L = 0, period = 6, shared = 0;
  if (v == "e2b") {
    L = 35; s.hidden = 1536; s.intermediate = 6144; s.n_heads = 8; s.n_kv_heads = 1; s.sliding_window = 512;
    s.ple_dim = 256; period = 5; shared = 20; s.double_wide_mlp = true; s.max_ctx = 131072;
  } else if (v == "e4b") {
    L = 42; s.hidden = 2560; s.intermediate = 10240; s.n_heads = 8; s.n_kv_heads = 2; s.sliding_window = 512;
    s.ple_dim = 256; shared = 18; s.max_ctx = 131072;
  } else if (v == "12b") {
    L = 48; s.hidden = 3840; s.intermediate = 15360; s.n_heads = 16; s.n_kv_heads = 8; s.n_global_kv_heads = 1;
    s.k_eq_v = true; s.sliding_window = 1024; s.max_ctx = 262144;
  } else if (v == "26b-a4b") {
    L = 30; s.hidden = 2816; s.intermediate = 2112; s.n_heads = 16; s.n_kv_heads = 8; s.n_global_kv_heads = 2;
    s.k_eq_v = true; s.sliding_window = 1024; s.moe = true; s.n_experts = 128; s.top_k = 8; s.moe_ff = 704; s.max_ctx = 262144;
  } else if (v == "31b") {
    L = 60; s.hidden = 5376; s.intermediate = 21504; s.n_heads = 32; s.n_kv_heads = 16; s.n_global_kv_heads = 4;
    s.k_eq_v = true; s.sliding_window = 1024; s.max_ctx = 262144;
  } else {
    fail("unknown variant '{}' (e2b, e4b, 12b, 26b-a4b, 31b)", v);
  }
  if (layers > 0) {
    if (layers > L) fail("--layers {} is more than {} has ({})", layers, v, L);
    shared = shared * layers / L;  // keep the shared fraction
    L = layers;
  }
  s.n_layers = L;
  s.n_kv_shared = shared;
  for (int i = 0; i < L; ++i) s.layer_types.push_back((i + 1) % period == 0 ? AttnType::Full : AttnType::Sliding);
  s.layer_types.back() = AttnType::Full;
  // The last non-shared layers must contain both attention types (the KV sources).
  if (shared > 0) {
    const int first = L - shared;
    bool full = false, sliding = false;
    for (int i = 0; i < first; ++i) (s.layer_types[i] == AttnType::Full ? full : sliding) = true;
    if (!full && first >= 1) s.layer_types[first - 1] = AttnType::Full;
    if (!sliding) s.n_kv_shared = 0;
  }
  s.ple_vocab = s.vocab;
  finalize_spec(s, "synth " + v);
  return s;
}

void synth_model(const SynthOptions& opt, const std::string& out_path) {
  const ModelSpec spec = synth_spec(opt.variant, opt.layers, opt.vocab);
  GgufWriter w;
  w.set_str("general.name", fmt::format("synthetic {} ({} layers, random weights)", opt.variant, spec.n_layers));
  w.set_u32("general.file_type", file_type_of(opt.quant));
  write_gemma4_metadata(w, spec);
  // A byte-level vocabulary so that the file is a complete model (llama.cpp needs one).
  std::vector<std::string> tokens;
  std::vector<int64_t> types;
  for (const char* sp : {"<pad>", "<eos>", "<bos>", "<unk>", "<mask>"}) { tokens.push_back(sp); types.push_back(3); }
  for (int b = 0; b < 256 && static_cast<int>(tokens.size()) < spec.vocab; ++b) { tokens.push_back(fmt::format("<0x{:02X}>", b)); types.push_back(6); }
  while (static_cast<int>(tokens.size()) < spec.vocab) { tokens.push_back(fmt::format("t{}", tokens.size())); types.push_back(1); }
  w.set_str("tokenizer.ggml.model", "gemma4");
  w.set_arr_str("tokenizer.ggml.tokens", tokens);
  w.set_arr_f32("tokenizer.ggml.scores", std::vector<double>(tokens.size(), -1000.0));
  w.set_arr_i32("tokenizer.ggml.token_type", types);
  w.set_arr_str("tokenizer.ggml.merges", {});
  w.set_u32("tokenizer.ggml.bos_token_id", 2);
  w.set_u32("tokenizer.ggml.eos_token_id", 1);
  w.set_u32("tokenizer.ggml.unknown_token_id", 3);
  w.set_u32("tokenizer.ggml.padding_token_id", 0);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_u32("general.quantization_version", 2);
  const auto slots = expected_tensors(spec, FileFormat::GGUF);
  std::map<std::string, int> n_of_class, seen;
  for (const auto& s : slots) n_of_class[s.cls]++;
  uint64_t seed = opt.seed;
  for (const auto& s : slots) {
    const DType t = plan_type(s, opt.quant, seen[s.cls]++, n_of_class[s.cls]);
    const uint64_t my_seed = seed++;
    w.add_tensor(s.gguf, t, s.shape, [s, t, my_seed, &spec]() {
      if (s.gguf == "rope_freqs.weight") return rope_freqs_bytes(spec);
      int64_t n = 1;
      for (auto d : s.shape) n *= d;
      std::vector<float> x(static_cast<size_t>(n));
      const bool is_norm = s.shape.size() == 1 || s.cls == "layer_output_scale";
      // xorshift64* -> roughly normal (sum of 4 uniforms); weights std 0.02, norms ~1.
      uint64_t st = my_seed * 0x9E3779B97F4A7C15ull + 1;
      for (auto& v : x) {
        float u = 0;
        for (int k = 0; k < 4; ++k) {
          st ^= st >> 12; st ^= st << 25; st ^= st >> 27;
          u += static_cast<float>((st * 0x2545F4914F6CDD1Dull) >> 40) / static_cast<float>(1 << 24);
        }
        const float z = (u - 2.0f) * 1.7320508f;
        v = is_norm ? 1.0f + 0.05f * z : 0.02f * z;
      }
      const int64_t cols = s.shape.back();
      return quantize_rows(t, x.data(), n / cols, cols);
    });
  }
  w.write(out_path, opt.quant.on_tensor);
}

}  // namespace g4
