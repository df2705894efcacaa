// The backend seam. The Gemma 4 forward (runtime/forward.cc) is written once against
// this small set of named operations; a backend owns its activation buffers, its copy
// of the weights (or views of the mmap) and the KV cache, and implements the ops.
// Backends: the float64/float32 reference (backends/cpu_ref.*), the CPU fast path
// (backends/cpu_fast.cc). Adding one means implementing this interface and
// registering it in make_backend(); the forward does not change.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "backends/emulation.h"
#include "backends/kv_codec.h"
#include "formats/tensor.h"
#include "model/model.h"

namespace g4 {

// F64: the reference. F32: the same math in float. Fast: float activations with the
// SIMD kernels of kernels/fast.h (8-bit activations against quantized weights).
// BF16: HF transformers' native bf16 forward, emulated (backends/cpu_bf16.cc).
enum class Precision { F64, F32, Fast, BF16 };
Precision parse_precision(const std::string& s);
const char* precision_name(Precision p);

// A buffer of activations on the backend's device, in the backend's compute type.
struct Buf {
  int id = -1;
};

// A row-major matrix inside a buffer: `rows` rows of `cols` elements, `stride` apart.
struct View {
  Buf buf;
  int64_t offset = 0, rows = 0, cols = 0, stride = 0;
  int64_t numel() const { return rows * cols; }
  // Rows [r0, r0 + n).
  View sub_rows(int64_t r0, int64_t n) const { return {buf, offset + r0 * stride, n, cols, stride}; }
  // Columns [c0, c0 + n) of every row.
  View sub_cols(int64_t c0, int64_t n) const { return {buf, offset + c0, rows, n, stride}; }
  // The same elements seen as rows of `c` (contiguous views only), e.g. [n, heads*hd] -> [n*heads, hd].
  View reshape(int64_t c) const { return {buf, offset, rows * cols / c, c, c}; }
};

struct BackendOptions {
  Precision precision = Precision::F64;
  // Tokens per forward step (activation buffers are sized for it) and context length
  // (KV cache reserved for it; 0 = grow on demand).
  int64_t n_batch = 512;
  int64_t n_ctx = 0;
  // Emulate HF's float32 RMSNorm/softmax islands in the f64 reference (see ForwardOptions).
  bool hf_float32_islands = false;
  // BF16 precision with bf16 weights but float32 activations (a rung of `g4 ladder`).
  bool bf16_weights_only = false;
  // What the KV cache stores (f32: the backend's own precision).
  KvType cache_type_k = KvType::F32, cache_type_v = KvType::F32;
  // Another engine's roundings reproduced in the reference (f64/f32 only; emulation.h).
  // kv_f16 is applied by the caller as f16 cache types.
  EngineRounding rounding{};
  // Where the ops run: cpu, vulkan, vulkan:N or auto; "" = the process default
  // (set_default_device(), "cpu" unless a command's --device set it).
  std::string device{};
  // llama.cpp's -ngl: layers on the GPU (-1 = all). Only all or none is supported.
  int n_gpu_layers = -1;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // Buffers. alloc() is called while the forward sets up, never per step.
  virtual Buf alloc(int64_t n) = 0;
  // Copies a view out to the host (widened to double; exact for every compute type).
  virtual void read(const View& src, double* dst) = 0;
  virtual void read(const View& src, float* dst) = 0;
  // False as soon as a value is NaN or +-Inf.
  virtual bool all_finite(const View& x) = 0;

