#include "tools/imatrix.h"

#include <algorithm>
#include <cstring>
#include <fstream>

#include "formats/gguf.h"
#include "formats/gguf_writer.h"
#include "kernels/dequant.h"
#include "tools/perplexity.h"
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

ImatrixData compute_imatrix(const Model& model, const std::string& text, const ImatrixOptions& opt) {
  ImatrixData d;
  d.chunk_size = opt.n_ctx;
  if (!opt.dataset.empty()) d.datasets.push_back(opt.dataset);
  PerplexityOptions po;
  po.n_ctx = opt.n_ctx;
  po.max_chunks = opt.max_chunks;
  po.llama_scoring = true;  // the PPL llama-imatrix prints
  po.forward = opt.forward;
  po.on_chunk = opt.on_chunk;
  po.forward.on_matmul = [&](const MatmulTrace& t) {
    // llama-imatrix collects blk.* only: the LM head (token_embd, tied) and per_layer_model_proj
    // (which both quantizers keep in float) stay out.
    if (t.layer < 0) return;
    const std::string name = gguf_name(t.layer, t.tensor);
    ImatrixEntry& e = d.entries[name];
    if (e.counts.empty()) {
      e.n_in = t.n_in;
      e.n_mat = t.expert >= 0 ? model.spec.n_experts : 1;
      e.in_sum2.assign(static_cast<size_t>(e.n_mat * e.n_in), 0.0);
      e.in_sum.assign(e.in_sum2.size(), 0.0);
      e.counts.assign(static_cast<size_t>(e.n_mat), 0);
    }
    const int64_t m = std::max(t.expert, 0);
    if (e.n_in != t.n_in || m >= e.n_mat)
      fail("internal: '{}' got an input of width {} for matrix {} (expected {} of {})", name, t.n_in, m, e.n_in, e.n_mat);
    double* s2 = e.in_sum2.data() + m * e.n_in;
    double* s1 = e.in_sum.data() + m * e.n_in;
    for (int64_t r = 0; r < t.rows; ++r) {
      const float* x = t.x + r * t.n_in;
      for (int64_t j = 0; j < t.n_in; ++j) {
        const double v = x[j];
        s2[j] += v * v;
        s1[j] += v;
      }
    }
    e.counts[static_cast<size_t>(m)] += t.rows;
  };
  const PerplexityResult r = run_perplexity(model, text, po);
  d.chunks = r.chunks;
  d.ppl = r.ppl;
  return d;
}

void write_imatrix_gguf(const std::string& path, const ImatrixData& d) {
  GgufWriter w;
  w.set_str("general.type", "imatrix");
  w.set_arr_str("imatrix.datasets", d.datasets);
  w.set_u32("imatrix.chunk_count", static_cast<uint32_t>(d.chunks));
  w.set_u32("imatrix.chunk_size", static_cast<uint32_t>(d.chunk_size));
  auto f32 = [](const auto& v) {
    return [p = &v] {
      std::vector<uint8_t> b(p->size() * 4);
      for (size_t i = 0; i < p->size(); ++i) {
        const float f = static_cast<float>((*p)[i]);
        std::memcpy(b.data() + 4 * i, &f, 4);
      }
      return b;
    };
  };
  for (const auto& [name, e] : d.entries) {  // std::map: name order, as llama-imatrix sorts them
    // ggml drops trailing unit dimensions: a dense entry is [n_in], its counts [1].
    const std::vector<int64_t> sums = e.n_mat > 1 ? std::vector<int64_t>{e.n_mat, e.n_in} : std::vector<int64_t>{e.n_in};
    const std::vector<int64_t> cnt = e.n_mat > 1 ? std::vector<int64_t>{e.n_mat, 1} : std::vector<int64_t>{1};
    w.add_tensor(name + ".in_sum2", DType::F32, sums, f32(e.in_sum2));
    w.add_tensor(name + ".counts", DType::F32, cnt, f32(e.counts));
    w.add_tensor(name + ".in_sum", DType::F32, sums, f32(e.in_sum));
  }
  w.write(path);
}

void write_imatrix_dat(const std::string& path, const ImatrixData& d) {
  std::string b;
  auto i32 = [&](int64_t v) {
    const int32_t x = static_cast<int32_t>(v);
    b.append(reinterpret_cast<const char*>(&x), 4);
  };
  std::vector<const std::pair<const std::string, ImatrixEntry>*> keep;
  for (const auto& kv : d.entries)  // an entry with no input at all is left out, as llama-imatrix does
    if (*std::max_element(kv.second.counts.begin(), kv.second.counts.end()) > 0) keep.push_back(&kv);
  i32(static_cast<int64_t>(keep.size()));
  const int64_t cs = std::max(d.chunk_size, 1);
  for (const auto* kv : keep) {
    const ImatrixEntry& e = kv->second;
    i32(static_cast<int64_t>(kv->first.size()));
    b += kv->first;
    const int64_t ncall = (*std::max_element(e.counts.begin(), e.counts.end()) + cs - 1) / cs;
    i32(ncall);
    i32(e.n_mat * e.n_in);
    for (int64_t m = 0; m < e.n_mat; ++m)
      for (int64_t j = 0; j < e.n_in; ++j) {
        const int64_t c = e.counts[static_cast<size_t>(m)];
        // llama-imatrix stores a matrix without input as 1 (times ncall).
        const float mean = c > 0 ? static_cast<float>(e.in_sum2[static_cast<size_t>(m * e.n_in + j)]) / static_cast<float>(c) : 1.0f;
        const float v = mean * static_cast<float>(ncall);
        b.append(reinterpret_cast<const char*>(&v), 4);
      }
  }
  i32(d.chunks);
  const std::string ds = d.datasets.empty() ? std::string() : d.datasets.back();
  i32(static_cast<int64_t>(ds.size()));
  b += ds;
  std::ofstream out(path, std::ios::binary);
  out.write(b.data(), static_cast<std::streamsize>(b.size()));
  if (!out) fail("cannot write '{}' (disk full or no permission?)", path);
}

}  // namespace g4
