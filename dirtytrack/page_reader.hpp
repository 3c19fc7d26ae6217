// Reads pages of another process with process_vm_readv, in large batches,
// into buffers the caller owns. A page that cannot be read (its mapping
// vanished) is reported, zero-filled, and the read goes on.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>

#include "common/error.hpp"
#include "dirtytrack/ranges.hpp"

namespace lm::dt {

struct ReadReport {
  uint64_t pages_read = 0;
  RangeList failed;  // pages that could not be read (sorted, coalesced)
  uint64_t syscalls = 0;
};

class PageReader {
 public:
  explicit PageReader(pid_t pid) : pid_(pid) {}

  // Reads the pages of `ranges` in order into `out` (page i of the sequence
  // at out[i * 4096]); out must hold total_pages(ranges) pages. The Result is
  // an error only when the process is gone or out is too small.
  Result<ReadReport> read(std::span<const PageRange> ranges, std::span<std::byte> out);

  pid_t pid() const { return pid_; }

 private:
  pid_t pid_;
};

}  // namespace lm::dt
