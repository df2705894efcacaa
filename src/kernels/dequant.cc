#include "kernels/dequant.h"

#include <cstring>
#include <vector>

#include "util/error.h"
#include "util/half.h"

namespace g4 {
namespace {

// A row of n_blocks blocks of layout B through the type's one scalar decoder (blocks.h).
template <class B>
void decode_row(const uint8_t* src, int64_t n_blocks, float* y) {
  for (int64_t b = 0; b < n_blocks; ++b) blocks::decode(*blocks::block_at<B>(src, b), y + b * B::kElems);
}

using RowFn = void (*)(const uint8_t*, int64_t, float*);
RowFn row_fn(DType t) {
  RowFn fn = nullptr;
  blocks::visit_block_type(t, [&](auto blk) { fn = decode_row<decltype(blk)>; });
  return fn;
}

}  // namespace

bool dequant_supported(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64 || row_fn(t) != nullptr;
}

void dequant_row(DType t, const uint8_t* src, int64_t n, float* out) {
  switch (t) {
    case DType::F32: std::memcpy(out, src, static_cast<size_t>(n) * 4); return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) out[i] = load_f16(src + 2 * i);
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) out[i] = load_bf16(src + 2 * i);
      return;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        out[i] = static_cast<float>(d);
      }
      return;
    default: break;
  }
  RowFn fn = row_fn(t);
  if (!fn) fail("dequantization of {} is not supported", dtype_name(t));
  fn(src, n / dtype_info(t).block_elems, out);
}

void dequant_row(DType t, const uint8_t* src, int64_t n, double* out) {
  if (t == DType::F64) {
    std::memcpy(out, src, static_cast<size_t>(n) * 8);
    return;
  }
  thread_local std::vector<float> tmp;
  tmp.resize(static_cast<size_t>(n));
  dequant_row(t, src, n, tmp.data());
  for (int64_t i = 0; i < n; ++i) out[i] = tmp[i];
}

}  // namespace g4
