// Trackers against a scripted target (its numbers are hex): every page the target writes is in
// the next collect, for whole-page and single-word writes, new mappings,
// munmap, mremap (moving and growing), brk and MADV_DONTNEED; within the
// target's own test mappings nothing else is reported. After stop() the
// target runs on untraced and holds no userfaultfd.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>

#include "dirtytrack/pagemap_scan.hpp"
#include "dirtytrack/remote_syscall.hpp"
#include "dirtytrack/tracker.hpp"
#include "target_process.hpp"

namespace {

using namespace lm::dt;
using lm::PageRange;
using lm::test::TargetProcess;
using lm::test::untraced;
constexpr uint64_t P = 4096;

const DirtyTrackCaps& caps() {
  static const DirtyTrackCaps c = probe_dirtytrack();
  return c;
}

RangeList pages(uint64_t base, std::initializer_list<uint64_t> idx) {
  RangeList r;
  for (uint64_t i : idx) r.push_back({base + i * P, base + (i + 1) * P});
  coalesce(r);
  return r;
}


class TrackerTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    auto t = make_tracker(GetParam(), caps());
    if (!t.ok()) GTEST_SKIP() << t.error().message;
    tracker_ = std::move(*t);
    ASSERT_TRUE(target_.ok()) << target_.error();
    region_ = target_.map(256);
    ASSERT_NE(region_, 0u);
    ASSERT_TRUE(target_.fill(region_, 256, 1));
  }

  void start() {
    TrackRequest req;
    req.pid = target_.pid();
    auto s = tracker_->start(req);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_TRUE(lm::dt::contains(s->populated, region_));
    EXPECT_TRUE(lm::dt::contains(s->populated, region_ + 255 * P));
  }

  CollectResult collect() {
    auto r = tracker_->collect();
    EXPECT_TRUE(r.ok()) << r.error().message;
    if (!r.ok()) return {};
    // Sorted, coalesced, non-empty ranges.
    for (size_t i = 0; i < r->dirty.size(); i++) {
      EXPECT_LT(r->dirty[i].start, r->dirty[i].end);
      if (i) EXPECT_LT(r->dirty[i - 1].end, r->dirty[i].start);
    }
    EXPECT_EQ(r->dirty_pages, total_pages(r->dirty));
    return std::move(*r);
  }

  // The dirty pages inside [base, base + n pages).
  static RangeList within(const CollectResult& r, uint64_t base, uint64_t n) {
    return intersect(r.dirty, {{base, base + n * P}});
  }

  void stop_and_check_clean() {
    ASSERT_TRUE(tracker_->stop().ok());
    auto uffd = has_userfaultfd(target_.pid());
    ASSERT_TRUE(uffd.ok());
    EXPECT_FALSE(*uffd) << "a userfaultfd was left in the target";
    EXPECT_TRUE(untraced(target_.pid()));
    // The target still writes its memory and reads back what it wrote.
    std::string sum = lm::strf("sum %llx 64", (unsigned long long)region_);
    ASSERT_TRUE(target_.fill(region_, 100, 1));
    std::string before = target_.send(sum);
    ASSERT_TRUE(target_.fill(region_, 100, 9));
    EXPECT_NE(target_.send(sum), before);
    ASSERT_TRUE(target_.fill(region_, 100, 1));
    EXPECT_EQ(target_.send(sum), before);
    EXPECT_EQ(target_.quit(), 0);
  }

  // Page `index` of [base, base + n pages), which the last collect reported
  // while it held no data: written, discarded, then found by the next
  // collect alone, and not by the one after.
  void write_discard_and_expect_reported_once(uint64_t base, uint64_t n, uint64_t index) {
    ASSERT_TRUE(target_.fill(base + index * P, 1, 7));
    ASSERT_EQ(target_.send(lm::strf("dontneed %llx 1", (unsigned long long)(base + index * P))), "ok");
    auto r = collect();
    EXPECT_EQ(within(r, base, n), pages(base, {index})) << "written and discarded between two collects";
    auto quiet = collect();
    EXPECT_TRUE(within(quiet, base, n).empty()) << "reported again with nothing written";
  }

  TargetProcess target_;
  std::unique_ptr<Tracker> tracker_;
  uint64_t region_ = 0;
};

TEST_P(TrackerTest, WholePageWritesAreFoundExactly) {
  start();
  collect();  // settle the target's own start-up writes
  ASSERT_TRUE(target_.fill(region_ + 3 * P, 1, 2));
  ASSERT_TRUE(target_.fill(region_ + 17 * P, 4, 2));
  ASSERT_TRUE(target_.fill(region_ + 200 * P, 1, 2));
  auto r = collect();
  EXPECT_EQ(within(r, region_, 256), pages(region_, {3, 17, 18, 19, 20, 200}));
  auto quiet = collect();
  EXPECT_TRUE(within(quiet, region_, 256).empty());
  stop_and_check_clean();
}

