// Verification digests: the destination hashes every page as it installs it;
// the source hashes its frozen memory; both combine page hashes into one
// digest per chunk of kDigestChunkPages pages, so the comparison costs
// O(pages), not a second pass over the destination's bytes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <vector>

#include "common/error.hpp"
#include "common/page.hpp"
#include "engine/source_process.hpp"
#include "transport/protocol.hpp"

namespace lm::engine {

inline constexpr uint64_t kDigestChunkPages = 1024;

uint64_t page_hash(const void* page);
uint64_t zero_page_hash();

// Page hashes for a set of ranges, indexed by page; starts as "all zero pages"
// (what a fresh destination holds). Thread-safe for distinct pages.
class PageHashes {
 public:
  explicit PageHashes(std::vector<PageRange> ranges);
  // Records the hash of page addr; false when addr lies outside every range.
  bool set(uint64_t addr, uint64_t hash);
  // Adds ranges (new mappings); existing ones keep their hashes.
  void add(PageRange range);
  // One digest per chunk (chunks never cross a range).
  std::vector<transport::DigestEntry> digests() const;

 private:
  struct Region {
    PageRange range;
    std::vector<uint64_t> hashes;
  };
  uint64_t* slot(uint64_t addr);
  std::vector<Region> regions_;  // sorted by start
};

// The same digests computed from a (frozen) process's memory, as it reads. Pages outside
// `data` (sorted page ranges: the pages holding process data) count as zero
// pages without being read — never-touched anonymous pages read as zero, and
// untouched pages of private file mappings are the file's, which migration
// does not carry.
Result<std::vector<transport::DigestEntry>> digest_process(const SourceProcess& process,
                                                           std::span<const PageRange> ranges,
                                                           std::span<const PageRange> data);

// Compares; the error names the first differing chunk.
Result<uint64_t> compare_digests(std::span<const transport::DigestEntry> source,
                                 std::span<const transport::DigestEntry> destination);

}  // namespace lm::engine
