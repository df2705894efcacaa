#include "formats/gguf.h"

#include <cstring>
#include <filesystem>
#include <regex>
#include <set>

#include "util/error.h"
#include "formats/gguf_keys.h"

namespace g4 {
namespace {

constexpr uint64_t kMaxNameBytes = 63;  // GGML_MAX_NAME (64) incl. terminator

// Bounds-checked little-endian cursor over the mapped file.
class Cursor {
 public:
  Cursor(const MappedFile& f) : f_(f) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return f_.size() - pos_; }

  void need(uint64_t n, const char* what) {
    if (n > remaining())
      fail("{}: truncated at byte {}: reading {} needs {} bytes, only {} left", f_.path(), pos_, what, n, remaining());
  }
  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, f_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const char* what) {
    const uint64_t at = pos_;
    const auto n = read<uint64_t>(what);
    if (n > remaining())
      fail("{}: string length {} at byte {} ({}) exceeds the {} bytes left in the file", f_.path(), n, at, what, remaining());
    std::string s(reinterpret_cast<const char*>(f_.data() + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  const MappedFile& f_;
  uint64_t pos_ = 0;
};

uint64_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
    case GgufType::UINT16: case GgufType::INT16: return 2;
    case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
    case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: return 8;
    case GgufType::STRING: return 8;  // minimum: the length field
    default: return 0;
  }
}

bool valid_type(int32_t t) { return t >= 0 && t <= 12; }

// Reads one scalar of type t into (i, u, f, s).
void read_scalar(Cursor& c, GgufType t, int64_t& i, uint64_t& u, double& f, std::string& s, const char* what) {
  switch (t) {
    case GgufType::UINT8: i = c.read<uint8_t>(what); break;
    case GgufType::INT8: i = c.read<int8_t>(what); break;
    case GgufType::UINT16: i = c.read<uint16_t>(what); break;
    case GgufType::INT16: i = c.read<int16_t>(what); break;
    case GgufType::UINT32: i = c.read<uint32_t>(what); break;
    case GgufType::INT32: i = c.read<int32_t>(what); break;
    case GgufType::BOOL: i = c.read<uint8_t>(what) != 0; break;
    case GgufType::UINT64: u = c.read<uint64_t>(what); i = static_cast<int64_t>(u); break;
    case GgufType::INT64: i = c.read<int64_t>(what); break;
    case GgufType::FLOAT32: f = c.read<float>(what); break;
    case GgufType::FLOAT64: f = c.read<double>(what); break;
    case GgufType::STRING: s = c.read_string(what); break;
    default: break;
  }
}

bool is_int_type(GgufType t) {
  return t != GgufType::FLOAT32 && t != GgufType::FLOAT64 && t != GgufType::STRING && t != GgufType::ARRAY;
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  static const char* names[] = {"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
                                "BOOL",  "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};
  auto i = static_cast<int32_t>(t);
  return i >= 0 && i <= 12 ? names[i] : "?";
}

bool GgufValue::is_int() const { return is_int_type(type); }
bool GgufValue::is_float() const { return type == GgufType::FLOAT32 || type == GgufType::FLOAT64; }
size_t GgufValue::array_size() const { return ai.size() + af.size() + as.size(); }

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_index.find(key);
  return it == kv_index.end() ? nullptr : &kv[it->second].second;
}

std::optional<int64_t> GgufFile::get_int(const std::string& key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_int()) fail("{}: metadata key '{}' is {}, expected an integer", path, key, gguf_type_name(v->type));
  if (v->type == GgufType::UINT64 && v->u > static_cast<uint64_t>(INT64_MAX))
    fail("{}: metadata key '{}' = {} is out of range", path, key, v->u);
  return v->i;
}

std::optional<double> GgufFile::get_float(const std::string& key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  if (v->is_float()) return v->f;
  if (v->is_int()) return static_cast<double>(v->i);
  fail("{}: metadata key '{}' is {}, expected a number", path, key, gguf_type_name(v->type));
}

