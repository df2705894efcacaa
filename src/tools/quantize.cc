#include "tools/quantize.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "formats/gguf_writer.h"
#include "kernels/dequant.h"
#include "kernels/quantize.h"
#include "model/hparams.h"
#include "tools/token_input.h"
#include "util/error.h"

namespace g4 {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Tensors that stay F32 whatever the recipe: 1-D tensors, norms, scalars, the
// router and its scales (llama.cpp's converter rules), and the PLE model projection
// (llama-quantize leaves it F32).
bool keep_f32(const std::string& name, const std::vector<int64_t>& shape) {
  return shape.size() <= 1 || ends_with(name, "_norm.weight") || !ends_with(name, ".weight") ||
         name == tensor_name(GlobalTensor::RopeFreqs).gguf || ends_with(name, "ffn_gate_inp.weight") || ends_with(name, "layer_output_scale.weight") ||
         name == tensor_name(GlobalTensor::PleModelProj).gguf;
}

// llama.cpp's use_more_bits: the first and last eighth of the tensors of a kind, and
// every third one in between, get more bits in the _M mixes.
bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

// A type the row length allows (llama.cpp's fallbacks).
DType fit_row(DType t, int64_t cols) {
  if (row_bytes(t, cols)) return t;
  switch (t) {
    case DType::Q4_K: return fit_row(DType::Q5_0, cols);
    case DType::Q5_K: return fit_row(DType::Q5_1, cols);
    case DType::Q6_K: return fit_row(DType::Q8_0, cols);
    case DType::IQ4_XS: return fit_row(DType::IQ4_NL, cols);
    default: return DType::F16;
  }
}


}  // namespace

uint32_t file_type_of(const QuantizeOptions& opt) {
  if (opt.recipe == "q8_0") return 7;
  if (opt.recipe == "q4_0") return 2;
  if (opt.recipe == "q4_k_m") return 15;
  if (opt.recipe == "mixed-8-4") return 7;
  switch (opt.type.value_or(DType::F32)) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q4_1: return 3;
    case DType::Q8_0: return 7;
    case DType::Q5_0: return 8;
    case DType::Q5_1: return 9;
    case DType::Q4_K: return 14;
    case DType::Q5_K: return 16;
    case DType::Q6_K: return 18;
    case DType::BF16: return 32;
    case DType::IQ4_NL: return 25;
    case DType::IQ4_XS: return 30;
    default: return 0;
  }
}

