#include "tools/synth.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "formats/gguf_writer.h"
#include "formats/safetensors.h"
#include "kernels/quantize.h"
#include "model/hf_keys.h"
#include "model/hparams.h"
#include "util/error.h"
#include "util/half.h"

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

namespace {

// Deterministic weights of one tensor, made a block of rows at a time so that a tensor
// is never held as float32 in full (the e2b PLE table is 2.3 G parameters). Each block
// has its own generator (seeded by tensor and block), so blocks are made in parallel and
// the weights do not depend on the thread count. xorshift64*, one draw per element split
// into four 16-bit uniforms -> roughly normal (their sum); weights std 0.02, norms ~1.
class WeightStream {
 public:
  WeightStream(uint64_t seed, uint64_t block, bool is_norm)
      : st_((seed * 0x9E3779B97F4A7C15ull + 1) ^ (block * 0xD1B54A32D192ED03ull)), is_norm_(is_norm) {
    if (st_ == 0) st_ = 1;
  }
  void next(float* x, int64_t n) {
    constexpr float kScale = 1.7320508f / 65536.0f;
    for (int64_t i = 0; i < n; ++i) {
      st_ ^= st_ >> 12; st_ ^= st_ << 25; st_ ^= st_ >> 27;
      const uint64_t r = st_ * 0x2545F4914F6CDD1Dull;
      const uint32_t u = static_cast<uint32_t>(r & 0xFFFF) + static_cast<uint32_t>((r >> 16) & 0xFFFF) +
                         static_cast<uint32_t>((r >> 32) & 0xFFFF) + static_cast<uint32_t>(r >> 48);
      const float z = (static_cast<float>(u) - 131070.0f) * kScale;  // mean 0, std ~1
      x[i] = is_norm_ ? 1.0f + 0.05f * z : 0.02f * z;
    }
  }

 private:
  uint64_t st_;
  bool is_norm_;
};

// The bytes of one tensor: `encode(x, rows, cols, out)` turns a block of rows into
// `row_bytes` bytes per row at `out`. Blocks are made in parallel (OpenMP), each
// writing its own slice, so synth runs at the speed of the disk rather than of one core.
template <typename Encode>
std::vector<uint8_t> stream_tensor(const TensorSlot& s, uint64_t seed, uint64_t row_bytes, Encode encode) {
  int64_t n = 1;
  for (auto d : s.shape) n *= d;
  const int64_t cols = s.shape.back(), rows = n / cols;
  const int64_t chunk_rows = std::max<int64_t>(1, (1 << 20) / cols);
  const int64_t chunks = (rows + chunk_rows - 1) / chunk_rows;
  const bool is_norm = s.shape.size() == 1 || s.cls == "layer_output_scale";
  std::vector<uint8_t> out(static_cast<size_t>(row_bytes * static_cast<uint64_t>(rows)));
#pragma omp parallel if (chunks > 1)
  {
    std::vector<float> x;
#pragma omp for schedule(dynamic)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t r = c * chunk_rows, nr = std::min(chunk_rows, rows - r);
      x.resize(static_cast<size_t>(nr * cols));
      WeightStream(seed, static_cast<uint64_t>(c), is_norm).next(x.data(), nr * cols);
      encode(x.data(), nr, cols, out.data() + static_cast<uint64_t>(r) * row_bytes);
    }
  }
  return out;
}

// A byte-level vocabulary so that the file is a complete model (llama.cpp needs one):
// five special tokens, the 256 byte tokens, then "t<id>" fillers. Types as GGUF stores them.
void synth_vocab(int vocab, std::vector<std::string>& tokens, std::vector<int64_t>& types) {
  for (const char* sp : {"<pad>", "<eos>", "<bos>", "<unk>", "<mask>"}) { tokens.push_back(sp); types.push_back(3); }
  for (int b = 0; b < 256 && static_cast<int>(tokens.size()) < vocab; ++b) { tokens.push_back(fmt::format("<0x{:02X}>", b)); types.push_back(6); }
  while (static_cast<int>(tokens.size()) < vocab) { tokens.push_back(fmt::format("t{}", tokens.size())); types.push_back(1); }
}

}  // namespace

