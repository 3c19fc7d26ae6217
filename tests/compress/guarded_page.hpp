// A page with PROT_NONE guard pages on both sides: a decoder writing (or
// reading) outside its destination page crashes the test instead of
// silently corrupting memory, even without the sanitizer build.
#pragma once

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>

#include "common/page.hpp"

namespace lm::compress::testing {

class GuardedPage {
 public:
  GuardedPage() {
    void* m = mmap(nullptr, 3 * kPageSize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) std::abort();
    base_ = static_cast<uint8_t*>(m);
    if (mprotect(base_ + kPageSize, kPageSize, PROT_READ | PROT_WRITE) != 0) std::abort();
  }
  ~GuardedPage() { munmap(base_, 3 * kPageSize); }
  GuardedPage(const GuardedPage&) = delete;
  GuardedPage& operator=(const GuardedPage&) = delete;
  uint8_t* data() { return base_ + kPageSize; }

 private:
  uint8_t* base_;
};

// A buffer of n bytes that ends exactly at a guard page (catches reads past
// the end of a payload).
class GuardedBuffer {
 public:
  explicit GuardedBuffer(size_t n) : n_(n) {
    size_t pages = (n + kPageSize - 1) / kPageSize + 1;
    void* m = mmap(nullptr, pages * kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) std::abort();
    base_ = static_cast<uint8_t*>(m);
    len_ = pages * kPageSize;
    if (mprotect(base_ + len_ - kPageSize, kPageSize, PROT_NONE) != 0) std::abort();
  }
  ~GuardedBuffer() { munmap(base_, len_); }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;
  uint8_t* data() { return base_ + len_ - kPageSize - n_; }
  size_t size() const { return n_; }

 private:
  uint8_t* base_;
  size_t len_;
  size_t n_;
};

}  // namespace lm::compress::testing
