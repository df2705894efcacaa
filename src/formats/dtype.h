// Element types of stored tensors: the GGML type ids (formats.md §4) are the
// common language; safetensors dtypes map onto them.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace g4 {

enum class DType : int32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41,
  // Not GGML types: only seen in safetensors files.
  U8 = 1000, BOOL = 1001,
};

struct DTypeInfo {
  DType type;
  const char* name;
  int64_t block_elems;  // elements per block
  int64_t block_bytes;  // bytes per block
};

// Type info for a GGML type id read from a file; nullopt for unknown/removed ids.
std::optional<DTypeInfo> dtype_from_ggml_id(int32_t id);
const DTypeInfo& dtype_info(DType t);
std::string_view dtype_name(DType t);
// Safetensors dtype string ("BF16", "F32", ...) -> DType; nullopt if not one we read.
std::optional<DType> dtype_from_safetensors(std::string_view s);

// Bytes of a row of n elements; nullopt if n is not a multiple of the block size.
std::optional<int64_t> row_bytes(DType t, int64_t n);

// Element types the compute paths can read today.
bool dtype_is_float(DType t);  // F32, F16, BF16, F64

}  // namespace g4
