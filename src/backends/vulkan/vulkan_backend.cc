// The Vulkan backend: the forward's ops as compute shaders (shaders/*.comp, compiled by
// glslc at build time and embedded). Weights are uploaded once as they are stored
// (quantized blocks stay blocks; one matmul shader per block layout reads them in place),
// activations and the KV cache live on the device in float32. Commands collect in one
// command buffer and are submitted only where the seam hands data to the host: read(),
// all_finite(), moe_route(). The KV cache mirrors backends/kv_cache.h: per owning layer a
// store (a ring of window + kKvRewindSlots slots on sliding layers, grown on full ones)
// plus the pending rows of the current step, moved into the store by kv_commit().
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <tuple>
#include <unordered_map>

#include "backends/kv_cache.h"
#include "backends/routing.h"
#include "backends/vulkan/vk_context.h"
#include "backends/vulkan/vulkan.h"
#include "kernels/ops.h"
#include "util/error.h"

namespace g4 {
namespace {

// Weight types with a decoder in shaders/dequant.glsl; shader names are mm_<type>, embed_<type>.
const char* shader_type(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::Q4_0: return "q4_0";
    case DType::Q4_1: return "q4_1";
    case DType::Q5_0: return "q5_0";
    case DType::Q5_1: return "q5_1";
    case DType::Q8_0: return "q8_0";
    case DType::Q4_K: return "q4_k";
    case DType::Q5_K: return "q5_k";
    case DType::Q6_K: return "q6_k";
    default: return nullptr;
  }
}

uint32_t u32(int64_t v) { return static_cast<uint32_t>(v); }

class VulkanBackend final : public Backend {
 public:
  VulkanBackend(const Model& m, const BackendOptions& opt, int device)
      : m_(m), s_(m.spec), opt_(opt), ctx_(device) {
    if (opt.precision != Precision::F32 && opt.precision != Precision::Fast)
      fail("the Vulkan backend computes in float32; use --precision f32 (or fast) with --device vulkan, not {}",
           precision_name(opt.precision));
    if (opt.cache_type_k != KvType::F32 || opt.cache_type_v != KvType::F32)
      fail("the Vulkan backend keeps its KV cache in f32; --cache-type-k/-v {}/{} run on --device cpu only",
           kv_type_name(opt.cache_type_k), kv_type_name(opt.cache_type_v));
    ctx_.after_submit = [this] {
      arena_used_ = 0;
      rope_cache_.clear();
    };
    dummy_ = ctx_.device_buffer(16, "a placeholder binding");
    upload_weights();
    for (const auto& l : s_.layers) {
      auto f = rope_inv_freq(l);
      auto it = std::find(rope_sets_.begin(), rope_sets_.end(), f);
      rope_set_.push_back(static_cast<int>(it - rope_sets_.begin()));
      if (it == rope_sets_.end()) rope_sets_.push_back(std::move(f));
    }
    seqs_.push_back(make_seq(opt.n_batch));
    arena_ = ctx_.host_buffer(kArenaBytes, "the upload arena");
    flag_ = ctx_.host_buffer(16, "the finite-check flag");
  }

  ~VulkanBackend() override {
    ctx_.after_submit = nullptr;
    for (auto* list : {&bufs_}) for (auto& b : *list) ctx_.release(b);
    for (auto& [_, b] : weights_) ctx_.release(b);
    for (auto& [_, b] : consts_) ctx_.release(b);
    for (auto& q : seqs_) if (q) free_seq(*q);
    for (auto* b : {&dummy_, &arena_, &flag_, &readback_}) ctx_.release(*b);
  }

  std::string name() const override { return "vulkan (" + ctx_.device_name + ")"; }

