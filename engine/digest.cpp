#include "engine/digest.hpp"

#include <sys/mman.h>
#include <xxhash.h>

#include <algorithm>
#include <memory>
#include <new>
#include <type_traits>

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

namespace {

// The digest of `n` page hashes.
uint64_t chunk_digest(const uint64_t* hashes, uint64_t n) { return XXH3_64bits(hashes, n * sizeof(uint64_t)); }

// The digest of a chunk of `n` zero pages.
uint64_t zero_chunk_digest(uint64_t n) {
  static const std::vector<uint64_t> zeros(kDigestChunkPages, zero_page_hash());
  static const uint64_t full = chunk_digest(zeros.data(), kDigestChunkPages);
  return n == kDigestChunkPages ? full : chunk_digest(zeros.data(), n);
}

}  // namespace

void canonical_digests(PageRange range, const std::function<const uint64_t*(uint64_t chunk)>& chunk_hashes,
                       std::vector<transport::DigestEntry>& out) {
  const uint64_t pages = range.pages();
  bool merging = false;  // the last entry is a run of zero chunks
  for (uint64_t first = 0, chunk = 0; first < pages; first += kDigestChunkPages, chunk++) {
    const uint64_t n = std::min<uint64_t>(kDigestChunkPages, pages - first);
    const uint64_t* hashes = chunk_hashes(chunk);
    const uint64_t zero = zero_chunk_digest(n);
    const uint64_t digest = hashes ? chunk_digest(hashes, n) : zero;
    const uint64_t start = range.start + first * kPageSize, end = start + n * kPageSize;
    if (digest == zero && merging) {
      out.back().end = end;
      continue;
    }
    merging = digest == zero;
    out.push_back({start, end, merging ? zero_chunk_digest(kDigestChunkPages) : digest});
  }
}

PageHashes::PageHashes(std::vector<PageRange> ranges) {
  std::sort(ranges.begin(), ranges.end(), [](auto& a, auto& b) { return a.start < b.start; });
  for (const auto& r : ranges) add(r);
}

PageHashes::Region::~Region() {
  if (!chunks) return;
  for (uint64_t i = 0; i < chunk_count; i++) delete chunks[i].load();
  munmap(chunks, chunk_count * sizeof(std::atomic<Chunk*>));
}

PageHashes::~PageHashes() = default;

