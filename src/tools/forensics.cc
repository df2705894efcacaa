#include "tools/forensics.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <functional>
#include <map>
#include <set>

#include "kernels/dequant.h"
#include "kernels/quantize.h"
#include "tools/finite.h"
#include "tools/quantize.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace g4 {
namespace {

double cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) { dot += double(a[i]) * b[i]; na += double(a[i]) * a[i]; nb += double(b[i]) * b[i]; }
  return na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : 0;
}

// The relative RMS error of a type g4 cannot write (so cannot re-quantize to measure), as
// llama-quantize's files of brown-mini show it per tensor class (scripts/make-iq-fixtures.sh's
// --pure files; the IQ3/IQ2/IQ1 ones with an importance matrix): the worst class, rounded up. A
// tensor is flagged beyond 2x this. The ternary types are far from weights that were not trained
// ternary (BitNet), hence 0.83.
double unwritable_type_error(DType t) {
  switch (t) {
    case DType::Q2_K: return 0.35;
    case DType::IQ4_NL: case DType::IQ4_XS: return 0.081;
    case DType::MXFP4: return 0.12;
    case DType::IQ3_XXS: return 0.19;
    case DType::IQ3_S: return 0.145;
    case DType::IQ2_XXS: return 0.36;
    case DType::IQ2_XS: return 0.315;
    case DType::IQ2_S: return 0.27;
    case DType::IQ1_S: return 0.52;
    case DType::IQ1_M: return 0.48;
    case DType::TQ1_0: case DType::TQ2_0: return 0.84;
    default: return 0.2;  // Q3_K and others: the typical error of 3 bits
  }
}

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64; }
int mantissa_bits(DType t) { return t == DType::BF16 ? 7 : t == DType::F16 ? 10 : t == DType::F32 ? 23 : 52; }

// One unit in the last place of type t at the magnitude of x (F16: subnormals below 2^-14).
double ulp(DType t, double x) {
  int e = 0;
  std::frexp(x == 0 ? 1e-300 : x, &e);  // |x| = m * 2^e, m in [0.5, 1)
  e -= 1;
  const int min_e = t == DType::F16 ? -14 : t == DType::F64 ? -1022 : -126;
  return std::ldexp(1.0, std::max(e, min_e) - mantissa_bits(t));
}

// Accumulators of one tensor (or one block of rows of it).
struct Acc {
  double dot = 0, na = 0, nb = 0, err = 0, mx = 0;
  double expl_err = 0, expl_nb = 0;  // explained error over the rows where it was computed
  int64_t beyond = 0;
  void add(const Acc& o) {
    dot += o.dot; na += o.na; nb += o.nb; err += o.err; mx = std::max(mx, o.mx);
    expl_err += o.expl_err; expl_nb += o.expl_nb; beyond += o.beyond;
  }
};

// Page-cache hints on the bytes [begin, end) of a tensor (MappedFile::release, prefetch; nothing
// for a tensor held in memory). Releasing a block once it has been read keeps the resident set
// to the blocks in flight even for a 4.7 GB embedding table; the page cache keeps them, so
// grade's perplexity runs and a second forensics run do not read the disk again. Prefetching
// starts the read-ahead of blocks not yet reached.
struct Stream {
  const TensorView& t;
  template <class Fn>
  void advise(uint64_t begin, uint64_t end, Fn fn) const {
    end = std::min<uint64_t>(end, static_cast<uint64_t>(t.nbytes));
    if (t.file && t.data && begin < end) fn(*t.file, t.data + begin, static_cast<size_t>(end - begin));
  }
  void release(uint64_t begin, uint64_t end) const {
    advise(begin, end, [](const MappedFile& f, const uint8_t* p, size_t n) { f.release(p, n); });
  }
  void prefetch(uint64_t begin, uint64_t end) const {
    advise(begin, end, [](const MappedFile& f, const uint8_t* p, size_t n) { f.prefetch(p, n); });
  }
};

constexpr int64_t kBlockElems = 1 << 20;      // elements per streamed block
constexpr int64_t kExplainElems = 1 << 16;    // re-quantized elements per tensor (evenly spread rows; ~0.5% precision)
constexpr int64_t kRowChunkElems = 1 << 13;  // elements dequantized at a time (two 32 KB windows: L1/L2)
constexpr size_t kSampleElems = 65536;        // layer-mapping sample per tensor
constexpr uint64_t kReadAhead = 32 << 20;     // bytes of each file read ahead of the blocks in use