std::optional<std::string> GgufFile::get_string(const std::string& key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufType::STRING) fail("{}: metadata key '{}' is {}, expected STRING", path, key, gguf_type_name(v->type));
  return v->s;
}

std::optional<bool> GgufFile::get_bool(const std::string& key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_int()) fail("{}: metadata key '{}' is {}, expected BOOL", path, key, gguf_type_name(v->type));
  return v->i != 0;
}

std::string gguf_split_path(const std::string& prefix, int i, int n) { return fmt::format("{}-{:05d}-of-{:05d}.gguf", prefix, i, n); }

namespace {

// split.no / split.count of a file, or nullopt when it is not a split part.
std::optional<std::pair<int64_t, int64_t>> split_of(const GgufFile& g) {
  const auto count = g.get_int(gk::kSplitCount);
  if (!count) return std::nullopt;
  const auto no = g.get_int(gk::kSplitNo);
  if (!no) fail("{}: has {} but no {}; the split file is damaged", g.path, gk::kSplitCount, gk::kSplitNo);
  if (*count < 1 || *count > 99999 || *no < 0 || *no >= *count)
    fail("{}: {} = {} of {} = {} is impossible", g.path, gk::kSplitNo, *no, gk::kSplitCount, *count);
  return std::make_pair(*no, *count);
}

}  // namespace

GgufFile read_gguf(const std::string& path) {
  GgufFile g = read_gguf(MappedFile::open(path));
  g.parts = {path};
  const auto split = split_of(g);
  if (!split || split->second == 1) return g;
  const auto [no, count] = *split;
  // NAME-0000i-of-0000N.gguf: the only naming llama.cpp writes and reads.
  static const std::regex re(R"((.*)-(\d{5})-of-(\d{5})\.gguf)");
  std::smatch m;
  if (!std::regex_match(path, m, re) || std::stoll(m[2].str()) != no + 1 || std::stoll(m[3].str()) != count)
    fail("{}: part {} of a {}-part split GGUF, but the name is not NAME-{:05d}-of-{:05d}.gguf, so the other parts cannot be "
         "found; rename the parts as llama-gguf-split names them",
         path, no + 1, count, no + 1, count);
  const std::string prefix = m[1].str();
  if (no != 0)
    fail("{}: part {} of a {}-part split GGUF; open the first part, {}", path, no + 1, count, gguf_split_path(prefix, 1, count));
  std::set<std::string> names;
  for (const auto& t : g.tensors) names.insert(t.name);
  for (int64_t i = 1; i < count; ++i) {
    const std::string part = gguf_split_path(prefix, static_cast<int>(i + 1), static_cast<int>(count));
    if (!std::filesystem::exists(part))
      fail("{}: part {} of this {}-part split GGUF is missing: {} does not exist", path, i + 1, count, part);
    GgufFile p = read_gguf(MappedFile::open(part));
    const auto ps = split_of(p);
    if (!ps) fail("{}: expected part {} of {}, but it has no {} key; it is not a split part", part, i + 1, count, gk::kSplitCount);
    if (ps->second != count || ps->first != i)
      fail("{}: expected part {} of {}, but its metadata says part {} of {} ({}, {}); the parts come from different splits",
           part, i + 1, count, ps->first + 1, ps->second, gk::kSplitNo, gk::kSplitCount);
    if (p.alignment != g.alignment)
      fail("{}: alignment {} differs from the first part's {}", part, p.alignment, g.alignment);
    for (auto& t : p.tensors) {
      if (!names.insert(t.name).second) fail("{}: tensor '{}' is also in an earlier part of the split", part, t.name);
      g.tensors.push_back(std::move(t));
    }
    g.parts.push_back(part);
  }
  if (const auto total = g.get_int(gk::kSplitTensorsCount); total && *total != static_cast<int64_t>(g.tensors.size()))
    fail("{}: {} = {} but the {} parts hold {} tensors; a part is truncated or from another split", path,
         gk::kSplitTensorsCount, *total, count, g.tensors.size());
  return g;
}