// gemma4.* keys as llama.cpp's converter writes them (gemma4-tensors.md §8).
void write_gemma4_metadata(GgufWriter& w, const ModelSpec& s) {
  w.set_str(gk::kArchitecture, "gemma4");
  w.set_u32(gk::kBlockCount, static_cast<uint32_t>(s.n_layers));
  w.set_u32(gk::kContextLength, static_cast<uint32_t>(s.max_ctx));
  w.set_u32(gk::kEmbeddingLength, static_cast<uint32_t>(s.hidden));
  std::vector<int64_t> ff, kv;
  bool ff_varies = false, kv_varies = false;
  for (const auto& l : s.layers) {
    ff.push_back(l.ff_width);
    kv.push_back(l.n_kv_heads);
    ff_varies |= l.ff_width != s.layers[0].ff_width;
    kv_varies |= l.n_kv_heads != s.layers[0].n_kv_heads;
  }
  if (ff_varies) w.set_arr_i32(gk::kFeedForwardLength, ff);
  else w.set_u32(gk::kFeedForwardLength, static_cast<uint32_t>(ff[0]));
  w.set_u32(gk::kHeadCount, static_cast<uint32_t>(s.n_heads));
  if (kv_varies) w.set_arr_i32(gk::kHeadCountKv, kv);
  else w.set_u32(gk::kHeadCountKv, static_cast<uint32_t>(kv[0]));
  int hd_full = s.head_dim, hd_swa = s.head_dim;
  for (const auto& l : s.layers) (l.type == AttnType::Full ? hd_full : hd_swa) = l.head_dim;
  w.set_f32(gk::kRopeFreqBase, static_cast<float>(s.rope_full.theta));
  w.set_f32(gk::kRopeFreqBaseSwa, static_cast<float>(s.rope_sliding.theta));
  w.set_f32(gk::kRmsEps, static_cast<float>(s.rms_eps));
  w.set_u32(gk::kKeyLength, static_cast<uint32_t>(hd_full));
  w.set_u32(gk::kValueLength, static_cast<uint32_t>(hd_full));
  w.set_f32(gk::kFinalSoftcap, static_cast<float>(s.final_softcap.value_or(30.0)));
  w.set_u32(gk::kSlidingWindow, static_cast<uint32_t>(s.sliding_window));
  w.set_u32(gk::kSharedKvLayers, static_cast<uint32_t>(s.n_kv_shared));
  w.set_u32(gk::kPleLength, static_cast<uint32_t>(s.ple_dim));
  std::vector<bool> pattern;
  for (const auto& l : s.layers) pattern.push_back(l.type == AttnType::Sliding);
  w.set_arr_bool(gk::kSlidingWindowPattern, pattern);
  w.set_u32(gk::kKeyLengthSwa, static_cast<uint32_t>(hd_swa));
  w.set_u32(gk::kValueLengthSwa, static_cast<uint32_t>(hd_swa));
  w.set_u32(gk::kRopeDimCount, static_cast<uint32_t>(hd_full));
  w.set_u32(gk::kRopeDimCountSwa, static_cast<uint32_t>(hd_swa));
  if (s.moe) {
    w.set_u32(gk::kExpertCount, static_cast<uint32_t>(s.n_experts));
    w.set_u32(gk::kExpertUsedCount, static_cast<uint32_t>(s.top_k));
    w.set_u32(gk::kExpertFfLength, static_cast<uint32_t>(s.moe_ff));
  }
}

void write_tokenizer_metadata(GgufWriter& w, const Tokenizer& t, const ModelSpec& s) {
  const int32_t n = t.vocab_size();
  std::vector<std::string> tokens(static_cast<size_t>(n));
  std::vector<double> scores(static_cast<size_t>(n), -1000.0);
  std::vector<int64_t> types(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    tokens[i] = t.piece(i);
    types[i] = t.token_type(i);
  }
  w.set_str(gk::kTokenizerModel, "gemma4");
  w.set_arr_str(gk::kTokens, std::move(tokens));
  w.set_arr_f32(gk::kScores, scores);
  w.set_arr_i32(gk::kTokenType, types);
  w.set_arr_str(gk::kMerges, t.merges_text());
  w.set_u32(gk::kBosId, static_cast<uint32_t>(t.bos_id()));
  w.set_u32(gk::kEosId, static_cast<uint32_t>(s.eos_ids.empty() ? 1 : s.eos_ids[0]));
  if (int32_t unk = t.find("<unk>"); unk >= 0) w.set_u32(gk::kUnkId, static_cast<uint32_t>(unk));
  w.set_u32(gk::kPadId, static_cast<uint32_t>(s.pad_id));
  w.set_bool(gk::kAddBos, true);
  w.set_bool(gk::kAddEos, false);
  w.set_bool(gk::kAddSpacePrefix, false);
}

std::vector<uint8_t> rope_freqs_bytes(const ModelSpec& s) {
  const LayerSpec* full = nullptr;
  for (const auto& l : s.layers)
    if (l.type == AttnType::Full) full = &l;
  std::vector<float> f(static_cast<size_t>(full->head_dim / 2));
  for (size_t j = 0; j < f.size(); ++j) f[j] = static_cast<int>(j) < full->rope_pairs ? 1.0f : 1e30f;
  std::vector<uint8_t> b(f.size() * 4);
  std::memcpy(b.data(), f.data(), b.size());
  return b;
}