TEST_P(TrackerTest, SingleWordWritesAreFound) {
  start();
  collect();
  for (uint64_t i : {0, 7, 128, 255}) ASSERT_TRUE(target_.word(region_ + i * P + 8 * i, 0xabcdef00 + i));
  auto r = collect();
  EXPECT_EQ(within(r, region_, 256), pages(region_, {0, 7, 128, 255}));
  stop_and_check_clean();
}

TEST_P(TrackerTest, NewMappingIsCountedThenTracked) {
  start();
  collect();
  uint64_t fresh = target_.map(16);
  ASSERT_NE(fresh, 0u);
  ASSERT_TRUE(target_.fill(fresh + 2 * P, 3, 5));
  auto r = collect();
  EXPECT_EQ(within(r, fresh, 16), (RangeList{{fresh, fresh + 16 * P}})) << "a new mapping counts dirty whole";
  bool added = false;
  for (const auto& c : r.changes) added |= c.kind == MappingChange::Kind::added && c.after.start <= fresh &&
                                           c.after.end >= fresh + 16 * P;
  EXPECT_TRUE(added) << "no 'added' change for the new mapping";
  ASSERT_TRUE(target_.word(fresh + 9 * P, 77));
  auto r2 = collect();
  EXPECT_EQ(within(r2, fresh, 16), pages(fresh, {9}));
  stop_and_check_clean();
}

TEST_P(TrackerTest, UnmappedPagesLeaveTheSet) {
  start();
  collect();
  ASSERT_EQ(target_.send(lm::strf("unmap %llx 28", (unsigned long long)(region_ + 216 * P))), "ok");
  ASSERT_TRUE(target_.fill(region_ + 10 * P, 1, 3));
  auto r = collect();
  EXPECT_EQ(within(r, region_, 256), pages(region_, {10}));
  for (const auto& m : r.mappings) EXPECT_FALSE(m.start < region_ + 256 * P && m.end > region_ + 216 * P);
  stop_and_check_clean();
}

// A mapping of its own: guard gaps keep the kernel from merging it with a
// neighbour, so maps shows it as one line.
uint64_t isolated_mapping(TargetProcess& t, uint64_t pages) {
  uint64_t base = t.map(pages + 2);
  if (!base) return 0;
  t.send(lm::strf("unmap %llx 1", (unsigned long long)base));
  t.send(lm::strf("unmap %llx 1", (unsigned long long)(base + (pages + 1) * P)));
  return base + P;
}

TEST_P(TrackerTest, MovedMappingIsDirtyAtItsNewPlaceThenTracked) {
  uint64_t small = isolated_mapping(target_, 8);
  ASSERT_NE(small, 0u);
  ASSERT_TRUE(target_.fill(small, 8, 4));
  start();
  collect();
  uint64_t moved = target_.first(target_.send(lm::strf("move %llx 8", (unsigned long long)small)));
  ASSERT_NE(moved, 0u);
  auto r = collect();
  EXPECT_EQ(within(r, moved, 8), (RangeList{{moved, moved + 8 * P}}));
  bool seen = false;
  for (const auto& c : r.changes)
    seen |= c.after.end != 0 && c.after.start <= moved && c.after.end >= moved + 8 * P &&
            (c.kind == MappingChange::Kind::remapped || c.kind == MappingChange::Kind::added ||
             c.kind == MappingChange::Kind::grown);
  EXPECT_TRUE(seen) << "no change reported at the new place";
  ASSERT_TRUE(target_.word(moved + 5 * P, 1234));
  auto r2 = collect();
  EXPECT_EQ(within(r2, moved, 8), pages(moved, {5}));
  stop_and_check_clean();
}

TEST_P(TrackerTest, NewMappingWhereAMovedOneWasIsDirtyWhole) {
  uint64_t small = isolated_mapping(target_, 5);
  ASSERT_NE(small, 0u);
  ASSERT_TRUE(target_.fill(small, 5, 4));
  start();
  collect();
  uint64_t moved = target_.first(target_.send(lm::strf("move %llx 5", (unsigned long long)small)));
  ASSERT_NE(moved, 0u);
  collect();
  uint64_t again = target_.first(target_.send(lm::strf("mapat %llx 4", (unsigned long long)(small + P))));
  ASSERT_EQ(again, small + P);
  ASSERT_TRUE(target_.fill(again, 1, 6));
  auto r = collect();
  EXPECT_EQ(within(r, again, 4), (RangeList{{again, again + 4 * P}}));
  stop_and_check_clean();
}

TEST_P(TrackerTest, RepeatedMovesBesideTrackedMappingsStayTracked) {
  std::vector<uint64_t> regions;
  for (int i = 0; i < 6; i++) {
    regions.push_back(target_.map(3 + uint64_t(i)));
    ASSERT_NE(regions.back(), 0u);
    ASSERT_TRUE(target_.fill(regions.back(), 3 + uint64_t(i), 7));
  }
  start();
  collect();
  for (int round = 0; round < 24; round++) {
    size_t k = size_t(round * 5) % regions.size();
    uint64_t pages = 3 + k;
    uint64_t moved = target_.first(target_.send(lm::strf("move %llx %llx", (unsigned long long)regions[k],
                                                           (unsigned long long)pages)));
    ASSERT_NE(moved, 0u);
    regions[k] = moved;
    auto r = collect();
    EXPECT_EQ(within(r, moved, pages), (RangeList{{moved, moved + pages * P}})) << "round " << round;
    size_t other = (k + 1) % regions.size();
    uint64_t page = regions[other] + (uint64_t(round) % (3 + other)) * P;
    ASSERT_TRUE(target_.word(page, 0x1000 + uint64_t(round)));
    auto r2 = collect();
    EXPECT_TRUE(lm::dt::contains(r2.dirty, page)) << "round " << round;
  }
  stop_and_check_clean();
}

