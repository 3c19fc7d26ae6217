// Writing memory in before it is needed (QEMU's -mem-prealloc): every page
// of a mapping faulted in for writing with MADV_POPULATE_WRITE, in parallel
// for large mappings. On these hosts the first touch of a page costs far more
// than the write that follows, so a destination pays it before `ready`.
#pragma once

#include <cstdint>

#include "common/error.hpp"

namespace lm {

#ifndef MADV_POPULATE_WRITE
inline constexpr int kMadvPopulateWrite = 23;  // Linux 5.14
#else
inline constexpr int kMadvPopulateWrite = MADV_POPULATE_WRITE;
#endif

// Populates [base, base + bytes) for writing, split in 2 MiB-aligned parts over
// up to `threads` threads (one for less than 256 MiB). Returns the nanoseconds
// it took, 0 on a kernel without MADV_POPULATE_WRITE (before 5.14: nothing is
// populated, the memory fills on first touch). The error names the range and
// errno (ENOMEM: the memory, e.g. reserved huge pages, ran out).
Result<uint64_t> populate_for_write(void* base, uint64_t bytes, unsigned threads = 2);

}  // namespace lm