  Buf alloc(int64_t n) override {
    bufs_.push_back(ctx_.device_buffer(static_cast<uint64_t>(std::max<int64_t>(n, 1)) * 4, "an activation buffer"));
    return Buf{static_cast<int>(bufs_.size() - 1)};
  }
  void read(const View& src, double* dst) override {
    const float* p = fetch(src);
    for (int64_t i = 0; i < src.numel(); ++i) dst[i] = p[i];
  }
  void read(const View& src, float* dst) override { std::memcpy(dst, fetch(src), static_cast<size_t>(src.numel()) * 4); }
  bool all_finite(const View& x) override {
    ctx_.fill_zero(flag_.buf, 0, 4);
    const uint32_t pc[] = {u32(x.rows), u32(x.cols), u32(x.offset), u32(x.stride), 0};
    ctx_.dispatch(pipe("finite", 2, sizeof pc), {buf(x), flag_.buf}, pc, sizeof pc, groups(x.numel()));
    ctx_.submit();
    return *static_cast<const uint32_t*>(flag_.map) == 0;
  }

  void embed(const TensorView& table, std::span<const int32_t> tokens, double scale, const View& out) override {
    const uint32_t tok = put(tokens.data(), tokens.size() * 4);
    struct {
      uint32_t row_bytes, row0, n_in, n_out, n_tok, x_off, x_stride, y_off, y_stride;
      float scale;
    } pc{u32(*row_bytes(table.dtype, out.cols)), 0, u32(out.cols), 0, u32(tokens.size()), tok, 0,
         u32(out.offset), u32(out.stride), static_cast<float>(scale)};
    ctx_.dispatch(pipe(std::string("embed_") + shader_type(table.dtype), 3, sizeof pc), {weight(table), arena_.buf, buf(out)},
                  &pc, sizeof pc, tokens.size());
  }
  void rms_norm(const View& x, const TensorView* w, double eps, const View& out) override {
    struct {
      uint32_t rows, n, x_off, x_stride, o_off, o_stride, has_w;
      float eps;
    } pc{u32(x.rows), u32(x.cols), u32(x.offset), u32(x.stride), u32(out.offset), u32(out.stride), w ? 1u : 0u,
         static_cast<float>(eps)};
    ctx_.dispatch(pipe("rms_norm", 3, sizeof pc), {buf(x), buf(out), w ? constant(*w) : dummy_.buf}, &pc, sizeof pc,
                  static_cast<uint64_t>(x.rows));
  }
  void matmul(const TensorView& w, const View& x, const View& y, int64_t row0) override {
    struct {
      uint32_t row_bytes, row0, n_in, n_out, n_tok, x_off, x_stride, y_off, y_stride;
      float scale;
    } pc{u32(*row_bytes(w.dtype, x.cols)), u32(row0), u32(x.cols), u32(y.cols), u32(x.rows), u32(x.offset),
         u32(x.stride), u32(y.offset), u32(y.stride), 1.0f};
    ctx_.dispatch(pipe(std::string("mm_") + shader_type(w.dtype), 3, sizeof pc), {weight(w), buf(x), buf(y)}, &pc,
                  sizeof pc, static_cast<uint64_t>((y.cols + 7) / 8), u32((x.rows + 7) / 8));
  }
  // cos/sin tables come from the host, computed as the reference computes them (float32
  // angle, cos/sin in double rounded to float), once per step and layer type.
  void rope(int layer, const View& x, int64_t heads, int64_t pos0) override {
    const int64_t half = x.cols / 2, n_tok = x.rows / heads;
    const auto key = std::make_tuple(rope_set_[layer], pos0, n_tok);
    auto it = rope_cache_.find(key);
    if (it == rope_cache_.end()) {
      const std::vector<float>& f = rope_sets_[rope_set_[layer]];
      table_.resize(static_cast<size_t>(2 * n_tok * half));
      for (int64_t t = 0; t < n_tok; ++t)
        for (int64_t j = 0; j < half; ++j) {
          const float angle = f[j] * static_cast<float>(pos0 + t);
          const bool id = f[j] == 0.0f;  // identity pair
          table_[t * half + j] = id ? 1.0f : static_cast<float>(std::cos(static_cast<double>(angle)));
          table_[(n_tok + t) * half + j] = id ? 0.0f : static_cast<float>(std::sin(static_cast<double>(angle)));
        }
      it = rope_cache_.emplace(key, put(table_.data(), table_.size() * 4)).first;
    }
    const uint32_t pc[] = {u32(x.rows), u32(half), u32(heads), u32(x.offset), u32(x.stride), it->second, u32(n_tok)};
    ctx_.dispatch(pipe("rope", 2, sizeof pc), {buf(x), arena_.buf}, pc, sizeof pc, groups(x.rows * half));
  }
  void gelu_mul(const View& g, const View& u) override { eltwise(4, g, &u, nullptr, 0); }
  void scale(const View& x, double s) override { eltwise(0, x, nullptr, nullptr, s); }
  void mul(const View& x, const TensorView& w, double s) override { eltwise(1, x, nullptr, &w, s); }
  void add(const View& dst, const View& src) override { eltwise(2, dst, &src, nullptr, 0); }
  void softcap(const View& x, double c) override { eltwise(3, x, nullptr, nullptr, c); }

