// KV-cache types: the codecs, the cache through the forward, and kv-study.
#include <gtest/gtest.h>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "backends/kv_cache.h"
#include "backends/kv_codec.h"
#include "kernels/dequant.h"
#include "kernels/quantize.h"
#include "runtime/session.h"
#include "test_util.h"
#include "tools/kv_study.h"
#include "util/huge_pages.h"
#include "util/mapped_file.h"
#include "util/parallel.h"

namespace g4 {
namespace {

std::vector<float> random_row(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = d(rng);
  x[3] = 9.0f;  // an outlier, as K rows have
  return x;
}

double rel_rms(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    e += (a[i] - b[i]) * (a[i] - b[i]);
    n += b[i] * b[i];
  }
  return std::sqrt(e / n);
}

TEST(KvCodec, RoundTripsAndErrors) {
  const int n = 128;
  const auto x = random_row(n, 1);
  for (KvType t : all_kv_types()) {
    auto y = x;
    KvCodec(t, n).roundtrip(y.data());
    const double e = rel_rms(y, x);
    std::printf("%-7s %4.1f bits/value  rel. RMS error %.3e\n", kv_type_name(t), kv_bits_per_value(t), e);
    if (t == KvType::F32) { EXPECT_EQ(e, 0.0); }
    // Bars ~3-10x above the observed errors of this row (f16 2e-4, q8_0 ~5e-3, 4-bit ~0.1, 3-bit ~0.2).
    const double bar = t == KvType::F32 ? 0 : t == KvType::F16 ? 1e-3 : t == KvType::BF16 ? 5e-3 : t == KvType::Q8_0 ? 2e-2
                       : t == KvType::Rot3 ? 0.5 : 0.3;
    EXPECT_LE(e, bar) << kv_type_name(t);
    if (t != KvType::IQ4_NL && t != KvType::Rot4 && t != KvType::Rot3) {  // plain and GGML: a stored row stores unchanged
      auto z = y;
      KvCodec(t, n).roundtrip(z.data());
      EXPECT_EQ(z, y) << kv_type_name(t);
    }
  }
  // q8_0 is GGML's own block: the same bytes as the quantizer writes.
  std::vector<uint8_t> q(static_cast<size_t>(*row_bytes(DType::Q8_0, n)));
  quantize_row(DType::Q8_0, x.data(), n, q.data());
  std::vector<float> ref(static_cast<size_t>(n));
  dequant_row(DType::Q8_0, q.data(), n, ref.data());
  auto y = x;
  KvCodec(KvType::Q8_0, n).roundtrip(y.data());
  EXPECT_EQ(y, ref);
  // The rotation helps exactly where it should: a row with one large outlier.
  auto r4 = x, q4 = x;
  KvCodec(KvType::Rot4, n).roundtrip(r4.data());
  KvCodec(KvType::Q4_0, n).roundtrip(q4.data());
  std::printf("outlier row: q4_0 %.3e, rot4 %.3e\n", rel_rms(q4, x), rel_rms(r4, x));
  EXPECT_LT(rel_rms(r4, x), rel_rms(q4, x));
}

TEST(KvCodec, UnsupportedHeadDimsAreClearErrors) {
  EXPECT_NE(test::error_of([] { KvCodec(KvType::Q8_0, 16); }).find("head_dim = 16"), std::string::npos);
  EXPECT_NE(test::error_of([] { KvCodec(KvType::Rot4, 48); }).find("power of two"), std::string::npos);
  EXPECT_NE(test::error_of([] { parse_kv_type("q9"); }).find("rot3"), std::string::npos);
  Model m = load_model(test::fixture("tiny-e"));  // head_dim 16
  ForwardOptions fo{Precision::Fast};
  fo.cache_type_k = KvType::Q4_0;
  EXPECT_NE(test::error_of([&] { Session s(m, fo); }).find("blocks of 32"), std::string::npos);
}

// Every cache type goes through KV sharing and the sliding ring: brown-mini (window 64,
// 2 KV-shared layers) decoding tokens 70..99 one by one equals one pass over all 100.
TEST(KvCache, QuantizedCacheStepsEqualOnePass) {
  Model m = load_model(test::model_dir("brown-mini"));
  std::vector<int32_t> ids(100);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 37 + 11) % m.spec.vocab);
  for (KvType t : {KvType::Q8_0, KvType::Q4_0, KvType::Rot3}) {
    ForwardOptions fo{Precision::Fast};
    fo.cache_type_k = fo.cache_type_v = t;
    const auto all = Session(m, fo).eval(ids).logits;
    Session s(m, fo);
    s.eval(std::span(ids).subspan(0, 70));
    double worst = 0;
    for (size_t i = 70; i < ids.size(); ++i) {
      const auto l = s.eval_last(std::span(ids).subspan(i, 1));
      for (int64_t j = 0; j < m.spec.vocab; ++j)
        worst = std::max(worst, std::fabs(double(l[j]) - all[i * m.spec.vocab + j]));
    }
    std::printf("[%s] steps vs one pass: max|diff| %.3g\n", kv_type_name(t), worst);
    EXPECT_EQ(worst, 0.0);  // the round trip happens when a row enters the cache, whatever the step size
  }
}

