// Sorted, coalesced sets of page ranges: the currency of dirty tracking.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/page.hpp"

namespace lm::dt {

using RangeList = std::vector<PageRange>;

// Sorts by start and merges overlapping or adjacent ranges (in place).
void coalesce(RangeList& ranges);
// Appends r to a list sorted by start, merging when r touches the last range.
void append_merge(RangeList& list, PageRange r);
// a \ b; both sorted and coalesced.
RangeList subtract(const RangeList& a, const RangeList& b);
// a ∩ b; both sorted and coalesced.
RangeList intersect(const RangeList& a, const RangeList& b);
// a ∪ b.
RangeList unite(const RangeList& a, const RangeList& b);
uint64_t total_pages(const RangeList& ranges);
// Whether page-aligned addr lies in the sorted list (binary search).
bool contains(const RangeList& ranges, uint64_t addr);

// Page bitmaps over [start, start + pages * kPageSize): bit i (LSB first in
// each byte) is page i. Whole bytes are set and skipped at once, so a GiB of
// pages converts in well under a millisecond.
std::vector<uint8_t> to_page_bitmap(const RangeList& ranges, uint64_t start, uint64_t pages);
RangeList from_page_bitmap(std::span<const uint8_t> bits, uint64_t start, uint64_t pages);

}  // namespace lm::dt