  // out[t] = table[tokens[t]] * scale (rows of out.cols elements).
  virtual void embed(const TensorView& table, std::span<const int32_t> tokens, double scale, const View& out) = 0;
  // out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w (w = nullptr: no weight); out may alias x.
  virtual void rms_norm(const View& x, const TensorView* w, double eps, const View& out) = 0;
  // y[t, o] = sum_i W[row0 + o, i] x[t, i]; W rows have x.cols elements, y.cols outputs.
  virtual void matmul(const TensorView& w, const View& x, const View& y, int64_t row0 = 0) = 0;
  // Slices of one stacked weight in one call (MoE decode: every routed expert's rows):
  // y[k] = W[row0s[k] .. row0s[k] + y.cols) . x[x.rows == 1 ? 0 : k], one row of y per slice;
  // each row has the bits of matmul(w, that x row, y.sub_rows(k, 1), row0s[k]). The default
  // makes those calls; a backend overrides it to split all slices over its threads at once.
  virtual void matmul_slices(const TensorView& w, const View& x, const View& y, std::span<const int64_t> row0s) {
    for (size_t k = 0; k < row0s.size(); ++k) {
      const auto r = static_cast<int64_t>(k);
      matmul(w, x.sub_rows(x.rows == 1 ? 0 : r, 1), y.sub_rows(r, 1), row0s[k]);
    }
  }
  // Rotate-half RoPE of layer `layer` on rows of one head each; row r belongs to token
  // r / heads at absolute position pos0 + r / heads.
  virtual void rope(int layer, const View& x, int64_t heads, int64_t pos0) = 0;
  // g = gelu_tanh(g) * u.
  virtual void gelu_mul(const View& g, const View& u) = 0;
  // x *= s; x *= w (broadcast over rows) * s; dst += src.
  virtual void scale(const View& x, double s) = 0;
  virtual void mul(const View& x, const TensorView& w, double s) = 0;
  virtual void add(const View& dst, const View& src) = 0;
  // x = c * tanh(x / c).
  virtual void softcap(const View& x, double c) = 0;

  // KV cache, one per sequence. Sequence 0 exists from the start; batched serving adds
  // more (kv_seq_add allocates: call it between steps, never inside one) and frees them;
  // `max_step` is the most positions the new sequence adds in one step.
  // Each sequence has its own positions: K/V rows of layer `layer` for positions
  // n_past(seq) .. n_past(seq) + k.rows, visible to that sequence's attention() at once and
  // kept after kv_commit(seq). The sequences of one step are independent: a step may
  // write and attend several of them, each with its own rows of the activations.
  virtual int kv_seq_add(int64_t max_step) = 0;
  virtual void kv_seq_free(int seq) = 0;
  virtual void kv_write(int seq, int layer, const View& k, const View& v) = 0;
  // Causal attention (scale 1, within the layer's window) of q ([tokens*heads, hd]) at
  // positions n_past(seq) + t over the sequence's cache of layer kv_source; out has q's shape.
  virtual void attention(int seq, int layer, const View& q, int64_t heads, const View& out) = 0;
  virtual void kv_commit(int seq, int64_t n) = 0;
  virtual int64_t n_past(int seq) const = 0;
  virtual bool kv_truncate(int seq, int64_t n) = 0;
  virtual void kv_reset(int seq) = 0;
  // Bytes held by every sequence's cache.
  virtual size_t kv_bytes() const = 0;

  // MoE routing of logits [n, E]: softmax, top-k (ties: lower id), renormalised weights
  // times per_expert_scale, in the compute type; ids/weights are [n, k] on the host.
  // forced (nullptr: none) is [n, k]: a row whose first id is >= 0 replaces top-k's
  // choice, and the weights are those of the forced experts (forced routing, g4 divergence).
  virtual void moe_route(const View& logits, int64_t k, const TensorView& per_expert_scale, int32_t* ids,
                         double* weights, const int32_t* forced) = 0;
  // dst[r] = src[rows[r]] (gather), dst[rows[r]] = src[r] (scatter).
  virtual void gather_rows(const View& src, std::span<const int32_t> rows, const View& dst) = 0;
  virtual void scatter_rows(const View& src, std::span<const int32_t> rows, const View& dst) = 0;
  // out[t] = sum_k w[t, k] * eo[t * K + k], summed in k order.
  virtual void moe_combine(const View& eo, const double* w, int64_t K, const View& out) = 0;
};

// The backend for a model; `model` must outlive it.
std::unique_ptr<Backend> make_backend(const Model& model, const BackendOptions& opt);

// --device: "cpu", "vulkan" (the first GPU), "vulkan:N" (`g4 devices` lists N) or "auto"
// (Vulkan when there is a device and the precision is f32/fast, else the CPU; the choice
// is printed on stderr). Returns "cpu" or "vulkan:N"; throws naming what was looked for
// when an explicit Vulkan device is not there.
std::string resolve_device(const std::string& device, Precision precision);
// The device of sessions whose options leave it empty (commands whose tools build their
// own ForwardOptions: serve, bench, compare).
void set_default_device(const std::string& device, int n_gpu_layers = -1);

}  // namespace g4