// The fast backend stores the cache as the type's bytes: decoding steps read every past
// key and value from the packed store, while a one-pass prefill reads only the current
// step's rows (the encode -> decode round trip in float, the cache as it was before the
// store was packed). Equal logits prove the stored bytes decode to exactly those values;
// tiny-e (sliding window 8, 3 KV-shared layers) decodes past its ring's wrap at 264.
TEST(KvCache, PackedStoreEqualsRoundedFloatRows) {
  struct Case {
    const char* model;
    int64_t n, from;
    std::vector<KvType> types;
  };
  const Case cases[] = {
      {"tiny-e", 280, 262, {KvType::F16, KvType::BF16, KvType::IQ4_NL, KvType::Rot4, KvType::Rot3}},
      {"brown-mini", 72, 64, all_kv_types()},
  };
  for (const auto& c : cases) {
    Model m = load_model(test::model_dir(c.model));
    std::vector<int32_t> ids(static_cast<size_t>(c.n));
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 37 + 11) % m.spec.vocab);
    ids[0] = m.spec.bos_id;
    for (KvType t : c.types) {
      ForwardOptions fo{Precision::Fast};
      fo.cache_type_k = fo.cache_type_v = t;
      const auto all = Session(m, fo).eval(ids).logits;
      Session s(m, fo);
      s.eval(std::span(ids).subspan(0, static_cast<size_t>(c.from)));
      double worst = 0, scale = 0;
      for (int64_t i = c.from; i < c.n; ++i) {
        const auto l = s.eval_last(std::span(ids).subspan(static_cast<size_t>(i), 1));
        for (int64_t j = 0; j < m.spec.vocab; ++j) {
          worst = std::max(worst, std::fabs(double(l[j]) - all[i * m.spec.vocab + j]));
          scale = std::max(scale, std::fabs(double(all[i * m.spec.vocab + j])));
        }
      }
      std::printf("[%s %s] decoding from the packed store vs rounded float rows: max|diff| %.3g (max|logit| %.3g)\n",
                  c.model, kv_type_name(t), worst, scale);
      EXPECT_EQ(worst, 0.0) << c.model << " " << kv_type_name(t);
    }
  }
}

