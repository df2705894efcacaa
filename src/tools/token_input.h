// Token ids from the command line: --tokens 2,17,9, --tokens-file F.json, or -p TEXT.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace g4 {

// The model's tokenizer: tokenizer.json beside an HF checkpoint, or the GGUF's metadata.
Tokenizer load_tokenizer(const Model& m);

std::vector<int32_t> parse_token_list(const std::string& csv);
std::vector<int32_t> read_token_file(const std::string& path);
std::vector<int32_t> resolve_token_input(const Model& m, const std::string& csv, const std::string& file,
                                         const std::string& prompt);

}  // namespace g4
