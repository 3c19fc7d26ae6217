// hash: reads every page in scope each round and compares its xxHash with
// the previous round's. Needs no kernel feature beyond process_vm_readv; it
// is the portable reference and the oracle of the tests. A write that leaves
// a page's bytes unchanged is (correctly, for migration) not dirty. Pages it
// compares with their bytes at the last collect, but the engine reads them
// after that collect: a page rewritten after a collect that reported it, read
// by the engine, and restored before the next is missed (the digest check
// fails the migration). The common case of that, a page reported as zero
// and discarded after a write, is caught: EmptyPageWatch (with PAGEMAP_SCAN).
#include <xxhash.h>

#include <algorithm>
#include <map>

#include "common/clock.hpp"
#include "dirtytrack/address_space.hpp"
#include "dirtytrack/empty_page_watch.hpp"
#include "dirtytrack/page_reader.hpp"
#include "dirtytrack/tracker.hpp"

namespace lm::dt {

namespace {

constexpr size_t kBatchPages = 1024;  // 4 MiB per process_vm_readv batch
// Reading more than this every round is not a tracker any more (sanitizer
// shadow, JVM reservations: terabytes of address space).
constexpr uint64_t kMaxScopeBytes = 64ull << 30;

class HashTracker final : public Tracker {
 public:
  std::string_view name() const override { return "hash"; }

  Result<StartInfo> start(const TrackRequest& request) override {
    Stopwatch sw;
    LM_TRY(space_.init(request.pid, request.scope));
    uint64_t scope_bytes = total_pages(space_.ranges()) * kPageSize;
    if (scope_bytes > kMaxScopeBytes)
      return Error::msg(strf("pid %d: hash tracker: the scope spans %.1f GiB; hashing it every round is not "
                             "practical (limit %llu GiB): track given ranges or use uffd-wp",
                             request.pid, double(scope_bytes) / double(1ull << 30),
                             (unsigned long long)(kMaxScopeBytes >> 30)));
    reader_.emplace(request.pid);
    // Without PAGEMAP_SCAN (Linux < 6.7) a zap of a page reported as zero
    // stays unseen (see EmptyPageWatch).
    if (auto scanner = PagemapScanner::open(request.pid); scanner && !space_.ranges().empty()) {
      const PageRange one{space_.ranges()[0].start, space_.ranges()[0].start + kPageSize};
      RangeList present;
      if (scanner->scan(one, ScanQuery{0, 0, PAGE_IS_PRESENT, 0, PAGE_IS_PRESENT}, present))
        scanner_.emplace(std::move(*scanner));
    }
    buffer_.resize(kBatchPages * kPageSize);
    zero_hash_ = XXH3_64bits(std::vector<char>(kPageSize, 0).data(), kPageSize);
    StartInfo info;
    LM_TRY(rehash(nullptr, &info.populated));
    info.mappings = space_.mappings();
    info.setup_ns = sw.elapsed_ns();
    started_ = true;
    return info;
  }

  Result<CollectResult> collect() override {
    if (!started_) return Error::msg("hash tracker: collect before start");
    Stopwatch sw;
    CollectResult out;
    out.changes = LM_TRY(space_.refresh());
    // Reported zero at the last collect, mapped by its read, no page now:
    // discarded since (rehash maps it again).
    RangeList zapped;
    if (scanner_) zapped = LM_TRY(empty_.zapped(*scanner_, space_.ranges()));
    changed_anyway_ = unite(appeared_ranges(out.changes), zapped);
    RangeList reported_zero;
    LM_TRY(rehash(&out.dirty, nullptr, &reported_zero));
    empty_.watch(std::move(reported_zero));
    out.dirty_pages = total_pages(out.dirty);
    out.mappings = space_.mappings();
    out.scan_ns = sw.elapsed_ns();
    return out;
  }

  Result<void> stop(ProcessFreezer*) override {
    hashes_.clear();
    started_ = false;
    return ok();
  }

 private:
  // Hashes of one contiguous range, one per page.
  struct Region {
    uint64_t end;
    std::vector<uint64_t> hash;
  };

  // Previous hash of the page at addr, if it was tracked last round.
  const uint64_t* previous(uint64_t addr) const {
    auto it = hashes_.upper_bound(addr);
    if (it == hashes_.begin()) return nullptr;
    --it;
    if (addr >= it->second.end) return nullptr;
    return &it->second.hash[(addr - it->first) >> kPageShift];
  }

  // Reads and hashes every page in scope. dirty: pages whose hash changed,
  // and every page new to the scope (as uffd-wp counts new mappings whole). populated: non-zero pages.
  // reported_zero: the pages of dirty that are zero now.
  Result<void> rehash(RangeList* dirty, RangeList* populated, RangeList* reported_zero = nullptr) {
    std::map<uint64_t, Region> next;
    for (const auto& r : space_.ranges()) {
      Region& region = next[r.start];
      region.end = r.end;
      region.hash.resize(r.pages());
      for (uint64_t at = r.start; at < r.end; at += kBatchPages * kPageSize) {
        PageRange chunk{at, std::min(r.end, at + kBatchPages * kPageSize)};
        ReadReport rep = LM_TRY(reader_->read(std::span<const PageRange>(&chunk, 1), std::span<std::byte>(buffer_.data(), chunk.bytes())));
        for (uint64_t page = chunk.start; page < chunk.end; page += kPageSize) {
          uint64_t h;
          if (!rep.failed.empty() && contains(rep.failed, page)) {
            h = zero_hash_;  // the mapping vanished under the read: nothing to send
          } else {
            h = XXH3_64bits(buffer_.data() + (page - chunk.start), kPageSize);
          }
          region.hash[(page - r.start) >> kPageShift] = h;
          const uint64_t* old = previous(page);
          // A mapping that appeared where another was may hold equal bytes
          // (zero pages of both): it is new content all the same.
          bool changed = !old || *old != h || contains(changed_anyway_, page);
          if (dirty && changed) append_merge(*dirty, {page, page + kPageSize});
          if (reported_zero && changed && h == zero_hash_) append_merge(*reported_zero, {page, page + kPageSize});
          if (populated && h != zero_hash_) append_merge(*populated, {page, page + kPageSize});
        }
      }
    }
    hashes_ = std::move(next);
    return ok();
  }

  ScopedAddressSpace space_;
  std::optional<PageReader> reader_;
  std::vector<std::byte> buffer_;
  std::map<uint64_t, Region> hashes_;  // by range start
  // Dirty this round whatever their bytes: mappings that appeared, pages
  // reported zero last round and discarded since.
  RangeList changed_anyway_;
  std::optional<PagemapScanner> scanner_;  // when the kernel has PAGEMAP_SCAN
  EmptyPageWatch empty_;
  uint64_t zero_hash_ = 0;
  bool started_ = false;
};

}  // namespace

std::unique_ptr<Tracker> make_hash_tracker() { return std::make_unique<HashTracker>(); }

}  // namespace lm::dt
