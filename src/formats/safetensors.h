// safetensors reader (single file or sharded via model.safetensors.index.json)
// and the one safetensors writer. formats.md §2.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "formats/tensor.h"

namespace g4 {

struct SafetensorsFile {
  std::string path;
  std::map<std::string, std::string> metadata;  // "__metadata__"
  std::vector<TensorView> tensors;              // in data-offset order
};

// Parses and validates the header: 8-byte length inside the file, one JSON object
// without duplicate keys, known dtypes, shapes whose byte size matches the offsets,
// ranges inside the data buffer and not overlapping. Throws g4::Error naming the
// file, the tensor and the byte offset.
SafetensorsFile read_safetensors(const std::string& path);
SafetensorsFile read_safetensors(std::shared_ptr<MappedFile> file);

// All tensors of a checkpoint directory: model.safetensors, or the shards listed by
// model.safetensors.index.json (every listed shard must exist and hold exactly the
// tensors the index assigns to it).
std::vector<TensorView> read_safetensors_dir(const std::string& dir);

// Writer. Tensors are written in the given order, data 8-byte aligned.
struct SafetensorsOut {
  std::string name;
  std::string dtype;  // "F32", "I32", "BF16", ...
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
void write_safetensors(const std::string& path, const std::vector<SafetensorsOut>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// The same writer with tensor bytes made on demand (nbytes known up front), so that a
// checkpoint larger than memory can be written one tensor at a time.
struct SafetensorsLazy {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t nbytes = 0;
  std::function<std::vector<uint8_t>()> produce;
};
void write_safetensors(const std::string& path, const std::vector<SafetensorsLazy>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
SafetensorsOut st_f32(std::string name, std::vector<int64_t> shape, const std::vector<float>& v);
SafetensorsOut st_i32(std::string name, std::vector<int64_t> shape, const std::vector<int32_t>& v);

// Reads a tensor of a gold/output file as float (F32/F64/BF16/F16) or int (I32/I64).
std::vector<float> tensor_to_f32(const TensorView& t);
std::vector<int32_t> tensor_to_i32(const TensorView& t);

}  // namespace g4