// Streams one tensor pair block by block (OpenMP over blocks): statistics, the explained
// error (quantized: the reference re-quantized to the artifact's type on evenly spread
// blocks; float: the 1-ulp allowance) and a strided sample for the layer mapping.
void measure(const Stream& sta, const Stream& str, TensorFinding& f, std::vector<float>* sa, std::vector<float>* sr) {
  const TensorView &ta = sta.t, &tr = str.t;
  const int64_t n = tr.numel(), cols = tr.shape.back(), rows = n / std::max<int64_t>(cols, 1);
  const int64_t rows_per_block = std::max<int64_t>(1, kBlockElems / std::max<int64_t>(cols, 1));
  const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  const int64_t explain_stride = std::max<int64_t>(1, rows * cols / kExplainElems);
  const int64_t rba = *row_bytes(ta.dtype, cols), rbr = *row_bytes(tr.dtype, cols);
  f.float_rule = is_float(ta.dtype) && is_float(tr.dtype);
  const bool requant = !f.float_rule && quantize_supported(ta.dtype) && row_bytes(ta.dtype, cols);
  const size_t step = std::max<size_t>(1, static_cast<size_t>(n) / kSampleElems);
  if (sa) { sa->assign((static_cast<size_t>(n) + step - 1) / step, 0.f); sr->assign(sa->size(), 0.f); }
  Acc total;
  const uint64_t ba = static_cast<uint64_t>(rows_per_block * rba), br = static_cast<uint64_t>(rows_per_block * rbr);
  const uint64_t ahead_blocks = std::max<uint64_t>(1, kReadAhead / std::max<uint64_t>(1, std::max(ba, br)));
  sta.prefetch(0, ahead_blocks * ba);
  str.prefetch(0, ahead_blocks * br);
#pragma omp parallel if (blocks > 1)
  {
    Acc acc;
    std::vector<float> a, b, q;
    std::vector<uint8_t> qrow;
#pragma omp for schedule(dynamic)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t r0 = blk * rows_per_block, nr = std::min(rows_per_block, rows - r0);
      // Keep the read-ahead window full: the block `ahead_blocks` ahead of this one.
      const uint64_t nxt = static_cast<uint64_t>(blk) + ahead_blocks;
      sta.prefetch(nxt * ba, (nxt + 1) * ba);
      str.prefetch(nxt * br, (nxt + 1) * br);
      // The block goes through a window of ~kRowChunkElems: rows dequantized into a and b,
      // then every statistic of those rows while they are in L1/L2 (dequantizing the whole
      // block first sent each value through L3 or memory twice; 20-25% more CPU per GB).
      // Four independent lanes per sum (one dependent chain of double adds was the loop's
      // limit), added at the end of the block; a window's last len % 4 elements go to lane 0.
      double dot[4] = {}, na[4] = {}, nb[4] = {}, err[4] = {}, mx[4] = {acc.mx, acc.mx, acc.mx, acc.mx};
      const int64_t chunk_rows = std::max<int64_t>(1, kRowChunkElems / std::max<int64_t>(cols, 1));
      for (int64_t c0 = 0; c0 < nr; c0 += chunk_rows) {
        const int64_t nc = std::min(chunk_rows, nr - c0), len = nc * cols, g0 = r0 + c0;  // g0: tensor row of a[0]
        a.resize(static_cast<size_t>(len));
        b.resize(static_cast<size_t>(len));
        for (int64_t r = 0; r < nc; ++r) {
          dequant_row(ta.dtype, ta.data + (g0 + r) * rba, cols, a.data() + r * cols);
          dequant_row(tr.dtype, tr.data + (g0 + r) * rbr, cols, b.data() + r * cols);
        }
        int64_t i = 0;
        for (; i + 4 <= len; i += 4)
          for (int k = 0; k < 4; ++k) {
            const double x = a[i + k], y = b[i + k], d = x - y;
            dot[k] += x * y; na[k] += x * x; nb[k] += y * y; err[k] += d * d;
            mx[k] = std::max(mx[k], std::abs(d));
          }
        for (; i < len; ++i) {
          const double x = a[i], y = b[i], d = x - y;
          dot[0] += x * y; na[0] += x * x; nb[0] += y * y; err[0] += d * d;
          mx[0] = std::max(mx[0], std::abs(d));
        }
        if (f.float_rule) {
          for (int64_t j = 0; j < len; ++j) {
            const double y = b[j], tol = std::max(ulp(ta.dtype, y), ulp(tr.dtype, y));
            acc.expl_err += tol * tol;
            acc.beyond += !(std::abs(double(a[j]) - y) <= tol * (1 + 1e-9));
          }
        } else if (requant) {
          // Evenly spread rows (quantization is row-wise, so a row's error is exact); one row
          // at a time with quantize_row, so no parallel region opens inside this one.
          qrow.resize(static_cast<size_t>(rba));
          q.resize(static_cast<size_t>(cols));
          for (int64_t r = (g0 + explain_stride - 1) / explain_stride * explain_stride - g0; r < nc; r += explain_stride) {
            const float* br = b.data() + r * cols;
            quantize_row(ta.dtype, br, cols, qrow.data());
            dequant_row(ta.dtype, qrow.data(), cols, q.data());
            for (int64_t j = 0; j < cols; ++j) {
              const double d = double(q[j]) - br[j];
              acc.expl_err += d * d;
              acc.expl_nb += double(br[j]) * br[j];
            }
          }
        }
        if (sa) {
          const int64_t base = g0 * cols, st = static_cast<int64_t>(step);  // tensor element of a[0]
          for (int64_t j = (base + st - 1) / st * st - base; j < len; j += st) {
            (*sa)[static_cast<size_t>((base + j) / st)] = a[j];
            (*sr)[static_cast<size_t>((base + j) / st)] = b[j];
          }
        }
      }
      acc.dot += (dot[0] + dot[1]) + (dot[2] + dot[3]);
      acc.na += (na[0] + na[1]) + (na[2] + na[3]);
      acc.nb += (nb[0] + nb[1]) + (nb[2] + nb[3]);
      acc.err += (err[0] + err[1]) + (err[2] + err[3]);
      acc.mx = std::max(std::max(mx[0], mx[1]), std::max(mx[2], mx[3]));
      sta.release(static_cast<uint64_t>(blk) * ba, static_cast<uint64_t>(blk + 1) * ba);
      str.release(static_cast<uint64_t>(blk) * br, static_cast<uint64_t>(blk + 1) * br);
    }
#pragma omp critical
    total.add(acc);
  }
  f.cosine = total.na > 0 && total.nb > 0 ? total.dot / std::sqrt(total.na * total.nb) : (total.na == total.nb ? 1.0 : 0.0);
  const double denom = total.nb > 0 ? total.nb : static_cast<double>(std::max<int64_t>(1, n));
  f.rel_rms = std::sqrt(total.err / denom);
  f.max_abs = total.mx;
  f.beyond_ulp = total.beyond;
  if (f.float_rule) f.explained = std::sqrt(total.expl_err / denom);
  else if (requant) f.explained = total.expl_nb > 0 ? std::sqrt(total.expl_err / total.expl_nb) : std::sqrt(total.expl_err / denom);
  else f.explained = unwritable_type_error(ta.dtype);
  if (!std::isfinite(f.rel_rms)) f.rel_rms = INFINITY, f.cosine = 0;
}

