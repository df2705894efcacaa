#include "tools/token_input.h"

#include <charconv>
#include <filesystem>

#include "util/error.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace g4 {

Tokenizer load_tokenizer(const Model& m) {
  if (m.gguf) return Tokenizer::from_gguf(*m.gguf);
  const auto path = std::filesystem::path(m.path) / "tokenizer.json";
  if (!std::filesystem::exists(path))
    fail("{}: no tokenizer.json in the model directory; pass token ids (--tokens) instead", m.path);
  return Tokenizer::from_hf_file(path.string());
}

std::vector<int32_t> parse_token_list(const std::string& csv) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < csv.size()) {
    size_t j = csv.find(',', i);
    if (j == std::string::npos) j = csv.size();
    std::string_view item(csv.data() + i, j - i);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    int32_t v = 0;
    auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (item.empty() || ec != std::errc() || p != item.data() + item.size() || v < 0)
      fail("--tokens: '{}' is not a non-negative token id (expected e.g. 2,17,9)", std::string(item));
    ids.push_back(v);
    i = j + 1;
  }
  return ids;
}

std::vector<int32_t> read_token_file(const std::string& path) {
  json j = parse_json_strict(read_text_file(path), path);
  if (j.is_object() && j.contains("ids")) j = j["ids"];
  if (!j.is_array()) fail("{}: expected a JSON array of token ids (or {{\"ids\": [...]}})", path);
  std::vector<int32_t> ids;
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_number_integer() || j[i].get<int64_t>() < 0 || j[i].get<int64_t>() > INT32_MAX)
      fail("{}: element {} is not a token id: {}", path, i, j[i].dump());
    ids.push_back(j[i].get<int32_t>());
  }
  return ids;
}

std::vector<int32_t> resolve_token_input(const Model& m, const std::string& csv, const std::string& file,
                                         const std::string& prompt) {
  if (!csv.empty()) return parse_token_list(csv);
  if (!file.empty()) return read_token_file(file);
  if (!prompt.empty()) return load_tokenizer(m).encode(prompt, true);
  return {};
}

}  // namespace g4