TEST_P(TrackerTest, MappingWithAMovedNeighbourRightBehindStaysTracked) {
  // A tracked VMA gets an untouched tracked VMA moved right behind it. Were
  // the kernel to merge the two (same userfaultfd context; Linux 6.18 does
  // not here), mremap without UFFD_FEATURE_EVENT_REMAP would drop the merged
  // VMA's context but not its PTEs' uffd-wp bits, and a write while
  // unregistered would leave a writable PTE with the bit set, which a later
  // scan takes for protected: the tracker clears stale bits when it
  // registers a range again.
  uint64_t lone = target_.map(1);  // first: it would take the hole behind `left`
  ASSERT_NE(lone, 0u);
  uint64_t left = isolated_mapping(target_, 8);
  ASSERT_NE(left, 0u);
  ASSERT_TRUE(target_.fill(left, 8, 4));
  start();
  collect();
  std::string moved = target_.send(lm::strf("moveto %llx 1 %llx", (unsigned long long)lone,
                                            (unsigned long long)(left + 8 * P)));
  ASSERT_EQ(target_.first(moved), left + 8 * P) << moved;
  ASSERT_TRUE(target_.word(left + 2 * P, 0xabc));
  auto r = collect();
  EXPECT_TRUE(lm::dt::contains(r.dirty, left + 2 * P));
  EXPECT_EQ(within(r, left + 8 * P, 1), pages(left + 8 * P, {0}));
  for (uint64_t round = 0; round < 3; round++) {
    ASSERT_TRUE(target_.word(left + 2 * P, 0xabd + round));
    auto again = collect();
    EXPECT_EQ(within(again, left, 9), pages(left, {2})) << "round " << round;
  }
  stop_and_check_clean();
}

TEST_P(TrackerTest, DiscardInAMovedMappingIsFound) {
  uint64_t small = isolated_mapping(target_, 13);
  ASSERT_NE(small, 0u);
  ASSERT_TRUE(target_.fill(small, 13, 4));
  start();
  collect();
  uint64_t moved = target_.first(target_.send(lm::strf("move %llx d", (unsigned long long)small)));
  ASSERT_NE(moved, 0u);
  collect();
  auto quiet = collect();
  EXPECT_TRUE(within(quiet, moved, 13).empty());
  ASSERT_EQ(target_.send(lm::strf("dontneed %llx 1", (unsigned long long)moved)), "ok");
  auto r = collect();
  EXPECT_EQ(within(r, moved, 13), pages(moved, {0}));
  ASSERT_TRUE(target_.word(moved + 4 * P, 9));
  auto r2 = collect();
  EXPECT_EQ(within(r2, moved, 13), pages(moved, {4}));
  stop_and_check_clean();
}

TEST_P(TrackerTest, RepeatedDiscardsAndRewritesAreEachFound) {
  uint64_t small = isolated_mapping(target_, 9);
  ASSERT_NE(small, 0u);
  ASSERT_TRUE(target_.fill(small, 9, 4));
  start();
  collect();
  std::vector<bool> present(9, true);
  uint64_t rng = 12345;
  auto next = [&] { return rng = rng * 6364136223846793005ull + 1442695040888963407ull, rng >> 33; };
  for (int round = 0; round < 60; round++) {
    uint64_t first = next() % 9, count = 1 + next() % (9 - first);
    ASSERT_EQ(target_.send(lm::strf("dontneed %llx %llx", (unsigned long long)(small + first * P),
                                    (unsigned long long)count)), "ok");
    // Must: the pages that held data and were discarded, and the written
    // one. May: the rest of the discarded range (an anonymous zap also drops
    // the WP marker of an already empty page, which then reads as written).
    RangeList must, may = {{small + first * P, small + (first + count) * P}};
    for (uint64_t i = first; i < first + count; i++)
      if (present[i]) append_merge(must, {small + i * P, small + (i + 1) * P});
    for (uint64_t i = first; i < first + count; i++) present[i] = false;
    uint64_t w = next() % 9;
    ASSERT_TRUE(target_.word(small + w * P, 0x100 + uint64_t(round)));
    present[w] = true;
    must = unite(must, {{small + w * P, small + (w + 1) * P}});
    may = unite(may, must);
    auto r = collect();
    RangeList got = within(r, small, 9);
    EXPECT_TRUE(subtract(must, got).empty()) << "round " << round << ": missed a discarded or written page";
    EXPECT_TRUE(subtract(got, may).empty()) << "round " << round << ": reported a page nobody touched";
  }
  stop_and_check_clean();
}

