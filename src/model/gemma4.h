// The Gemma 4 text forward pass (gemma4-architecture.md §5-10), one code path for
// every variant, with the compute precision as a parameter.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/model.h"

namespace g4 {

enum class Precision { F64, F32 };
Precision parse_precision(const std::string& s);
const char* precision_name(Precision p);

struct ForwardOptions {
  Precision precision = Precision::F64;
  // HF holding the bf16 checkpoint as is multiplies the embeddings by bf16(sqrt(H))
  // and bf16(sqrt(P)); the default is the exact scale (HF float64/float32, llama.cpp).
  bool bf16_embed_scale = false;
};

struct EvalOutput {
  std::vector<float> logits;  // [n_tokens (or 1 with last_only), vocab]
  std::vector<float> hidden;  // [n_layers + 1, n_tokens, hidden] when requested (HF convention)
};

// A model plus a KV cache: eval() appends tokens at positions n_past()...
class Session {
 public:
  Session(const Model& model, ForwardOptions opt = {});
  ~Session();
  Session(Session&&) noexcept;

  // want_hidden: also return the hidden states; last_only: logits of the last token only.
  EvalOutput eval(std::span<const int32_t> tokens, bool want_hidden = false, bool last_only = false);
  void reset();
  int64_t n_past() const;
  const Model& model() const { return model_; }
  const ForwardOptions& options() const { return opt_; }

  struct Impl;

 private:
  const Model& model_;
  ForwardOptions opt_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace g4
