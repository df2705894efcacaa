// Memory that a step streams end to end (packed weights, the KV cache, the bandwidth probe):
// on 2 MiB boundaries and advised to Linux as transparent huge pages (Debian's default THP
// mode is "madvise", so nothing gets them unasked). With 4 KiB pages such a stream takes a TLB
// miss every 4 KiB; measured on Sapphire Rapids, e2b Q4_0 decode at 2 threads went from
// 18.5 to 21.0 tokens/s. Smaller blocks get a plain 64-byte-aligned allocation.
#pragma once
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace g4 {

inline constexpr size_t kHugePage = size_t{2} << 20;

// Released with std::free; nullptr when out of memory.
inline void* huge_alloc(size_t bytes) {
  if (bytes > SIZE_MAX - kHugePage) return nullptr;  // the rounding below would wrap
  const size_t align = bytes >= kHugePage ? kHugePage : 64;
  const size_t size = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, size ? size : align);
  if (p && align == kHugePage) ::madvise(p, size, MADV_HUGEPAGE);  // advice: where THP is off it does nothing
  return p;
}

// Packed weights: many matrices are below 2 MiB (e2b: q and o of sliding layers 1.77 MB, k, v
// and the per-layer projections 221 KB) and would get 4 KiB pages from huge_alloc. Measured,
// e2b Q4_0 decode at 2 threads: 2048 x 1536 read at 20-23 GB/s, 2560 x 1536 (over 2 MiB) at
// 28-31. So they share 64 MiB slabs of huge pages; a slab is freed when its last block is.
// Blocks are 64-byte aligned; larger ones (over 8 MiB) get their own huge_alloc.
void* huge_pool_alloc(size_t bytes);
void huge_pool_free(void* p);

// std::vector<T, HugePageAllocator<T>>: a vector whose large buffers are huge_alloc'd.
template <class T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) {}
  T* allocate(size_t n) {
    if (n > SIZE_MAX / sizeof(T)) throw std::bad_array_new_length();
    void* p = huge_alloc(n * sizeof(T));
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <class U>
  bool operator==(const HugePageAllocator<U>&) const { return true; }
};

}  // namespace g4