TEST_P(TrackerTest, NewMappingBesideATrackedOneLeavesItsWritesAlone) {
  uint64_t r = isolated_mapping(target_, 8);
  ASSERT_NE(r, 0u);
  ASSERT_TRUE(target_.fill(r, 8, 4));
  start();
  collect();
  for (int round = 0; round < 4; round++) {
    // Written, not yet collected, right next to where a new mapping appears.
    ASSERT_TRUE(target_.word(r + 7 * P, 0x10 + uint64_t(round)));
    ASSERT_TRUE(target_.word(r + 0 * P, 0x20 + uint64_t(round)));
    ASSERT_EQ(target_.send(lm::strf("dontneed %llx 1", (unsigned long long)(r + 6 * P))), "ok");
    uint64_t side = round % 2 ? r - P : r + 8 * P;
    ASSERT_EQ(target_.first(target_.send(lm::strf("mapat %llx 1", (unsigned long long)side))), side);
    auto c = collect();
    // hash may count all of R when the kernel merges the new page into R's
    // VMA (maps then shows a mapping that appeared); never fewer.
    if (std::string(GetParam()) == "uffd-wp") EXPECT_EQ(within(c, r, 8), pages(r, {0, 6, 7})) << "round " << round;
    EXPECT_TRUE(subtract(pages(r, {0, 6, 7}), c.dirty).empty()) << "round " << round;
    EXPECT_TRUE(lm::dt::contains(c.dirty, side)) << "round " << round;
    ASSERT_EQ(target_.send(lm::strf("unmap %llx 1", (unsigned long long)side)), "ok");
    ASSERT_TRUE(target_.word(r + 6 * P, 0x30 + uint64_t(round)));
    collect();
  }
  stop_and_check_clean();
}

TEST_P(TrackerTest, GrownMappingAndHeapAreTracked) {
  uint64_t small = target_.map(8);
  // Keep the next 8 pages free so the mapping can grow in place.
  ASSERT_EQ(target_.send(lm::strf("unmap %llx 8", (unsigned long long)(small - 8 * P))), "ok");
  ASSERT_TRUE(target_.fill(small, 8, 4));
  start();
  collect();
  std::string grow = target_.send(lm::strf("grow %llx 8 a", (unsigned long long)small));
  auto heap = target_.values(target_.send("sbrk 4"));
  ASSERT_EQ(heap.size(), 2u);
  auto r = collect();
  EXPECT_TRUE(lm::dt::contains(r.dirty, heap[0])) << "brk growth written but not dirty";
  if (grow == "ok " + lm::strf("%llx", (unsigned long long)small)) {
    ASSERT_TRUE(target_.word(small + 9 * P, 5));
    auto r2 = collect();
    EXPECT_EQ(within(r2, small, 10), pages(small, {9}));
  }
  ASSERT_TRUE(target_.word(heap[0], 99));
  auto r3 = collect();
  EXPECT_TRUE(lm::dt::contains(r3.dirty, heap[0]));
  stop_and_check_clean();
}

TEST_P(TrackerTest, DiscardedPagesAreDirtyOnceThenWritesAgain) {
  start();
  collect();
  ASSERT_EQ(target_.send(lm::strf("dontneed %llx 5", (unsigned long long)(region_ + 50 * P))), "ok");
  auto r = collect();
  EXPECT_EQ(within(r, region_, 256), pages(region_, {50, 51, 52, 53, 54}));
  auto quiet = collect();
  EXPECT_TRUE(within(quiet, region_, 256).empty());
  ASSERT_TRUE(target_.word(region_ + 52 * P, 42));
  auto again = collect();
  EXPECT_EQ(within(again, region_, 256), pages(region_, {52}));
  stop_and_check_clean();
}

TEST_P(TrackerTest, PagesUntouchedAtStartAreFoundWhenFirstWritten) {
  // 4 MiB never touched before start: no pages, no page tables.
  uint64_t fresh = isolated_mapping(target_, 1024);
  ASSERT_NE(fresh, 0u);
  start();
  collect();
  for (int round = 0; round < 3; round++) {
    std::vector<uint64_t> idx;
    for (uint64_t i = uint64_t(round) * 7; i < 1024; i += 37) idx.push_back(i);
    RangeList expected;
    for (uint64_t i : idx) {
      ASSERT_TRUE(target_.word(fresh + i * P + 16, 0x5500 + i + uint64_t(round)));
      append_merge(expected, {fresh + i * P, fresh + (i + 1) * P});
    }
    auto r = collect();
    EXPECT_EQ(within(r, fresh, 1024), expected) << "round " << round;
  }
  stop_and_check_clean();
}