  int kv_seq_add(int64_t max_step) override {
    auto q = make_seq(max_step);
    for (size_t i = 0; i < seqs_.size(); ++i)
      if (!seqs_[i]) {
        seqs_[i] = std::move(q);
        return static_cast<int>(i);
      }
    seqs_.push_back(std::move(q));
    return static_cast<int>(seqs_.size() - 1);
  }
  void kv_seq_free(int seq) override {
    free_seq(kv(seq));
    seqs_[static_cast<size_t>(seq)].reset();
  }
  void kv_write(int seq, int layer, const View& k, const View& v) override {
    SeqKv& c = kv(seq);
    LayerKv& l = c.layers[layer];
    if (k.rows > c.max_step)
      fail("kv_write: {} positions of sequence {} in one step, more than its step size {}", k.rows, seq, c.max_step);
    copy_rows(k, l.pk.buf, l.width);
    copy_rows(v, l.pv.buf, l.width);
    c.n_pending = k.rows;
  }
  void attention(int seq, int layer, const View& q, int64_t heads, const View& out) override {
    const SeqKv& c = kv(seq);
    const LayerSpec& ls = s_.layers[layer];
    const LayerKv& l = c.layers[ls.kv_source];
    if (q.cols > 512) fail("the Vulkan attention shader handles head_dim <= 512, layer {} has {}", layer, q.cols);
    const uint32_t pc[] = {u32(q.rows), u32(heads), u32(ls.n_heads / ls.n_kv_heads), u32(q.cols), u32(c.n_past),
                           u32(l.capacity), u32(l.width), u32(std::max(ls.window, 0)), u32(q.offset), u32(q.stride),
                           u32(out.offset), u32(out.stride)};
    ctx_.dispatch(pipe("attention", 6, sizeof pc), {buf(q), buf(out), l.k.buf, l.v.buf, l.pk.buf, l.pv.buf}, pc,
                  sizeof pc, static_cast<uint64_t>(q.rows));
  }
  void kv_commit(int seq, int64_t n) override {
    SeqKv& c = kv(seq);
    for (auto& l : c.layers) {
      if (l.width == 0) continue;
      const uint64_t row = static_cast<uint64_t>(l.width) * 4;
      if (!l.capacity) grow(l, c.n_past, c.n_past + n);
      // A ring keeps the last `capacity` positions: earlier rows of a long step are not copied.
      const int64_t t0 = l.capacity ? std::max<int64_t>(0, n - l.capacity) : 0;
      regions_.clear();
      for (int64_t t = t0; t < n; ++t) {
        const int64_t pos = c.n_past + t, slot = l.capacity ? pos % l.capacity : pos;
        if (!regions_.empty() && regions_.back().dstOffset + regions_.back().size == slot * row &&
            regions_.back().srcOffset + regions_.back().size == t * row)
          regions_.back().size += row;
        else
          regions_.push_back({static_cast<VkDeviceSize>(t * row), static_cast<VkDeviceSize>(slot * row), row});
      }
      ctx_.copy(l.pk.buf, l.k.buf, regions_);
      ctx_.copy(l.pv.buf, l.v.buf, regions_);
    }
    c.n_past += n;
    c.n_pending = 0;
  }
  int64_t n_past(int seq) const override { return kv(seq).n_past; }
  bool kv_truncate(int seq, int64_t n) override {
    SeqKv& c = kv(seq);
    if (n < 0 || n > c.n_past || c.n_past - n > c.max_rewind) return false;
    c.n_past = n;
    return true;
  }
  void kv_reset(int seq) override {
    SeqKv& c = kv(seq);
    c.n_past = 0;
    c.n_pending = 0;
  }
  // What the CPU cache would hold: the positions kept (the ring's on sliding layers).
  size_t kv_bytes() const override {
    size_t b = 0;
    for (const auto& c : seqs_)
      if (c)
        for (const auto& l : c->layers)
          if (l.width) b += 2 * static_cast<size_t>((l.capacity ? std::min(c->n_past, l.capacity) : c->n_past) * l.width) * 4;
    return b;
  }

