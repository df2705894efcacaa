// After warm-up, a decode step and a prefill step of the forward allocate
// nothing on the heap: activations, KV cache and kernel scratch are all
// preallocated or grown once.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "alloc_counter.h"
#include "kernels/fast.h"
#include "runtime/session.h"

#ifndef G4_FIXTURES
#error "G4_FIXTURES must be defined"
#endif

namespace g4 {
namespace {

struct Case {
  const char *path; // relative to tests/fixtures
  Precision precision;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.path << " " << precision_name(c.precision); }

class SessionAllocations : public ::testing::TestWithParam<Case> {};

TEST_P(SessionAllocations, DecodeAndPrefillStepsAllocateNothing) {
  const Case c = GetParam();
  Model m = load_model(std::string(G4_FIXTURES) + "/" + c.path);
  for (const std::string &isa : fast_available_isas()) {
    fast_force_isa(isa);
    ForwardOptions fo{c.precision};
    fo.n_ctx =
        256; // KV reserved up front, as a server or `g4 run` does with -c
    fo.n_batch = 16;
    Session s(m, fo);
    std::vector<int32_t> prompt(16);
    for (size_t i = 0; i < prompt.size(); ++i)
      prompt[i] = static_cast<int32_t>((i * 31 + 5) % m.spec.vocab);
    // Warm-up: one prefill step and a few decode steps.
    s.decode(prompt);
    const int32_t tok = 7;
    for (int i = 0; i < 3; ++i)
      s.decode(std::span<const int32_t>(&tok, 1));

    const int64_t before_decode = g4_test_allocations();
    for (int i = 0; i < 20; ++i)
      s.decode(std::span<const int32_t>(&tok, 1));
    const int64_t decode_allocs = g4_test_allocations() - before_decode;

    const int64_t before_prefill = g4_test_allocations();
    s.decode(prompt);
    const int64_t prefill_allocs = g4_test_allocations() - before_prefill;
    std::printf("[%s %s] heap allocations: 20 decode steps %lld, one 16-token "
                "prefill step %lld (backend %s)\n",
                c.path, precision_name(c.precision),
                static_cast<long long>(decode_allocs),
                static_cast<long long>(prefill_allocs),
                s.backend_name().c_str());
    EXPECT_EQ(decode_allocs, 0);
    EXPECT_EQ(prefill_allocs, 0);
  }
  fast_force_isa("");
}

INSTANTIATE_TEST_SUITE_P(
    Models, SessionAllocations,
    ::testing::Values(Case{"tiny-e", Precision::Fast},
                      Case{"tiny-moe", Precision::Fast},
                      Case{"tiny-dense", Precision::Fast},
                      Case{"gguf/brown-mini-Q4_K_M.gguf", Precision::Fast},
                      Case{"gguf/brown-mini-Q8_0.gguf", Precision::Fast}));

} // namespace
} // namespace g4