void synth_model(const SynthOptions& opt, const std::string& out_path) {
  const ModelSpec spec = synth_spec(opt.variant, opt.layers, opt.vocab);
  const auto slots = expected_tensors(spec, opt.format == "safetensors" ? FileFormat::HF : FileFormat::GGUF);
  if (opt.format == "safetensors") {
    // An HF checkpoint directory: config.json from the one hyperparameter table, and
    // the same weights as the GGUF of the same seed, rounded to BF16 (norms F32).
    std::filesystem::create_directories(out_path);
    {
      std::ofstream c(std::filesystem::path(out_path) / "config.json");
      c << json{{hk::kTextConfig, hf_config_json(spec)}, {hk::kModelType, "gemma4"}}.dump(2) << "\n";
      if (!c) fail("cannot write {}/config.json", out_path);
    }
    {
      // The same vocabulary as the GGUF's, as a tokenizer.json (BPE without merges: byte
      // fallback), so that grade can tokenize its text with the reference.
      std::vector<std::string> tokens;
      std::vector<int64_t> types;
      synth_vocab(spec.vocab, tokens, types);
      json vocab = json::object(), added = json::array();
      for (size_t i = 0; i < tokens.size(); ++i) {
        vocab[tokens[i]] = i;
        if (types[i] == 3) added.push_back({{"id", i}, {"content", tokens[i]}, {"special", true}});
      }
      const json tj = {{"version", "1.0"}, {"added_tokens", added}, {"normalizer", nullptr}, {"pre_tokenizer", nullptr},
                       {"model", {{"type", "BPE"}, {"byte_fallback", true}, {"vocab", vocab}, {"merges", json::array()}}}};
      std::ofstream t(std::filesystem::path(out_path) / "tokenizer.json");
      t << tj.dump() << "\n";
      std::ofstream tc(std::filesystem::path(out_path) / "tokenizer_config.json");
      tc << json{{"add_bos_token", true}, {"add_eos_token", false}}.dump(2) << "\n";
      if (!t || !tc) fail("cannot write {}/tokenizer.json", out_path);
    }
    std::vector<SafetensorsLazy> ts;
    uint64_t seed = opt.seed;
    // Seeds follow the GGUF slot order, so the two formats of one seed hold the same weights.
    std::map<std::string, uint64_t> seed_of;
    for (const auto& s : expected_tensors(spec, FileFormat::GGUF)) seed_of[s.gguf] = seed++;
    for (const auto& s : slots) {
      if (s.hf.empty()) continue;
      int64_t n = 1;
      for (auto d : s.shape) n *= d;
      const bool f32 = s.shape.size() <= 1;
      const uint64_t nbytes = static_cast<uint64_t>(n) * (f32 ? 4 : 2);
      const uint64_t my_seed = seed_of.at(s.gguf), rb = static_cast<uint64_t>(s.shape.back()) * (f32 ? 4 : 2);
      ts.push_back({"model.language_model." + s.hf, f32 ? "F32" : "BF16", s.shape, nbytes, [s, my_seed, rb, f32] {
                      return stream_tensor(s, my_seed, rb, [f32](const float* x, int64_t r, int64_t c, uint8_t* out) {
                        const size_t n = static_cast<size_t>(r * c);
                        if (f32) { std::memcpy(out, x, n * 4); return; }
                        for (size_t i = 0; i < n; ++i) {
                          const uint16_t h = f32_to_bf16(x[i]);
                          std::memcpy(out + 2 * i, &h, 2);
                        }
                      });
                    }});
    }
    write_safetensors((std::filesystem::path(out_path) / "model.safetensors").string(), ts, {{"format", "pt"}});
    return;
  }
  GgufWriter w;
  w.set_str(gk::kName, fmt::format("synthetic {} ({} layers, random weights)", opt.variant, spec.n_layers));
  w.set_u32(gk::kFileType, file_type_of(opt.quant));
  write_gemma4_metadata(w, spec);
  std::vector<std::string> tokens;
  std::vector<int64_t> types;
  synth_vocab(spec.vocab, tokens, types);
  w.set_str(gk::kTokenizerModel, "gemma4");
  w.set_arr_str(gk::kTokens, tokens);
  w.set_arr_f32(gk::kScores, std::vector<double>(tokens.size(), -1000.0));
  w.set_arr_i32(gk::kTokenType, types);
  w.set_arr_str(gk::kMerges, {});
  w.set_u32(gk::kBosId, 2);
  w.set_u32(gk::kEosId, 1);
  w.set_u32(gk::kUnkId, 3);
  w.set_u32(gk::kPadId, 0);
  w.set_bool(gk::kAddBos, true);
  w.set_u32(gk::kQuantizationVersion, 2);
  std::map<std::string, int> n_of_class, seen;
  for (const auto& s : slots) n_of_class[s.cls]++;
  uint64_t seed = opt.seed;
  for (const auto& s : slots) {
    const DType t = plan_type(s, opt.quant, seen[s.cls]++, n_of_class[s.cls]);
    const uint64_t my_seed = seed++;
    w.add_tensor(s.gguf, t, s.shape, [s, t, my_seed, &spec]() {
      if (s.gguf == tensor_name(GlobalTensor::RopeFreqs).gguf) return rope_freqs_bytes(spec);
      const auto rb = row_bytes(t, s.shape.back());
      if (!rb) fail("synth: tensor {} has rows of {} elements, which {} cannot store", s.gguf, s.shape.back(), dtype_name(t));
      const uint64_t rbu = static_cast<uint64_t>(*rb);
      // quantize_row, not quantize_rows: the blocks are already in a parallel region.
      return stream_tensor(s, my_seed, rbu, [t, rbu](const float* x, int64_t r, int64_t c, uint8_t* out) {
        for (int64_t i = 0; i < r; ++i) quantize_row(t, x + i * c, c, out + static_cast<uint64_t>(i) * rbu);
      });
    });
  }
  w.write(out_path, opt.quant.on_tensor);
}

}  // namespace g4