  // Routing on the host in float, as the float reference does it (a sync point: the
  // forward needs the expert ids to pick weights).
  void moe_route(const View& logits, int64_t k, const TensorView& per_expert_scale, int32_t* ids, double* weights,
                 const int32_t* forced) override {
    const int64_t E = logits.cols;
    route_.resize(static_cast<size_t>(logits.numel()));
    read(logits, route_.data());
    const std::vector<float>& pes = host_consts_.at(&per_expert_scale);
    std::vector<char>& taken = taken_;
    for (int64_t t = 0; t < logits.rows; ++t) {
      float* z = route_.data() + t * E;
      ops::softmax(z, E, false);
      routing::select_experts(z, E, k, t, forced, taken, ids);
      float wsum = 0;
      for (int64_t j = 0; j < k; ++j) wsum += z[ids[t * k + j]];
      for (int64_t j = 0; j < k; ++j) {
        const int32_t e = ids[t * k + j];
        weights[t * k + j] = static_cast<double>(z[e] / wsum * pes[e]);
      }
    }
  }
  void gather_rows(const View& src, std::span<const int32_t> rows, const View& dst) override {
    regions_.clear();
    for (size_t r = 0; r < rows.size(); ++r)
      regions_.push_back({elem(src, rows[r]), elem(dst, static_cast<int64_t>(r)), static_cast<VkDeviceSize>(src.cols) * 4});
    ctx_.copy(buf(src), buf(dst), regions_);
  }
  void scatter_rows(const View& src, std::span<const int32_t> rows, const View& dst) override {
    regions_.clear();
    for (size_t r = 0; r < rows.size(); ++r)
      regions_.push_back({elem(src, static_cast<int64_t>(r)), elem(dst, rows[r]), static_cast<VkDeviceSize>(src.cols) * 4});
    ctx_.copy(buf(src), buf(dst), regions_);
  }
  void moe_combine(const View& eo, const double* w, int64_t K, const View& out) override {
    wtmp_.assign(w, w + out.rows * K);
    const uint32_t wo = put(wtmp_.data(), wtmp_.size() * 4);
    const uint32_t pc[] = {u32(out.rows), u32(out.cols), u32(K), u32(eo.offset), u32(eo.stride), wo, u32(out.offset),
                           u32(out.stride)};
    ctx_.dispatch(pipe("combine", 3, sizeof pc), {buf(eo), arena_.buf, buf(out)}, pc, sizeof pc, groups(out.numel()));
  }

 private:
  static constexpr uint64_t kArenaBytes = 8ull << 20;
  struct LayerKv {
    int64_t width = 0, capacity = 0, slots = 0;  // slots: rows the store holds now
    vk::Buffer k, v, pk, pv;                      // store, pending rows of the step
  };
  // One sequence's cache (backends/kv_cache.h's layout, on the device).
  struct SeqKv {
    std::vector<LayerKv> layers;
    int64_t n_past = 0, n_pending = 0, max_step = 0, max_rewind = INT64_MAX;
  };

