// Pages a collect reported dirty while they held no data (a new mapping's
// untouched pages, a discarded page), watched until the next collect for a
// zap. Shared by the trackers that cannot see a write to a page that is then
// discarded (soft-dirty: MADV_DONTNEED takes the PTE and its bit; hash: the
// page reads as zero again, as it did when hashed).
//
// The engine reads the pages of collect N after N returns. A page reported
// empty at N, written after N and read by the engine then (data sent),
// discarded before N+1, is empty again at N+1 and neither tracker saw the
// write: the destination would keep the data. Reporting such pages again at
// every collect while they stay empty would be safe, but then a new mapping
// that stays untouched is sent every round and never converges. So:
//
//   collect N:   watch(reported empty); then every watched page is read
//                (before the engine can read it): an empty anonymous page
//                gets the shared zero page mapped, which only a zap or an
//                unmap takes away again (a write replaces it with a page
//                of its own, which the tracker sees);
//   collect N+1: zapped() = the watched pages with no page at all (neither
//                present nor swapped): discarded since N. These are
//                reported, once: they are watched again and read again.
//
// What it cannot see: a watched page written, read by the engine, discarded
// and then read by the process before N+1 (that read maps the zero page
// again). See docs/dirtytrack.md, "Pages reported empty".
#pragma once

#include "common/error.hpp"
#include "dirtytrack/page_reader.hpp"
#include "dirtytrack/pagemap_scan.hpp"
#include "dirtytrack/ranges.hpp"

namespace lm::dt {

class EmptyPageWatch {
 public:
  // The pages collect N reported dirty while they held no data.
  void watch(RangeList reported_empty) { watched_ = std::move(reported_empty); }
  const RangeList& watched() const { return watched_; }

  // Maps every watched page by reading it (the zero page for an empty
  // anonymous one). Call before the collect returns, with or without the
  // target frozen.
  Result<void> map_watched(PageReader& reader) const;

  // The watched pages within `scope` that have no page now (neither present
  // nor swapped): discarded since they were mapped.
  Result<RangeList> zapped(PagemapScanner& scanner, const RangeList& scope) const;

 private:
  RangeList watched_;
};

}  // namespace lm::dt