TEST_P(TrackerTest, ScatteredWritesBeyondOneKernelBufferAreAllFound) {
  // More separate dirty regions than PAGEMAP_SCAN's kernel-side buffer
  // (512) holds: the walk restarts at walk_end and must lose nothing.
  uint64_t big = isolated_mapping(target_, 4096);
  ASSERT_NE(big, 0u);
  ASSERT_TRUE(target_.fill(big, 4096, 3));
  start();
  collect();
  RangeList expected;
  for (uint64_t i = 1; i < 4096; i += 3) {
    ASSERT_TRUE(target_.word(big + i * P, 0x77000 + i));
    append_merge(expected, {big + i * P, big + (i + 1) * P});
  }
  auto r = collect();
  EXPECT_EQ(total_pages(within(r, big, 4096)), total_pages(expected));
  EXPECT_EQ(within(r, big, 4096), expected);
  stop_and_check_clean();
}

TEST_P(TrackerTest, DiscardingWholePageTablesIsDirtyOnce) {
  // 8 MiB discarded at once: the kernel (CONFIG_PT_RECLAIM) may free the
  // emptied page tables, leaving holes rather than empty PTEs.
  uint64_t big = isolated_mapping(target_, 2048);
  ASSERT_NE(big, 0u);
  ASSERT_TRUE(target_.fill(big, 2048, 5));
  start();
  collect();
  ASSERT_EQ(target_.send(lm::strf("dontneed %llx 800", (unsigned long long)big)), "ok");
  auto r = collect();
  EXPECT_EQ(within(r, big, 2048), (RangeList{{big, big + 2048 * P}}));
  auto quiet = collect();
  EXPECT_TRUE(within(quiet, big, 2048).empty());
  ASSERT_TRUE(target_.word(big + 1500 * P, 3));
  auto again = collect();
  EXPECT_EQ(within(again, big, 2048), pages(big, {1500}));
  stop_and_check_clean();
}

TEST_P(TrackerTest, ExitedTargetIsAnErrorNamingThePid) {
  start();
  pid_t pid = target_.pid();
  target_.kill_and_reap();
  auto r = tracker_->collect();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find(std::to_string(pid)), std::string::npos) << r.error().message;
  EXPECT_TRUE(tracker_->stop().ok());
}

// AnonHugePages of the mapping at `start` in /proc/PID/smaps, in kB (-1: not found).
long anon_huge_kb(pid_t pid, uint64_t start) {
  std::ifstream smaps(lm::strf("/proc/%d/smaps", pid));
  std::string line;
  bool in = false;
  while (std::getline(smaps, line)) {
    unsigned long long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx ", &lo, &hi) == 2) in = lo == start;
    else if (in && line.rfind("AnonHugePages:", 0) == 0) return std::stol(line.substr(14));
  }
  return -1;
}

// On transparent huge pages the tracker still reports 4 KiB pages: a written
// word is one page, not the 512 of its huge page (the kernel splits a
// write-protected PMD on its first write, see docs/dirtytrack.md).
TEST_P(TrackerTest, WordsWrittenOnHugePagesAreFoundAsSmallPages) {
  if (std::string(GetParam()) == "soft-dirty")
    GTEST_SKIP() << "soft-dirty marks a PMD-mapped huge page dirty whole (2 MiB granularity)";
  constexpr uint64_t kPages = 2048;  // 8 MiB: four huge pages
  const uint64_t huge = target_.map_huge(kPages);
  ASSERT_NE(huge, 0u);
  ASSERT_TRUE(target_.fill(huge, kPages, 3));
  const long kb = anon_huge_kb(target_.pid(), huge);
  if (kb <= 0)
    GTEST_SKIP() << "the target's MADV_HUGEPAGE memory is not on transparent huge pages (AnonHugePages " << kb
                 << " kB; /sys/kernel/mm/transparent_hugepage/enabled is never, or no huge page was free)";
  start();
  collect();
  for (int round = 0; round < 3; round++) {
    const std::initializer_list<uint64_t> written = {1, 7, 600, 1024, 1025, 2047};
    for (uint64_t i : written) ASSERT_TRUE(target_.word(huge + i * P + 64, 0x5eed0000 + i + uint64_t(round)));
    auto r = collect();
    EXPECT_EQ(within(r, huge, kPages), pages(huge, written)) << "round " << round << ", AnonHugePages "
                                                              << anon_huge_kb(target_.pid(), huge) << " kB";
  }
  stop_and_check_clean();
}

// Held pages are left writable: their writes are not in `dirty` (they are
// reported `held` every round), they stay WRITTEN across collects, and the
// pages around them are tracked as before.
TEST_P(TrackerTest, HeldPagesStayWritableAndOutsideTheDirtySet) {
  if (std::string(GetParam()) != "uffd-wp") GTEST_SKIP() << "only uffd-wp leaves pages writable";
  start();
  collect();
  const RangeList held = {{region_ + 10 * P, region_ + 20 * P}};
  tracker_->hold(held);
  for (int round = 0; round < 2; round++) {
    ASSERT_TRUE(target_.fill(region_ + 12 * P, 3, 4 + uint64_t(round)));
    ASSERT_TRUE(target_.fill(region_ + 30 * P, 1, 4 + uint64_t(round)));
    auto r = collect();
    EXPECT_EQ(within(r, region_, 256), pages(region_, {30})) << "round " << round;
    EXPECT_EQ(r.held, held) << "round " << round;
    auto scanner = PagemapScanner::open(target_.pid());
    ASSERT_TRUE(scanner.ok());
    RangeList written;
    ASSERT_TRUE(scanner->scan(held[0], {0, 0, PAGE_IS_WRITTEN, 0, PAGE_IS_WRITTEN}, written).ok());
    EXPECT_EQ(written, pages(region_, {12, 13, 14})) << "round " << round << ": held pages were protected again";
  }
  stop_and_check_clean();
}

