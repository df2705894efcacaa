#include "formats/gguf_writer.h"
#include "formats/gguf_keys.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "util/error.h"

namespace g4 {
namespace {

constexpr uint64_t kAlign = 32;

void put_bytes(std::string& b, const void* p, size_t n) { b.append(static_cast<const char*>(p), n); }
template <typename T> void put(std::string& b, T v) { put_bytes(b, &v, sizeof v); }
void put_str(std::string& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  b += s;
}

void put_scalar(std::string& b, GgufType t, int64_t i, uint64_t u, double f, const std::string& s) {
  switch (t) {
    case GgufType::UINT8: put<uint8_t>(b, static_cast<uint8_t>(i)); break;
    case GgufType::INT8: put<int8_t>(b, static_cast<int8_t>(i)); break;
    case GgufType::UINT16: put<uint16_t>(b, static_cast<uint16_t>(i)); break;
    case GgufType::INT16: put<int16_t>(b, static_cast<int16_t>(i)); break;
    case GgufType::UINT32: put<uint32_t>(b, static_cast<uint32_t>(i)); break;
    case GgufType::INT32: put<int32_t>(b, static_cast<int32_t>(i)); break;
    case GgufType::BOOL: put<uint8_t>(b, i ? 1 : 0); break;
    case GgufType::UINT64: put<uint64_t>(b, u ? u : static_cast<uint64_t>(i)); break;
    case GgufType::INT64: put<int64_t>(b, i); break;
    case GgufType::FLOAT32: put<float>(b, static_cast<float>(f)); break;
    case GgufType::FLOAT64: put<double>(b, f); break;
    case GgufType::STRING: put_str(b, s); break;
    default: fail("internal: cannot write GGUF value type {}", gguf_type_name(t));
  }
}

GgufValue scalar(GgufType t) {
  GgufValue v;
  v.type = t;
  return v;
}

}  // namespace

GgufValue gguf_scalar_u32(uint32_t x) {
  GgufValue v = scalar(GgufType::UINT32);
  v.i = x;
  return v;
}

void GgufWriter::set(const std::string& key, const GgufValue& v) {
  for (auto& [k, old] : kv_)
    if (k == key) { old = v; return; }
  kv_.emplace_back(key, v);
}
void GgufWriter::set_u32(const std::string& key, uint32_t x) { set(key, gguf_scalar_u32(x)); }
void GgufWriter::set_i32(const std::string& key, int32_t x) { GgufValue v = scalar(GgufType::INT32); v.i = x; set(key, v); }
void GgufWriter::set_f32(const std::string& key, float x) { GgufValue v = scalar(GgufType::FLOAT32); v.f = x; set(key, v); }
void GgufWriter::set_bool(const std::string& key, bool x) { GgufValue v = scalar(GgufType::BOOL); v.i = x; set(key, v); }
void GgufWriter::set_str(const std::string& key, const std::string& x) { GgufValue v = scalar(GgufType::STRING); v.s = x; set(key, v); }
void GgufWriter::set_arr_i32(const std::string& key, const std::vector<int64_t>& x) {
  GgufValue v = scalar(GgufType::ARRAY);
  v.elem_type = GgufType::INT32;
  v.ai = x;
  set(key, v);
}
void GgufWriter::set_arr_f32(const std::string& key, const std::vector<double>& x) {
  GgufValue v = scalar(GgufType::ARRAY);
  v.elem_type = GgufType::FLOAT32;
  v.af = x;
  set(key, v);
}
void GgufWriter::set_arr_bool(const std::string& key, const std::vector<bool>& x) {
  GgufValue v = scalar(GgufType::ARRAY);
  v.elem_type = GgufType::BOOL;
  for (bool b : x) v.ai.push_back(b);
  set(key, v);
}
void GgufWriter::set_arr_str(const std::string& key, std::vector<std::string> x) {
  GgufValue v = scalar(GgufType::ARRAY);
  v.elem_type = GgufType::STRING;
  v.as = std::move(x);
  set(key, v);
}

void GgufWriter::add_tensor(const std::string& name, DType type, const std::vector<int64_t>& shape,
                            std::function<std::vector<uint8_t>()> produce) {
  if (name.size() > 63) fail("GGUF tensor name '{}' is longer than 63 bytes", name);
  for (const auto& t : tensors_)
    if (t.name == name) fail("GGUF writer: tensor '{}' added twice", name);
  if (shape.empty() || shape.size() > 4) fail("GGUF tensor '{}' needs 1..4 dims, has {}", name, shape.size());
  const auto rb = row_bytes(type, shape.back());
  if (!rb) fail("GGUF tensor '{}': a row of {} elements cannot be stored as {}", name, shape.back(), dtype_name(type));
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
  tensors_.push_back({name, type, shape, static_cast<uint64_t>(*rb * rows), std::move(produce)});
}

void GgufWriter::write(const std::string& path, const std::function<void(size_t, size_t)>& on_tensor) const {
  write_part(path, kv_, 0, tensors_.size(), on_tensor);
}

std::vector<std::string> GgufWriter::write_split(const std::string& prefix, uint64_t max_bytes,
                                                 const std::function<void(size_t, size_t)>& on_tensor) const {
  // Parts in tensor order, each at most max_bytes of tensor data (a larger tensor gets a part to
  // itself), as llama-gguf-split --split-max-size cuts them.
  std::vector<size_t> starts = {0};
  uint64_t in_part = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const uint64_t sz = (tensors_[i].nbytes + kAlign - 1) / kAlign * kAlign;
    if (in_part > 0 && in_part + sz > max_bytes) {
      starts.push_back(i);
      in_part = 0;
    }
    in_part += sz;
  }
  const int n = static_cast<int>(starts.size());
  if (n > 99999) fail("GGUF writer: {} parts of at most {} bytes; the split naming allows 99999", n, max_bytes);
  std::vector<std::string> paths;
  for (int p = 0; p < n; ++p) {
    // The first part carries every key; the others only the split keys (llama.cpp's layout).
    std::vector<std::pair<std::string, GgufValue>> kv = p == 0 ? kv_ : std::vector<std::pair<std::string, GgufValue>>{};
    GgufValue no, count, total;
    no.type = count.type = GgufType::UINT16;
    no.i = p;
    count.i = n;
    total.type = GgufType::INT32;
    total.i = static_cast<int64_t>(tensors_.size());
    kv.emplace_back(gk::kSplitNo, no);
    kv.emplace_back(gk::kSplitCount, count);
    kv.emplace_back(gk::kSplitTensorsCount, total);
    const size_t first = starts[p], last = p + 1 < n ? starts[p + 1] : tensors_.size();
    paths.push_back(gguf_split_path(prefix, p + 1, n));
    write_part(paths.back(), kv, first, last, [&](size_t i, size_t) {
      if (on_tensor) on_tensor(first + i, tensors_.size());
    });
  }
  return paths;
}

