// What an artifact carries besides its tensors: hyperparameters (compared through the
// one table in model/hparams.h) and the tokenizer (compared token by token). Used by
// `g4 forensics` and `g4 grade`.
#pragma once
#include <string>
#include <vector>

#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "util/json.h"

namespace g4 {

struct HparamFinding {
  std::string what, gguf_key, hf_field;
  std::string artifact, reference;  // the values, formatted (per-layer lists name the layers that differ)
};

// Every entry of hparam_table() whose values differ between the two specs (floats
// within 1e-6 relative: GGUF stores them as float32).
std::vector<HparamFinding> compare_hparams(const ModelSpec& artifact, const ModelSpec& ref);

struct VocabReport {
  std::vector<std::string> findings;  // one line each: what differs, with ids and strings
  int tokens_differ = 0;              // ids whose string, type or special flag differ
  int merges_differ = 0;              // merge ranks that differ
  bool same() const { return findings.empty(); }
};

// Token by token: strings, types, special flags, merges, scores (GGUF), special ids and
// add_bos/add_eos, pre-tokenizer and normalizer. A tokenizer that fails to load is a finding.
VocabReport compare_tokenizers(const Model& artifact, const Model& ref);

// The fraction of the reference's tokens of `text` that the artifact's tokenizer does not
// produce with the same id over the same bytes.
double retokenized_fraction(const Tokenizer& artifact, const Tokenizer& ref, const std::string& text);

json hparams_json(const std::vector<HparamFinding>& f);

}  // namespace g4
