// A loaded Gemma 4 model: description + validated weights, from an HF checkpoint
// directory or a GGUF file. Nothing runs on a model that failed validation.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "formats/tensor.h"
#include "model/catalog.h"
#include "model/spec.h"

namespace g4 {

struct LayerWeights {
  const TensorView *attn_norm = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  const TensorView *q_norm = nullptr, *k_norm = nullptr, *post_attn_norm = nullptr;
  const TensorView *ffn_norm = nullptr, *gate = nullptr, *up = nullptr, *down = nullptr, *post_ffn_norm = nullptr;
  const TensorView* layer_scalar = nullptr;
  // Per-layer embeddings (P > 0).
  const TensorView *ple_gate = nullptr, *ple_proj = nullptr, *ple_post_norm = nullptr;
  // MoE block.
  const TensorView *router_proj = nullptr, *router_scale = nullptr, *per_expert_scale = nullptr;
  const TensorView *experts_gate_up = nullptr, *experts_down = nullptr;
  const TensorView *pre_ffn_norm_2 = nullptr, *post_ffn_norm_1 = nullptr, *post_ffn_norm_2 = nullptr;
};

struct Weights {
  const TensorView* embed = nullptr;  // also the (tied) LM head
  const TensorView *ple_embed = nullptr, *ple_model_proj = nullptr, *ple_proj_norm = nullptr;
  const TensorView* final_norm = nullptr;
  std::vector<LayerWeights> layers;
};

struct ValidationIssue {
  std::string tensor;   // file name of the tensor ("" for model-level issues)
  std::string message;  // what was expected, what was found, what to do
};

// Move-only: `w` points into `by_hf_name` (map nodes keep their address on a move,
// not on a copy). clone() makes an independent copy with its own bindings.
struct Model {
  Model() = default;
  Model(Model&&) noexcept = default;
  Model& operator=(Model&&) noexcept = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  Model clone() const;

  std::string path;
  FileFormat format = FileFormat::HF;
  ModelSpec spec;
  std::vector<TensorView> file_tensors;         // every tensor in the file(s)
  std::map<std::string, TensorView> by_hf_name;  // catalogue tensors, keyed by HF name
  Weights w;
  std::vector<ValidationIssue> errors;
  std::vector<ValidationIssue> warnings;
  std::optional<GgufFile> gguf;  // metadata of a GGUF source (tokenizer etc.)

  bool valid() const { return errors.empty(); }
};

struct LoadOptions {
  // Accept tensors that contradict the config (e.g. k_proj on a KV-shared layer) with
  // a warning instead of an error; HF ignores such tensors.
  bool lenient = false;
};

// Opens and validates. Format problems (truncated file, bad JSON) throw g4::Error;
// catalogue problems are collected in Model::errors so `g4 inspect` can list them all.
Model open_model(const std::string& path, const LoadOptions& opt = {});
// open_model + throw g4::Error listing every validation error.
Model load_model(const std::string& path, const LoadOptions& opt = {});

// Re-points `w` at the entries of `by_hf_name` (after swapping tensors in it, e.g.
// for forensics hybrids).
void bind_weights(Model& m);

// Tensor types the compute paths can read.
bool dtype_computable(DType t);

}  // namespace g4