void GgufWriter::write_part(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& kvs, size_t first,
                            size_t last, const std::function<void(size_t, size_t)>& on_tensor) const {
  std::string h;
  h += "GGUF";
  put<uint32_t>(h, 3);
  put<int64_t>(h, static_cast<int64_t>(last - first));
  put<int64_t>(h, static_cast<int64_t>(kvs.size()));
  for (const auto& [key, v] : kvs) {
    put_str(h, key);
    put<int32_t>(h, static_cast<int32_t>(v.type));
    if (v.type == GgufType::ARRAY) {
      put<int32_t>(h, static_cast<int32_t>(v.elem_type));
      put<uint64_t>(h, v.array_size());
      if (v.elem_type == GgufType::STRING) for (const auto& s : v.as) put_str(h, s);
      else if (v.elem_type == GgufType::FLOAT32 || v.elem_type == GgufType::FLOAT64) for (double f : v.af) put_scalar(h, v.elem_type, 0, 0, f, "");
      else for (int64_t i : v.ai) put_scalar(h, v.elem_type, i, 0, 0, "");
    } else {
      put_scalar(h, v.type, v.i, v.u, v.f, v.s);
    }
  }
  uint64_t offset = 0;
  for (size_t i = first; i < last; ++i) {
    const auto& t = tensors_[i];
    put_str(h, t.name);
    put<uint32_t>(h, static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) put<int64_t>(h, *it);  // ne: fastest first
    put<int32_t>(h, static_cast<int32_t>(t.type));
    put<uint64_t>(h, offset);
    offset += (t.nbytes + kAlign - 1) / kAlign * kAlign;
  }
  while (h.size() % kAlign) h.push_back('\0');

  std::ofstream out(path, std::ios::binary);
  if (!out) fail("cannot write '{}'", path);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  const char zeros[kAlign] = {};
  for (size_t i = first; i < last; ++i) {
    const auto& t = tensors_[i];
    const std::vector<uint8_t> bytes = t.produce();
    if (bytes.size() != t.nbytes)
      fail("internal: tensor '{}' produced {} bytes, {} {} needs {}", t.name, bytes.size(), dtype_name(t.type),
           shape_to_string(t.shape), t.nbytes);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    out.write(zeros, static_cast<std::streamsize>((kAlign - bytes.size() % kAlign) % kAlign));
    if (on_tensor) on_tensor(i - first + 1, last - first);
  }
  out.close();
  if (!out) {
    std::filesystem::remove(path);
    fail("write to '{}' failed (disk full?)", path);
  }
}

}  // namespace g4
