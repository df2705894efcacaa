// `g4 quantize`: HF checkpoint or GGUF -> GGUF with a type or recipe, then a verify
// gate that re-opens the written file and compares every tensor with its source.
#pragma once
#include <functional>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "model/model.h"
#include "tools/imatrix.h"

namespace g4 {

struct TensorTypeOverride {
  std::string pattern;  // regex on the GGUF tensor name
  std::regex re;
  DType type;
};

struct QuantizeOptions {
  std::optional<DType> type;  // --type
  std::string recipe;         // --recipe: q8_0, q4_0, q4_k_m, mixed-8-4
  std::vector<TensorTypeOverride> overrides;
  bool verify = true;
  const Imatrix* imatrix = nullptr;  // --imatrix: used for the types that take one (IQ4_NL, IQ4_XS)
  uint64_t split_max_bytes = 0;  // --split-max-size: > 0 writes OUT-00001-of-0000N.gguf ... parts of at most this much
  std::function<void(size_t, size_t)> on_tensor;  // progress
  // Test hooks: alter a tensor's bytes after quantization (to prove the gate works), or
  // its source values before it (to build damaged artifacts for forensics tests).
  std::function<void(const std::string&, std::vector<uint8_t>&)> mutate_for_test;
  std::function<void(const std::string&, std::vector<float>&)> edit_source_for_test;
};

struct PlannedTensor {
  std::string name;          // GGUF name
  std::string cls;           // class, e.g. "attn_q"
  int layer = -1;
  std::vector<int64_t> shape;  // PyTorch order
  DType type = DType::F32;
  const TensorView* source = nullptr;  // nullptr: generated (rope_freqs)
};

struct VerifyRow {
  std::string name, cls;
  int layer = -1;
  DType type = DType::F32;
  double cosine = 1, rel_rms = 0, expected_rel_rms = 0;
  bool ok = true;
  std::string problem;
};

struct VerifyReport {
  std::vector<VerifyRow> rows;
  std::vector<std::string> problems;  // model-level (non-uniform layers, load errors)
  std::vector<std::string> files;     // what was written (the parts of a split file, first to last)
  bool passed() const;
  std::string table() const;  // by class and layer
};

DType parse_dtype(const std::string& s);
TensorTypeOverride parse_override(const std::string& spec);  // "REGEX=TYPE"
std::vector<PlannedTensor> plan_quantization(const Model& src, const QuantizeOptions& opt);
// Writes out_path (via out_path.tmp; split: OUT-0000i-of-0000N.gguf via OUT.tmp-...); with
// opt.verify the file only appears if the gate passes.
VerifyReport quantize_model(const Model& src, const std::string& out_path, const QuantizeOptions& opt);
// Compares every tensor of a GGUF with the model it was made from.
VerifyReport verify_against_source(const Model& src, const std::string& gguf_path);

// The type a tensor gets under `opt` (recipe rules, F32 for norms/scalars/router,
// --tensor-type overrides, llama.cpp's fallbacks when the row length does not fit).
// idx / n_of_class: position of this tensor among those of its class (use_more_bits).
DType plan_type(const TensorSlot& slot, const QuantizeOptions& opt, int idx, int n_of_class);

class GgufWriter;
class Tokenizer;
// gemma4.* keys and tokenizer.ggml.* keys as llama.cpp's converter writes them.
void write_gemma4_metadata(GgufWriter& w, const ModelSpec& s);
// llama.cpp's general.file_type (LLAMA_FTYPE_*) for a recipe or a single type.
uint32_t file_type_of(const QuantizeOptions& opt);
void write_tokenizer_metadata(GgufWriter& w, const Tokenizer& t, const ModelSpec& s);
// rope_freqs.weight (1.0 for rotated pairs, 1e30 for the rest) of the full layers.
std::vector<uint8_t> rope_freqs_bytes(const ModelSpec& s);

// All rows of a tensor as float (any stored type).
std::vector<float> dequantize_all(const TensorView& t);
// x (rows of shape.back() values) quantized to t and back: what type t does to these
// values. The "explained" error of forensics and of the verify gate.
std::vector<float> quantize_round_trip(const std::vector<float>& x, DType t, const std::vector<int64_t>& shape);

}  // namespace g4
