// Trackers against livemig-guest's write log: with the loop
// {next_epoch(); collect();}, every page logged in epoch e must be in
// collect_e ∪ collect_{e+1}, no miss allowed, unless the guest logged its
// mapping's end (munmap, moved away, heap shrunk) in epoch e or e+1: then
// there is nothing left to migrate. Every mapping a collect shows as new
// must be dirty whole in that collect. Runs with 1 and 4 writer threads,
// whole-page and single-word writes, and --churn (mmap, munmap, mremap, brk,
// MADV_DONTNEED during tracking), 25 rounds. After stop() the guest's verify
// passes and it holds no userfaultfd.
//
// Writes that leave a page's bytes unchanged are invisible to the hash
// tracker (and harmless: the destination holds the same bytes), so for it a
// page whose bytes were equal before its epoch and after the next collect is
// excused. The guest logs MADV_DONTNEED as a write; zapping a page that is
// already empty changes nothing for any tracker, so a page that held no data
// both before its epoch and after it is excused for all.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string_view>

#include "dirtytrack/address_space.hpp"
#include "dirtytrack/page_reader.hpp"
#include "dirtytrack/pagemap_scan.hpp"
#include "dirtytrack/process_freezer.hpp"
#include "dirtytrack/remote_syscall.hpp"
#include "dirtytrack/tracker.hpp"
#include "harness/guest/client.hpp"

namespace {

using namespace lm::dt;

struct Case {
  const char* tracker;
  unsigned threads;
  const char* write;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string t = info.param.tracker;
  for (auto& c : t)
    if (c == '-') c = '_';
  return t + "_threads" + std::to_string(info.param.threads) + "_" + info.param.write;
}

class GuestGroundTruth : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/lm-dt-guest-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string dir_;
};

void sleep_ms(long ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, nullptr);
}