// A page of a mapping counted whole as new, written after that collect (so
// the engine may have read it with data) and discarded before the next: the
// next collect must report it, or the destination keeps the written bytes.
// soft-dirty (no trace of the zap, and the page was not populated at the
// collect) and hash (zero before, zero after) miss it: a known hole, see
// docs/dirtytrack.md, "A soft-dirty miss seen in the VM".
// A page a collect reports while it holds no data is read by the engine
// after that collect; written before that read and discarded before the next
// collect, it reads as zero again with no trace of the write (soft-dirty: the
// zap takes the PTE and its bit; hash: zero before, zero after), while the
// destination holds what the engine read. Reported once, then quiet.
TEST_P(TrackerTest, PageWrittenAfterItsNewMappingWasCountedThenDiscardedIsFound) {
  start();
  collect();
  uint64_t fresh = isolated_mapping(target_, 16);
  ASSERT_NE(fresh, 0u);
  auto r = collect();
  EXPECT_EQ(within(r, fresh, 16), (RangeList{{fresh, fresh + 16 * P}})) << "a new mapping counts dirty whole";
  write_discard_and_expect_reported_once(fresh, 16, 3);
  stop_and_check_clean();
}

TEST_P(TrackerTest, PageWrittenAfterItsDiscardWasReportedThenDiscardedAgainIsFound) {
  start();
  collect();
  ASSERT_EQ(target_.send(lm::strf("dontneed %llx 1", (unsigned long long)(region_ + 9 * P))), "ok");
  auto r = collect();
  EXPECT_EQ(within(r, region_, 256), pages(region_, {9})) << "a discarded page is dirty";
  write_discard_and_expect_reported_once(region_, 256, 9);
  stop_and_check_clean();
}

// The last collect (target frozen, tracking ends after it) finds what
// collect() would: whole-page and single-word writes, a discarded page, a
// new mapping whole, held pages as held. It re-arms nothing, so a collect()
// after it reports every one of those pages again: nothing is lost.
TEST_P(TrackerTest, FinalCollectFindsEveryWriteAndLosesNone) {
  // The new mapping's place, chosen before tracking: mapped there later it
  // keeps a page's gap to region_ and merges with no tracked VMA (for
  // soft-dirty a VMA expanded by a new mapping turns VM_SOFTDIRTY whole, so
  // all of region_ would be dirty; map + unmap of guard pages does that too).
  const uint64_t spot = isolated_mapping(target_, 8);
  ASSERT_NE(spot, 0u);
  ASSERT_EQ(target_.send(lm::strf("unmap %llx 8", (unsigned long long)spot)), "ok");
  start();
  collect();
  const RangeList held = {{region_ + 40 * P, region_ + 44 * P}};
  tracker_->hold(held);
  collect();
  ASSERT_TRUE(target_.fill(region_ + 3 * P, 2, 6));
  ASSERT_TRUE(target_.word(region_ + 100 * P + 24, 0x1234));
  ASSERT_TRUE(target_.fill(region_ + 255 * P, 1, 6));
  ASSERT_EQ(target_.send(lm::strf("dontneed %llx 1", (unsigned long long)(region_ + 70 * P))), "ok");
  const uint64_t fresh = target_.first(target_.send(lm::strf("mapat %llx 8", (unsigned long long)spot)));
  ASSERT_EQ(fresh, spot);
  ASSERT_TRUE(target_.fill(fresh + P, 1, 7));
  const RangeList expected = pages(region_, {3, 4, 70, 100, 255});
  auto final = tracker_->collect_final();
  ASSERT_TRUE(final.ok()) << final.error().message;
  EXPECT_EQ(within(*final, region_, 256), expected);
  EXPECT_EQ(within(*final, fresh, 8), (RangeList{{fresh, fresh + 8 * P}})) << "a new mapping counts dirty whole";
  EXPECT_EQ(final->dirty_pages, total_pages(final->dirty));
  if (std::string(GetParam()) == "uffd-wp") {
    EXPECT_EQ(final->held, held);
  }
  if (std::string(GetParam()) == "uffd-wp") {  // the others' collect_final is collect()
    // Nothing was written since, and still every page is there again.
    auto again = collect();
    EXPECT_EQ(within(again, region_, 256), expected) << "the final collect re-protected pages";
    EXPECT_EQ(within(again, fresh, 8), (RangeList{{fresh, fresh + 8 * P}})) << "the final collect registered it";
  }
  stop_and_check_clean();
}

