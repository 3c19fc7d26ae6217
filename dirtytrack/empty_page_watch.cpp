#include "dirtytrack/empty_page_watch.hpp"

#include <vector>

namespace lm::dt {

namespace {
constexpr uint64_t kReadBatchPages = 256;  // 1 MiB per read
}

Result<void> EmptyPageWatch::map_watched(PageReader& reader) const {
  std::vector<std::byte> buffer(kReadBatchPages * kPageSize);
  for (const auto& r : watched_) {
    for (uint64_t at = r.start; at < r.end; at += kReadBatchPages * kPageSize) {
      PageRange chunk{at, std::min(r.end, at + kReadBatchPages * kPageSize)};
      // A page that cannot be read went with its mapping: the next collect
      // sees the mapping change.
      LM_TRY(reader.read(std::span<const PageRange>(&chunk, 1), std::span<std::byte>(buffer.data(), chunk.bytes())));
    }
  }
  return ok();
}

Result<RangeList> EmptyPageWatch::zapped(PagemapScanner& scanner, const RangeList& scope) const {
  // Neither present (the zero page is present) nor swapped; a page-table
  // hole (emptied tables freed) matches too.
  constexpr uint64_t kHasPage = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
  constexpr ScanQuery kNoPage{0, kHasPage, kHasPage, 0, kHasPage};
  RangeList out;
  for (const auto& r : intersect(watched_, scope)) LM_TRY(scanner.scan(r, kNoPage, out));
  return out;
}

}  // namespace lm::dt