// The packed store holds the type's bytes: held and reserved bytes drop by the type's ratio.
TEST(KvCache, PackedBytesDropByTheTypesRatio) {
  Model m = load_model(test::model_dir("brown-mini"));
  std::vector<int32_t> ids(100);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 37 + 11) % m.spec.vocab);
  const size_t f32_reserved = KvCache<float>(m.spec, 8, 512).reserved_bytes();
  for (KvType t : all_kv_types()) {
    ForwardOptions fo{Precision::Fast};
    fo.cache_type_k = fo.cache_type_v = t;
    Session s(m, fo);
    s.eval(ids);
    const double per_token = kv_bytes_per_token(m.spec, t);
    const size_t reserved = KvCache<float>(m.spec, 8, 512, std::pair{t, t}).reserved_bytes();
    std::printf("%-7s %6.0f bytes/token; 100 tokens hold %7zu bytes; n_ctx 512 reserves %8zu bytes (f32: %zu, ratio %.4f)\n",
                kv_type_name(t), per_token, s.kv_bytes(), reserved, f32_reserved, double(reserved) / f32_reserved);
    EXPECT_EQ(double(s.kv_bytes()), 100 * per_token) << kv_type_name(t);  // window 64 + 256 rewind slots: no wrap yet
    EXPECT_EQ(double(reserved) / f32_reserved, kv_bits_per_value(t) / 32) << kv_type_name(t);
  }
  // tiny-e's 16-value sliding heads are one block each: 2 + 8 bytes for rot4 (5 bits/value).
  EXPECT_EQ(kv_row_bytes(KvType::Rot4, 16), 10);
  EXPECT_EQ(kv_row_bytes(KvType::Rot3, 16), 8);
  EXPECT_EQ(kv_row_bytes(KvType::IQ4_NL, 256), 8 * 18);
}

// Whether the mapping that holds p carries madvise(MADV_HUGEPAGE) ("hg" in its VmFlags).
bool advised_huge(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto a = reinterpret_cast<uintptr_t>(p);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream range(line);
    if (line.find(':') > line.find(' ') && range >> std::hex >> lo >> dash >> hi && dash == '-') inside = lo <= a && a < hi;
    else if (inside && line.rfind("VmFlags:", 0) == 0) return line.find(" hg") != std::string::npos;
  }
  return false;
}

// Decode reads every full-attention store whole at each step: large ones sit on 2 MiB
// boundaries, advised as transparent huge pages (util/huge_pages.h); small blocks stay plain.
TEST(KvCache, LargeStoresAreAdvisedAsHugePages) {
  Model m = load_model(test::model_dir("brown-mini"));
  KvCache<float> kv(m.spec, 8, 1 << 16);
  int checked = 0;
  for (const auto& l : kv.layers) {
    if (l.width == 0 || l.capacity || l.k.capacity() * sizeof(float) < kHugePage) continue;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(l.k.data()) % kHugePage, 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(l.v.data()) % kHugePage, 0u);
    if (std::filesystem::exists("/sys/kernel/mm/transparent_hugepage/enabled")) { EXPECT_TRUE(advised_huge(l.k.data())); }
    ++checked;
  }
  EXPECT_GT(checked, 0) << "brown-mini has a full-attention layer whose 65536-position store passes 2 MiB";
  void* small = huge_alloc(100);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small) % 64, 0u);
  std::free(small);
  EXPECT_EQ(huge_alloc(SIZE_MAX - 1), nullptr);
}

// Packed weights below 2 MiB (e2b's q, o, k, v) share 64 MiB slabs of huge pages; blocks
// over 8 MiB get their own. Every block is 64-byte aligned, advised, and freed with its slab.
TEST(HugePages, PackedWeightBlocksShareAdvisedSlabs) {
  std::vector<void*> small;
  for (size_t bytes : {size_t{221184}, size_t{1769472}, size_t{100}, size_t{1769472}}) small.push_back(huge_pool_alloc(bytes));
  for (void* p : small) {
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
    if (std::filesystem::exists("/sys/kernel/mm/transparent_hugepage/enabled")) { EXPECT_TRUE(advised_huge(p)); }
  }
  // Consecutive blocks follow one another in the slab (a 64-byte header each), unless the
  // second one opened a new slab (2 MiB-aligned, its first block 64 bytes in).
  const bool adjacent = static_cast<uint8_t*>(small[1]) - static_cast<uint8_t*>(small[0]) == 221184 + 64;
  EXPECT_TRUE(adjacent || reinterpret_cast<uintptr_t>(small[1]) % kHugePage == 64);
  std::memset(small[3], 7, 1769472);
  void* big = huge_pool_alloc(size_t{10616832});
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(big) % 64, 0u);
  std::memset(big, 1, 10616832);
  // Enough 1.77 MB blocks to open further slabs; freeing all of them returns every slab.
  for (int i = 0; i < 80; ++i) small.push_back(huge_pool_alloc(1769472));
  for (void* p : small) huge_pool_free(p);
  huge_pool_free(big);
  huge_pool_free(nullptr);
  EXPECT_EQ(huge_pool_alloc(SIZE_MAX - 1), nullptr);
  void* again = huge_pool_alloc(4096);
  EXPECT_NE(again, nullptr);
  huge_pool_free(again);
}