// The engine prepares its tracker beside the handshake and starts it once
// the destination is ready: prepare() leaves the target untraced and
// unprotected, what it writes before the start is round 0's (populated),
// and the first collects find only what came after the start.
TEST_P(TrackerTest, PreparedAheadThenStartedTracksFromTheStart) {
  TrackRequest req;
  req.pid = target_.pid();
  ASSERT_TRUE(tracker_->prepare(req).ok());
  EXPECT_TRUE(untraced(target_.pid())) << "prepare() kept its hold on the target";
  ASSERT_TRUE(target_.fill(region_ + 5 * P, 1, 3));
  start();
  collect();
  ASSERT_TRUE(target_.fill(region_ + 9 * P, 1, 4));
  auto r = collect();
  EXPECT_EQ(within(r, region_, 256), pages(region_, {9}));
  stop_and_check_clean();
}

// A setup that fails after the tracker was prepared drops it: the target is
// left as it was (no userfaultfd, untraced, not a page write-protected).
TEST_P(TrackerTest, PreparedAndDroppedLeavesTheTargetAsItWas) {
  TrackRequest req;
  req.pid = target_.pid();
  ASSERT_TRUE(tracker_->prepare(req).ok());
  tracker_.reset();
  auto uffd = has_userfaultfd(target_.pid());
  ASSERT_TRUE(uffd.ok());
  EXPECT_FALSE(*uffd);
  EXPECT_TRUE(untraced(target_.pid()));
  auto scanner = PagemapScanner::open(target_.pid());
  ASSERT_TRUE(scanner.ok()) << scanner.error().message;
  RangeList protected_pages;
  ASSERT_TRUE(scanner->scan({region_, region_ + 256 * P}, kWriteProtected, protected_pages).ok());
  EXPECT_TRUE(protected_pages.empty());
  ASSERT_TRUE(target_.fill(region_, 256, 5));
  EXPECT_EQ(target_.quit(), 0);
}

// A start in chunks (the engine's round 0 overlapping uffd-wp's protection):
// start() and the chunks together report every populated page, each chunk
// within a span of its own and no page twice; collect() refuses to run before
// the last chunk, and afterwards finds exactly what was written, in chunks
// protected early and late.
TEST_P(TrackerTest, StartedInChunksReportsEveryPopulatedPageOnce) {
  const uint64_t big = target_.map(1024);  // 4 MiB: more than one chunk
  ASSERT_NE(big, 0u);
  ASSERT_TRUE(target_.fill(big, 1024, 2));
  TrackRequest req;
  req.pid = target_.pid();
  req.protect_chunk_bytes = 2ull << 20;
  auto s = tracker_->start(req);
  ASSERT_TRUE(s.ok()) << s.error().message;
  RangeList seen = s->populated;
  unsigned chunks = 0;
  for (;; chunks++) {
    auto c = tracker_->protect_next();
    ASSERT_TRUE(c.ok()) << c.error().message;
    if (!*c) break;
    EXPECT_TRUE(intersect(seen, **c).empty()) << "a page reported twice";
    if (chunks == 0 && std::string(GetParam()) == "uffd-wp") EXPECT_FALSE(tracker_->collect().ok());
    seen = unite(seen, **c);
  }
  if (std::string(GetParam()) == "uffd-wp") EXPECT_GE(chunks, 3u) << "4 MiB and more in chunks of 2 MiB";
  EXPECT_TRUE(subtract({{region_, region_ + 256 * P}}, seen).empty());
  EXPECT_TRUE(subtract({{big, big + 1024 * P}}, seen).empty());
  collect();
  ASSERT_TRUE(target_.fill(region_ + 3 * P, 1, 5));
  ASSERT_TRUE(target_.fill(big + 1000 * P, 2, 5));
  auto r = collect();
  EXPECT_EQ(within(r, region_, 256), pages(region_, {3}));
  EXPECT_EQ(within(r, big, 1024), pages(big, {1000, 1001}));
  stop_and_check_clean();
}

// A failure halfway through the chunks (the engine stops the tracker and
// rolls back): stop() leaves no page protected, no mapping registered, no
// userfaultfd, and the target writes on.
TEST_P(TrackerTest, StartedInChunksAndStoppedHalfwayLeavesTheTargetAsItWas) {
  const uint64_t big = target_.map(1024);
  ASSERT_NE(big, 0u);
  ASSERT_TRUE(target_.fill(big, 1024, 2));
  TrackRequest req;
  req.pid = target_.pid();
  req.protect_chunk_bytes = 2ull << 20;
  ASSERT_TRUE(tracker_->start(req).ok());
  auto c = tracker_->protect_next();
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_TRUE(tracker_->stop().ok());
  auto maps = read_maps(target_.pid());
  ASSERT_TRUE(maps.ok()) << maps.error().message;
  auto scanner = PagemapScanner::open(target_.pid());
  ASSERT_TRUE(scanner.ok()) << scanner.error().message;
  RangeList protected_pages, registered;
  for (const auto& m : select(*maps, Scope{})) {
    ASSERT_TRUE(scanner->scan(m.range(), kWriteProtected, protected_pages).ok());
    ASSERT_TRUE(scanner->scan(m.range(), {0, 0, PAGE_IS_WPALLOWED, 0, PAGE_IS_WPALLOWED}, registered).ok());
  }
  EXPECT_TRUE(protected_pages.empty()) << total_pages(protected_pages) << " pages left write-protected";
  EXPECT_TRUE(registered.empty()) << total_pages(registered) << " pages left registered";
  ASSERT_TRUE(target_.fill(big, 1024, 3));
  stop_and_check_clean();
}

