// Importance matrices as llama.cpp stores them: the GGUF format of llama-imatrix (tensors
// NAME.in_sum2 [n_in, n_mat] and NAME.counts [n_mat]) and its legacy .dat format.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace g4 {

// Per weight tensor (its GGUF name): n_in * n_mat mean squared activations, matrix-major, as
// llama-quantize derives them (in_sum2 / count; 1 where a matrix got no input; legacy: / ncall).
using Imatrix = std::map<std::string, std::vector<float>>;

// Reads either format (told apart by the GGUF magic); errors name the file, entry and byte offset.
Imatrix read_imatrix(const std::string& path);

}  // namespace g4
