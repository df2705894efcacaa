// The damaged-artifact suite: artifacts made from brown-mini with one kind of damage
// each (the kinds seen in real Gemma 4 releases), and controls that must pass. For every
// case the test asserts the grade verdict and what forensics names (layer, tensor, key,
// token id), and prints the table: case, expected, verdict, what was named.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <regex>

#include "formats/gguf.h"
#include "formats/gguf_writer.h"
#include "kernels/dequant.h"
#include "kernels/quantize.h"
#include "model/config_hf.h"
#include "model/hparams.h"
#include "forensics_util.h"
#include "test_util.h"
#include "tools/grade.h"
#include "tools/quantize.h"
#include "tools/synth.h"
#include "util/half.h"

namespace g4 {
namespace {

using test::add_noise;
using test::layer_of;
using test::quantized;
const Model& ref_model() { return test::brown_mini(); }

// A copy of a GGUF with metadata and tensors rewritten: `kv` may change or drop keys
// (return false to drop), `tensor` may drop a tensor (return false) or replace its type,
// shape and bytes.
struct TensorEdit {
  DType type;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
std::string rewrite(const std::string& src, const std::string& out, std::function<bool(const std::string&, GgufValue&)> kv,
                    std::function<bool(const TensorView&, TensorEdit&)> tensor = nullptr) {
  const GgufFile g = read_gguf(src);
  GgufWriter w;
  for (auto [k, v] : g.kv) {
    if (k == "general.alignment") continue;
    if (kv && !kv(k, v)) continue;
    w.set(k, v);
  }
  for (const auto& t : g.tensors) {
    TensorEdit e{t.dtype, t.shape, std::vector<uint8_t>(t.data, t.data + t.nbytes)};
    if (tensor && !tensor(t, e)) continue;
    w.add_tensor(t.name, e.type, e.shape, [b = std::move(e.bytes)] { return b; });
  }
  w.write(out);
  return out;
}

struct Case {
  std::string name;
  bool expect_pass;
  std::function<std::string(const test::ScratchDir&)> make;  // returns the artifact path
  // What forensics must name; returns "" when it does, else what is missing.
  std::function<std::string(const GradeResult&)> named;
  bool restore = false;
};

bool flagged(const GradeResult& g, const std::string& tensor, const std::string& why_part = "") {
  for (const auto& t : g.forensics.tensors)
    if (t.name == tensor && t.flagged && t.why.find(why_part) != std::string::npos) return true;
  return false;
}
bool vocab_says(const GradeResult& g, const std::string& part) {
  for (const auto& v : g.forensics.vocab.findings)
    if (v.find(part) != std::string::npos) return true;
  return false;
}
bool hparam_says(const GradeResult& g, const std::string& what) {
  for (const auto& h : g.forensics.hparams)
    if (h.what == what) return true;
  return false;
}
std::string expect(bool ok, const std::string& missing) { return ok ? "" : missing; }

// One line saying what forensics named (for the table).
std::string named_line(const GradeResult& g) {
  const auto& f = g.forensics;
  std::vector<std::string> parts;
  for (const auto& h : f.hparams) parts.push_back(fmt::format("hparam {}: {} vs {}", h.what, h.artifact, h.reference));
  for (const auto& v : f.vocab.findings) parts.push_back("vocab " + v);
  for (const auto& m : f.missing) parts.push_back("missing " + m);
  for (const auto& p : f.permutations)
    parts.push_back(fmt::format("permutation {} layer {} ~ ref layer {}", p.cls, p.artifact_layer, p.looks_like_ref_layer));
  if (!f.anatomy.words.empty()) parts.push_back(f.anatomy.words);
  int nflag = 0;
  for (const auto& t : f.tensors) nflag += t.flagged;
  for (const auto& t : f.tensors)
    if (t.flagged && nflag <= 2) {
      parts.push_back(t.name + ": " + t.why);
      break;
    }
  if (f.rerounded) parts.push_back(fmt::format("{} tensors re-rounded within 1 ulp", f.rerounded));
  std::string s;
  for (size_t i = 0; i < parts.size() && i < 3; ++i) s += (i ? "; " : "") + parts[i];
  if (s.empty()) s = "nothing (clean)";
  return s;
}

// An f32 "master" near each bf16 value (within half an ulp), deterministic.
float master_of(float v, uint64_t i) {
  if (v == 0) return 0;  // zero is exact in every format
  uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull;
  h ^= h >> 29;
  const double u = static_cast<double>(h >> 11) / 9007199254740992.0 - 0.5;  // [-0.5, 0.5)
  int e = 0;
  std::frexp(v == 0 ? 1.0f : v, &e);
  return static_cast<float>(v + 0.999 * u * std::ldexp(1.0, e - 1 - 7));
}

std::vector<Case> suite() {
  const std::string fx = test::fixture("gguf/");
  auto q8 = [](const test::ScratchDir& d, const std::string& n, std::function<void(const std::string&, std::vector<float>&)> e) {
    return quantized(d, n, DType::Q8_0, "", std::move(e));
  };
  auto base_q8 = [q8](const test::ScratchDir& d) {
    if (!std::filesystem::exists(d.str("base-q8.gguf"))) q8(d, "base-q8.gguf", nullptr);
    return d.str("base-q8.gguf");
  };
  std::vector<Case> c;
  // --- damage: weights
  c.push_back({"periodic: attention and FFN of layers = 2 mod 3 noised", false,
               [q8](const test::ScratchDir& d) {
                 return q8(d, "periodic.gguf", [](const std::string& n, std::vector<float>& x) {
                   const int l = layer_of(n);
                   if (l >= 0 && l % 3 == 2 && x.size() > 256) add_noise(x, 0.5, static_cast<uint32_t>(l));
                 });
               },
               [](const GradeResult& g) {
                 const auto& p = g.forensics.periodic;
                 return expect(p && p->period == 3 && p->damaged_phases == std::vector<int>{2} &&
                                   g.forensics.damaged_layers == std::vector<int>({2, 5}),
                               "period 3, phase 2, layers 2 and 5");
               }});
  c.push_back({"tiered: every ffn_down damaged, layers 1 and 4 far worse", false,
               [q8](const test::ScratchDir& d) {
                 return q8(d, "tiered.gguf", [](const std::string& n, std::vector<float>& x) {
                   const int l = layer_of(n);
                   if (n.find("ffn_down") == std::string::npos) return;
                   add_noise(x, l % 3 == 1 ? 1.0 : 0.05, static_cast<uint32_t>(l + 11));
                 });
               },
               [](const GradeResult& g) {
                 const auto& a = g.forensics.anatomy;
                 return expect(a.tiers.size() == 2 && a.tiers.back().layers == std::vector<int>({1, 4}) &&
                                   g.forensics.damaged_layers.size() == 6 && a.periodic_severity && a.periodic_severity->period == 3 &&
                                   a.periodic_severity->damaged_phases == std::vector<int>{1} &&
                                   a.words.find("layers 1 and 4 are") != std::string::npos,
                               "two tiers, top = layers 1 and 4, period 3 phase 1, all layers flagged");
               },
               true});
  c.push_back({"zeroed tensor: blk.1.ffn_up", false,
               [q8](const test::ScratchDir& d) {
                 return q8(d, "zeroed.gguf", [](const std::string& n, std::vector<float>& x) {
                   if (n == "blk.1.ffn_up.weight") std::fill(x.begin(), x.end(), 0.f);
                 });
               },
               [](const GradeResult& g) {
                 return expect(flagged(g, "blk.1.ffn_up.weight") && g.forensics.damaged_layers == std::vector<int>{1}, "blk.1.ffn_up flagged, only layer 1");
               }});
  c.push_back({"dropped tensor: blk.3.attn_k", false,
               [base_q8](const test::ScratchDir& d) {
                 return rewrite(base_q8(d), d.str("dropped.gguf"), nullptr,
                                [](const TensorView& t, TensorEdit&) { return t.name != "blk.3.attn_k.weight"; });
               },
               [](const GradeResult& g) {
                 return expect(g.forensics.missing == std::vector<std::string>{"blk.3.attn_k.weight"}, "missing blk.3.attn_k.weight");
               }});
  c.push_back({"wrong scalar: blk.4.layer_output_scale x2", false,
               [q8](const test::ScratchDir& d) {
                 return q8(d, "scalar.gguf", [](const std::string& n, std::vector<float>& x) {
                   if (n == "blk.4.layer_output_scale.weight") for (auto& v : x) v *= 2;
                 });
               },
               [](const GradeResult& g) {
                 return expect(flagged(g, "blk.4.layer_output_scale.weight") && g.forensics.damaged_classes == std::vector<std::string>{"layer_output_scale"},
                               "blk.4.layer_output_scale flagged, the only damaged class");
               }});
  c.push_back({"wrong norm: blk.2.attn_norm stored as 1+w", false,
               [q8](const test::ScratchDir& d) {
                 return q8(d, "norm.gguf", [](const std::string& n, std::vector<float>& x) {
                   if (n == "blk.2.attn_norm.weight") for (auto& v : x) v += 1;
                 });
               },
               [](const GradeResult& g) { return expect(flagged(g, "blk.2.attn_norm.weight", "norms must match"), "blk.2.attn_norm flagged"); }});
  c.push_back({"swapped matrices: attn_output of layers 0 and 3", false,
               [base_q8](const test::ScratchDir& d) {
                 const GgufFile src = read_gguf(base_q8(d));
                 auto bytes_of = [&](const std::string& n) {
                   for (const auto& t : src.tensors)
                     if (t.name == n) return std::vector<uint8_t>(t.data, t.data + t.nbytes);
                   return std::vector<uint8_t>{};
                 };
                 return rewrite(base_q8(d), d.str("swapped.gguf"), nullptr, [&](const TensorView& t, TensorEdit& e) {
                   if (t.name == "blk.0.attn_output.weight") e.bytes = bytes_of("blk.3.attn_output.weight");
                   if (t.name == "blk.3.attn_output.weight") e.bytes = bytes_of("blk.0.attn_output.weight");
                   return true;
                 });
               },
               [](const GradeResult& g) {
                 std::set<std::pair<int, int>> p;
                 for (const auto& x : g.forensics.permutations)
                   if (x.cls == "attn_output") p.insert({x.artifact_layer, x.looks_like_ref_layer});
                 return expect(p == std::set<std::pair<int, int>>{{0, 3}, {3, 0}}, "attn_output permutation 0 <-> 3");
               }});
  c.push_back({"transposed matrix: blk.1.attn_output", false,
               [base_q8](const test::ScratchDir& d) {
                 return rewrite(base_q8(d), d.str("transposed.gguf"), nullptr, [](const TensorView& t, TensorEdit& e) {
                   if (t.name != "blk.1.attn_output.weight") return true;
                   const auto x = dequantize_all(t);
                   const int64_t R = t.shape[0], C = t.shape[1];
                   std::vector<float> y(x.size());
                   for (int64_t r = 0; r < R; ++r)
                     for (int64_t k = 0; k < C; ++k) y[k * R + r] = x[r * C + k];
                   e.bytes = quantize_rows(t.dtype, y.data(), C, R);
                   e.shape = {C, R};
                   return true;
                 });
               },
               [](const GradeResult& g) { return expect(flagged(g, "blk.1.attn_output.weight", "transposed"), "blk.1.attn_output named as transposed"); }});
  // --- damage: metadata
  auto set_float = [base_q8](const std::string& file, const std::string& key, double v) {
    return [base_q8, file, key, v](const test::ScratchDir& d) {
      return rewrite(base_q8(d), d.str(file), [key, v](const std::string& k, GgufValue& x) {
        if (k == key) x.f = v;
        return true;
      });
    };
  };
  c.push_back({"wrong metadata: rope base of full layers 1e6 -> 1e4", false, set_float("rope.gguf", gk::kRopeFreqBase, 1e4),
               [](const GradeResult& g) { return expect(hparam_says(g, "rope base, full layers") && g.forensics.hparams.size() == 1, "rope base, full layers"); },
               true});
  c.push_back({"wrong metadata: sliding window 64 -> 128", false,
               [base_q8](const test::ScratchDir& d) {
                 return rewrite(base_q8(d), d.str("window.gguf"), [](const std::string& k, GgufValue& x) {
                   if (k == gk::kSlidingWindow) x.i = 128, x.u = 128;
                   return true;
                 });
               },
               [](const GradeResult& g) { return expect(hparam_says(g, "sliding window") && g.forensics.hparams.size() == 1, "sliding window"); }});
  c.push_back({"wrong metadata: RMSNorm epsilon 1e-6 -> 1e-5", false, set_float("eps.gguf", gk::kRmsEps, 1e-5),
               [](const GradeResult& g) { return expect(hparam_says(g, "RMSNorm epsilon"), "RMSNorm epsilon"); }});
  // --- damage: vocabulary and special tokens
  c.push_back({"wrong vocabulary: token strings of ids 1000 and 1001 swapped", false,
               [base_q8](const test::ScratchDir& d) {
                 return rewrite(base_q8(d), d.str("vocab.gguf"), [](const std::string& k, GgufValue& x) {
                   if (k == "tokenizer.ggml.tokens") std::swap(x.as[1000], x.as[1001]);
                   return true;
                 });
               },
               [](const GradeResult& g) {
                 return expect(vocab_says(g, "ids 1000 and 1001 swapped") && g.forensics.tensors_clean() && g.retokenized > 0,
                               "ids 1000 and 1001 swapped, tensors clean, text retokenized");
               }});
  c.push_back({"wrong merges: ranks 0 and 1 exchanged", false,
               [base_q8](const test::ScratchDir& d) {
                 return rewrite(base_q8(d), d.str("merges.gguf"), [](const std::string& k, GgufValue& x) {
                   if (k == "tokenizer.ggml.merges") std::swap(x.as[0], x.as[1]);
                   return true;
                 });
               },
               [](const GradeResult& g) { return expect(vocab_says(g, "merges: 2 of"), "merges: 2 differ"); }});
  c.push_back({"wrong special token: BOS id 2 -> 1", false,
               [base_q8](const test::ScratchDir& d) {
                 return rewrite(base_q8(d), d.str("bos.gguf"), [](const std::string& k, GgufValue& x) {
                   if (k == gk::kBosId) x.i = 1, x.u = 1;
                   return true;
                 });
               },
               [](const GradeResult& g) { return expect(vocab_says(g, "BOS id 1 '<eos>' vs reference 2 '<bos>'"), "BOS id 1 vs 2"); }});
  c.push_back({"wrong special flag: add_bos_token false", false,
               [base_q8](const test::ScratchDir& d) {
                 return rewrite(base_q8(d), d.str("addbos.gguf"), [](const std::string& k, GgufValue& x) {
                   if (k == "tokenizer.ggml.add_bos_token") x.i = 0;
                   return true;
                 });
               },
               [](const GradeResult& g) { return expect(vocab_says(g, "add_bos_token false vs reference true"), "add_bos_token"); }});
  // --- controls that must pass
  for (const char* f : {"brown-mini-Q8_0.gguf", "brown-mini-Q6_K.gguf", "brown-mini-Q4_K_M.gguf", "brown-mini-Q4_0.gguf", "brown-mini-bf16.gguf"})
    c.push_back({std::string("control: llama.cpp ") + f, true, [fx, f](const test::ScratchDir&) { return fx + f; },
                 [](const GradeResult& g) { return expect(g.forensics.clean(), "clean"); }});
  c.push_back({"control: g4 --recipe mixed-8-4", true, [](const test::ScratchDir& d) { return quantized(d, "mixed.gguf", std::nullopt, "mixed-8-4"); },
               [](const GradeResult& g) { return expect(g.forensics.clean(), "clean"); }});
  c.push_back({"control: g4 --type q5_k", true, [](const test::ScratchDir& d) { return quantized(d, "q5k.gguf", DType::Q5_K, ""); },
               [](const GradeResult& g) { return expect(g.forensics.clean(), "clean"); }});
  // A converter that truncated an f32 master to BF16 where the reference rounded it to nearest.
  c.push_back({"control: BF16 truncated from an f32 master (1 ulp)", true,
               [fx](const test::ScratchDir& d) {
                 return rewrite(fx + "brown-mini-bf16.gguf", d.str("trunc.gguf"), nullptr, [](const TensorView& t, TensorEdit& e) {
                   if (t.dtype != DType::BF16) return true;
                   for (int64_t i = 0; i < t.numel(); ++i) {
                     uint16_t h;
                     std::memcpy(&h, t.data + 2 * i, 2);
                     const float m = master_of(bf16_to_f32(h), static_cast<uint64_t>(i) ^ t.file_offset);
                     uint32_t bits;
                     std::memcpy(&bits, &m, 4);
                     const uint16_t tr = static_cast<uint16_t>(bits >> 16);
                     std::memcpy(e.bytes.data() + 2 * i, &tr, 2);
                   }
                   return true;
                 });
               },
               [](const GradeResult& g) {
                 return expect(g.forensics.rerounded > 40 && g.forensics.tensors_clean(), "re-rounded tensors, none flagged");
               }});
  c.push_back({"control: F32 from the f32 master (reference = its BF16 rounding)", true,
               [fx](const test::ScratchDir& d) {
                 return rewrite(fx + "brown-mini-bf16.gguf", d.str("master.gguf"), nullptr, [](const TensorView& t, TensorEdit& e) {
                   if (t.dtype != DType::BF16) return true;
                   std::vector<float> m(static_cast<size_t>(t.numel()));
                   for (int64_t i = 0; i < t.numel(); ++i) {
                     uint16_t h;
                     std::memcpy(&h, t.data + 2 * i, 2);
                     m[i] = master_of(bf16_to_f32(h), static_cast<uint64_t>(i) ^ t.file_offset);
                   }
                   e.type = DType::F32;
                   e.bytes.resize(m.size() * 4);
                   std::memcpy(e.bytes.data(), m.data(), e.bytes.size());
                   return true;
                 });
               },
               [](const GradeResult& g) {
                 return expect(g.forensics.rerounded > 40 && g.forensics.tensors_clean(), "re-rounded tensors, none flagged");
               }});
  return c;
}

TEST(DamageSuite, EveryCaseGetsItsVerdictAndIsLocalised) {
  test::ScratchDir d;
  GradeOptions go;
  go.text = read_text_file(test::fixture("brown-heldout.txt"));
  go.text_name = "brown-heldout.txt";
  // Short and few chunks keep the suite fast; the KLD/top-1 limits are 4x bands measured at
  // c=512 (README), and healthy files stay well inside them at this size too.
  go.n_ctx = 64;
  go.chunks = 2;
  go.restore_ctx = 64;
  go.restore_chunks = 1;
  go.reference_run = std::make_shared<GradeReferenceRun>();
  std::string table = "| case | expected | verdict | band | KLD | top-1 miss | what was named |\n|---|---|---|---|---|---|---|\n";
  const char* keep = std::getenv("G4_SUITE_KEEP");  // copy every artifact there (to measure them further)
  int bad = 0;
  for (const auto& c : suite()) {
    SCOPED_TRACE(c.name);
    const std::string path = c.make(d);
    Model a = open_model(path, LoadOptions{true});
    go.restore = c.restore;
    const GradeResult g = grade(a, ref_model(), go);
    const std::string miss = c.named(g);
    table += fmt::format("| {} | {} | {} | {} | {:.2e} | {:.2f}% | {} |\n", c.name, c.expect_pass ? "PASS" : "FAIL", g.verdict,
                         dtype_name(g.band), g.kld, 100 * g.miss, named_line(g));
    if (keep) std::filesystem::copy_file(path, std::filesystem::path(keep) / std::filesystem::path(path).filename(),
                                         std::filesystem::copy_options::overwrite_existing);
    const bool ok = g.pass == c.expect_pass && miss.empty();
    if (!ok) {
      ++bad;
      std::printf("---- %s: verdict %s, expected %s; %s\n%s\n", c.name.c_str(), g.verdict.c_str(), c.expect_pass ? "PASS" : "FAIL",
                  miss.empty() ? "localised" : ("not named: " + miss).c_str(), g.markdown.c_str());
    }
    EXPECT_EQ(g.pass, c.expect_pass) << g.verdict;
    EXPECT_EQ(miss, "");
    if (c.restore && !c.expect_pass) {
      EXPECT_NE(g.markdown.find("Restore ranking"), std::string::npos);
      std::printf("%s\n", g.markdown.substr(g.markdown.find("## Restore ranking")).c_str());
    }
    if (c.name.find("rope base") != std::string::npos || c.name.find("ids 1000") != std::string::npos)
      std::printf("==== grade output, %s ====\n%s\n", c.name.c_str(), g.markdown.c_str());
  }
  std::printf("%s", table.c_str());
  EXPECT_EQ(bad, 0);
}

// The one hyperparameter table: config.json written from a spec reads back as the same
// spec (every variant), and a changed value is named with both sides.
TEST(HparamTable, ConfigJsonRoundTripAndNamedDifference) {
  for (const char* v : {"e2b", "e4b", "12b", "26b-a4b", "31b"}) {
    const ModelSpec s = synth_spec(v, 0, 0);
    const ModelSpec back = spec_from_hf_config(hf_config_json(s), v);
    const auto diff = compare_hparams(back, s);
    for (const auto& d : diff) std::printf("%s: %s: %s vs %s\n", v, d.what.c_str(), d.artifact.c_str(), d.reference.c_str());
    EXPECT_TRUE(diff.empty()) << v;
  }
  ModelSpec a = synth_spec("e2b", 0, 0);
  a.layer_types[3] = AttnType::Full;
  a.rope_full.theta = 1e4;
  finalize_spec(a, "edited");
  const auto d = compare_hparams(a, synth_spec("e2b", 0, 0));
  std::set<std::string> what;
  for (const auto& x : d) {
    std::printf("%s [%s / %s]: %s vs %s\n", x.what.c_str(), x.gguf_key.c_str(), x.hf_field.c_str(), x.artifact.c_str(), x.reference.c_str());
    what.insert(x.what);
  }
  EXPECT_TRUE(what.count("rope base, full layers"));
  EXPECT_TRUE(what.count("layer types (1 = sliding)"));
  for (const auto& x : d) {
    if (x.what == "layer types (1 = sliding)") {
      EXPECT_EQ(x.artifact, "#3=0");
    }
  }
  EXPECT_EQ(d.size(), 2u);
}

}  // namespace
}  // namespace g4
