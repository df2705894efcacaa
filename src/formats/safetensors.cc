#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "util/error.h"
#include "util/half.h"
#include "util/json.h"

namespace g4 {
namespace fs = std::filesystem;

namespace {

int64_t json_int(const json& v, const std::string& where) {
  if (v.is_number_unsigned()) {
    auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) fail("{}: value {} is too large", where, u);
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  fail("{}: expected an integer, found {}", where, v.dump());
}

}  // namespace

SafetensorsFile read_safetensors(const std::string& path) { return read_safetensors(MappedFile::open(path)); }

SafetensorsFile read_safetensors(std::shared_ptr<MappedFile> file) {
  const std::string& path = file->path();
  const uint64_t fsize = file->size();
  if (fsize < 8) fail("{}: file is {} bytes, too short for the 8-byte safetensors header length", path, fsize);
  uint64_t hlen;
  std::memcpy(&hlen, file->data(), 8);
  if (hlen > fsize - 8)
    fail("{}: header length {} (bytes 0..7) runs past the end of the file ({} bytes); the file is truncated or not safetensors",
         path, hlen, fsize);
  const std::string_view header(reinterpret_cast<const char*>(file->data()) + 8, hlen);
  json h = parse_json_strict(header, path + " (safetensors header)");
  if (!h.is_object()) fail("{}: safetensors header is not a JSON object", path);

  SafetensorsFile out;
  out.path = path;
  const uint64_t data_start = 8 + hlen;
  const uint64_t data_size = fsize - data_start;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail("{}: __metadata__ must be an object of strings", path);
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail("{}: __metadata__[\"{}\"] is not a string", path, m.key());
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = fmt::format("{}: tensor '{}'", path, name);
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      fail("{}: entry must be an object with dtype, shape and data_offsets", where);
    if (!v["dtype"].is_string()) fail("{}: dtype is not a string", where);
    const auto dts = v["dtype"].get<std::string>();
    auto dt = dtype_from_safetensors(dts);
    if (!dt) fail("{}: unsupported dtype \"{}\" (g4 reads F32, F16, BF16, F64, I8..I64, U8, BOOL)", where, dts);
    if (!v["shape"].is_array()) fail("{}: shape is not an array", where);
    TensorView t;
    t.name = name;
    t.dtype = *dt;
    for (const auto& d : v["shape"]) {
      int64_t n = json_int(d, where + " shape");
      if (n < 0) fail("{}: negative dimension {}", where, n);
      t.shape.push_back(n);
    }
    auto numel = checked_numel(t.shape);
    const int64_t esize = dtype_info(*dt).block_bytes;
    if (!numel || *numel > INT64_MAX / esize)
      fail("{}: shape {} overflows a 64-bit byte count", where, shape_to_string(t.shape));
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2) fail("{}: data_offsets must be [begin, end]", where);
    const int64_t b = json_int(off[0], where + " data_offsets"), e = json_int(off[1], where + " data_offsets");
    if (b < 0 || e < b) fail("{}: data_offsets [{}, {}] are not an increasing range", where, b, e);
    if (static_cast<uint64_t>(e) > data_size)
      fail("{}: data_offsets [{}, {}] end past the data buffer ({} bytes from file offset {}); the file is truncated",
           where, b, e, data_size, data_start);
    if (e - b != *numel * esize)
      fail("{}: shape {} of {} needs {} bytes but data_offsets [{}, {}] hold {}", where,
           shape_to_string(t.shape), dts, *numel * esize, b, e, e - b);
    t.nbytes = e - b;
    t.file_offset = data_start + static_cast<uint64_t>(b);
    t.data = file->data() + t.file_offset;
    t.file = file;
    out.tensors.push_back(std::move(t));
  }
  std::sort(out.tensors.begin(), out.tensors.end(),
            [](const TensorView& a, const TensorView& b) { return a.file_offset < b.file_offset; });
  // Ranges must tile the data buffer exactly (as the safetensors library requires):
  // an overlap, a hole or trailing bytes all mean a damaged or hand-edited file.
  uint64_t expect = data_start;
  for (const auto& t : out.tensors) {
    if (t.file_offset < expect)
      fail("{}: tensor '{}' (bytes {}..{}) overlaps the tensor before it (which ends at byte {})", path, t.name,
           t.file_offset, t.file_offset + t.nbytes, expect);
    if (t.file_offset > expect)
      fail("{}: tensor '{}' starts at byte {} but the previous tensor ends at byte {}; offsets must be contiguous",
           path, t.name, t.file_offset, expect);
    expect += static_cast<uint64_t>(t.nbytes);
  }
  if (expect != fsize)
    fail("{}: tensors cover bytes {}..{} but the file has {} bytes; the file is truncated or has trailing data",
         path, data_start, expect, fsize);
  return out;
}

