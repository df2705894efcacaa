// The IQ, ternary and MXFP4 types (issue 20): g4's decoders against llama.cpp's own
// dequantization, bit for bit. tests/fixtures/iq holds llama-quantize's bytes of two brown-mini
// tensors per type, random.gguf 64 blocks of random bytes per type (every codebook entry and sign
// pattern), and expected.json the f32 bits llama.cpp's to_float made of them (FNV-1a 64 of every
// value, and the first 64); scripts/make-iq-fixtures.sh made them.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "formats/gguf_keys.h"
#include "formats/gguf_writer.h"
#include "kernels/dequant.h"
#include "kernels/quantize.h"
#include "model/model.h"
#include "tools/imatrix.h"
#include "tools/quantize.h"
#include "test_util.h"
#include "tools/forensics.h"
#include "util/error.h"

namespace g4 {
namespace {

const char* kIqTypes[] = {"IQ4_NL", "IQ4_XS", "MXFP4", "IQ3_XXS", "IQ3_S", "IQ2_XXS",
                          "IQ2_XS", "IQ2_S",  "IQ1_S", "IQ1_M",   "TQ1_0", "TQ2_0"};

nlohmann::json expected() {
  std::ifstream f(std::string(G4_FIXTURES) + "/iq/expected.json");
  std::stringstream ss;
  ss << f.rdbuf();
  return nlohmann::json::parse(ss.str());
}

uint64_t fnv1a64(const void* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 0x100000001b3ull;
  return h;
}

TEST(IqTypes, DequantizationIsBitExactWithLlamaCpp) {
  const nlohmann::json exp = expected();
  int tensors = 0;
  std::vector<std::string> files = {"random.gguf"};
  for (const char* type : kIqTypes) files.push_back(std::string("brown-mini-") + type + ".gguf");
  for (const std::string& file : files) {
    const GgufFile g = read_gguf(std::string(G4_FIXTURES) + "/iq/" + file);
    ASSERT_TRUE(exp.contains(file)) << file;
    ASSERT_EQ(g.tensors.size(), exp[file].size()) << file;
    for (const TensorView& t : g.tensors) {
      const auto& e = exp[file][t.name];
      const std::string type(dtype_name(t.dtype));
      ASSERT_EQ(e["type"].get<int>(), static_cast<int>(t.dtype)) << file << " " << t.name;
      if (file != "random.gguf") ASSERT_EQ(file, "brown-mini-" + type + ".gguf") << t.name;
      ASSERT_TRUE(dequant_supported(t.dtype)) << type;
      const int64_t n = t.numel();
      ASSERT_EQ(n, e["n"].get<int64_t>());
      std::vector<float> y(static_cast<size_t>(n));
      dequant_row(t.dtype, t.data, n, y.data());  // the whole tensor as one row: blocks do not straddle rows
      int head_diff = 0;
      const auto& head = e["head"];
      for (size_t i = 0; i < head.size(); ++i) {
        uint32_t bits;
        std::memcpy(&bits, &y[i], 4);
        if (bits != head[i].get<uint32_t>()) {
          if (head_diff++ < 3) {
            const uint32_t want = head[i].get<uint32_t>();
            float w;
            std::memcpy(&w, &want, 4);
            ADD_FAILURE() << type << " " << t.name << " element " << i << ": g4 " << y[i] << ", llama.cpp " << w;
          }
        }
      }
      char hash[17];
      std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(fnv1a64(y.data(), y.size() * 4)));
      std::printf("%-8s %-24s %7lld values, FNV-1a %s (llama.cpp %s)\n", type.c_str(), t.name.c_str(), static_cast<long long>(n),
                  hash, e["fnv1a64"].get<std::string>().c_str());
      EXPECT_EQ(hash, e["fnv1a64"].get<std::string>()) << type << " " << t.name;
      EXPECT_EQ(head_diff, 0);
      ++tensors;
    }
  }
  EXPECT_EQ(tensors, 24 + 12);
}

// g4's IQ4_NL and IQ4_XS writer against llama-quantize's bytes from the same bf16 weights, without
// and with an importance matrix (read from llama.cpp's legacy .dat and from its GGUF format).
TEST(IqTypes, Iq4WriterIsByteIdenticalToLlamaQuantize) {
  const GgufFile bf16 = read_gguf(test::fixture("gguf/brown-mini-bf16.gguf"));
  const Imatrix dat = read_imatrix(test::fixture("iq/synth-imatrix.dat"));
  const Imatrix gguf = read_imatrix(test::fixture("iq/synth-imatrix.gguf"));
  ASSERT_EQ(dat.size(), 53u);
  ASSERT_EQ(gguf.size(), dat.size());
  double worst = 0;
  for (const auto& [name, v] : dat)
    for (size_t i = 0; i < v.size(); ++i) worst = std::max(worst, std::abs(double(gguf.at(name)[i]) - v[i]) / v[i]);
  std::printf("imatrix: %zu entries; GGUF and .dat formats differ by %.2e (relative)\n", dat.size(), worst);
  EXPECT_EQ(worst, 0.0);
  int checked = 0;
  for (const std::string type : {"IQ4_NL", "IQ4_XS"})
    for (const Imatrix* im : {static_cast<const Imatrix*>(nullptr), &dat, &gguf}) {
      const GgufFile lc = read_gguf(test::fixture("iq/brown-mini-" + type + (im ? "-imatrix" : "") + ".gguf"));
      for (const auto& t : lc.tensors) {
        const TensorView* src = nullptr;
        for (const auto& b : bf16.tensors)
          if (b.name == t.name) src = &b;
        ASSERT_NE(src, nullptr) << t.name;
        const auto x = dequantize_all(*src);
        const int64_t cols = t.shape.back();
        const auto mine = quantize_rows(t.dtype, x.data(), static_cast<int64_t>(x.size()) / cols, cols,
                                        im ? im->at(t.name).data() : nullptr);
        ASSERT_EQ(mine.size(), static_cast<size_t>(t.nbytes));
        int64_t diff = 0;
        for (size_t i = 0; i < mine.size(); ++i) diff += mine[i] != t.data[i];
        std::printf("%s %s, imatrix %s: %lld of %zu bytes differ from llama-quantize\n", type.c_str(), t.name.c_str(),
                    im == nullptr ? "none" : im == &dat ? ".dat" : "GGUF", static_cast<long long>(diff), mine.size());
        EXPECT_EQ(diff, 0) << type << " " << t.name;
        ++checked;
      }
    }
  EXPECT_EQ(checked, 12);
}

TEST(IqTypes, MalformedImatrixIsAnError) {
  test::ScratchDir d;
  const std::string bad = d.str("bad.dat");
  {
    std::ofstream f(bad, std::ios::binary);
    const int32_t n = 1, len = 5, ncall = 1, nval = 1000000;
    f.write(reinterpret_cast<const char*>(&n), 4);
    f.write(reinterpret_cast<const char*>(&len), 4);
    f.write("abcde", 5);
    f.write(reinterpret_cast<const char*>(&ncall), 4);
    f.write(reinterpret_cast<const char*>(&nval), 4);
  }
  try {
    read_imatrix(bad);
    FAIL() << "a truncated imatrix must not load";
  } catch (const Error& e) {
    std::printf("%s\n", e.what());
    EXPECT_NE(std::string(e.what()).find("'abcde'"), std::string::npos) << e.what();
  }
}

// brown-mini Q8_0 with blk.0.attn_q and blk.0.ffn_down replaced by llama-quantize's `type` bytes
// (a "dynamic" mix), optionally damaged: every grid-index byte randomized.
std::string mixed_model(const test::ScratchDir& d, const std::string& type, bool damage) {
  const GgufFile base = read_gguf(test::fixture("gguf/brown-mini-Q8_0.gguf"));
  const GgufFile iq = read_gguf(test::fixture("iq/brown-mini-" + type + ".gguf"));
  GgufWriter w;
  for (const auto& [k, v] : base.kv)
    if (k != gk::kAlignment) w.set(k, v);
  for (const auto& t : base.tensors) {
    const TensorView* src = &t;
    for (const auto& r : iq.tensors)
      if (r.name == t.name) src = &r;
    w.add_tensor(t.name, src->dtype, src->shape, [src, damage, &t] {
      std::vector<uint8_t> b(src->data, src->data + src->nbytes);
      if (damage && src != &t) {
        uint32_t x = 12345;
        const auto bb = dtype_info(src->dtype).block_bytes;
        for (size_t i = 0; i < b.size(); ++i)
          if (i % bb >= 2 && i % bb < 2 + 64) b[i] = static_cast<uint8_t>((x = x * 1664525u + 1013904223u) >> 24);  // qs
      }
      return b;
    });
  }
  const std::string path = d.str(type + (damage ? "-damaged" : "") + ".gguf");
  w.write(path);
  return path;
}

TEST(IqTypes, ForensicsKnowsEachTypesExpectedError) {
  test::ScratchDir d;
  const Model ref = load_model(test::model_dir("brown-mini"));
  for (const std::string type : {"IQ1_S", "IQ2_XS", "IQ3_XXS", "MXFP4"}) {
    for (const bool damage : {false, true}) {
      const Model art = load_model(mixed_model(d, type, damage));
      const ForensicsReport r = run_forensics(art, ref);
      for (const auto& f : r.tensors) {
        if (f.name != "blk.0.attn_q.weight" && f.name != "blk.0.ffn_down.weight") continue;
        std::printf("%-8s %-8s %-22s error %.4f, explained %.4f: %s\n", type.c_str(), damage ? "damaged" : "healthy",
                    f.name.c_str(), f.rel_rms, f.explained, f.flagged ? "flagged" : "clean");
        EXPECT_EQ(f.flagged, damage) << type << " " << f.name << ": error " << f.rel_rms << ", explained " << f.explained;
      }
    }
  }
}

}  // namespace
}  // namespace g4