GgufFile read_gguf(std::shared_ptr<MappedFile> file) {
  const std::string& path = file->path();
  GgufFile g;
  g.path = path;
  Cursor c(*file);
  c.need(4, "magic");
  if (std::memcmp(file->data(), "GGUF", 4) != 0) fail("{}: not a GGUF file (bytes 0..3 are not 'GGUF')", path);
  c.read<uint32_t>("magic");
  g.version = c.read<uint32_t>("version");
  if ((g.version & 0xffffu) == 0)
    fail("{}: GGUF version field {:#x} looks byte-swapped; big-endian GGUF files are not supported", path, g.version);
  if (g.version != 2 && g.version != 3) fail("{}: GGUF version {} is not supported (expected 3, or 2)", path, g.version);
  const auto n_tensors = c.read<int64_t>("tensor count");
  const auto n_kv = c.read<int64_t>("metadata count");
  // Each KV pair takes at least 13 bytes and each tensor info at least 32: a count
  // beyond that cannot be honest, so reject it before allocating anything.
  if (n_kv < 0 || static_cast<uint64_t>(n_kv) > c.remaining() / 13)
    fail("{}: metadata count {} (byte 16) is impossible for a file of {} bytes; it is truncated or corrupt", path, n_kv, file->size());
  if (n_tensors < 0 || static_cast<uint64_t>(n_tensors) > c.remaining() / 32)
    fail("{}: tensor count {} (byte 8) is impossible for a file of {} bytes; it is truncated or corrupt", path, n_tensors, file->size());

  for (int64_t k = 0; k < n_kv; ++k) {
    const uint64_t at = c.pos();
    std::string key = c.read_string("metadata key");
    if (g.kv_index.count(key)) fail("{}: duplicate metadata key '{}' at byte {}", path, key, at);
    const auto traw = c.read<int32_t>("metadata type");
    if (!valid_type(traw)) fail("{}: metadata key '{}' has unknown value type {} (byte {})", path, key, traw, c.pos() - 4);
    GgufValue v;
    v.type = static_cast<GgufType>(traw);
    if (v.type == GgufType::ARRAY) {
      const auto et = c.read<int32_t>("array element type");
      if (!valid_type(et)) fail("{}: array '{}' has unknown element type {}", path, key, et);
      v.elem_type = static_cast<GgufType>(et);
      if (v.elem_type == GgufType::ARRAY) fail("{}: array '{}' holds arrays; nested arrays are not allowed", path, key);
      const auto count = c.read<uint64_t>("array length");
      if (count > c.remaining() / scalar_size(v.elem_type))
        fail("{}: array '{}' claims {} elements of {}, more than the {} bytes left in the file", path, key, count,
             gguf_type_name(v.elem_type), c.remaining());
      std::string what = "array '" + key + "'";
      if (v.elem_type == GgufType::STRING) v.as.reserve(count);
      else if (is_int_type(v.elem_type)) v.ai.reserve(count);
      else v.af.reserve(count);
      for (uint64_t e = 0; e < count; ++e) {
        int64_t i = 0; uint64_t u = 0; double f = 0; std::string s;
        read_scalar(c, v.elem_type, i, u, f, s, what.c_str());
        if (v.elem_type == GgufType::STRING) v.as.push_back(std::move(s));
        else if (is_int_type(v.elem_type)) v.ai.push_back(i);
        else v.af.push_back(f);
      }
    } else {
      read_scalar(c, v.type, v.i, v.u, v.f, v.s, key.c_str());
    }
    g.kv_index[key] = g.kv.size();
    g.kv.emplace_back(std::move(key), std::move(v));
  }

  if (const auto* a = g.find(gk::kAlignment)) {
    if (a->type != GgufType::UINT32) fail("{}: general.alignment must be UINT32, found {}", path, gguf_type_name(a->type));
    if (a->i == 0 || (a->i & (a->i - 1)) != 0)
      fail("{}: general.alignment = {} is not a power of two", path, a->i);
    g.alignment = static_cast<uint64_t>(a->i);
  }

  struct Info { std::string name; std::vector<int64_t> ne; DTypeInfo type; uint64_t offset; uint64_t nbytes; };
  std::vector<Info> infos;
  std::set<std::string> names;
  for (int64_t k = 0; k < n_tensors; ++k) {
    const uint64_t at = c.pos();
    Info t;
    t.name = c.read_string("tensor name");
    if (t.name.size() > kMaxNameBytes) fail("{}: tensor name '{}' (byte {}) is longer than 63 bytes", path, t.name, at);
    if (!names.insert(t.name).second) fail("{}: duplicate tensor '{}' (byte {})", path, t.name, at);
    const auto n_dims = c.read<uint32_t>("n_dims");
    if (n_dims < 1 || n_dims > 4) fail("{}: tensor '{}' has {} dimensions (GGUF allows 1..4)", path, t.name, n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto n = c.read<int64_t>("tensor dim");
      if (n < 0) fail("{}: tensor '{}' has negative dimension ne[{}] = {}", path, t.name, d, n);
      t.ne.push_back(n);
    }
    const auto tid = c.read<int32_t>("tensor type");
    auto ti = dtype_from_ggml_id(tid);
    if (!ti) fail("{}: tensor '{}' has unknown or removed GGML type id {}", path, t.name, tid);
    t.type = *ti;
    t.offset = c.read<uint64_t>("tensor offset");
    auto numel = checked_numel(t.ne);
    if (!numel) fail("{}: tensor '{}' dims {} overflow a 64-bit element count", path, t.name, shape_to_string(t.ne));
    if (t.ne[0] % t.type.block_elems != 0)
      fail("{}: tensor '{}' of type {} has ne[0] = {}, not a multiple of the block size {}", path, t.name,
           t.type.name, t.ne[0], t.type.block_elems);
    const auto rb_opt = row_bytes(t.type.type, t.ne[0]);
    if (!rb_opt) fail("{}: tensor '{}' row of {} {} elements overflows a 64-bit byte count", path, t.name, t.ne[0], t.type.name);
    const int64_t rb = *rb_opt;
    const int64_t rows = t.ne[0] == 0 ? 0 : *numel / t.ne[0];
    if (rows != 0 && rb > INT64_MAX / rows) fail("{}: tensor '{}' byte size overflows", path, t.name);
    t.nbytes = static_cast<uint64_t>(rb * rows);
    infos.push_back(std::move(t));
  }

  const uint64_t A = g.alignment;
  g.data_start = n_tensors > 0 ? (c.pos() + A - 1) / A * A : c.pos();
  if (g.data_start > file->size())
    fail("{}: tensor data should start at byte {} but the file has only {} bytes", path, g.data_start, file->size());
  uint64_t expect = 0;
  for (const auto& t : infos) {
    if (t.offset % A != 0)
      fail("{}: tensor '{}' offset {} is not a multiple of the alignment {}", path, t.name, t.offset, A);
    if (t.offset != expect)
      fail("{}: tensor '{}' offset {} but tensors must be packed in table order (expected {})", path, t.name, t.offset, expect);
    if (t.nbytes > file->size() - g.data_start || t.offset > file->size() - g.data_start - t.nbytes)
      fail("{}: tensor '{}' ({} bytes at byte {}) runs past the end of the file ({} bytes); the file is truncated",
           path, t.name, t.nbytes, g.data_start + t.offset, file->size());
    expect = t.offset + (t.nbytes + A - 1) / A * A;
    TensorView v;
    v.name = t.name;
    v.dtype = t.type.type;
    v.shape.assign(t.ne.rbegin(), t.ne.rend());
    v.nbytes = static_cast<int64_t>(t.nbytes);
    v.file_offset = g.data_start + t.offset;
    v.data = file->data() + v.file_offset;
    v.file = file;
    g.tensors.push_back(std::move(v));
  }
  return g;
}

}  // namespace g4