// Cosine of the artifact against the reference's transpose (square or transposed-shape
// matrices up to 16M elements): a converter that forgot a transpose.
std::optional<double> transposed_cosine(const TensorView& ta, const TensorView& tr) {
  if (ta.shape.size() != 2 || tr.shape.size() != 2 || ta.shape[0] != tr.shape[1] || ta.shape[1] != tr.shape[0]) return std::nullopt;
  if (ta.numel() > (int64_t{1} << 24)) return std::nullopt;
  const auto a = dequantize_all(ta), b = dequantize_all(tr);
  const int64_t R = tr.shape[0], C = tr.shape[1];  // art[c][r] vs ref[r][c]
  double dot = 0, na = 0, nb = 0;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const double x = a[c * R + r], y = b[r * C + c];
      dot += x * y; na += x * x; nb += y * y;
    }
  return na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : 0;
}

// The smallest period p (2p <= L) over which every phase has one label, with at least two labels.
std::optional<std::pair<int, std::vector<int>>> find_period(const std::vector<int>& label) {
  const int L = static_cast<int>(label.size());
  if (std::set<int>(label.begin(), label.end()).size() < 2) return std::nullopt;
  for (int p = 2; 2 * p <= L; ++p) {
    std::vector<int> phase(static_cast<size_t>(p));
    bool fits = true;
    for (int r = 0; r < p && fits; ++r) {
      phase[r] = label[r];
      for (int l = r; l < L; l += p) fits &= label[l] == phase[r];
    }
    if (fits && std::set<int>(phase.begin(), phase.end()).size() > 1) return std::make_pair(p, phase);
  }
  return std::nullopt;
}

std::string join(const std::vector<int>& v, const char* sep = ",") {
  std::string s;
  for (int x : v) s += (s.empty() ? "" : sep) + std::to_string(x);
  return s;
}

std::string layers_words(const std::vector<int>& v) {
  if (v.size() == 1) return "layer " + std::to_string(v[0]);
  std::string s = "layers ";
  for (size_t i = 0; i < v.size(); ++i) s += (i == 0 ? "" : i + 1 == v.size() ? " and " : ", ") + std::to_string(v[i]);
  return s;
}

std::string times(double x) { return x >= 100 ? fmt::format("~{:.0f}x", x) : x >= 10 ? fmt::format("~{:.0f}x", x) : fmt::format("~{:.1f}x", x); }

