#include "formats/dtype.h"

#include <array>
#include <cstdint>

#include "util/error.h"

namespace g4 {
namespace {

constexpr std::array kTypes = {
    DTypeInfo{DType::F32, "F32", 1, 4},          DTypeInfo{DType::F16, "F16", 1, 2},
    DTypeInfo{DType::Q4_0, "Q4_0", 32, 18},      DTypeInfo{DType::Q4_1, "Q4_1", 32, 20},
    DTypeInfo{DType::Q5_0, "Q5_0", 32, 22},      DTypeInfo{DType::Q5_1, "Q5_1", 32, 24},
    DTypeInfo{DType::Q8_0, "Q8_0", 32, 34},      DTypeInfo{DType::Q8_1, "Q8_1", 32, 36},
    DTypeInfo{DType::Q2_K, "Q2_K", 256, 84},     DTypeInfo{DType::Q3_K, "Q3_K", 256, 110},
    DTypeInfo{DType::Q4_K, "Q4_K", 256, 144},    DTypeInfo{DType::Q5_K, "Q5_K", 256, 176},
    DTypeInfo{DType::Q6_K, "Q6_K", 256, 210},    DTypeInfo{DType::Q8_K, "Q8_K", 256, 292},
    DTypeInfo{DType::IQ2_XXS, "IQ2_XXS", 256, 66}, DTypeInfo{DType::IQ2_XS, "IQ2_XS", 256, 74},
    DTypeInfo{DType::IQ3_XXS, "IQ3_XXS", 256, 98}, DTypeInfo{DType::IQ1_S, "IQ1_S", 256, 50},
    DTypeInfo{DType::IQ4_NL, "IQ4_NL", 32, 18},  DTypeInfo{DType::IQ3_S, "IQ3_S", 256, 110},
    DTypeInfo{DType::IQ2_S, "IQ2_S", 256, 82},   DTypeInfo{DType::IQ4_XS, "IQ4_XS", 256, 136},
    DTypeInfo{DType::I8, "I8", 1, 1},            DTypeInfo{DType::I16, "I16", 1, 2},
    DTypeInfo{DType::I32, "I32", 1, 4},          DTypeInfo{DType::I64, "I64", 1, 8},
    DTypeInfo{DType::F64, "F64", 1, 8},          DTypeInfo{DType::IQ1_M, "IQ1_M", 256, 56},
    DTypeInfo{DType::BF16, "BF16", 1, 2},        DTypeInfo{DType::TQ1_0, "TQ1_0", 256, 54},
    DTypeInfo{DType::TQ2_0, "TQ2_0", 256, 66},   DTypeInfo{DType::MXFP4, "MXFP4", 32, 17},
    DTypeInfo{DType::NVFP4, "NVFP4", 64, 36},    DTypeInfo{DType::Q1_0, "Q1_0", 128, 18},
    DTypeInfo{DType::U8, "U8", 1, 1},            DTypeInfo{DType::BOOL, "BOOL", 1, 1},
};

}  // namespace

std::optional<DTypeInfo> dtype_from_ggml_id(int32_t id) {
  for (const auto& t : kTypes)
    if (static_cast<int32_t>(t.type) == id && id < 1000) return t;
  return std::nullopt;
}

const DTypeInfo& dtype_info(DType t) {
  for (const auto& i : kTypes)
    if (i.type == t) return i;
  fail("internal: unknown dtype {}", static_cast<int>(t));
}

std::string_view dtype_name(DType t) { return dtype_info(t).name; }

std::optional<DType> dtype_from_safetensors(std::string_view s) {
  if (s == "F32") return DType::F32;
  if (s == "F16") return DType::F16;
  if (s == "BF16") return DType::BF16;
  if (s == "F64") return DType::F64;
  if (s == "I32") return DType::I32;
  if (s == "I64") return DType::I64;
  if (s == "I16") return DType::I16;
  if (s == "I8") return DType::I8;
  if (s == "U8") return DType::U8;
  if (s == "BOOL") return DType::BOOL;
  return std::nullopt;
}

std::optional<int64_t> row_bytes(DType t, int64_t n) {
  const auto& i = dtype_info(t);
  if (n < 0 || n % i.block_elems != 0) return std::nullopt;
  if (n / i.block_elems > INT64_MAX / i.block_bytes) return std::nullopt;  // byte count overflows
  return n / i.block_elems * i.block_bytes;
}

bool dtype_is_float(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64;
}

}  // namespace g4