namespace {

double expected_floor(DType t) {
  // Loose upper bounds of relative RMS error per type, for tensors of any content;
  // the gate compares with the error re-quantizing the source gives, these only
  // catch a corrupted source or a broken quantizer.
  switch (t) {
    case DType::F32: return 1e-6;
    case DType::F16: return 1e-3;
    case DType::BF16: return 4e-3;
    case DType::Q8_0: return 0.02;
    case DType::Q6_K: return 0.04;
    case DType::Q5_0: case DType::Q5_1: case DType::Q5_K: return 0.08;
    default: return 0.3;
  }
}

}  // namespace

DType parse_dtype(const std::string& s) {
  std::string u;
  for (char c : s) u += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (int id = 0; id < 64; ++id)
    if (auto i = dtype_from_ggml_id(id); i && u == i->name) {
      if (!quantize_supported(i->type)) fail("type {} can be read but not written by g4 quantize", s);
      return i->type;
    }
  fail("unknown type '{}' (use F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS)", s);
}

TensorTypeOverride parse_override(const std::string& spec) {
  const size_t eq = spec.rfind('=');
  if (eq == std::string::npos || eq == 0) fail("--tensor-type '{}' must be REGEX=TYPE, e.g. 'ffn_down=q8_0'", spec);
  TensorTypeOverride o;
  o.pattern = spec.substr(0, eq);
  try {
    o.re = std::regex(o.pattern);
  } catch (const std::regex_error& e) {
    fail("--tensor-type '{}': bad regular expression: {}", spec, e.what());
  }
  o.type = parse_dtype(spec.substr(eq + 1));
  return o;
}

DType plan_type(const TensorSlot& s, const QuantizeOptions& opt, int idx, int n_of_class) {
  const int64_t cols = s.shape.back();
  const std::string& name = s.gguf;
  DType t;
  if (keep_f32(name, s.shape)) return DType::F32;
  if (opt.type) {
    t = *opt.type;
  } else {
    const std::string& c = s.cls;
    const bool embed = c == "token_embd";
    if (opt.recipe == "q8_0") t = DType::Q8_0;
    else if (opt.recipe == "q4_0") t = embed ? DType::Q6_K : c == "per_layer_token_embd" ? DType::Q8_0 : DType::Q4_0;
    else if (opt.recipe == "q4_k_m") {
      if (embed) t = DType::Q6_K;  // tied: it is also the output matrix
      else if (c == "per_layer_token_embd") t = DType::Q8_0;
      else if ((c == "attn_v" || c == "ffn_down") && use_more_bits(idx, n_of_class)) t = DType::Q6_K;
      else t = DType::Q4_K;
    } else {  // mixed-8-4: attention, ffn_down, embeddings at 8 bit, gate/up at 4 bit
      t = (c == "ffn_gate" || c == "ffn_up" || c == "ffn_gate_up_exps") ? DType::Q4_K : DType::Q8_0;
    }
  }
  for (const auto& o : opt.overrides)
    if (std::regex_search(name, o.re)) t = o.type;
  return fit_row(t, cols);
}

std::vector<PlannedTensor> plan_quantization(const Model& src, const QuantizeOptions& opt) {
  if (!opt.type && opt.recipe.empty()) fail("give --type T or --recipe NAME");
  static const std::set<std::string> recipes{"q8_0", "q4_0", "q4_k_m", "mixed-8-4"};
  if (!opt.recipe.empty() && !recipes.count(opt.recipe))
    fail("unknown recipe '{}' (q8_0, q4_0, q4_k_m, mixed-8-4)", opt.recipe);
  const auto slots = expected_tensors(src.spec, FileFormat::GGUF);
  std::map<std::string, int> n_of_class, seen_of_class;
  for (const auto& s : slots) n_of_class[s.cls]++;
  std::vector<PlannedTensor> plan;
  for (const auto& s : slots) {
    PlannedTensor p;
    p.name = s.gguf;
    p.cls = s.cls;
    p.layer = s.layer;
    p.shape = s.shape;
    if (!s.hf.empty()) p.source = &src.by_hf_name.at(s.hf);
    p.type = plan_type(s, opt, seen_of_class[s.cls]++, n_of_class[s.cls]);
    plan.push_back(std::move(p));
  }
  return plan;
}

