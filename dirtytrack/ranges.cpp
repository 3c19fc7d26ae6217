#include "dirtytrack/ranges.hpp"

#include <algorithm>
#include <cstring>

namespace lm::dt {

void coalesce(RangeList& ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const PageRange& a, const PageRange& b) { return a.start < b.start; });
  RangeList out;
  out.reserve(ranges.size());
  for (const auto& r : ranges) append_merge(out, r);
  ranges = std::move(out);
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
  RangeList out;
  pages = std::min<uint64_t>(pages, uint64_t(bits.size()) * 8);
  for (uint64_t i = 0; i < pages;) {
    uint8_t b = bits[i / 8];
    if (i % 8 == 0 && (b == 0 || b == 0xff) && i + 8 <= pages) {
      if (b) append_merge(out, {start + i * kPageSize, start + (i + 8) * kPageSize});
      i += 8;
      continue;
    }
    if (b & (1u << (i % 8))) append_merge(out, {start + i * kPageSize, start + (i + 1) * kPageSize});
    i++;
  }
  return out;
}

}  // namespace lm::dt