  void upload_weights() {
    for (const auto& [name, t] : m_.by_hf_name) {
      if (t.shape.size() == 1) {
        auto v = ops::to_vector<float>(t);
        vk::Buffer b = ctx_.device_buffer(v.size() * 4, name);
        ctx_.upload_now(b, 0, v.data(), v.size() * 4);
        consts_.emplace(&t, b);
        host_consts_.emplace(&t, std::move(v));
        continue;
      }
      if (!shader_type(t.dtype))
        fail("{}: tensor '{}' is {}, which the Vulkan backend cannot read yet (it reads F32, F16, BF16, Q4_0, Q4_1, "
             "Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K); run it with --device cpu or requantize",
             m_.path, t.name, dtype_name(t.dtype));
      vk::Buffer b = ctx_.device_buffer(static_cast<uint64_t>(t.nbytes), fmt::format("tensor '{}'", t.name));
      ctx_.upload_now(b, 0, t.data, static_cast<uint64_t>(t.nbytes));
      weights_.emplace(&t, b);
    }
  }

  std::unique_ptr<SeqKv> make_seq(int64_t max_step) {
    auto c = std::make_unique<SeqKv>();
    c->max_step = max_step;
    c->layers.resize(static_cast<size_t>(s_.n_layers));
    for (const auto& l : s_.layers) {
      if (!l.owns_kv) continue;
      LayerKv& kv = c->layers[l.index];
      kv.width = int64_t{l.n_kv_heads} * l.head_dim;
      kv.capacity = l.window > 0 ? l.window + kKvRewindSlots : 0;
      if (l.window > 0) c->max_rewind = kKvRewindSlots + 1;
      const uint64_t pend = static_cast<uint64_t>(max_step * kv.width) * 4;
      kv.pk = ctx_.device_buffer(pend, fmt::format("the pending K rows of layer {}", l.index));
      kv.pv = ctx_.device_buffer(pend, fmt::format("the pending V rows of layer {}", l.index));
      const int64_t slots = kv.capacity ? kv.capacity : std::max<int64_t>(opt_.n_ctx, max_step);
      kv.slots = slots;
      kv.k = ctx_.device_buffer(static_cast<uint64_t>(slots * kv.width) * 4, fmt::format("the K cache of layer {}", l.index));
      kv.v = ctx_.device_buffer(static_cast<uint64_t>(slots * kv.width) * 4, fmt::format("the V cache of layer {}", l.index));
    }
    return c;
  }
  void free_seq(SeqKv& c) {
    for (auto& l : c.layers)
      for (auto* b : {&l.k, &l.v, &l.pk, &l.pv}) ctx_.release(*b, true);
  }
  SeqKv& kv(int seq) const {
    if (seq < 0 || static_cast<size_t>(seq) >= seqs_.size() || !seqs_[static_cast<size_t>(seq)])
      fail("KV-cache sequence {} does not exist (Session::add_sequence makes one)", seq);
    return *seqs_[static_cast<size_t>(seq)];
  }
  // A full-attention store grows (doubling) to hold `need` positions; the old rows are
  // copied on the device.
  void grow(LayerKv& l, int64_t n_past, int64_t need) {
    if (need <= l.slots) return;
    const int64_t slots = std::max(need, 2 * l.slots);
    const uint64_t used = static_cast<uint64_t>(std::min(n_past, l.slots) * l.width) * 4;
    for (vk::Buffer* b : {&l.k, &l.v}) {
      vk::Buffer nb = ctx_.device_buffer(static_cast<uint64_t>(slots * l.width) * 4, "a growing KV cache");
      if (used) {
        const VkBufferCopy r{0, 0, used};
        ctx_.copy(b->buf, nb.buf, {&r, 1});
      }
      ctx_.release(*b, true);
      *b = nb;
    }
    l.slots = slots;
  }

