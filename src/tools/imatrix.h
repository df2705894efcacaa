// Importance matrices as llama.cpp stores them: the GGUF format of llama-imatrix (tensors
// NAME.in_sum2 [n_in, n_mat] and NAME.counts [n_mat]) and its legacy .dat format; and
// computing one (g4 imatrix) the way llama-imatrix does.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "runtime/session.h"

namespace g4 {

// Per weight tensor (its GGUF name): n_in * n_mat mean squared activations, matrix-major, as
// llama-quantize derives them (in_sum2 / count; 1 where a matrix got no input; legacy: / ncall).
using Imatrix = std::map<std::string, std::vector<float>>;

// Reads either format (told apart by the GGUF magic); errors name the file, entry and byte offset.
Imatrix read_imatrix(const std::string& path);

// What llama-imatrix collects for one weight tensor: per matrix (n_mat = 1, or one per expert of
// a stacked MoE tensor) the sums over its input rows of x_i^2 and x_i, and the row count.
struct ImatrixEntry {
  int64_t n_in = 0, n_mat = 1;
  std::vector<double> in_sum2, in_sum;  // [n_mat, n_in]
  std::vector<int64_t> counts;          // [n_mat]
};

struct ImatrixData {
  std::map<std::string, ImatrixEntry> entries;  // by GGUF name
  int chunks = 0, chunk_size = 0;
  std::vector<std::string> datasets;
  double ppl = 0;  // llama-imatrix's running PPL (the second half of each chunk), for the log
};

struct ImatrixOptions {
  int n_ctx = 512;
  int max_chunks = -1;  // -1 = all
  ForwardOptions forward;
  std::string dataset;  // recorded in imatrix.datasets
  std::function<void(int chunk, int n_chunks, double ppl_so_far)> on_chunk;
};

// Runs the text through the model in chunks of n_ctx as llama-imatrix does (BOS, then chunks
// with token 0 := BOS, every token of every chunk collected) and sums the input of every weight
// matmul of the decoder layers (blk.*, as llama-imatrix: the tied LM head and the float
// per_layer_model_proj are left out). MoE expert tensors count each expert's routed rows.
ImatrixData compute_imatrix(const Model& model, const std::string& text, const ImatrixOptions& opt);

// llama-imatrix's GGUF layout (general.type = imatrix, imatrix.datasets/chunk_count/chunk_size;
// per entry in name order NAME.in_sum2, NAME.counts, NAME.in_sum, all F32).
void write_imatrix_gguf(const std::string& path, const ImatrixData& d);
// The legacy .dat layout (llama-imatrix --output-format dat): per entry the means times
// ncall = ceil(max count / chunk_size); then the chunk count and the dataset name.
void write_imatrix_dat(const std::string& path, const ImatrixData& d);

}  // namespace g4