void PageHashes::add(PageRange range, bool count_received) {
  for (const auto& r : regions_)
    if (r->range == range) return;
  auto region = std::make_unique<Region>();
  region->range = range;
  region->count_received = count_received;
  region->chunk_count = (range.pages() + kDigestChunkPages - 1) / kDigestChunkPages;
  static_assert(std::is_trivially_destructible_v<std::atomic<Chunk*>>);  // zero bytes are a null pointer
  void* p = mmap(nullptr, region->chunk_count * sizeof(std::atomic<Chunk*>), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  region->chunks = static_cast<std::atomic<Chunk*>*>(p);
  auto it = std::lower_bound(regions_.begin(), regions_.end(), range.start,
                             [](const auto& r, uint64_t a) { return r->range.start < a; });
  regions_.insert(it, std::move(region));
}

bool PageHashes::remove(PageRange range) {
  auto it = std::find_if(regions_.begin(), regions_.end(), [&](const auto& r) { return r->range == range; });
  if (it == regions_.end()) return false;
  const std::unique_ptr<Region> gone = std::move(*it);
  regions_.erase(it);
  for (uint64_t i = 0; i < gone->chunk_count; i++) {
    const Chunk* c = gone->chunks[i].load(std::memory_order_acquire);
    if (!c) continue;
    if (gone->count_received) received_chunks_.fetch_sub(1, std::memory_order_relaxed);
    for (uint64_t p = 0; p < kDigestChunkPages; p++) {
      if (!(c->received[p / 64].load(std::memory_order_relaxed) & (1ull << (p % 64)))) continue;
      if (gone->count_received) received_.fetch_sub(1, std::memory_order_relaxed);
      record(range.start + (i * kDigestChunkPages + p) * kPageSize, &c->hashes[p]);  // into a range that has it now
    }
  }
  return true;
}

std::pair<PageHashes::Chunk*, uint64_t> PageHashes::chunk_of(uint64_t addr, bool* counted) {
  auto it = std::upper_bound(regions_.begin(), regions_.end(), addr,
                             [](uint64_t a, const auto& r) { return a < r->range.start; });
  if (it == regions_.begin()) return {nullptr, 0};
  Region& r = **--it;
  if (!r.range.contains(addr)) return {nullptr, 0};
  const uint64_t page = (addr - r.range.start) >> kPageShift;
  std::atomic<Chunk*>& slot = r.chunks[page / kDigestChunkPages];
  Chunk* c = slot.load(std::memory_order_acquire);
  if (!c) {  // first page of this chunk: another receiver may be making it too
    auto made = std::make_unique<Chunk>();
    std::fill(std::begin(made->hashes), std::end(made->hashes), zero_page_hash());
    if (slot.compare_exchange_strong(c, made.get(), std::memory_order_acq_rel)) {
      c = made.release();
      if (r.count_received) received_chunks_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  *counted = r.count_received;
  return {c, page % kDigestChunkPages};
}

bool PageHashes::record(uint64_t addr, const uint64_t* hash) {
  bool counted = false;
  auto [c, i] = chunk_of(addr, &counted);
  if (!c) return false;
  if (hash) c->hashes[i] = *hash;
  const uint64_t bit = 1ull << (i % 64);
  if (!(c->received[i / 64].fetch_or(bit, std::memory_order_relaxed) & bit) && counted)
    received_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool PageHashes::set(uint64_t addr, uint64_t hash) { return record(addr, &hash); }

void PageHashes::mark(uint64_t addr) { (void)record(addr, nullptr); }

std::vector<transport::DigestEntry> PageHashes::digests() const {
  std::vector<transport::DigestEntry> out;
  for (const auto& r : regions_)
    canonical_digests(r->range, [&r](uint64_t chunk) -> const uint64_t* {
      const Chunk* c = r->chunks[chunk].load(std::memory_order_acquire);
      return c ? c->hashes : nullptr;
    }, out);
  return out;
}

Result<std::vector<transport::DigestEntry>> digest_process(const SourceProcess& process,
                                                           std::span<const PageRange> ranges,
                                                           std::span<const PageRange> data) {
  constexpr uint64_t kBatchPages = 256;  // 1 MiB reads: process_vm_readv's sweet spot here
  const pid_t pid = process.pid();
  auto buffer = std::make_unique<std::byte[]>(kBatchPages * kPageSize);
  std::vector<transport::DigestEntry> out;
  std::vector<uint64_t> hashes(kDigestChunkPages);
  Error failed;
  bool ok_so_far = true;
  for (const auto& range : ranges) {
    const dt::RangeList present = dt::intersect(dt::RangeList(data.begin(), data.end()), {range});
    size_t next = 0;  // the first piece of `present` not before the chunk (chunks come in order)
    // One chunk at a time: a range of terabytes with little data in it costs its data.
    canonical_digests(range, [&](uint64_t chunk) -> const uint64_t* {
      if (!ok_so_far) return nullptr;
      const uint64_t start = range.start + chunk * kDigestChunkPages * kPageSize;
      const PageRange span{start, std::min(range.end, start + kDigestChunkPages * kPageSize)};
      while (next < present.size() && present[next].end <= span.start) next++;
      dt::RangeList parts;
      for (size_t j = next; j < present.size() && present[j].start < span.end; j++)
        parts.push_back({std::max(present[j].start, span.start), std::min(present[j].end, span.end)});
      if (parts.empty()) return nullptr;
      std::fill(hashes.begin(), hashes.end(), zero_page_hash());
      for (const auto& part : parts)
        for (uint64_t at = part.start; at < part.end; at += kBatchPages * kPageSize) {
          PageRange piece{at, std::min(part.end, at + kBatchPages * kPageSize)};
          auto report = process.read({&piece, 1}, {buffer.get(), piece.bytes()});
          if (!report) {
            failed = std::move(report).error().context(strf("digest pid %d", pid));
            ok_so_far = false;
            return nullptr;
          }
          if (!report->failed.empty()) {
            failed = Error::msg(strf("digest pid %d: page 0x%llx could not be read", pid,
                                     (unsigned long long)report->failed.front().start));
            ok_so_far = false;
            return nullptr;
          }
          for (uint64_t i = 0; i < piece.pages(); i++)
            hashes[((piece.start - span.start) >> kPageShift) + i] = page_hash(buffer.get() + i * kPageSize);
        }
      return hashes.data();
    }, out);
    if (!ok_so_far) return failed;
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
