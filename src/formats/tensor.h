// A stored tensor viewed in place inside a mapped file.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "formats/dtype.h"
#include "util/mapped_file.h"

namespace g4 {

struct TensorView {
  std::string name;            // name as stored in the file
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // PyTorch order: outermost first (GGUF ne reversed)
  const uint8_t* data = nullptr;
  int64_t nbytes = 0;
  uint64_t file_offset = 0;    // absolute byte offset in `file`, for messages
  std::shared_ptr<MappedFile> file;

  int64_t numel() const;
  std::string shape_str() const;  // "[4096, 1536]"
};

// Product of dims, or nullopt on a negative dim or int64 overflow.
std::optional<int64_t> checked_numel(const std::vector<int64_t>& shape);
std::string shape_to_string(const std::vector<int64_t>& shape);

}  // namespace g4
