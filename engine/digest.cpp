#include "engine/digest.hpp"

#include <xxhash.h>

#include <algorithm>
#include <memory>

#include "dirtytrack/ranges.hpp"

namespace lm::engine {

uint64_t page_hash(const void* page) { return XXH3_64bits(page, kPageSize); }

uint64_t zero_page_hash() {
  static const uint64_t h = [] {
    alignas(64) static const uint8_t zero[kPageSize] = {};
    return page_hash(zero);
  }();
  return h;
}

PageHashes::PageHashes(std::vector<PageRange> ranges) {
  std::sort(ranges.begin(), ranges.end(), [](auto& a, auto& b) { return a.start < b.start; });
  for (const auto& r : ranges) add(r);
}

void PageHashes::add(PageRange range) {
  for (const auto& r : regions_)
    if (r.range == range) return;
  Region region{range, std::vector<uint64_t>(range.pages(), zero_page_hash())};
  auto it = std::lower_bound(regions_.begin(), regions_.end(), range.start,
                             [](const Region& r, uint64_t a) { return r.range.start < a; });
  regions_.insert(it, std::move(region));
}

uint64_t* PageHashes::slot(uint64_t addr) {
  auto it = std::upper_bound(regions_.begin(), regions_.end(), addr,
                             [](uint64_t a, const Region& r) { return a < r.range.start; });
  if (it == regions_.begin()) return nullptr;
  --it;
  if (!it->range.contains(addr)) return nullptr;
  return &it->hashes[(addr - it->range.start) >> kPageShift];
}

bool PageHashes::set(uint64_t addr, uint64_t hash) {
  uint64_t* s = slot(addr);
  if (!s) return false;
  *s = hash;
  return true;
}

namespace {

// Appends chunk digests of one range from its page hashes.
void chunk_digests(PageRange range, std::span<const uint64_t> hashes, std::vector<transport::DigestEntry>& out) {
  for (uint64_t first = 0; first < hashes.size(); first += kDigestChunkPages) {
    uint64_t n = std::min<uint64_t>(kDigestChunkPages, hashes.size() - first);
    out.push_back({range.start + first * kPageSize, range.start + (first + n) * kPageSize,
                   XXH3_64bits(hashes.data() + first, n * sizeof(uint64_t))});
  }
}

}  // namespace

std::vector<transport::DigestEntry> PageHashes::digests() const {
  std::vector<transport::DigestEntry> out;
  for (const auto& r : regions_) chunk_digests(r.range, r.hashes, out);
  return out;
}

Result<std::vector<transport::DigestEntry>> digest_process(const SourceProcess& process,
                                                           std::span<const PageRange> ranges,
                                                           std::span<const PageRange> data) {
  constexpr uint64_t kBatchPages = 256;  // 1 MiB reads: process_vm_readv's sweet spot here
  const pid_t pid = process.pid();
  auto buffer = std::make_unique<std::byte[]>(kBatchPages * kPageSize);
  std::vector<transport::DigestEntry> out;
  for (const auto& range : ranges) {
    std::vector<uint64_t> hashes(range.pages(), zero_page_hash());
    dt::RangeList present = dt::intersect(dt::RangeList(data.begin(), data.end()), {range});
    for (const auto& part : present) {
      for (uint64_t at = part.start; at < part.end; at += kBatchPages * kPageSize) {
        PageRange piece{at, std::min(part.end, at + kBatchPages * kPageSize)};
        auto report = LM_TRY_CTX(process.read({&piece, 1}, {buffer.get(), piece.bytes()}), strf("digest pid %d", pid));
        if (!report.failed.empty())
          return Error::msg(strf("digest pid %d: page 0x%llx could not be read", pid,
                                 (unsigned long long)report.failed.front().start));
        for (uint64_t i = 0; i < piece.pages(); i++)
          hashes[((piece.start - range.start) >> kPageShift) + i] = page_hash(buffer.get() + i * kPageSize);
      }
    }
    chunk_digests(range, hashes, out);
  }
  return out;
}

Result<uint64_t> compare_digests(std::span<const transport::DigestEntry> source,
                                 std::span<const transport::DigestEntry> destination) {
  if (source.size() != destination.size())
    return Error::msg(strf("verification: source has %zu digest chunks, destination %zu", source.size(),
                           destination.size()));
  uint64_t pages = 0;
  for (size_t i = 0; i < source.size(); i++) {
    const auto& s = source[i];
    const auto& d = destination[i];
    if (s.start != d.start || s.end != d.end)
      return Error::msg(strf("verification: chunk %zu covers [0x%llx,0x%llx) at the source but [0x%llx,0x%llx) "
                             "at the destination",
                             i, (unsigned long long)s.start, (unsigned long long)s.end, (unsigned long long)d.start,
                             (unsigned long long)d.end));
    if (s.hash != d.hash)
      return Error::msg(strf("verification: pages [0x%llx,0x%llx) differ between source and destination",
                             (unsigned long long)s.start, (unsigned long long)s.end));
    pages += (s.end - s.start) >> kPageShift;
  }
  return pages;
}

}  // namespace lm::engine
