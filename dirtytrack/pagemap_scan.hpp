// PAGEMAP_SCAN (Linux 6.7) on /proc/PID/pagemap: page ranges of another
// process by category, optionally write-protecting what matched in the same
// walk (the userfaultfd async-WP get-and-re-protect).
#pragma once

#include <sys/types.h>

#include <vector>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "dirtytrack/kernel_abi.hpp"
#include "dirtytrack/ranges.hpp"

namespace lm::dt {

struct ScanQuery {
  uint64_t flags = 0;  // PM_SCAN_WP_MATCHING, PM_SCAN_CHECK_WPASYNC
  uint64_t category_inverted = 0;
  uint64_t category_mask = 0;
  uint64_t category_anyof_mask = 0;
  uint64_t return_mask = 0;
};

// Pages the tracker wants back from one scan: written since the last
// protect, and re-protected in the same walk (the kernel's fast path).
// Mappings not registered for async WP are skipped silently.
inline constexpr ScanQuery kGetAndProtectWritten{PM_SCAN_WP_MATCHING, 0, PAGE_IS_WRITTEN,
                                                 0, PAGE_IS_WRITTEN};
// The same pages without protecting them (the same fast path: an empty PTE
// inside a page table counts as written). Without PM_SCAN_WP_MATCHING the
// kernel walks mappings not registered for async WP too, where every such
// PTE is unprotected: a superset there, never fewer pages.
inline constexpr ScanQuery kGetWritten{0, 0, PAGE_IS_WRITTEN, 0, PAGE_IS_WRITTEN};
// Pages that carry a uffd-wp bit or marker: present or swapped (a marker
// reads as swapped) and not WRITTEN. A registered range is clean where this
// finds nothing, whatever the mode-0 UFFDIO_WRITEPROTECT would have cleared.
inline constexpr ScanQuery kWriteProtected{0, PAGE_IS_WRITTEN, PAGE_IS_WRITTEN, PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                                           PAGE_IS_PRESENT | PAGE_IS_SWAPPED};

class PagemapScanner {
 public:
  static Result<PagemapScanner> open(pid_t pid);

  // Adds the pages of `range` that match `query` to `out`, keeping it sorted
  // and coalesced. Resumes partial walks from walk_end; regions a resumed
  // walk repeats (or returns out of order) are merged, never dropped.
  Result<void> scan(PageRange range, const ScanQuery& query, RangeList& out);
  uint64_t ioctls() const { return ioctls_; }
  pid_t pid() const { return pid_; }

 private:
  PagemapScanner(pid_t pid, UniqueFd fd) : pid_(pid), fd_(std::move(fd)), vec_(4096) {}
  pid_t pid_;
  UniqueFd fd_;
  std::vector<page_region> vec_;
  uint64_t ioctls_ = 0;
};

}  // namespace lm::dt
