// Verification digests: the destination hashes every page as it installs it;
// the source hashes its frozen memory; both combine page hashes into one
// digest per chunk of kDigestChunkPages pages, so the comparison costs
// O(pages), not a second pass over the destination's bytes.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
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
// (what a fresh destination holds). Sparse: memory is taken per chunk of
// kDigestChunkPages that receives a page (8 KiB per 4 MiB chunk), so a
// process that reserves terabytes of address space and touches little of it
// (an ASan build's shadow) costs what it touched. Thread-safe for distinct
// pages.
class PageHashes {
 public:
  explicit PageHashes(std::vector<PageRange> ranges);
  ~PageHashes();
  PageHashes(const PageHashes&) = delete;
  PageHashes& operator=(const PageHashes&) = delete;

  // Records the hash of page addr; false when addr lies outside every range.
  bool set(uint64_t addr, uint64_t hash);
  // Adds ranges (new mappings); existing ones keep their hashes.
  // `count_received`: pages of this range count in received_pages().
  void add(PageRange range, bool count_received = false);
  // Drops the range added as exactly `range` (a mapping that went away or
  // changed extent); the hashes of its received pages move to the ranges
  // added since that hold them (a grown or replacing mapping), else go.
  // False when there is none. Not while pages are being recorded.
  bool remove(PageRange range);
  // Marks page addr as received without a hash (the source does not verify).
  void mark(uint64_t addr);
  // What the pages received so far in the ranges added with count_received
  // hold: 4 KiB each, and per chunk they touch its hashes and two page-table
  // pages (a chunk spans two 2 MiB page tables): pages written far apart cost
  // more than their bytes.
  uint64_t received_bytes() const {
    return received_.load(std::memory_order_relaxed) * kPageSize +
           received_chunks_.load(std::memory_order_relaxed) * (sizeof(Chunk) + 2 * kPageSize);
  }
  // One digest per chunk (chunks never cross a range); runs of chunks that
  // hold only zero pages are one entry (canonical_digests).
  std::vector<transport::DigestEntry> digests() const;

 private:
  struct Chunk {
    std::atomic<uint64_t> received[kDigestChunkPages / 64] = {};
    uint64_t hashes[kDigestChunkPages];
  };
  struct Region {
    PageRange range;
    bool count_received = false;
    // Null until a page of the chunk arrives. An anonymous mapping of its own:
    // fresh zero pages that take memory only where a chunk is made (a
    // 2^45-byte range has 8 Mi chunks), whatever malloc's tuning.
    std::atomic<Chunk*>* chunks = nullptr;
    uint64_t chunk_count = 0;
    ~Region();
  };
  // The page's chunk (made on first use) and index in it; null outside every range.
  std::pair<Chunk*, uint64_t> chunk_of(uint64_t addr, bool* counted);
  // False when addr lies outside every range.
  bool record(uint64_t addr, const uint64_t* hash);
  std::vector<std::unique_ptr<Region>> regions_;  // sorted by start
  std::atomic<uint64_t> received_{0};
  std::atomic<uint64_t> received_chunks_{0};
};

// The digest entries of one range from its chunks' page hashes (`chunk_hashes`
// gives chunk i's hashes, or null for a chunk of zero pages only): one entry per
// chunk, consecutive all-zero chunks merged into one entry with the zero
// chunk's digest, so both sides describe a sparse range the same short way.
void canonical_digests(PageRange range, const std::function<const uint64_t*(uint64_t chunk)>& chunk_hashes,
                       std::vector<transport::DigestEntry>& out);

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