  void eltwise(uint32_t op, const View& a, const View* b, const TensorView* w, double s) {
    struct {
      uint32_t op, rows, cols, a_off, a_stride, b_off, b_stride;
      float s;
    } pc{op, u32(a.rows), u32(a.cols), u32(a.offset), u32(a.stride), b ? u32(b->offset) : 0u, b ? u32(b->stride) : 0u,
         static_cast<float>(s)};
    ctx_.dispatch(pipe("eltwise", 3, sizeof pc), {buf(a), b ? buf(*b) : dummy_.buf, w ? constant(*w) : dummy_.buf}, &pc,
                  sizeof pc, groups(a.numel()));
  }
  // Rows of a view into the start of a contiguous buffer with rows of `width` elements.
  void copy_rows(const View& src, VkBuffer dst, int64_t width) {
    regions_.clear();
    if (src.stride == src.cols && src.cols == width)
      regions_.push_back({elem(src, 0), 0, static_cast<VkDeviceSize>(src.numel()) * 4});
    else
      for (int64_t r = 0; r < src.rows; ++r)
        regions_.push_back({elem(src, r), static_cast<VkDeviceSize>(r * width) * 4, static_cast<VkDeviceSize>(src.cols) * 4});
    ctx_.copy(buf(src), dst, regions_);
  }
  // Copies a view to host memory (submitting everything recorded so far).
  const float* fetch(const View& src) {
    const uint64_t bytes = static_cast<uint64_t>(src.numel()) * 4;
    if (readback_.size < bytes) {
      ctx_.release(readback_, true);
      readback_ = ctx_.host_buffer(std::max(bytes, readback_.size * 2), "the read-back buffer");
    }
    copy_rows(src, readback_.buf, src.cols);
    ctx_.submit();
    return static_cast<const float*>(readback_.map);
  }
  // Host bytes for the commands being recorded; returns their element (float) offset.
  uint32_t put(const void* data, size_t bytes) {
    const uint64_t need = (bytes + 15) & ~uint64_t{15};
    if (arena_used_ + need > arena_.size) {
      ctx_.submit();
      if (need > arena_.size) {
        ctx_.release(arena_);
        arena_ = ctx_.host_buffer(std::max(need, 2 * kArenaBytes), "the upload arena");
      }
    }
    std::memcpy(static_cast<char*>(arena_.map) + arena_used_, data, bytes);
    const uint64_t off = arena_used_;
    arena_used_ += need;
    return static_cast<uint32_t>(off / 4);
  }

  const vk::Pipeline& pipe(const std::string& shader, int n_bindings, uint32_t push_bytes) {
    return ctx_.pipeline(shader, n_bindings, push_bytes);
  }
  VkBuffer buf(const View& v) const { return bufs_[v.buf.id].buf; }
  static VkDeviceSize elem(const View& v, int64_t r) { return static_cast<VkDeviceSize>(v.offset + r * v.stride) * 4; }
  static uint64_t groups(int64_t n) { return static_cast<uint64_t>((n + 63) / 64); }
  VkBuffer weight(const TensorView& t) const {
    auto it = weights_.find(&t);
    if (it == weights_.end()) fail("internal: tensor '{}' was not uploaded to the Vulkan device", t.name);
    return it->second.buf;
  }
  VkBuffer constant(const TensorView& t) const {
    auto it = consts_.find(&t);
    if (it == consts_.end()) fail("{}: not a small constant tensor of this model", t.name);
    return it->second.buf;
  }

  const Model& m_;
  const ModelSpec& s_;
  BackendOptions opt_;
  vk::Context ctx_;
  std::vector<vk::Buffer> bufs_;
  std::unordered_map<const TensorView*, vk::Buffer> weights_, consts_;
  std::unordered_map<const TensorView*, std::vector<float>> host_consts_;
  vk::Buffer dummy_, arena_, flag_, readback_;
  uint64_t arena_used_ = 0;
  std::vector<std::vector<float>> rope_sets_;
  std::vector<int> rope_set_;
  std::map<std::tuple<int, int64_t, int64_t>, uint32_t> rope_cache_;
  std::vector<std::unique_ptr<SeqKv>> seqs_;  // by sequence id; null = free
  std::vector<VkBufferCopy> regions_;
  std::vector<float> table_, route_, wtmp_;
  std::vector<char> taken_;
};

}  // namespace

std::unique_ptr<Backend> make_vulkan_backend(const Model& model, const BackendOptions& opt, int device) {
  return std::make_unique<VulkanBackend>(model, opt, device);
}

}  // namespace g4