// soft-dirty skips (in SetUp) on kernels without CONFIG_MEM_SOFT_DIRTY, like
// this project's hosts; tests/vm runs it in a VM booting a kernel that has it.
INSTANTIATE_TEST_SUITE_P(Backends, TrackerTest, ::testing::Values("uffd-wp", "hash", "soft-dirty"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

TEST(TrackerSelection, SoftDirtyRefusesHereAndAutoPicksUffdWp) {
  auto sd = make_tracker("soft-dirty", caps());
  if (caps().soft_dirty.available) GTEST_SKIP() << "this kernel has soft-dirty";
  ASSERT_FALSE(sd.ok());
  EXPECT_NE(sd.error().message.find("not compiled in"), std::string::npos) << sd.error().message;
  auto any = make_tracker("auto", caps());
  ASSERT_TRUE(any.ok());
  EXPECT_EQ((*any)->name(), "uffd-wp");
  auto bad = make_tracker("magic", caps());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("magic"), std::string::npos);
}

// The uffd-wp tracker clears stale protection only where kWriteProtected
// finds some (not with mode 0 over whole mappings): so the query must find
// every page a protect marked, present or not, and nothing else.
TEST(PagemapScanQuery, WriteProtectedFindsExactlyTheProtectedPages) {
  if (!caps().uffd_wp_async.available) GTEST_SKIP() << caps().uffd_wp_async.detail;
  const uint64_t n = 8;
  char* mem = static_cast<char*>(::mmap(nullptr, n * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(mem, MAP_FAILED);
  ::madvise(mem, n * P, MADV_NOHUGEPAGE);
  for (uint64_t i = 0; i < 6; i++) mem[i * P] = char(i + 1);  // 6 and 7 stay untouched
  const uint64_t base = uint64_t(mem);
  lm::UniqueFd uffd(int(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY)));
  ASSERT_TRUE(uffd.valid());
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
  ASSERT_EQ(::ioctl(uffd.get(), UFFDIO_API, &api), 0);
  uffdio_register reg{};
  reg.range = {base, n * P};
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  ASSERT_EQ(::ioctl(uffd.get(), UFFDIO_REGISTER, &reg), 0);
  auto protect = [&](uint64_t first, uint64_t count, uint64_t mode) {
    uffdio_writeprotect wp{};
    wp.range = {base + first * P, count * P};
    wp.mode = mode;
    ASSERT_EQ(::ioctl(uffd.get(), UFFDIO_WRITEPROTECT, &wp), 0);
  };
  auto scanner = PagemapScanner::open(::getpid());
  ASSERT_TRUE(scanner.ok());
  auto found = [&] {
    RangeList out;
    auto r = scanner->scan({base, base + n * P}, kWriteProtected, out);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return out;
  };
  EXPECT_EQ(found(), RangeList{}) << "a freshly registered range carries no protection";
  protect(1, 2, UFFDIO_WRITEPROTECT_MODE_WP);  // present pages
  protect(7, 1, UFFDIO_WRITEPROTECT_MODE_WP);  // untouched: a marker
  EXPECT_EQ(found(), pages(base, {1, 2, 7}));
  mem[2 * P] = 9;  // the async fault takes the bit off
  EXPECT_EQ(found(), pages(base, {1, 7}));
  protect(1, 1, 0);
  protect(7, 1, 0);
  EXPECT_EQ(found(), RangeList{});
  ::munmap(mem, n * P);
}

// The engine's make_tracker(name) probes for itself, skipping soft-dirty
// when the choice does not need it: it must choose as the full probe does.
TEST(TrackerSelection, ProbingOnlyWhatTheChoiceNeedsChoosesTheSame) {
  for (const char* name : {"auto", "uffd-wp", "hash", "soft-dirty", "magic"}) {
    auto full = make_tracker(name, caps());
    auto own = make_tracker(name);
    ASSERT_EQ(full.ok(), own.ok()) << name;
    if (full.ok())
      EXPECT_EQ((*full)->name(), (*own)->name()) << name;
    else
      EXPECT_EQ(full.error().message, own.error().message) << name;
  }
}

TEST(TrackerSelection, UnknownPidIsAClearError) {
  for (const char* name : {"uffd-wp", "hash"}) {
    auto t = make_tracker(name, caps());
    ASSERT_TRUE(t.ok());
    TrackRequest req;
    req.pid = 4194303;
    auto s = (*t)->start(req);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message.find("4194303"), std::string::npos) << s.error().message;
  }
}

}  // namespace
