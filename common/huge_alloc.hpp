// Large buffers on transparent huge pages. On these hosts (a PVM guest with
// shadow paging) the first touch of a 4 KiB page costs ~10 µs: 12 MiB of
// sender buffers took 110-136 ms to write in on 4 KiB pages, ~1 ms on 2 MiB
// pages (docs/architecture.md, "Sender buffers are on huge pages"). Blocks of at
// least kHugeAllocMin bytes are mapped 2 MiB-aligned, their size rounded up
// to 2 MiB, with MADV_HUGEPAGE (THP "madvise" mode, as here, needs it); smaller
// ones come from the heap. Without huge pages the kernel falls back to small
// ones: only the speed differs.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace lm {

inline constexpr size_t kHugePageBytes = size_t(2) << 20;
inline constexpr size_t kHugeAllocMin = size_t(1) << 20;

inline size_t huge_alloc_bytes(size_t bytes) { return (bytes + kHugePageBytes - 1) & ~(kHugePageBytes - 1); }

// nullptr when the memory cannot be had.
inline void* huge_alloc(size_t bytes) noexcept {
  if (bytes < kHugeAllocMin) return std::malloc(bytes ? bytes : 1);
  const size_t size = huge_alloc_bytes(bytes);
  void* p = ::mmap(nullptr, size + kHugePageBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  const uintptr_t start = uintptr_t(p);
  const uintptr_t aligned = (start + kHugePageBytes - 1) & ~uintptr_t(kHugePageBytes - 1);
  if (aligned > start) ::munmap(p, aligned - start);
  if (const size_t tail = start + kHugePageBytes - aligned; tail > 0)
    ::munmap(reinterpret_cast<void*>(aligned + size), tail);
  (void)::madvise(reinterpret_cast<void*>(aligned), size, MADV_HUGEPAGE);
  return reinterpret_cast<void*>(aligned);
}

// `bytes` as given to huge_alloc.
inline void huge_free(void* p, size_t bytes) noexcept {
  if (!p) return;
  if (bytes < kHugeAllocMin) return std::free(p);
  ::munmap(p, huge_alloc_bytes(bytes));
}

// One buffer from huge_alloc, freed with it.
class HugeBuffer {
 public:
  HugeBuffer() = default;
  explicit HugeBuffer(size_t bytes) : p_(static_cast<std::byte*>(huge_alloc(bytes))), bytes_(bytes) {
    if (!p_) throw std::bad_alloc();
  }
  HugeBuffer(HugeBuffer&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr; }
  HugeBuffer& operator=(HugeBuffer&& o) noexcept {
    if (this != &o) {
      huge_free(p_, bytes_);
      p_ = o.p_;
      bytes_ = o.bytes_;
      o.p_ = nullptr;
    }
    return *this;
  }
  ~HugeBuffer() { huge_free(p_, bytes_); }
  std::byte* get() const { return p_; }

 private:
  std::byte* p_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace lm
