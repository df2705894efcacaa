// A model plus a KV cache on one backend: the Gemma 4 text forward pass
// (gemma4-architecture.md §5-10), one code path for every variant and every backend.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "model/model.h"

namespace g4 {

// Forced MoE routing (g4 divergence): at absolute position `pos` of layer `layer`, use
// `experts` (top_k ids) instead of the router's top-k.
struct RouteForce {
  int64_t pos = 0;
  int layer = 0;
  std::vector<int32_t> experts;
};

// What the router of one MoE layer saw in one step: logits [n, n_experts] before the
// softmax (host copy) and the chosen ids [n, k], for positions pos0 .. pos0 + n - 1.
struct RouterTrace {
  int layer = 0;
  int64_t pos0 = 0, n = 0, n_experts = 0, k = 0;
  const double* logits = nullptr;
  const int32_t* ids = nullptr;
};

// The input of one weight matmul in a step (g4 imatrix): x [rows, n_in] as a host copy, the
// weight named by its catalogue slot (GGUF name: gguf_name(layer, tensor), or the global's),
// and for one expert's slice of a stacked MoE tensor (ffn_gate_up_exps once for gate and up,
// ffn_down_exps) the expert; its rows are the tokens routed to it.
struct MatmulTrace {
  int layer = -1;  // -1: a global tensor
  LayerTensor tensor = LayerTensor::Count;
  GlobalTensor global = GlobalTensor::Count;
  int expert = -1;
  int64_t rows = 0, n_in = 0;
  const float* x = nullptr;
};

struct ForwardOptions {
  Precision precision = Precision::F64;
  // HF holding the bf16 checkpoint as is multiplies the embeddings by bf16(sqrt(H))
  // and bf16(sqrt(P)); the default is the exact scale (HF float64/float32, llama.cpp).
  bool bf16_embed_scale = false;
  // Emulate float32 RMSNorm and attention softmax inside the f64 path, as a float64 HF
  // run of the current transformers source would (Gemma4RMSNorm calls .float(); eager
  // softmax uses dtype=float32). Off by default: the gold fixtures (transformers 5.17)
  // match pure float64 better (tiny-e NMSE 1.4e-13 vs 2.1e-13 with the islands).
  bool hf_float32_islands = false;
  // With Precision::BF16: round only the weights to bf16, keep float32 activations.
  bool bf16_weights_only = false;
  // KV cache element types (--cache-type-k/-v; backends/kv_codec.h).
  KvType cache_type_k = KvType::F32, cache_type_v = KvType::F32;
  // Another engine's roundings reproduced in the reference (--emulate; backends/emulation.h).
  // kv_f16 makes both cache types f16.
  EngineRounding emulate{};
  // Diagnostics of the MoE routing (g4 divergence): forced choices, and a callback that
  // sees every MoE layer's router logits and choice (off: no cost).
  std::vector<RouteForce> force_routes{};
  std::function<void(const RouterTrace&)> on_router{};
  // Sees the input of every weight matmul (importance matrices; off: no cost, no buffer).
  std::function<void(const MatmulTrace&)> on_matmul{};
  // Where the forward runs (BackendOptions::device; "" = the process default).
  std::string device{};
  int n_gpu_layers = -1;  // -ngl (-1 = all layers on the device)
  // Tokens per forward step: longer inputs run in steps of this many (activations are
  // preallocated for it). Context to reserve the KV cache for (0 = grow on demand).
  int64_t n_batch = 512;
  int64_t n_ctx = 0;
  // Check every layer's hidden state for NaN/Inf and name the first layer that made
  // one (a pass over n x hidden values per layer: cheap next to the matmuls).
  bool check_finite = true;
};

struct EvalRequest {
  bool hidden = false;        // also return hidden states
  int64_t logits_from = 0;    // logits for tokens [logits_from, n); -1 = the last token only
  bool logits_f64 = false;    // return logits in double (`logits64`) instead of float
};

struct EvalOutput {
  std::vector<float> logits;     // [n_tokens - logits_from, vocab]
  std::vector<double> logits64;  // same, when EvalRequest::logits_f64
  std::vector<float> hidden;     // [n_layers + 1, n_tokens, hidden] when requested (HF convention)
};

// A model plus a KV cache: eval() appends tokens at positions n_past()...
class Session {
 public:
  Session(const Model& model, ForwardOptions opt = {});
  ~Session();
  Session(Session&&) noexcept;

  EvalOutput eval(std::span<const int32_t> tokens, const EvalRequest& req = {});
  // Logits of the last token only (generation).
  std::vector<float> eval_last(std::span<const int32_t> tokens);
  // The same without allocating: the view stays valid until the next call.
  std::span<const float> decode(std::span<const int32_t> tokens);
  // Sequences: eval()/decode() run sequence 0; batched decoding (continuous batching)
  // adds more, each with its own KV cache and positions, and runs them together in step().
  // add_sequence allocates (between steps); max_step: the most tokens it adds per step.
  int add_sequence(int64_t max_step);
  void free_sequence(int seq);
  struct SeqTokens {
    int seq;
    std::span<const int32_t> tokens;  // continue the sequence at n_past(seq)
    bool logits = true;               // return the logits of its last token
  };
  // One forward over the tokens of several sequences (at most n_batch in all; each
  // sequence once): the weights are read once for the whole batch. Returns [k, vocab]
  // logits, one row per entry with `logits`, in order; valid until the next call.
  std::span<const float> step(std::span<const SeqTokens> batch);

  void reset(int seq = 0);
  // Drops positions >= n from the KV cache; false if the cache cannot rewind that far.
  bool truncate(int64_t n, int seq = 0);
  int64_t n_past(int seq = 0) const;
  size_t kv_bytes() const;
  const Model& model() const { return model_; }
  const ForwardOptions& options() const { return opt_; }
  std::string backend_name() const;

  struct Impl;

 private:
  const Model& model_;
  ForwardOptions opt_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace g4