std::vector<TensorView> read_safetensors_dir(const std::string& dir) {
  const fs::path d(dir);
  const fs::path index = d / "model.safetensors.index.json";
  std::vector<TensorView> all;
  if (!fs::exists(index)) {
    const fs::path single = d / "model.safetensors";
    if (!fs::exists(single))
      fail("{}: neither model.safetensors nor model.safetensors.index.json found; is this an HF checkpoint directory?", dir);
    return read_safetensors(single.string()).tensors;
  }
  json j = parse_json_strict(read_text_file(index.string()), index.string());
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    fail("{}: missing \"weight_map\" object", index.string());
  std::map<std::string, std::set<std::string>> by_shard;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string()) fail("{}: weight_map[\"{}\"] is not a file name", index.string(), it.key());
    const auto shard = it.value().get<std::string>();
    if (shard.find('/') != std::string::npos || shard == "..")
      fail("{}: shard name \"{}\" must be a plain file name", index.string(), shard);
    by_shard[shard].insert(it.key());
  }
  for (const auto& [shard, names] : by_shard) {
    const fs::path p = d / shard;
    if (!fs::exists(p))
      fail("{}: shard '{}' listed in model.safetensors.index.json is missing ({} tensors, e.g. '{}'); download it again",
           dir, shard, names.size(), *names.begin());
    auto f = read_safetensors(p.string());
    std::set<std::string> seen;
    for (auto& t : f.tensors) {
      if (!names.count(t.name))
        fail("{}: tensor '{}' is in shard '{}' but the index assigns it elsewhere (or not at all)", dir, t.name, shard);
      seen.insert(t.name);
      all.push_back(std::move(t));
    }
    for (const auto& n : names)
      if (!seen.count(n)) fail("{}: index lists tensor '{}' in shard '{}', but the shard does not contain it", dir, n, shard);
  }
  return all;
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsOut>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsLazy> lazy;
  for (const auto& t : tensors)
    lazy.push_back({t.name, t.dtype, t.shape, t.bytes.size(), [&t] { return t.bytes; }});
  write_safetensors(path, lazy, metadata);
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsLazy>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  for (const auto& t : tensors) {
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.nbytes}}};
    off += t.nbytes;
  }
  std::string hs = h.dump();
  while ((8 + hs.size()) % 8 != 0) hs.push_back(' ');
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) fail("cannot write '{}'", tmp);
    uint64_t n = hs.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(hs.data(), static_cast<std::streamsize>(hs.size()));
    for (const auto& t : tensors) {
      const auto b = t.produce();
      if (b.size() != t.nbytes) fail("{}: tensor {} produced {} bytes, {} announced", path, t.name, b.size(), t.nbytes);
      out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    }
    if (!out) fail("write to '{}' failed (disk full?)", tmp);
  }
  fs::rename(tmp, path);
}

SafetensorsOut st_f32(std::string name, std::vector<int64_t> shape, const std::vector<float>& v) {
  SafetensorsOut o{std::move(name), "F32", std::move(shape), {}};
  o.bytes.resize(v.size() * 4);
  std::memcpy(o.bytes.data(), v.data(), o.bytes.size());
  return o;
}

SafetensorsOut st_i32(std::string name, std::vector<int64_t> shape, const std::vector<int32_t>& v) {
  SafetensorsOut o{std::move(name), "I32", std::move(shape), {}};
  o.bytes.resize(v.size() * 4);
  std::memcpy(o.bytes.data(), v.data(), o.bytes.size());
  return o;
}

std::vector<float> tensor_to_f32(const TensorView& t) {
  const int64_t n = t.numel();
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = t.data;
    switch (t.dtype) {
      case DType::F32: std::memcpy(&out[i], p + 4 * i, 4); break;
      case DType::F64: { double d; std::memcpy(&d, p + 8 * i, 8); out[i] = static_cast<float>(d); break; }
      case DType::BF16: out[i] = load_bf16(p + 2 * i); break;
      case DType::F16: out[i] = load_f16(p + 2 * i); break;
      default: fail("{}: tensor '{}' has dtype {}, expected a float type", t.file->path(), t.name, dtype_name(t.dtype));
    }
  }
  return out;
}

std::vector<int32_t> tensor_to_i32(const TensorView& t) {
  const int64_t n = t.numel();
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (t.dtype == DType::I32) std::memcpy(&out[i], t.data + 4 * i, 4);
    else if (t.dtype == DType::I64) { int64_t v; std::memcpy(&v, t.data + 8 * i, 8); out[i] = static_cast<int32_t>(v); }
    else fail("{}: tensor '{}' has dtype {}, expected I32 or I64", t.file->path(), t.name, dtype_name(t.dtype));
  }
  return out;
}

}  // namespace g4