TEST_P(GuestGroundTruth, NoWrittenPageIsMissed) {
  const Case& c = GetParam();
  auto bin = lm::guest::guest_binary_from_env();
  ASSERT_TRUE(bin.ok()) << bin.error().message;
  static const DirtyTrackCaps caps = probe_dirtytrack();
  auto tracker = make_tracker(c.tracker, caps);
  if (!tracker.ok()) GTEST_SKIP() << tracker.error().message;

  lm::guest::GuestOptions opts;
  opts.ram_bytes = 32ull << 20;
  opts.rate = "20000";
  opts.content = "random";
  opts.write = c.write;
  opts.threads = c.threads;
  opts.churn = true;
  opts.write_log = dir_ + "/write.log";
  auto guest = lm::guest::GuestProcess::spawn(*bin, opts, dir_);
  ASSERT_TRUE(guest.ok()) << guest.error().message;
  pid_t pid = guest->pid();

  TrackRequest req;
  req.pid = pid;
  auto started = (*tracker)->start(req);
  if (!started.ok() && started.error().message.find("not practical") != std::string::npos)
    GTEST_SKIP() << started.error().message;  // e.g. a sanitizer build of the guest
  ASSERT_TRUE(started.ok()) << started.error().message;

  // Pages holding data (present, not the zero page) after each collect.
  auto scanner = PagemapScanner::open(pid);
  ASSERT_TRUE(scanner.ok()) << scanner.error().message;
  auto holding_data = [&](const MappingList& maps) {
    RangeList out;
    ScanQuery q{0, PAGE_IS_PFNZERO, PAGE_IS_PRESENT | PAGE_IS_PFNZERO, 0, PAGE_IS_PRESENT};
    for (const auto& r : ranges_of(maps)) EXPECT_TRUE(scanner->scan(r, q, out).ok());
    return out;
  };

  // For the hash tracker: every page's bytes (as a hash) after each collect.
  bool by_content = std::string_view(c.tracker) == "hash";
  PageReader reader(pid);
  auto page_hashes = [&](const MappingList& maps) {
    std::map<uint64_t, size_t> out;
    std::vector<std::byte> buf;
    for (const auto& r : ranges_of(maps)) {
      buf.resize(r.bytes());
      auto rep = reader.read(std::span<const lm::PageRange>(&r, 1), buf);
      if (!rep.ok()) continue;
      for (uint64_t a = r.start; a < r.end; a += lm::kPageSize)
        if (!contains(rep->failed, a))
          out[a] = std::hash<std::string_view>()(
              std::string_view(reinterpret_cast<const char*>(buf.data() + (a - r.start)), lm::kPageSize));
    }
    return out;
  };

  constexpr int kRounds = 25;
  std::vector<uint64_t> opened;           // epoch opened at iteration i
  std::vector<CollectResult> collects;    // collect_i
  std::vector<RangeList> data;            // pages holding data after collect_i
  std::vector<std::map<uint64_t, size_t>> bytes_after;  // hash tracker: page hashes after collect_i
  for (int i = 0; i <= kRounds; i++) {
    auto e = guest->control().next_epoch();
    ASSERT_TRUE(e.ok()) << e.error().message;
    opened.push_back(*e);
    auto r = (*tracker)->collect();
    ASSERT_TRUE(r.ok()) << r.error().message;
    data.push_back(holding_data(r->mappings));
    if (by_content) bytes_after.push_back(page_hashes(r->mappings));
    collects.push_back(std::move(*r));
    sleep_ms(30);
  }
  ASSERT_TRUE(guest->control().next_epoch().ok());  // closes the last epoch into the log
  ASSERT_TRUE((*tracker)->stop().ok());

  auto log = lm::guest::read_write_log(opts.write_log);
  ASSERT_TRUE(log.ok()) << log.error().message;
  std::map<uint64_t, const lm::guest::WriteLogEpoch*> by_epoch;
  for (const auto& ep : *log) by_epoch[ep.epoch] = &ep;
  auto unmapped_in = [&](uint64_t epoch) {
    RangeList out;
    if (auto it = by_epoch.find(epoch); it != by_epoch.end())
      for (const auto& r : it->second->unmapped) out.push_back({lm::page_floor(r.start), lm::page_ceil(r.end)});
    coalesce(out);
    return out;
  };
  uint64_t logged = 0, missed = 0, ended = 0, reported = 0, empty_zaps = 0, unchanged = 0, churn_logged = 0;
  uint64_t appeared_pages = 0, lifetimes = 0;
  lm::PageRange ram{guest->ram_addr(), guest->ram_addr() + guest->ram_size()};
  std::set<uint64_t> churn_kinds;
  for (const auto& ep : *log) lifetimes += ep.unmapped.size();
  // Every mapping a collect shows as new is dirty whole in that collect.
  for (int i = 1; i <= kRounds; i++) {
    RangeList appeared = appeared_ranges(collects[size_t(i)].changes);
    appeared_pages += total_pages(appeared);
    RangeList left_out = subtract(appeared, collects[size_t(i)].dirty);
    EXPECT_TRUE(left_out.empty()) << "collect " << i << ": " << total_pages(left_out)
                                  << " pages of new mappings not counted dirty, first at 0x" << std::hex
                                  << (left_out.empty() ? 0 : left_out.front().start);
  }
  for (int i = 0; i < kRounds; i++) {
    reported += collects[size_t(i)].dirty_pages;
    for (const auto& ch : collects[size_t(i)].changes) churn_kinds.insert(uint64_t(ch.kind));
    const RangeList& now = collects[size_t(i)].dirty;
    const RangeList& next = collects[size_t(i) + 1].dirty;
    // The guest's own record of mappings that ended before collect_{i+1}
    // could have seen them (or while it ran).
    RangeList gone = unite(unmapped_in(opened[size_t(i)]), unmapped_in(opened[size_t(i) + 1]));
    auto it = by_epoch.find(opened[size_t(i)]);
    if (it == by_epoch.end()) continue;
    for (uint64_t page : it->second->pages) {
      // The guest logs nothing outside its RAM but churn (new mappings and
      // the heap); where mmap puts them depends on ASLR.
      bool churn = !ram.contains(page);
      logged++;
      churn_logged += churn;
      if (contains(now, page) || contains(next, page)) continue;
      if (contains(gone, page)) {
        ended++;
        continue;
      }
      if (i > 0 && !contains(data[size_t(i) - 1], page) && !contains(data[size_t(i) + 1], page)) {
        empty_zaps++;
        continue;
      }
      if (by_content && i > 0) {
        auto before = bytes_after[size_t(i) - 1].find(page), after = bytes_after[size_t(i) + 1].find(page);
        if (before != bytes_after[size_t(i) - 1].end() && after != bytes_after[size_t(i) + 1].end() &&
            before->second == after->second) {
          unchanged++;
          continue;
        }
      }
      if (missed++ < 10) {
        std::string where;
        for (int k = std::max(0, i - 3); k <= std::min(kRounds, i + 4); k++)
          if (contains(collects[size_t(k)].dirty, page)) where += " " + std::to_string(k);
        std::string mapped, changes, present;
        for (int k = std::max(0, i - 2); k <= std::min(kRounds, i + 2); k++) {
          for (const auto& m : collects[size_t(k)].mappings)
            if (m.range().contains(page))
              mapped += lm::strf(" %d:%llx-%llx", k, (unsigned long long)m.start, (unsigned long long)m.end);
          for (const auto& ch : collects[size_t(k)].changes) {
            const Mapping& m = ch.after.end ? ch.after : ch.before;
            if (m.range().contains(page) || ch.before.range().contains(page))
              changes += lm::strf(" %d:%s", k, std::string(change_kind_name(ch.kind)).c_str());
          }
          if (contains(data[size_t(k)], page)) present += " " + std::to_string(k);
        }
        ADD_FAILURE() << lm::strf("epoch %llu: %s page 0x%llx written but in neither collect %d nor %d "
                                  "(found in collects:%s; mapped at:%s; changes:%s; holding data after:%s)",
                                  (unsigned long long)it->first, churn ? "churn" : "RAM/heap",
                                  (unsigned long long)page, i, i + 1, where.empty() ? " none" : where.c_str(),
                                  mapped.c_str(), changes.c_str(), present.c_str());
      }
    }
  }
  EXPECT_EQ(missed, 0u) << "of " << logged << " logged page writes (" << churn_logged << " in churn regions)";
  EXPECT_GT(logged, 1000u) << "the guest wrote too little to prove anything";
  EXPECT_GT(churn_logged, 100u) << "the churn wrote too little to prove anything";
  EXPECT_GE(churn_kinds.size(), 2u) << "the churn produced no mapping changes";
  EXPECT_GT(lifetimes, 0u) << "the guest logged no mapping's end";
  RecordProperty("logged_writes", std::to_string(logged));
  RecordProperty("reported_pages", std::to_string(reported));
  std::printf("%s: %llu logged page writes (%llu in churn regions), %llu reported dirty pages (%llu of new "
              "mappings), %llu in mappings ended before checked (%llu ends logged), %llu empty before and after "
              "(zaps of empty pages), %llu unchanged bytes, %llu missed\n",
              c.tracker, (unsigned long long)logged, (unsigned long long)churn_logged, (unsigned long long)reported,
              (unsigned long long)appeared_pages, (unsigned long long)ended, (unsigned long long)lifetimes,
              (unsigned long long)empty_zaps, (unsigned long long)unchanged, (unsigned long long)missed);
  EXPECT_LT(empty_zaps + unchanged, logged / 50) << "too many writes excused as empty or unchanged";

  // The guest runs on, intact, with no userfaultfd left behind.
  sleep_ms(50);
  auto verified = guest->control().verify();
  EXPECT_TRUE(verified.ok()) << verified.error().message;
  auto uffd = has_userfaultfd(pid);
  ASSERT_TRUE(uffd.ok());
  EXPECT_FALSE(*uffd);
  auto st = guest->stop(10000);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(*st, 0);
}

