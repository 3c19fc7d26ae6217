// Page reader (partial reads reported per page), the tracker sharing the
// engine's freeze, and the host check's soft-dirty verdict.
#include <gtest/gtest.h>
#include <sys/syscall.h>

#include <array>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <memory>

#include "dirtytrack/page_reader.hpp"
#include "dirtytrack/process_freezer.hpp"
#include "dirtytrack/remote_syscall.hpp"
#include "dirtytrack/tracker.hpp"
#include "target_process.hpp"

namespace {

using namespace lm::dt;
using lm::test::TargetProcess;
constexpr uint64_t P = 4096;

uint64_t pattern(uint64_t seed, uint64_t addr, uint64_t word) { return seed * 0x9E3779B97F4A7C15ull ^ (addr + word); }

TEST(PageReader, ReadsPagesAndReportsVanishedOnesPerPage) {
  TargetProcess t;
  ASSERT_TRUE(t.ok()) << t.error();
  uint64_t a = t.map(64), b = t.map(8);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(t.fill(a, 64, 11));
  ASSERT_TRUE(t.fill(b, 8, 12));
  ASSERT_EQ(t.send(lm::strf("unmap %llx 4", (unsigned long long)(a + 20 * P))), "ok");  // pages 20..23 vanish
  RangeList ranges = {{a, a + 64 * P}, {b + 2 * P, b + 5 * P}};
  std::vector<std::byte> buf(67 * P, std::byte{0xff});
  PageReader reader(t.pid());
  auto rep = reader.read(ranges, buf);
  ASSERT_TRUE(rep.ok()) << rep.error().message;
  EXPECT_EQ(rep->pages_read, 63u);
  EXPECT_EQ(rep->failed, (RangeList{{a + 20 * P, a + 24 * P}}));
  auto word_at = [&](size_t page, size_t word) {
    uint64_t v;
    std::memcpy(&v, buf.data() + page * P + word * 8, 8);
    return v;
  };
  EXPECT_EQ(word_at(0, 0), pattern(11, a, 0));
  EXPECT_EQ(word_at(19, 7), pattern(11, a + 19 * P, 7));
  EXPECT_EQ(word_at(21, 0), 0u) << "a failed page is zero-filled";
  EXPECT_EQ(word_at(63, 511), pattern(11, a + 63 * P, 511));
  EXPECT_EQ(word_at(64, 3), pattern(12, b + 2 * P, 3));
  EXPECT_EQ(word_at(66, 0), pattern(12, b + 4 * P, 0));
  std::vector<std::byte> small(P);
  EXPECT_FALSE(reader.read(ranges, small).ok()) << "a buffer too small is an error";
  t.kill_and_reap();
  auto gone = reader.read(ranges, buf);
  EXPECT_FALSE(gone.ok());
}

TEST(SharedFreeze, TrackerStartsAndStopsThroughTheEnginesHold) {
  auto caps = probe_dirtytrack();
  auto tracker = make_tracker("uffd-wp", caps);
  if (!tracker.ok()) GTEST_SKIP() << tracker.error().message;
  TargetProcess t;
  ASSERT_TRUE(t.ok()) << t.error();
  ASSERT_EQ(t.send("threads 3"), "ok");
  uint64_t a = t.map(32);
  ASSERT_TRUE(t.fill(a, 32, 1));
  auto hold = ProcessFreezer::seize(t.pid());
  ASSERT_TRUE(hold.ok()) << hold.error().message;
  TrackRequest req;
  req.pid = t.pid();
  req.scope = {ScopeKind::ranges, {{a, a + 32 * P}}};
  req.freezer = hold->get();
  auto started = (*tracker)->start(req);
  ASSERT_TRUE(started.ok()) << started.error().message;
  EXPECT_EQ(started->populated, (RangeList{{a, a + 32 * P}}));
  EXPECT_FALSE(*has_userfaultfd(t.pid())) << "the target's copy of the uffd is closed at once";
  // The engine keeps the target frozen for a final collect, then stops the
  // tracker while still holding it.
  auto final_round = (*tracker)->collect();
  ASSERT_TRUE(final_round.ok()) << final_round.error().message;
  EXPECT_TRUE(final_round->dirty.empty());
  ASSERT_TRUE((*tracker)->stop(hold->get()).ok());
  ASSERT_TRUE((*hold)->release().ok());
  ASSERT_TRUE(t.fill(a + 3 * P, 1, 2));
  EXPECT_EQ(t.send("busy 2").rfind("ok ", 0), 0u);
  EXPECT_EQ(t.quit(), 0);
}

TEST(HostCheck, SoftDirtyVerdictMatchesTheKernelConfig) {
  // Independent evidence: the kernel's own config, when it is readable.
  std::string config;
  if (FILE* p = popen("zcat /proc/config.gz 2>/dev/null | grep MEM_SOFT_DIRTY", "r")) {
    char line[256];
    while (fgets(line, sizeof line, p)) config += line;
    pclose(p);
  }
  Capability sd = probe_soft_dirty();
  if (config.find("# CONFIG_MEM_SOFT_DIRTY is not set") != std::string::npos) {
    EXPECT_FALSE(sd.available) << "the probe claims soft-dirty works on a kernel built without it";
    EXPECT_NE(sd.detail.find("not compiled in"), std::string::npos) << sd.detail;
  } else if (config.find("CONFIG_MEM_SOFT_DIRTY=y") != std::string::npos) {
    EXPECT_TRUE(sd.available) << sd.detail;
  } else {
    GTEST_SKIP() << "no /proc/config.gz to compare with; probe says: " << sd.detail;
  }
}

TEST(HostCheck, LivemigCheckJsonSaysSoftDirtyIsUnavailableHere) {
  const char* bin = std::getenv("LM_LIVEMIG_BIN");
  ASSERT_NE(bin, nullptr) << "LM_LIVEMIG_BIN is not set";
  std::string out;
  if (FILE* p = popen((std::string(bin) + " check --json").c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    EXPECT_EQ(pclose(p), 0);
  }
  auto at = out.find("\"soft-dirty\"");
  ASSERT_NE(at, std::string::npos) << out;
  std::string entry = out.substr(at, out.find('}', at) - at);
  if (probe_soft_dirty().available) GTEST_SKIP() << "this kernel has soft-dirty";
  EXPECT_NE(entry.find("\"available\": false"), std::string::npos) << entry;
  EXPECT_NE(entry.find("not compiled in"), std::string::npos) << entry;
  EXPECT_NE(out.find("\"auto_tracker\": \"uffd-wp\""), std::string::npos) << out;
}

}  // namespace
