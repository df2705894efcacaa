#include "util/huge_pages.h"

#include <mutex>

namespace g4 {
namespace {

constexpr size_t kSlab = size_t{64} << 20, kOwn = size_t{8} << 20, kHeader = 64;

struct Slab {
  uint8_t* base = nullptr;  // nullptr: a block with its own allocation
  size_t used = 0, live = 0;
};

std::mutex g_mu;
Slab* g_current = nullptr;  // the slab new blocks go to

// Every block starts kHeader bytes into its allocation, after a pointer to its slab.
void* finish(Slab* s, uint8_t* at) {
  *reinterpret_cast<Slab**>(at) = s;
  return at + kHeader;
}

}  // namespace

void* huge_pool_alloc(size_t bytes) {
  if (bytes > SIZE_MAX - kHugePage - kHeader) return nullptr;
  const size_t need = (bytes + kHeader + 63) / 64 * 64;
  if (need > kOwn) {
    auto* own = new Slab{nullptr, 0, 1};
    auto* at = static_cast<uint8_t*>(huge_alloc(need));
    if (!at) return delete own, nullptr;
    return finish(own, at);
  }
  const std::lock_guard<std::mutex> lock(g_mu);
  if (!g_current || g_current->used + need > kSlab) {
    auto* at = static_cast<uint8_t*>(huge_alloc(kSlab));  // untouched pages stay virtual
    if (!at) return nullptr;
    if (g_current && g_current->live == 0) {
      std::free(g_current->base);
      delete g_current;
    }
    g_current = new Slab{at, 0, 0};
  }
  uint8_t* at = g_current->base + g_current->used;
  g_current->used += need;
  ++g_current->live;
  return finish(g_current, at);
}

void huge_pool_free(void* p) {
  if (!p) return;
  uint8_t* at = static_cast<uint8_t*>(p) - kHeader;
  Slab* s = *reinterpret_cast<Slab**>(at);
  if (!s->base) {
    std::free(at);
    delete s;
    return;
  }
  const std::lock_guard<std::mutex> lock(g_mu);
  if (--s->live == 0 && s != g_current) {
    std::free(s->base);
    delete s;
  }
}

}  // namespace g4
