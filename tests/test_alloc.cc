// The fast kernels allocate nothing on the heap once a shape has been seen: every fast_*
// function, every weight type, every ISA this CPU runs, decode and batch shapes.
#include <gtest/gtest.h>

#include <cstdio>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "alloc_counter.h"
#include "kernels/fast.h"
#include "kernels/quantize.h"

namespace g4 {
namespace {

TEST(AllocCounter, CountsAllocations) {  // the hook must see plain and aligned operator new
  const int64_t before = g4_test_allocations();
  void* p = ::operator new(64);  // called directly: not elidable as a new-expression is
  void* q = ::operator new(64, std::align_val_t(64));
  ::operator delete(p);
  ::operator delete(q, std::align_val_t(64));
  EXPECT_EQ(g4_test_allocations() - before, 2);
}

// Q2_K/Q3_K have no quantizer: random bytes with a small f16 d (and dmin) are valid blocks.
std::vector<uint8_t> random_blocks(DType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  const auto& info = dtype_info(t);
  std::vector<uint8_t> bytes(static_cast<size_t>(rows * cols / info.block_elems * info.block_bytes));
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  for (size_t o = 0; o < bytes.size(); o += static_cast<size_t>(info.block_bytes)) {
    const size_t tail = t == DType::Q2_K ? 4 : 2;
    for (size_t k = 0; k < tail; k += 2) {
      bytes[o + info.block_bytes - tail + k] = 0x00;
      bytes[o + info.block_bytes - tail + k + 1] = 0x20;  // f16 0.0078
    }
  }
  return bytes;
}

TEST(FastKernels, NoHeapAllocationAfterWarmUp) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0, 1);
  const int64_t in = 512, out = 40;
  std::vector<float> w(static_cast<size_t>(in * out)), x(static_cast<size_t>(16 * in)), y(static_cast<size_t>(16 * out));
  for (auto& v : w) v = 0.05f * n(rng);
  for (auto& v : x) v = n(rng);
  const int64_t hd = 256, nk = 37;
  std::vector<float> q(hd), kv(static_cast<size_t>(nk * hd)), s(nk), o(hd), g(1000), u(1000);
  for (auto* v : {&q, &kv, &g, &u})
    for (auto& e : *v) e = n(rng);
  std::vector<const float*> rows;
  for (int64_t j = 0; j < nk; ++j) rows.push_back(&kv[j * hd]);
  const DType types[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                         DType::Q5_1, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};
  std::vector<std::vector<uint8_t>> bytes;
  for (DType t : types)
    bytes.push_back(t == DType::Q2_K || t == DType::Q3_K ? random_blocks(t, out, in, rng) : quantize_rows(t, w.data(), out, in));
  const std::vector<std::string> isas = fast_available_isas();
  int64_t calls = 0, total = 0, warm_up = 0;
  for (const std::string& isa : isas) {
    fast_force_isa(isa);
    for (size_t i = 0; i < std::size(types); ++i) {
      TensorView tv;
      tv.name = "w";
      tv.dtype = types[i];
      tv.shape = {out, in};
      tv.data = bytes[i].data();
      tv.nbytes = static_cast<int64_t>(bytes[i].size());
      for (int64_t ntok : {1, 2, 5, 16}) {  // decode paths and panel paths
        const int64_t warm = g4_test_allocations();
        fast_matmul(tv, x.data(), ntok, in, out, y.data());  // warm-up: scratch grows here
        warm_up += g4_test_allocations() - warm;
        const int64_t before = g4_test_allocations();
        for (int rep = 0; rep < 3; ++rep, ++calls) fast_matmul(tv, x.data(), ntok, in, out, y.data());
        const int64_t allocs = g4_test_allocations() - before;
        total += allocs;
        EXPECT_EQ(allocs, 0) << "fast_matmul " << dtype_name(types[i]) << " on " << isa << ", " << ntok << " tokens";
      }
    }
    // A smaller shape after a larger one reuses the grown scratch.
    {
      TensorView tv;
      tv.name = "w";
      tv.dtype = DType::Q4_0;
      tv.shape = {out / 2, in / 2};
      const auto small = quantize_rows(DType::Q4_0, w.data(), out / 2, in / 2);
      tv.data = small.data();
      tv.nbytes = static_cast<int64_t>(small.size());
      const int64_t before = g4_test_allocations();
      fast_matmul(tv, x.data(), 3, in / 2, out / 2, y.data());
      ++calls;
      EXPECT_EQ(g4_test_allocations() - before, 0) << "a smaller shape on " << isa;
      total += g4_test_allocations() - before;
    }
    fast_scores(q.data(), rows.data(), nk, hd, s.data());
    fast_softmax(s.data(), nk);
    fast_weighted_sum(s.data(), rows.data(), nk, hd, o.data());
    fast_gelu_tanh_mul(g.data(), u.data(), 1000);
    const int64_t before = g4_test_allocations();
    for (int rep = 0; rep < 3; ++rep, calls += 4) {
      fast_scores(q.data(), rows.data(), nk, hd, s.data());
      fast_softmax(s.data(), nk);
      fast_weighted_sum(s.data(), rows.data(), nk, hd, o.data());
      fast_gelu_tanh_mul(g.data(), u.data(), 1000);
    }
    const int64_t allocs = g4_test_allocations() - before;
    total += allocs;
    EXPECT_EQ(allocs, 0) << "attention/activation helpers on " << isa;
  }
  fast_force_isa("");
  std::printf("fast kernels: %lld heap allocations in %lld calls after warm-up (%zu ISAs); %lld during the warm-up calls\n",
              static_cast<long long>(total), static_cast<long long>(calls), isas.size(), static_cast<long long>(warm_up));
}

}  // namespace
}  // namespace g4
