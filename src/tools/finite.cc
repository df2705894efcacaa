#include "tools/finite.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/dequant.h"

namespace g4 {

NonFiniteStats scan_non_finite(const TensorView& t) {
  NonFiniteStats s;
  if (!dequant_supported(t.dtype) || !t.data) return s;
  const DTypeInfo& info = dtype_info(t.dtype);
  const int64_t n = t.numel();
  if (n <= 0 || info.block_elems <= 0 || n % info.block_elems != 0) return s;
  if (n / info.block_elems * info.block_bytes > t.nbytes) return s;  // the loader reports short tensors
  s.scanned = true;
  auto see = [&s](double v, int64_t i) {
    if (std::isfinite(v)) return;
    if (std::isnan(v)) ++s.nan;
    else ++s.inf;
    if (s.first_index < 0) s.first_index = i;
  };
  if (t.dtype == DType::F64) {  // through float, a large finite double would read as Inf
    for (int64_t i = 0; i < n; ++i) {
      double v;
      std::memcpy(&v, t.data + 8 * i, 8);
      see(v, i);
    }
    return s;
  }
  // Decode a few thousand blocks at a time: bounded memory, any tensor size.
  const int64_t chunk_blocks = std::max<int64_t>(1, 16384 / info.block_elems);
  std::vector<float> buf(static_cast<size_t>(chunk_blocks * info.block_elems));
  for (int64_t b0 = 0; b0 < n / info.block_elems; b0 += chunk_blocks) {
    const int64_t nb = std::min(chunk_blocks, n / info.block_elems - b0);
    const int64_t ne = nb * info.block_elems;
    dequant_row(t.dtype, t.data + b0 * info.block_bytes, ne, buf.data());
    for (int64_t i = 0; i < ne; ++i) see(buf[static_cast<size_t>(i)], b0 * info.block_elems + i);
  }
  return s;
}

}  // namespace g4
