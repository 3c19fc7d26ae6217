#include "dirtytrack/ranges.hpp"

#include <algorithm>

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

}  // namespace lm::dt