std::vector<float> dequantize_all(const TensorView& t) {
  const int64_t cols = t.shape.back(), rows = t.numel() / std::max<int64_t>(cols, 1);
  std::vector<float> out(static_cast<size_t>(t.numel()));
  const int64_t rb = *row_bytes(t.dtype, cols);
  for (int64_t r = 0; r < rows; ++r) dequant_row(t.dtype, t.data + r * rb, cols, out.data() + r * cols);
  return out;
}

std::vector<float> quantize_round_trip(const std::vector<float>& x, DType t, const std::vector<int64_t>& shape) {
  const int64_t cols = shape.back();
  const auto q = quantize_rows(t, x.data(), static_cast<int64_t>(x.size()) / cols, cols);
  TensorView tv;
  tv.dtype = t;
  tv.shape = shape;
  tv.data = q.data();
  tv.nbytes = static_cast<int64_t>(q.size());
  return dequantize_all(tv);
}

namespace {

// A tensor's bytes, with its importance-matrix entry where the type takes one (one row of
// weights per matrix: a 3-D expert tensor has one per expert, llama-quantize's layout).
std::vector<uint8_t> quantize_with_imatrix(const PlannedTensor& p, const std::vector<float>& x, const QuantizeOptions& opt) {
  const int64_t cols = p.shape.back(), rows = static_cast<int64_t>(x.size()) / cols;
  const std::vector<float>* e = nullptr;
  if (opt.imatrix && quantize_takes_imatrix(p.type))
    if (const auto it = opt.imatrix->find(p.name); it != opt.imatrix->end()) e = &it->second;
  if (!e) return quantize_rows(p.type, x.data(), rows, cols);
  const int64_t n_mat = p.shape.size() == 3 ? p.shape[0] : 1;
  if (static_cast<int64_t>(e->size()) != cols * n_mat)
    fail("imatrix entry '{}' has {} values; the tensor {} needs {} ({} per matrix)", p.name, e->size(), shape_to_string(p.shape),
         cols * n_mat, cols);
  if (n_mat == 1) return quantize_rows(p.type, x.data(), rows, cols, e->data());
  std::vector<uint8_t> out;
  const int64_t per = rows / n_mat;
  for (int64_t m = 0; m < n_mat; ++m) {
    const auto part = quantize_rows(p.type, x.data() + m * per * cols, per, cols, e->data() + m * cols);
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

}  // namespace

VerifyReport quantize_model(const Model& src, const std::string& out_path, const QuantizeOptions& opt) {
  const auto plan = plan_quantization(src, opt);
  GgufWriter w;
  if (src.gguf) {
    for (const auto& [k, v] : src.gguf->kv)
      if (k != gk::kAlignment && k.rfind("split.", 0) != 0) w.set(k, v);  // a split source's keys are its own
  } else {
    w.set_str(gk::kName, std::filesystem::path(src.path).filename().string());
    write_gemma4_metadata(w, src.spec);
    write_tokenizer_metadata(w, load_tokenizer(src), src.spec);
  }
  w.set_u32(gk::kQuantizationVersion, 2);
  w.set_u32(gk::kFileType, file_type_of(opt));
  for (const auto& p : plan) {
    w.add_tensor(p.name, p.type, p.shape, [&src, &p, &opt]() {
      std::vector<uint8_t> bytes;
      if (!p.source) {
        bytes = rope_freqs_bytes(src.spec);
      } else {
        auto x = dequantize_all(*p.source);
        if (opt.edit_source_for_test) opt.edit_source_for_test(p.name, x);
        bytes = quantize_with_imatrix(p, x, opt);
      }
      if (opt.mutate_for_test) opt.mutate_for_test(p.name, bytes);
      return bytes;
    });
  }
  VerifyReport rep;
  if (opt.split_max_bytes > 0) {
    // OUT.gguf -> OUT-00001-of-0000N.gguf ...; written as OUT.tmp-0000i-of-0000N.gguf until verified.
    std::string prefix = out_path;
    if (prefix.size() > 5 && prefix.ends_with(".gguf")) prefix.resize(prefix.size() - 5);
    const auto tmps = w.write_split(prefix + ".tmp", opt.split_max_bytes, opt.on_tensor);
    if (opt.verify) {
      rep = verify_against_source(src, tmps.front());
      if (!rep.passed()) {
        for (const auto& t : tmps) std::filesystem::remove(t);
        return rep;
      }
    }
    const int n = static_cast<int>(tmps.size());
    for (int i = 0; i < n; ++i) {
      rep.files.push_back(gguf_split_path(prefix, i + 1, n));
      std::filesystem::rename(tmps[static_cast<size_t>(i)], rep.files.back());
    }
    return rep;
  }
  const std::string tmp = out_path + ".tmp";
  w.write(tmp, opt.on_tensor);
  if (opt.verify) {
    rep = verify_against_source(src, tmp);
    if (!rep.passed()) {
      std::filesystem::remove(tmp);
      return rep;
    }
  }
  std::filesystem::rename(tmp, out_path);
  rep.files = {out_path};
  return rep;
}

VerifyReport verify_against_source(const Model& src, const std::string& gguf_path) {
  VerifyReport rep;
  Model out;
  try {
    out = open_model(gguf_path);
  } catch (const Error& e) {
    rep.problems.push_back(fmt::format("the written file does not load: {}", e.what()));
    return rep;
  }
  for (const auto& e : out.errors) rep.problems.push_back(fmt::format("{}: {}", e.tensor, e.message));
  if (!out.valid()) return rep;
  std::map<std::string, const TensorView*> written;
  for (const auto& t : out.file_tensors) written[t.name] = &t;
  for (const auto& slot : expected_tensors(src.spec, FileFormat::GGUF)) {
    VerifyRow row;
    row.name = slot.gguf;
    row.cls = slot.cls;
    row.layer = slot.layer;
    const auto it = written.find(slot.gguf);
    if (it == written.end()) {
      row.ok = false;
      row.problem = "missing from the written file";
      rep.rows.push_back(row);
      continue;
    }
    const TensorView& wt = *it->second;
    row.type = wt.dtype;
    std::vector<float> ref;
    if (slot.hf.empty()) {
      const auto b = rope_freqs_bytes(src.spec);
      ref.resize(b.size() / 4);
      std::memcpy(ref.data(), b.data(), b.size());
    } else {
      ref = dequantize_all(src.by_hf_name.at(slot.hf));
    }
    const auto got = dequantize_all(wt);
    if (got.size() != ref.size()) {
      row.ok = false;
      row.problem = fmt::format("shape {} but the source has {} elements", wt.shape_str(), ref.size());
      rep.rows.push_back(row);
      continue;
    }
    // What re-quantizing the source with the written type gives: the error this type explains.
    const std::vector<float> again = slot.gguf == tensor_name(GlobalTensor::RopeFreqs).gguf ? ref : quantize_round_trip(ref, wt.dtype, slot.shape);
    double dot = 0, na = 0, nb = 0, err = 0, err_exp = 0;
    bool finite = true;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double a = got[i], b = ref[i];
      if (!std::isfinite(a)) { finite = false; break; }
      dot += a * b;
      na += a * a;
      nb += b * b;
      err += (a - b) * (a - b);
      err_exp += (static_cast<double>(again[i]) - b) * (static_cast<double>(again[i]) - b);
    }
    if (slot.gguf == tensor_name(GlobalTensor::RopeFreqs).gguf) {
      row.rel_rms = err == 0 ? 0 : 1;
      row.ok = err == 0;
      if (!row.ok) row.problem = "rope_freqs differ from what the config implies";
      rep.rows.push_back(row);
      continue;
    }
    row.cosine = na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : (na == nb ? 1.0 : 0.0);
    row.rel_rms = nb > 0 ? std::sqrt(err / nb) : std::sqrt(err);
    row.expected_rel_rms = nb > 0 ? std::sqrt(err_exp / nb) : std::sqrt(err_exp);
    const bool eight_bit = wt.dtype == DType::F32 || wt.dtype == DType::F16 || wt.dtype == DType::BF16 || wt.dtype == DType::Q8_0;
    if (!finite) row.problem = "NaN or Inf in the written tensor";
    else if (row.rel_rms > 1.5 * row.expected_rel_rms + 1e-6)
      row.problem = fmt::format("relative RMS error {:.3g} but {} explains {:.3g}", row.rel_rms, dtype_name(wt.dtype), row.expected_rel_rms);
    else if (eight_bit && row.cosine < 0.99) row.problem = fmt::format("cosine {:.4f} < 0.99 for an 8-bit or wider type", row.cosine);
    else if (row.rel_rms > expected_floor(wt.dtype) && row.rel_rms > 1.5 * row.expected_rel_rms)
      row.problem = fmt::format("relative RMS error {:.3g} is beyond any {} tensor", row.rel_rms, dtype_name(wt.dtype));
    row.ok = row.problem.empty();
    rep.rows.push_back(row);
  }
  // Uniformity across layers: one layer of a class far worse than its siblings.
  std::map<std::pair<std::string, DType>, std::vector<const VerifyRow*>> by_class;
  for (const auto& r : rep.rows)
    if (r.layer >= 0) by_class[{r.cls, r.type}].push_back(&r);
  for (auto& [key, rows] : by_class) {
    if (rows.size() < 3) continue;
    std::vector<double> e;
    for (auto* r : rows) e.push_back(r->rel_rms);
    std::nth_element(e.begin(), e.begin() + e.size() / 2, e.end());
    const double med = e[e.size() / 2];
    for (auto* r : rows)
      if (med > 0 && r->rel_rms > 3 * med && r->rel_rms > 1e-4)
        rep.problems.push_back(fmt::format("{} (layer {}): error {:.3g} is {:.1f}x the median {:.3g} of its class",
                                           r->name, r->layer, r->rel_rms, r->rel_rms / med, med));
  }
  return rep;
}

bool VerifyReport::passed() const {
  if (!problems.empty() || rows.empty()) return false;
  for (const auto& r : rows)
    if (!r.ok) return false;
  return true;
}

std::string VerifyReport::table() const {
  std::map<std::string, std::map<int, const VerifyRow*>> grid;
  int max_layer = -1;
  for (const auto& r : rows) {
    grid[r.cls][r.layer] = &r;
    max_layer = std::max(max_layer, r.layer);
  }
  std::string o = fmt::format("relative RMS error (%) of each tensor vs its source; type; '!' marks a failure\n{:<22}", "class");
  o += fmt::format("{:>14}", "global");
  for (int l = 0; l <= max_layer; ++l) o += fmt::format("{:>14}", fmt::format("layer {}", l));
  o += "\n";
  for (const auto& [cls, by_layer] : grid) {
    o += fmt::format("{:<22}", cls);
    for (int l = -1; l <= max_layer; ++l) {
      auto it = by_layer.find(l);
      if (it == by_layer.end()) { o += fmt::format("{:>14}", "-"); continue; }
      const auto* r = it->second;
      o += fmt::format("{:>14}", fmt::format("{}{:.3f} {}", r->ok ? "" : "!", 100 * r->rel_rms, dtype_name(r->type)));
    }
    o += "\n";
  }
  for (const auto& r : rows)
    if (!r.ok) o += fmt::format("FAIL {}: {}\n", r.name, r.problem);
  for (const auto& p : problems) o += fmt::format("FAIL {}\n", p);
  o += passed() ? "verify: PASS\n" : "verify: FAILED\n";
  return o;
}

}  // namespace g4
