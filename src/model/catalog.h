// The one Gemma 4 tensor catalogue (gemma4-tensors.md): for a model description,
// every tensor the forward pass reads, with its HF name, GGUF name and expected
// PyTorch-order shape. Loaders and validation use it in both directions.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "model/spec.h"

namespace g4 {

struct TensorSlot {
  std::string hf;     // HF name without the "model.language_model." prefix
  std::string gguf;   // GGUF name
  std::string cls;    // tensor class for reports: GGUF suffix, e.g. "attn_q", "ffn_down"
  int layer = -1;     // -1 for global tensors
  std::vector<int64_t> shape;
  bool required = true;
};

enum class FileFormat { HF, GGUF };

// Every tensor the forward pass reads, named once: HF name (after "layers.{i}." for
// per-layer tensors) and GGUF name (after "blk.{i}."), gemma4-tensors.md §3. Loading,
// validation, weight binding, the GGUF writer and forensics all go through this table.
enum class LayerTensor : int {
  AttnNorm, Q, K, V, O, QNorm, KNorm, PostAttnNorm, FfnNorm, Gate, Up, Down, PostFfnNorm, LayerScalar,
  PleGate, PleProj, PlePostNorm,
  RouterProj, RouterScale, PerExpertScale, ExpertsGateUp, ExpertsDown, PreFfnNorm2, PostFfnNorm1, PostFfnNorm2,
  Count
};
enum class GlobalTensor : int { Embed, PleEmbed, PleModelProj, PleProjNorm, RopeFreqs, FinalNorm, Count };

struct TensorName {
  const char* hf;    // "" where HF has no such tensor (rope_freqs)
  const char* gguf;
};
const TensorName& tensor_name(LayerTensor t);
const TensorName& tensor_name(GlobalTensor t);
// "layers.{i}.{hf}" / "blk.{i}.{gguf}".
std::string hf_name(int layer, LayerTensor t);
std::string gguf_name(int layer, LayerTensor t);

// Tensors the model description calls for, in a stable order.
std::vector<TensorSlot> expected_tensors(const ModelSpec& spec, FileFormat fmt);

// Classifies a name that is NOT among the expected ones (after prefix stripping):
// if it is a Gemma 4 tensor whose presence contradicts the description (v_proj on a
// k_eq_v layer, k_proj on a KV-shared layer, PLE tensors with P = 0, a layer index
// past num_hidden_layers, ...), returns why; nullopt for unknown names.
std::optional<std::string> contradiction(const ModelSpec& spec, FileFormat fmt, const std::string& name);

// HF checkpoints store text weights under "model.language_model." (multimodal) or
// "model." (text-only). Returns the name without it, or nullopt for other tensors
// (vision/audio towers etc.).
std::optional<std::string> strip_hf_prefix(const std::string& name);

}  // namespace g4
