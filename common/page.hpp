// Page-granular vocabulary shared by every seam.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lm {

// livemig moves 4 KiB base pages; huge pages are split on the wire.
inline constexpr size_t kPageSize = 4096;
inline constexpr unsigned kPageShift = 12;

inline constexpr uint64_t page_floor(uint64_t addr) { return addr & ~uint64_t(kPageSize - 1); }
inline constexpr uint64_t page_ceil(uint64_t addr) { return page_floor(addr + kPageSize - 1); }

// Half-open virtual address range [start, end), page aligned.
struct PageRange {
  uint64_t start = 0;
  uint64_t end = 0;

  constexpr uint64_t bytes() const { return end - start; }
  constexpr uint64_t pages() const { return (end - start) >> kPageShift; }
  constexpr bool contains(uint64_t addr) const { return addr >= start && addr < end; }
  constexpr bool empty() const { return end <= start; }
  friend constexpr bool operator==(const PageRange&, const PageRange&) = default;
};

}  // namespace lm
