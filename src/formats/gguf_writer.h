// The one GGUF writer (v3, alignment 32, dense offsets in table order). Tensor data
// is produced on demand while writing, so a model is never held twice in memory.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "formats/gguf.h"

namespace g4 {

class GgufWriter {
 public:
  void set(const std::string& key, const GgufValue& v);
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_str(const std::string& key, const std::string& v);
  void set_arr_i32(const std::string& key, const std::vector<int64_t>& v);
  void set_arr_f32(const std::string& key, const std::vector<double>& v);
  void set_arr_bool(const std::string& key, const std::vector<bool>& v);
  void set_arr_str(const std::string& key, std::vector<std::string> v);

  // shape in PyTorch order (outermost first); produce() returns exactly the bytes.
  void add_tensor(const std::string& name, DType type, const std::vector<int64_t>& shape,
                  std::function<std::vector<uint8_t>()> produce);

  // Writes `path` (callers that verify first write to a temporary name and rename).
  // on_tensor(i, n) reports progress.
  void write(const std::string& path, const std::function<void(size_t, size_t)>& on_tensor = nullptr) const;
  // Writes a split GGUF, PREFIX-00001-of-0000N.gguf ...: parts of at most max_bytes of tensor data
  // (llama-gguf-split's layout: every key in the first part, split.no/count/tensors.count in all).
  // Returns the paths, first to last.
  std::vector<std::string> write_split(const std::string& prefix, uint64_t max_bytes,
                                       const std::function<void(size_t, size_t)>& on_tensor = nullptr) const;

 private:
  void write_part(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& kv, size_t first,
                  size_t last, const std::function<void(size_t, size_t)>& on_tensor) const;
  struct Tensor {
    std::string name;
    DType type;
    std::vector<int64_t> shape;
    uint64_t nbytes;
    std::function<std::vector<uint8_t>()> produce;
  };
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Tensor> tensors_;
};

GgufValue gguf_scalar_u32(uint32_t v);

}  // namespace g4