void build_anatomy(ForensicsReport& r) {
  Anatomy& an = r.anatomy;
  const int L = r.n_layers;
  an.layer_severity.assign(static_cast<size_t>(L), 0.0);
  std::vector<bool> has(static_cast<size_t>(L), false), flagged(static_cast<size_t>(L), false);
  std::map<std::string, double> cls;
  for (const auto& f : r.tensors) {
    const double s = f.severity();
    if (f.layer >= 0 && f.layer < L) {
      an.layer_severity[f.layer] = std::max(an.layer_severity[f.layer], s);
      has[f.layer] = true;
      if (f.flagged) flagged[f.layer] = true;
    }
    cls[f.cls] = std::max(cls[f.cls], s);
  }
  for (const auto& [c, s] : cls) an.class_severity.push_back({c, s});
  std::stable_sort(an.class_severity.begin(), an.class_severity.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  // Tiers: sort layers by log severity (floored at 0.01: identical tensors have 0) and
  // cut at every gap wider than a factor of 4 whose upper side is damage (> 2x explained).
  std::vector<std::pair<double, int>> sv;
  for (int l = 0; l < L; ++l)
    if (has[l]) sv.push_back({std::log10(std::max(an.layer_severity[l], 0.01)), l});
  std::sort(sv.begin(), sv.end());
  std::vector<std::vector<int>> groups;
  for (size_t i = 0; i < sv.size(); ++i) {
    if (i == 0 || (sv[i].first - sv[i - 1].first > std::log10(4.0) && sv[i].first > std::log10(2.0))) groups.emplace_back();
    groups.back().push_back(sv[i].second);
  }
  for (auto& g : groups) {
    std::vector<double> s;
    for (int l : g) s.push_back(an.layer_severity[l]);
    std::sort(s.begin(), s.end());
    std::sort(g.begin(), g.end());
    an.tiers.push_back({g, s[s.size() / 2]});
  }
  std::vector<int> tier_of(static_cast<size_t>(L), -1), flag_label(static_cast<size_t>(L), 0);
  for (size_t t = 0; t < an.tiers.size(); ++t)
    for (int l : an.tiers[t].layers) tier_of[l] = static_cast<int>(t);
  for (int l = 0; l < L; ++l) flag_label[l] = flagged[l];
  if (auto p = find_period(flag_label)) {
    PeriodicDamage d;
    d.period = p->first;
    for (int ph = 0; ph < p->first; ++ph) (p->second[ph] ? d.damaged_phases : d.clean_phases).push_back(ph);
    an.periodic_flags = d;
  }
  if (an.tiers.size() > 1 && std::find(tier_of.begin(), tier_of.end(), -1) == tier_of.end()) {
    if (auto p = find_period(tier_of)) {
      PeriodicDamage d;
      d.period = p->first;
      d.phase_tier = p->second;
      const int top = static_cast<int>(an.tiers.size()) - 1;
      for (int ph = 0; ph < p->first; ++ph) (p->second[ph] == top ? d.damaged_phases : d.clean_phases).push_back(ph);
      an.periodic_severity = d;
    }
  }
  r.periodic = an.periodic_flags;
  // In words.
  std::string w;
  const bool any_flag = std::find(flagged.begin(), flagged.end(), true) != flagged.end();
  if (an.tiers.size() > 1) {
    const Tier& top = an.tiers.back();
    const Tier& rest = an.tiers.front();
    std::vector<int> others;
    for (size_t t = 0; t + 1 < an.tiers.size(); ++t) others.insert(others.end(), an.tiers[t].layers.begin(), an.tiers[t].layers.end());
    w = fmt::format("{} {} {} worse than the rest (severity {:.3g} vs {:.3g})", layers_words(top.layers), top.layers.size() == 1 ? "is" : "are",
                    times(top.severity / std::max(rest.severity, 0.01)), top.severity, rest.severity);
    if (rest.severity > 2) w += fmt::format("; the rest are damaged too ({} the error their types explain)", times(rest.severity));
    for (size_t t = 1; t + 1 < an.tiers.size(); ++t)
      w += fmt::format("; {} in between ({:.3g})", layers_words(an.tiers[t].layers), an.tiers[t].severity);
    if (an.periodic_severity)
      w += fmt::format(", period {}, phase{} {}", an.periodic_severity->period, an.periodic_severity->damaged_phases.size() > 1 ? "s" : "",
                       join(an.periodic_severity->damaged_phases));
  } else if (any_flag) {
    const double s = an.tiers.empty() ? 0 : an.tiers[0].severity;
    std::vector<int> fl;
    for (int l = 0; l < L; ++l)
      if (flagged[l]) fl.push_back(l);
    w = static_cast<int>(fl.size()) == L ? fmt::format("every layer is damaged, uniformly ({} the error its types explain)", times(s))
                                         : fmt::format("{} flagged", layers_words(fl));
    if (an.periodic_flags) w += fmt::format(", period {}, phase{} {}", an.periodic_flags->period,
                                            an.periodic_flags->damaged_phases.size() > 1 ? "s" : "", join(an.periodic_flags->damaged_phases));
  }
  if (!an.class_severity.empty() && an.class_severity[0].second > 2) {
    std::string c;
    int k = 0;
    for (const auto& [name, s] : an.class_severity)
      if (s > 2 && k++ < 4) c += fmt::format("{}{} {}", c.empty() ? "" : ", ", name, times(s));
    w += (w.empty() ? "" : "; ") + std::string("worst classes: ") + c;
  }
  an.words = w;
}

}  // namespace

double TensorFinding::severity() const {
  if (!std::isfinite(rel_rms)) return 1e12;
  if (rel_rms == 0) return 0;
  return std::min(1e12, rel_rms / std::max(explained, 1e-12));
}

bool ForensicsReport::tensors_clean() const {
  if (!missing.empty() || !load_errors.empty() || !permutations.empty()) return false;
  for (const auto& t : tensors)
    if (t.flagged) return false;
  return true;
}

bool ForensicsReport::clean() const { return tensors_clean() && hparams.empty() && vocab.same(); }

