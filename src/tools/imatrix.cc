#include "tools/imatrix.h"

#include <cstring>

#include "formats/gguf.h"
#include "kernels/dequant.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace g4 {
namespace {

Imatrix read_gguf_imatrix(const std::string& path) {
  const GgufFile g = read_gguf(path);
  std::map<std::string, const TensorView*> by;
  for (const auto& t : g.tensors) by[t.name] = &t;
  Imatrix out;
  const std::string sfx = ".in_sum2", cfx = ".counts";
  for (const auto& t : g.tensors) {
    if (t.name.size() <= sfx.size() || t.name.compare(t.name.size() - sfx.size(), sfx.size(), sfx) != 0) continue;
    const std::string name = t.name.substr(0, t.name.size() - sfx.size());
    const auto c = by.find(name + cfx);
    if (c == by.end()) fail("{}: '{}' has no '{}{}' tensor; the imatrix is incomplete", path, t.name, name, cfx);
    if (t.dtype != DType::F32 || c->second->dtype != DType::F32)
      fail("{}: '{}' and its counts must be F32", path, name);
    const int64_t n_mat = t.shape.size() >= 2 ? t.shape[t.shape.size() - 2] : 1, ne0 = t.shape.back();
    if (c->second->numel() != n_mat)
      fail("{}: '{}{}' has {} values, expected {} (one per matrix of '{}')", path, name, cfx, c->second->numel(), n_mat, t.name);
    std::vector<float> sums(static_cast<size_t>(t.numel())), counts(static_cast<size_t>(n_mat));
    std::memcpy(sums.data(), t.data, sums.size() * 4);
    std::memcpy(counts.data(), c->second->data, counts.size() * 4);
    auto& e = out[name];
    e.assign(sums.size(), 1.0f);  // a matrix that never got input keeps weight 1 (llama-quantize)
    for (int64_t j = 0; j < n_mat; ++j)
      if (counts[static_cast<size_t>(j)] > 0)
        for (int64_t i = 0; i < ne0; ++i)
          e[static_cast<size_t>(j * ne0 + i)] = sums[static_cast<size_t>(j * ne0 + i)] / counts[static_cast<size_t>(j)];
  }
  if (out.empty()) fail("{}: a GGUF without *.in_sum2 tensors is not an importance matrix", path);
  return out;
}

// Legacy: int32 n_entries; per entry int32 len, name, int32 ncall, int32 nval, float[nval]; then
// optionally int32 last_call and the dataset name.
Imatrix read_legacy_imatrix(const std::string& path, const MappedFile& f) {
  size_t pos = 0;
  auto rd_i32 = [&](const char* what) {
    if (f.size() - pos < 4) fail("{}: truncated at byte {} (reading {})", path, pos, what);
    int32_t v;
    std::memcpy(&v, f.data() + pos, 4);
    pos += 4;
    return v;
  };
  const int32_t n = rd_i32("the entry count");
  if (n <= 0 || static_cast<uint64_t>(n) > f.size() / 12) fail("{}: entry count {} (byte 0) is impossible; not an imatrix file", path, n);
  Imatrix out;
  for (int32_t k = 0; k < n; ++k) {
    const size_t at = pos;
    const int32_t len = rd_i32("a name length");
    if (len <= 0 || len > 4096 || static_cast<size_t>(len) > f.size() - pos)
      fail("{}: entry {} (byte {}): name length {} is impossible", path, k, at, len);
    std::string name(reinterpret_cast<const char*>(f.data() + pos), static_cast<size_t>(len));
    pos += static_cast<size_t>(len);
    const int32_t ncall = rd_i32("ncall"), nval = rd_i32("nval");
    if (nval <= 0 || static_cast<size_t>(nval) > (f.size() - pos) / 4)
      fail("{}: entry '{}' (byte {}): {} values do not fit in the file", path, name, at, nval);
    auto& e = out[name];
    e.resize(static_cast<size_t>(nval));
    std::memcpy(e.data(), f.data() + pos, e.size() * 4);
    pos += e.size() * 4;
    if (ncall > 0)
      for (auto& v : e) v /= static_cast<float>(ncall);
  }
  return out;
}

}  // namespace

Imatrix read_imatrix(const std::string& path) {
  auto f = MappedFile::open(path);
  if (f->size() >= 4 && std::memcmp(f->data(), "GGUF", 4) == 0) return read_gguf_imatrix(path);
  return read_legacy_imatrix(path, *f);
}

}  // namespace g4