// parallel_stream runs every item once, whatever the thread count, and a thread whose share
// is done takes the rest of a slow thread's share.
TEST(Parallel, StreamRunsEveryItemOnceAndStealsFromASlowThread) {
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3, 4})
    for (int64_t n : {0, 1, 2, 3, 7, 64, 1000, 100003}) {
      omp_set_num_threads(threads);
      std::vector<std::atomic<int>> runs(static_cast<size_t>(n));
      parallel_stream(n, [&](int64_t i) { runs[static_cast<size_t>(i)].fetch_add(1, std::memory_order_relaxed); });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(runs[static_cast<size_t>(i)].load(), 1) << threads << " threads, n " << n << ", item " << i;
    }
  omp_set_num_threads(2);
  // Thread 0 sleeps in its first item: thread 1 does its own share, then takes thread 0's.
  std::vector<int> by(64, -1);
  std::atomic<bool> slept{false};
  parallel_stream(64, [&](int64_t i) {
    if (omp_get_thread_num() == 0 && !slept.exchange(true)) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    by[static_cast<size_t>(i)] = omp_get_thread_num();
  });
  omp_set_num_threads(saved);
  EXPECT_GT(std::count(by.begin(), by.end(), 1), 32) << "the idle thread took part of the sleeping thread's share";
  EXPECT_EQ(std::count(by.begin(), by.end(), -1), 0);
}

TEST(KvStudy, BrownMiniTable) {
  Model m = load_model(test::model_dir("brown-mini"));
  KvStudyOptions o;
  o.contexts = {64};
  o.max_chunks = 2;
  o.types = {KvType::F16, KvType::Q8_0, KvType::Q4_0, KvType::Rot4};
  o.kld_bucket = 16;
  const KvStudyResult r = run_kv_study(m, read_text_file(test::fixture("brown-heldout.txt")), o);
  std::printf("%s", format_kv_study(r, "brown-mini").c_str());
  ASSERT_EQ(r.rows.size(), 5u);  // f32 reference + 4
  EXPECT_EQ(r.rows[0].type, KvType::F32);
  EXPECT_EQ(r.rows[0].at[0].kld, 0.0);
  EXPECT_LE(r.rows[1].at[0].kld, 1e-6);   // f16, observed ~8e-8
  EXPECT_LE(r.rows[2].at[0].kld, 3e-4);   // q8_0, observed ~3e-5
  EXPECT_GE(r.rows[3].at[0].kld, 1e-4);   // q4_0 costs visibly more (observed ~6e-3)
  EXPECT_EQ(r.rows[2].bytes_per_token * 32 / 8.5, r.rows[0].bytes_per_token);
  // Drift by position over every position 0..62 of each chunk: 4 buckets of 16.
  for (const auto& row : r.rows) {
    const auto& b = row.at[0].by_position;
    ASSERT_EQ(b.size(), 4u) << kv_type_name(row.type);
    int64_t n = 0;
    for (const auto& x : b) n += x.n;
    EXPECT_EQ(n, r.chunks[0] * 63);
    EXPECT_EQ(b.back().n, r.chunks[0] * 15);
    if (row.type == KvType::F32) { EXPECT_EQ(b[2].kld(), 0.0); }
    if (row.type == KvType::Q4_0) { EXPECT_GT(b[2].kld(), 1e-4); }
  }
}

}  // namespace
}  // namespace g4