ForensicsReport run_forensics(const Model& art, const Model& ref) {
  if (!ref.valid()) fail("{}: the reference does not validate; fix it first (g4 inspect)", ref.path);
  const auto t0 = std::chrono::steady_clock::now();
  ForensicsReport r;
  r.n_layers = ref.spec.n_layers;
  for (const auto& e : art.errors) r.load_errors.push_back(fmt::format("{}: {}", e.tensor, e.message));
  r.hparams = compare_hparams(art.spec, ref.spec);
  r.vocab = compare_tokenizers(art, ref);
  const auto slots = expected_tensors(ref.spec, FileFormat::GGUF);
  std::set<std::string> expected_hf;
  std::map<std::string, std::vector<float>> cache_art, cache_ref;  // hf -> sample, for mapping
  for (size_t si = 0; si < slots.size(); ++si) {
    const auto& s = slots[si];
    if (s.hf.empty()) continue;  // rope_freqs: generated from the config
    expected_hf.insert(s.hf);
    // Start reading the next tensor pair while this one is measured.
    for (size_t sj = si + 1; sj < slots.size(); ++sj) {
      auto na = art.by_hf_name.find(slots[sj].hf);
      auto nr = ref.by_hf_name.find(slots[sj].hf);
      if (slots[sj].hf.empty() || na == art.by_hf_name.end() || nr == ref.by_hf_name.end()) continue;
      Stream{na->second}.prefetch(0, kReadAhead);
      Stream{nr->second}.prefetch(0, kReadAhead);
      break;
    }
    auto ia = art.by_hf_name.find(s.hf);
    if (ia == art.by_hf_name.end()) {
      r.missing.push_back(s.gguf);
      continue;
    }
    const TensorView& ta = ia->second;
    const TensorView& tr = ref.by_hf_name.at(s.hf);
    TensorFinding f;
    f.name = s.gguf;
    f.hf = s.hf;
    f.cls = s.cls;
    f.layer = s.layer;
    f.ref_type = tr.dtype;
    f.art_type = ta.dtype;
    f.numel = tr.numel();
    if (ta.shape != tr.shape) {
      f.flagged = true;
      f.why = fmt::format("shape {} vs reference {}", ta.shape_str(), tr.shape_str());
      if (auto c = transposed_cosine(ta, tr); c && *c > 0.9) f.why += fmt::format(": the reference transposed (cos {:.4f})", *c);
      f.cosine = 0;
      f.rel_rms = INFINITY;
      r.tensors.push_back(f);
      continue;
    }
    const bool mapped = s.layer >= 0 && s.shape.size() >= 2;
    measure({ta}, {tr}, f, mapped ? &cache_art[s.hf] : nullptr, mapped ? &cache_ref[s.hf] : nullptr);
    r.bytes_read += static_cast<uint64_t>(ta.nbytes + tr.nbytes);
    const bool small = s.shape.size() == 1 || s.shape == std::vector<int64_t>{1};
    if (f.float_rule) {
      if (f.beyond_ulp > 0) {
        f.flagged = true;
        f.why = small ? fmt::format("differs from the reference (max |diff| {:.3g}, {} of {} values beyond 1 ulp); scalars and norms must match",
                                    f.max_abs, f.beyond_ulp, f.numel)
                      : fmt::format("{} of {} values beyond 1 ulp of {} (error {:.3g}, {:.3g}x the rounding allowance)", f.beyond_ulp,
                                    f.numel, dtype_name(f.art_type), f.rel_rms, f.severity());
      } else if (f.rel_rms > 0) {
        f.rerounded = true;
        f.why = "re-rounded, within 1 ulp";
        r.rerounded++;
      }
    } else if (f.rel_rms > 2 * f.explained + 1e-6) {
      f.flagged = true;
      f.why = fmt::format("error {:.3g} is {:.1f}x what {} explains ({:.3g})", f.rel_rms, f.severity(), dtype_name(ta.dtype), f.explained);
    }
    if (!std::isfinite(f.rel_rms)) {  // count them (scanned only here: a clean tensor is not read twice)
      f.flagged = true;
      const NonFiniteStats nf = scan_non_finite(ta);
      f.why = nf.count() ? fmt::format("{} NaN and {} Inf values, the first at element {}", nf.nan, nf.inf, nf.first_index)
                         : "NaN or Inf";
    }
    if (f.flagged && ta.shape.size() == 2 && ta.shape[0] == ta.shape[1])
      if (auto c = transposed_cosine(ta, tr); c && *c > 0.9 && *c > f.cosine + 0.1)
        f.why += fmt::format("; it is the reference transposed (cos {:.4f})", *c);
    r.tensors.push_back(f);
  }
  for (const auto& t : art.file_tensors) {
    auto hf = art.format == FileFormat::HF ? strip_hf_prefix(t.name) : std::nullopt;
    bool known = false;
    if (art.format == FileFormat::HF) known = hf && expected_hf.count(*hf);
    else for (const auto& s : slots) known |= s.gguf == t.name;
    if (!known && !(hf && *hf == "lm_head.weight")) r.extra.push_back(t.name);
  }
  // Layer mapping: does artifact layer i look most like reference layer i?
  std::map<std::string, std::vector<const TensorFinding*>> by_class;
  for (const auto& f : r.tensors)
    if (f.layer >= 0 && cache_art.count(f.hf)) by_class[f.cls].push_back(&f);
  for (const auto& [cls, list] : by_class) {
    for (const auto* fi : list) {
      const auto& ai = cache_art[fi->hf];
      const double same = cosine(ai, cache_ref[fi->hf]);
      double best = same;
      int best_layer = fi->layer;
      for (const auto* fj : list) {
        if (fj->layer == fi->layer || cache_ref[fj->hf].size() != ai.size()) continue;
        if (art.by_hf_name.at(fi->hf).shape != ref.by_hf_name.at(fj->hf).shape) continue;
        const double c = cosine(ai, cache_ref[fj->hf]);
        if (c > best) { best = c; best_layer = fj->layer; }
      }
      if (best_layer != fi->layer && best > 0.5 && best - same > 0.05)
        r.permutations.push_back({cls, fi->layer, best_layer, same, best});
    }
  }
  // Damaged layers and classes (flags), then the severity anatomy.
  std::map<std::string, double> class_worst;
  std::set<int> dl;
  for (const auto& f : r.tensors) {
    if (!f.flagged) continue;
    if (f.layer >= 0) dl.insert(f.layer);
    class_worst[f.cls] = std::max(class_worst[f.cls], f.severity());
  }
  r.damaged_layers.assign(dl.begin(), dl.end());
  std::vector<std::pair<double, std::string>> cw;
  for (const auto& [c, w] : class_worst) cw.emplace_back(w, c);
  std::sort(cw.rbegin(), cw.rend());
  for (const auto& [w, c] : cw) r.damaged_classes.push_back(c);
  build_anatomy(r);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

std::string format_forensics(const ForensicsReport& r) {
  std::string o;
  std::map<std::string, std::vector<const TensorFinding*>> by_class;
  for (const auto& f : r.tensors) by_class[f.cls].push_back(&f);
  o += fmt::format("{:<24} {:>8} {:>10} {:>12} {:>12} {:>8}\n", "class", "tensors", "min cos", "max err", "severity", "flagged");
  for (const auto& [cls, list] : by_class) {
    double mc = 1, me = 0, mr = 0;
    int fl = 0;
    for (const auto* f : list) {
      mc = std::min(mc, f->cosine);
      me = std::max(me, f->rel_rms);
      mr = std::max(mr, f->severity());
      fl += f->flagged;
    }
    o += fmt::format("{:<24} {:>8} {:>10.6f} {:>12.4g} {:>12.3g} {:>8}\n", cls, list.size(), mc, me, mr, fl);
  }
  o += "\nper layer: min cosine of its 2-D tensors, severity (worst error / explained), tier, flagged tensors\n";
  std::vector<int> tier_of(static_cast<size_t>(r.n_layers), -1);
  for (size_t t = 0; t < r.anatomy.tiers.size(); ++t)
    for (int l : r.anatomy.tiers[t].layers) tier_of[l] = static_cast<int>(t);
  for (int l = 0; l < r.n_layers; ++l) {
    double mc = 1;
    int fl = 0;
    for (const auto& f : r.tensors)
      if (f.layer == l) { if (f.cosine < mc && f.art_type != DType::F32) mc = f.cosine; fl += f.flagged; }
    const double sev = l < static_cast<int>(r.anatomy.layer_severity.size()) ? r.anatomy.layer_severity[l] : 0;
    o += fmt::format("  layer {:>3}: min cos {:.6f}  severity {:>9.3g}  tier {}  flagged {}\n", l, mc, sev, tier_of[l], fl);
  }
  for (const auto& f : r.tensors)
    if (f.flagged) o += fmt::format("FLAG {} ({} -> {}): {}\n", f.name, dtype_name(f.ref_type), dtype_name(f.art_type), f.why);
  if (r.rerounded)
    o += fmt::format("RE-ROUNDED {} tensor{} (float types, every value within 1 ulp of the reference: legitimate, not damage)\n",
                     r.rerounded, r.rerounded == 1 ? "" : "s");
  for (const auto& m : r.missing) o += fmt::format("MISSING {}\n", m);
  for (const auto& e : r.extra) o += fmt::format("EXTRA {} (not part of the reference model)\n", e);
  for (const auto& e : r.load_errors) o += fmt::format("LOAD {}\n", e);
  for (const auto& p : r.permutations)
    o += fmt::format("PERMUTATION {}: artifact layer {} matches reference layer {} (cos {:.4f}) better than layer {} (cos {:.4f})\n",
                     p.cls, p.artifact_layer, p.looks_like_ref_layer, p.cos_best, p.artifact_layer, p.cos_same);
  if (r.periodic)
    o += fmt::format("PERIODIC damage: period {}, damaged phases {{{}}} (layer mod {}), clean phases {{{}}}\n", r.periodic->period,
                     join(r.periodic->damaged_phases), r.periodic->period, join(r.periodic->clean_phases));
  if (r.anatomy.periodic_severity && (!r.periodic || r.periodic->period != r.anatomy.periodic_severity->period))
    o += fmt::format("PERIODIC severity: period {}, worst phases {{{}}} (layer mod {})\n", r.anatomy.periodic_severity->period,
                     join(r.anatomy.periodic_severity->damaged_phases), r.anatomy.periodic_severity->period);
  if (r.anatomy.tiers.size() > 1)
    for (size_t t = 0; t < r.anatomy.tiers.size(); ++t)
      o += fmt::format("TIER {}: layers {} (severity ~{:.3g})\n", t, join(r.anatomy.tiers[t].layers), r.anatomy.tiers[t].severity);
  if (!r.anatomy.words.empty()) o += "ANATOMY " + r.anatomy.words + "\n";
  if (!r.damaged_classes.empty()) {
    o += "damaged classes (worst first):";
    for (const auto& c : r.damaged_classes) o += " " + c;
    o += "\n";
  }
  for (const auto& h : r.hparams)
    o += fmt::format("HPARAM {}: artifact {} vs reference {} (GGUF {}; config.json {})\n", h.what, h.artifact, h.reference, h.gguf_key, h.hf_field);
  for (const auto& v : r.vocab.findings) o += "VOCAB " + v + "\n";
  if (r.bytes_read)
    o += fmt::format("read {:.2f} GB of tensors in {:.1f} s ({:.2f} GB/s)\n", r.bytes_read / 1e9, r.seconds,
                     r.bytes_read / 1e9 / std::max(r.seconds, 1e-9));
  o += r.clean() ? "forensics: CLEAN (tensors within the error their types explain; hyperparameters and tokenizer equal the reference's)\n"
                 : "forensics: DAMAGE FOUND\n";
  return o;
}

json forensics_json(const ForensicsReport& r) {
  json t = json::array();
  for (const auto& f : r.tensors)
    t.push_back({{"name", f.name}, {"class", f.cls}, {"layer", f.layer}, {"ref_type", dtype_name(f.ref_type)},
                 {"type", dtype_name(f.art_type)}, {"cosine", f.cosine},
                 {"rel_rms", std::isfinite(f.rel_rms) ? json(f.rel_rms) : json(nullptr)}, {"explained_rel_rms", f.explained},
                 {"severity", f.severity()}, {"max_abs", f.max_abs}, {"float_rule", f.float_rule}, {"beyond_ulp", f.beyond_ulp},
                 {"rerounded", f.rerounded}, {"flagged", f.flagged}, {"why", f.why}});
  json perms = json::array();
  for (const auto& p : r.permutations)
    perms.push_back({{"class", p.cls}, {"artifact_layer", p.artifact_layer}, {"ref_layer", p.looks_like_ref_layer},
                     {"cos_same", p.cos_same}, {"cos_best", p.cos_best}});
  auto per_json = [](const std::optional<PeriodicDamage>& p) -> json {
    if (!p) return nullptr;
    return {{"period", p->period}, {"damaged_phases", p->damaged_phases}, {"clean_phases", p->clean_phases}, {"phase_tier", p->phase_tier}};
  };
  json tiers = json::array();
  for (const auto& t : r.anatomy.tiers) tiers.push_back({{"layers", t.layers}, {"severity", t.severity}});
  json cls = json::object();
  for (const auto& [c, s] : r.anatomy.class_severity) cls[c] = s;
  return {{"tensors", t}, {"missing", r.missing}, {"extra", r.extra}, {"load_errors", r.load_errors},
          {"permutations", perms}, {"damaged_layers", r.damaged_layers}, {"damaged_classes", r.damaged_classes},
          {"periodic", per_json(r.periodic)},
          {"anatomy", {{"layer_severity", r.anatomy.layer_severity}, {"class_severity", cls}, {"tiers", tiers},
                       {"periodic_severity", per_json(r.anatomy.periodic_severity)}, {"words", r.anatomy.words}}},
          {"hparams", hparams_json(r.hparams)}, {"vocab", r.vocab.findings}, {"rerounded", r.rerounded},
          {"seconds", r.seconds}, {"bytes_read", r.bytes_read}, {"clean", r.clean()}};
}

RestoreRanking run_restore(const Model& art, const Model& ref, const std::string& which, const std::vector<int32_t>& tokens,
                           const PerplexityOptions& po, const ForensicsReport* findings) {
  // Hybrids need every tensor: missing ones come from the reference in all of them.
  Model base = art.clone();
  for (const auto& [hf, t] : ref.by_hf_name)
    if (!base.by_hf_name.count(hf)) base.by_hf_name.emplace(hf, t);
  for (const auto& [hf, t] : base.by_hf_name)
    if (t.shape != ref.by_hf_name.at(hf).shape) fail("{}: tensor {} has another shape than the reference; restore needs the same geometry", art.path, hf);
  // The artifact runs with its own hyperparameters; "metadata" swaps in the reference's.
  base.errors.clear();
  bind_weights(base);
  RestoreRanking out;
  auto ppl = [&](const Model& m) {
    const auto pr = run_perplexity_tokens(m, tokens, po);
    out.n_ctx = pr.n_ctx;
    out.chunks = pr.chunks;
    return pr.ppl;
  };
  // The artifact-reference gap and its paired standard error (per-prediction NLL differences
  // on the same tokens; the two PPLs' own errors are mostly shared and would overstate it).
  PerplexityOptions pn = po;
  pn.want_all_nll = true;
  const auto ra = run_perplexity_tokens(base, tokens, pn), rf = run_perplexity_tokens(ref, tokens, pn);
  const double p_art = ra.ppl, p_ref = rf.ppl;
  out.n_ctx = ra.n_ctx;
  out.chunks = ra.chunks;
  out.gap = p_art - p_ref;
  if (ra.nll.size() == rf.nll.size() && ra.nll.size() > 1) {
    double sum = 0, sum2 = 0;
    const double n = static_cast<double>(ra.nll.size());
    for (size_t i = 0; i < ra.nll.size(); ++i) {
      const double d = double(ra.nll[i]) - rf.nll[i];
      sum += d;
      sum2 += d * d;
    }
    const double var = std::max(0.0, sum2 / n - (sum / n) * (sum / n));
    out.gap_err = p_art * std::sqrt(var / (n - 1));
  }
  using Pick = std::function<bool(const std::string& hf, int layer, const std::string& cls)>;
  struct Hybrid { std::string label; Pick pick; bool ref_spec = false; };
  std::vector<Hybrid> hybrids;
  std::map<std::string, std::string> hf_cls;
  std::map<std::string, int> hf_layer;
  for (const auto& s : expected_tensors(ref.spec, FileFormat::GGUF))
    if (!s.hf.empty()) { hf_cls[s.hf] = s.cls; hf_layer[s.hf] = s.layer; }
  std::set<std::string> classes;
  for (const auto& [hf, c] : hf_cls) classes.insert(c);
  const int L = ref.spec.n_layers;
  auto add_layers = [&](const std::string& label, std::vector<int> layers) {
    if (layers.empty() || static_cast<int>(layers.size()) >= L) return;  // all layers = the reference itself
    for (const auto& h : hybrids)
      if (h.label == label) return;
    hybrids.push_back({label, [layers](const std::string&, int l, const std::string&) {
                         return std::find(layers.begin(), layers.end(), l) != layers.end();
                       }});
  };
  auto add_classes = [&](const std::vector<std::string>& cs) {
    std::string label = cs.size() == 1 ? "class " + cs[0] : "classes";
    if (cs.size() > 1) for (size_t i = 0; i < cs.size(); ++i) label += (i ? "+" : " ") + cs[i];
    hybrids.push_back({label, [cs](const std::string&, int, const std::string& k) { return std::find(cs.begin(), cs.end(), k) != cs.end(); }});
  };
  const bool spec_differs = !compare_hparams(art.spec, ref.spec).empty();
  if (which == "auto") {
    // With findings, the classes that hold damage (the others would only measure noise).
    if (!findings) for (const auto& c : classes) add_classes({c});
    if (findings) {
      for (const auto& c : findings->damaged_classes) add_classes({c});
      // Damaged classes together: the worst two, and all of them.
      const auto& dc = findings->damaged_classes;
      if (dc.size() >= 2) add_classes({dc[0], dc[1]});
      if (dc.size() > 2) add_classes(dc);
      add_layers("layers " + join(findings->damaged_layers, " ") + " (flagged)", findings->damaged_layers);
      const auto& tiers = findings->anatomy.tiers;
      for (size_t t = 1; t < tiers.size(); ++t) {
        std::vector<int> up;
        for (size_t u = t; u < tiers.size(); ++u) up.insert(up.end(), tiers[u].layers.begin(), tiers[u].layers.end());
        std::sort(up.begin(), up.end());
        add_layers(fmt::format("layers {} (tier{} >= {}, severity ~{:.3g})", join(up, " "), t + 1 < tiers.size() ? "s" : "", t,
                               tiers[t].severity), up);
      }
      for (const auto* per : {&findings->anatomy.periodic_flags, &findings->anatomy.periodic_severity})
        if (*per)
          for (int ph : (*per)->damaged_phases) {
            std::vector<int> layers;
            for (int l = ph; l < L; l += (*per)->period) layers.push_back(l);
            add_layers(fmt::format("layers = {} mod {}", ph, (*per)->period), layers);
          }
    }
    if (spec_differs) hybrids.push_back({"metadata (the reference's hyperparameters)", [](const std::string&, int, const std::string&) { return false; }, true});
  } else if (which == "metadata") {
    if (!spec_differs) fail("--restore metadata: the artifact's hyperparameters equal the reference's; nothing to restore");
    hybrids.push_back({"metadata (the reference's hyperparameters)", [](const std::string&, int, const std::string&) { return false; }, true});
  } else {
    if (!classes.count(which)) {
      std::string all;
      for (const auto& c : classes) all += " " + c;
      fail("--restore {}: no such tensor class; classes are:{} (or metadata, auto)", which, all);
    }
    add_classes({which});
  }
  out.rows.push_back({"artifact", p_art, 0});
  out.rows.push_back({"reference", p_ref, 1});
  for (const auto& h : hybrids) {
    Model m = base.clone();
    if (h.ref_spec) m.spec = ref.spec;
    for (auto& [hf, t] : m.by_hf_name)
      if (h.pick(hf, hf_layer[hf], hf_cls[hf])) t = ref.by_hf_name.at(hf);
    bind_weights(m);
    const double p = ppl(m);
    const double gap = p_art - p_ref;
    out.rows.push_back({h.label, p, std::abs(gap) > 1e-12 ? (p_art - p) / gap : 0.0});
  }
  std::sort(out.rows.begin() + 2, out.rows.end(), [](const RestoreResult& a, const RestoreResult& b) { return a.ppl < b.ppl; });
  return out;
}

std::string format_restore(const RestoreRanking& r) {
  std::string o = fmt::format("c={}, {} chunks\n{:<48} {:>12} {:>14}\n", r.n_ctx, r.chunks, "restored from the reference", "PPL", "gap closed");
  for (const auto& x : r.rows) o += fmt::format("{:<48} {:>12.4f} {:>13.1f}%\n", x.what, x.ppl, 100 * x.gap_closed);
  if (r.noise())
    o += fmt::format("NOTE the artifact-reference gap ({:+.4f}) is within two standard errors ({:.4f}): the shares above are noise; "
                     "use more chunks\n", r.gap, 2 * r.gap_err);
  return o;
}

}  // namespace g4
