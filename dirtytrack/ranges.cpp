#include "dirtytrack/ranges.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

namespace lm::dt {

void coalesce(RangeList& ranges) {
  auto by_start = [](const PageRange& a, const PageRange& b) { return a.start < b.start; };
  if (!std::is_sorted(ranges.begin(), ranges.end(), by_start)) std::sort(ranges.begin(), ranges.end(), by_start);
  // In place: a new list of a scan's tens of thousands of runs is fresh
  // memory, faulted in page by page.
  size_t kept = 0;
  for (const PageRange& r : ranges) {
    if (r.empty()) continue;
    if (kept > 0 && r.start <= ranges[kept - 1].end) ranges[kept - 1].end = std::max(ranges[kept - 1].end, r.end);
    else ranges[kept++] = r;
  }
  ranges.resize(kept);
}

void append_merge(RangeList& list, PageRange r) {
  if (r.empty()) return;
  if (!list.empty() && r.start <= list.back().end) {
    list.back().end = std::max(list.back().end, r.end);
    return;
  }
  list.push_back(r);
}

RangeList subtract(const RangeList& a, const RangeList& b) {
  RangeList out;
  size_t j = 0;
  for (PageRange r : a) {
    while (j < b.size() && b[j].end <= r.start) j++;
    uint64_t cur = r.start;
    for (size_t k = j; k < b.size() && b[k].start < r.end; k++) {
      if (b[k].start > cur) out.push_back({cur, b[k].start});
      cur = std::max(cur, b[k].end);
    }
    if (cur < r.end) out.push_back({cur, r.end});
  }
  return out;
}

RangeList intersect(const RangeList& a, const RangeList& b) {
  RangeList out;
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    uint64_t s = std::max(a[i].start, b[j].start);
    uint64_t e = std::min(a[i].end, b[j].end);
    if (s < e) out.push_back({s, e});
    if (a[i].end < b[j].end) i++;
    else j++;
  }
  return out;
}

RangeList unite(const RangeList& a, const RangeList& b) {
  RangeList out = a;
  out.insert(out.end(), b.begin(), b.end());
  coalesce(out);
  return out;
}

uint64_t total_pages(const RangeList& ranges) {
  uint64_t n = 0;
  for (const auto& r : ranges) n += r.pages();
  return n;
}

bool contains(const RangeList& ranges, uint64_t addr) {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), addr,
                             [](uint64_t a, const PageRange& r) { return a < r.start; });
  if (it == ranges.begin()) return false;
  return std::prev(it)->contains(addr);
}

std::vector<uint8_t> to_page_bitmap(const RangeList& ranges, uint64_t start, uint64_t pages) {
  std::vector<uint8_t> bits((pages + 7) / 8, 0);
  const uint64_t end = start + pages * kPageSize;
  for (const auto& r : ranges) {
    uint64_t first = (std::max(r.start, start) - start) / kPageSize;
    uint64_t last = (std::min(r.end, end) - start) / kPageSize;  // one past
    if (r.end <= start || r.start >= end || first >= last) continue;
    while (first < last && first % 8 != 0) {
      bits[first / 8] |= uint8_t(1u << (first % 8));
      first++;
    }
    if (uint64_t whole = (last - first) / 8; whole > 0) {
      std::memset(bits.data() + first / 8, 0xff, whole);
      first += whole * 8;
    }
    for (; first < last; first++) bits[first / 8] |= uint8_t(1u << (first % 8));
  }
  return bits;
}

RangeList from_page_bitmap(std::span<const uint8_t> bits, uint64_t start, uint64_t pages) {
  pages = std::min<uint64_t>(pages, uint64_t(bits.size()) * 8);
  // 64 pages a word (bit k of byte j is page 8j + k: a little-endian load):
  // a run is found with two scans, not page by page. Bits past `pages` are
  // ignored by clamping to it.
  auto word = [&](uint64_t base) {
    uint64_t w = 0;
    std::memcpy(&w, bits.data() + base / 8, std::min<size_t>(8, bits.size() - base / 8));
    return w;
  };
  auto next = [&](uint64_t i, bool set) {  // the first page from i whose bit is `set`, or `pages`
    while (i < pages) {
      const uint64_t base = i & ~uint64_t(63);
      const uint64_t w = (set ? word(base) : ~word(base)) & (~uint64_t(0) << (i - base));
      if (w) return std::min(pages, base + uint64_t(std::countr_zero(w)));
      i = base + 64;
    }
    return pages;
  };
  RangeList out;
  for (uint64_t i = next(0, true); i < pages;) {
    const uint64_t end = next(i, false);
    out.push_back({start + i * kPageSize, start + end * kPageSize});
    i = next(end, true);
  }
  return out;
}

}  // namespace lm::dt
