// GGUF v3 (v2 accepted) reader. formats.md §1. Follows llama.cpp's gguf.cpp rules so
// that g4 accepts exactly the files llama.cpp accepts, and never allocates more than
// the file could hold.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "formats/tensor.h"

namespace g4 {

enum class GgufType : int32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_type_name(GgufType t);

// One metadata value. Integers (and bools) live in `i` (UINT64 above INT64_MAX is
// rejected by the accessors), floats in `f`, strings in `s`; arrays use the vectors.
struct GgufValue {
  GgufType type = GgufType::UINT32;
  GgufType elem_type = GgufType::UINT8;  // arrays only
  int64_t i = 0;
  uint64_t u = 0;  // raw unsigned payload for UINT64
  double f = 0;
  std::string s;
  std::vector<int64_t> ai;
  std::vector<double> af;
  std::vector<std::string> as;

  bool is_array() const { return type == GgufType::ARRAY; }
  bool is_int() const;    // any integer or bool scalar
  bool is_float() const;  // FLOAT32/FLOAT64 scalar
  size_t array_size() const;
};

struct GgufFile {
  std::string path;
  uint32_t version = 3;
  uint64_t alignment = 32;
  uint64_t data_start = 0;
  std::vector<std::pair<std::string, GgufValue>> kv;  // file order
  std::map<std::string, size_t> kv_index;
  std::vector<TensorView> tensors;  // shape = reversed ne (PyTorch order)
  std::vector<std::string> parts;   // a split GGUF's files, first to last (each tensor maps its own)

  const GgufValue* find(const std::string& key) const;
  // Typed getters: nullopt when absent; g4::Error naming the key on a wrong type.
  std::optional<int64_t> get_int(const std::string& key) const;
  std::optional<double> get_float(const std::string& key) const;
  std::optional<std::string> get_string(const std::string& key) const;
  std::optional<bool> get_bool(const std::string& key) const;
};

// A path to the first file of a split GGUF (NAME-00001-of-0000N.gguf, split.count > 1) reads every
// part: metadata from the first, the tensors of all, each part memory-mapped; a missing part, a
// part of another split or a duplicate tensor is an error naming the part.
GgufFile read_gguf(const std::string& path);
// One file as it is (a split part's own tensors only).
GgufFile read_gguf(std::shared_ptr<MappedFile> file);

// "NAME-0000i-of-0000N.gguf" for part i (1-based) of n, llama.cpp's split naming.
std::string gguf_split_path(const std::string& prefix, int i, int n);

}  // namespace g4