// The engine's round 0 with the tracker protecting in chunks (uffd-wp):
// chunk k's populated pages are read only after chunk k+1 is protected, as
// the senders read behind the protection, while the guest writes at full
// speed everywhere, into chunks protected already and chunks not yet. A
// "destination" image built from those reads and then from every collect's
// dirty pages must equal the frozen guest's RAM at the end: a write missed
// by both the round-0 read and the collects would show as a difference.
TEST_F(GuestGroundTruth, ChunkedStartMissesNoWriteBeforeOrAfterAChunkIsProtected) {
  auto bin = lm::guest::guest_binary_from_env();
  ASSERT_TRUE(bin.ok()) << bin.error().message;
  auto tracker = make_tracker("uffd-wp", probe_dirtytrack());
  if (!tracker.ok()) GTEST_SKIP() << tracker.error().message;

  lm::guest::GuestOptions opts;
  opts.ram_bytes = 64ull << 20;
  opts.rate = "200000";
  opts.content = "random";
  opts.threads = 2;
  opts.prefill = true;
  opts.write_log = dir_ + "/write.log";
  auto guest = lm::guest::GuestProcess::spawn(*bin, opts, dir_);
  ASSERT_TRUE(guest.ok()) << guest.error().message;
  const pid_t pid = guest->pid();
  const lm::PageRange ram{guest->ram_addr(), guest->ram_addr() + guest->ram_size()};
  constexpr uint64_t kChunk = 4ull << 20;

  std::vector<std::byte> dest(ram.bytes());
  PageReader reader(pid);
  auto receive = [&](const RangeList& pages) {
    for (const auto& r : intersect(pages, {ram})) {
      auto rep = reader.read(std::span<const lm::PageRange>(&r, 1),
                             std::span<std::byte>(dest.data() + (r.start - ram.start), r.bytes()));
      ASSERT_TRUE(rep.ok()) << rep.error().message;
      ASSERT_TRUE(rep->failed.empty()) << "RAM pages unreadable";
    }
  };

  TrackRequest req;
  req.pid = pid;
  req.scope = {ScopeKind::ranges, {ram}};
  req.protect_chunk_bytes = kChunk;
  auto started = (*tracker)->start(req);
  ASSERT_TRUE(started.ok()) << started.error().message;
  EXPECT_TRUE(started->populated.empty()) << "start() protected nothing, so it reports no pages";
  auto early = (*tracker)->collect();
  EXPECT_FALSE(early.ok()) << "collect() before the whole scope is protected must fail";

  // Epoch k is the time between protecting chunk k and chunk k+1.
  std::vector<uint64_t> epochs;
  std::vector<lm::PageRange> chunk_spans;
  RangeList behind;  // the previous chunk's pages, read after the next chunk is protected
  uint64_t populated = 0;
  for (;;) {
    auto chunk = (*tracker)->protect_next();
    ASSERT_TRUE(chunk.ok()) << chunk.error().message;
    auto e = guest->control().next_epoch();
    ASSERT_TRUE(e.ok()) << e.error().message;
    epochs.push_back(*e);
    receive(behind);
    if (!*chunk) break;
    ASSERT_FALSE((*chunk)->empty()) << "a prefilled guest's chunk holds data";
    // Chunks end at multiples of their size (never inside a huge page).
    const uint64_t at = chunk_spans.empty() ? ram.start : chunk_spans.back().end;
    ASSERT_LT(at, ram.end) << "more chunks than the RAM holds";
    const lm::PageRange span{at, std::min(ram.end, (at / kChunk + 1) * kChunk)};
    EXPECT_TRUE(subtract(**chunk, {span}).empty()) << "chunk pages outside it";
    chunk_spans.push_back(span);
    populated += total_pages(**chunk);
    behind = std::move(**chunk);
    sleep_ms(3);
  }
  ASSERT_FALSE(chunk_spans.empty());
  EXPECT_EQ(chunk_spans.back().end, ram.end) << "the chunks cover the RAM";
  EXPECT_GE(chunk_spans.size(), ram.bytes() / kChunk);
  EXPECT_GT(populated, ram.bytes() / lm::kPageSize * 9 / 10) << "a prefilled RAM is round 0's";

  for (int round = 1; round <= 3; round++) {
    auto r = (*tracker)->collect();
    ASSERT_TRUE(r.ok()) << r.error().message;
    receive(r->dirty);
    sleep_ms(20);
  }
  {
    auto frozen = ProcessFreezer::seize(pid);
    ASSERT_TRUE(frozen.ok()) << frozen.error().message;
    auto last = (*tracker)->collect_final();
    ASSERT_TRUE(last.ok()) << last.error().message;
    receive(unite(last->dirty, last->held));
    std::vector<std::byte> source(ram.bytes());
    auto rep = reader.read(std::span<const lm::PageRange>(&ram, 1), source);
    ASSERT_TRUE(rep.ok()) << rep.error().message;
    uint64_t differ = 0;
    for (uint64_t off = 0; off < ram.bytes(); off += lm::kPageSize)
      if (std::memcmp(source.data() + off, dest.data() + off, lm::kPageSize) != 0 && differ++ < 5)
        ADD_FAILURE() << lm::strf("page 0x%llx differs at the destination", (unsigned long long)(ram.start + off));
    EXPECT_EQ(differ, 0u) << "pages missed by round 0 and every collect";
    ASSERT_TRUE((*frozen)->release().ok());
  }
  ASSERT_TRUE(guest->control().next_epoch().ok());
  ASSERT_TRUE((*tracker)->stop().ok());

  // The guest wrote into chunks already protected and chunks not yet, while
  // the chunks were protected.
  auto log = lm::guest::read_write_log(opts.write_log);
  ASSERT_TRUE(log.ok()) << log.error().message;
  uint64_t into_protected = 0, into_unprotected = 0;
  for (const auto& ep : *log) {
    auto k = std::find(epochs.begin(), epochs.end(), ep.epoch);
    if (k == epochs.end() || size_t(k - epochs.begin()) + 1 >= chunk_spans.size()) continue;
    const lm::PageRange done{ram.start, chunk_spans[size_t(k - epochs.begin())].end};
    for (uint64_t page : ep.pages) {
      if (done.contains(page))
        into_protected++;
      else if (ram.contains(page))
        into_unprotected++;
    }
  }
  std::printf("chunked start: %zu chunks, %llu writes into protected chunks, %llu into chunks not yet protected\n",
              chunk_spans.size(), (unsigned long long)into_protected, (unsigned long long)into_unprotected);
  EXPECT_GT(into_protected, 100u);
  EXPECT_GT(into_unprotected, 100u);
  auto verified = guest->control().verify();
  EXPECT_TRUE(verified.ok()) << verified.error().message;
  auto st = guest->stop(10000);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(*st, 0);
}

INSTANTIATE_TEST_SUITE_P(Trackers, GuestGroundTruth,
                         ::testing::Values(Case{"uffd-wp", 1, "page"}, Case{"uffd-wp", 4, "page"},
                                           Case{"uffd-wp", 1, "word"}, Case{"uffd-wp", 4, "word"},
                                           Case{"hash", 1, "page"}, Case{"hash", 4, "page"},
                                           Case{"hash", 1, "word"}, Case{"hash", 4, "word"},
                                           // skip without CONFIG_MEM_SOFT_DIRTY (run by tests/vm)
                                           Case{"soft-dirty", 1, "page"}, Case{"soft-dirty", 4, "page"},
                                           Case{"soft-dirty", 1, "word"}, Case{"soft-dirty", 4, "word"}),
                         case_name);

}  // namespace
