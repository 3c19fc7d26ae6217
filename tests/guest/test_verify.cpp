// A running guest verifies for every content profile, write mode and thread
// count; verify detects a corrupted page and a lost write; the access
// patterns put the writes where they say.
#include <gtest/gtest.h>

#include <cstdio>
#include <numeric>
#include <thread>

#include "guest_test_util.hpp"

namespace lm::guest::test {
namespace {

using namespace std::chrono_literals;

struct VerifyCase {
  const char* content;
  const char* write;
  unsigned threads;
};

class GuestVerify : public ::testing::TestWithParam<VerifyCase> {};

uint64_t version_sum(const RamView& v) {
  return std::accumulate(v.versions, v.versions + v.data_pages(), uint64_t(0));
}

TEST_P(GuestVerify, PassesWhileRunning) {
  ScratchDir dir;
  GuestOptions o = options(2 << 20, "max");
  o.content = GetParam().content;
  o.write = GetParam().write;
  o.threads = GetParam().threads;
  o.seed = 11;
  GuestProcess g = ASSERT_OK(GuestProcess::spawn(guest_binary(), o, dir.path()));
  std::this_thread::sleep_for(150ms);
  uint64_t pages = ASSERT_OK(g.control().verify());
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(ASSERT_OK(g.control().verify()), pages);
  // At a step boundary every step has added exactly one version.
  ASSERT_OK(g.control().pause());
  GuestStatus st = ASSERT_OK(g.control().status());
  EXPECT_EQ(st.threads, o.threads);
  EXPECT_GT(st.steps, 100u);
  RamCopy ram = ASSERT_OK(copy_ram(g.pid(), g.ram_addr(), g.ram_size()));
  EXPECT_EQ(ram.view.data_pages(), pages);
  EXPECT_EQ(version_sum(ram.view), st.steps);
  EXPECT_EQ(ram.view.total_steps(), st.steps);
  EXPECT_EQ(ASSERT_OK(verify_ram(ram.view, PendingPages::strict)), pages);
  ASSERT_OK(g.control().resume());
  EXPECT_EQ(ASSERT_OK(g.stop(5000)), 0);
}

std::vector<VerifyCase> all_cases() {
  std::vector<VerifyCase> out;
  for (const char* c : {"zero", "text", "ints", "random", "mixed"})
    for (const char* w : {"page", "word"})
      for (unsigned t : {1u, 4u}) out.push_back({c, w, t});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Profiles, GuestVerify, ::testing::ValuesIn(all_cases()),
                         [](const auto& info) {
                           return strf("%s_%s_%uthreads", info.param.content, info.param.write, info.param.threads);
                         });

// A paused guest with some history, and a page of it to tamper with.
struct Tampered {
  GuestProcess guest;
  RamCopy ram;
};

Tampered paused_guest(const ScratchDir& dir, const char* write, const char* rate = "max") {
  GuestOptions o = options(4 << 20, rate);
  o.content = "mixed";
  o.write = write;
  o.pattern = "hotspot:0.05:0.9";  // some pages get many versions
  auto g = GuestProcess::spawn(guest_binary(), o, dir.path());
  if (!g) {
    ADD_FAILURE() << g.error().message;
    std::abort();
  }
  std::this_thread::sleep_for(150ms);
  EXPECT_TRUE(g->control().pause().ok());
  auto ram = copy_ram(g->pid(), g->ram_addr(), g->ram_size());
  if (!ram) {
    ADD_FAILURE() << ram.error().message;
    std::abort();
  }
  return {std::move(*g), std::move(*ram)};
}

// The data page with the highest version (>= min_version).
uint64_t busiest_page(const RamView& v) {
  return uint64_t(std::max_element(v.versions, v.versions + v.data_pages()) - v.versions);
}

void expect_detected(GuestProcess& g, const RamView& v, uint64_t data_page) {
  uint64_t addr = v.guest_addr(v.data_page(data_page));
  auto r = g.control().verify();
  ASSERT_FALSE(r.ok()) << "verify missed the tampered page at " << strf("0x%lx", (unsigned long)addr);
  const std::string& m = r.error().message;
  EXPECT_NE(m.find(strf("page=%lu ", (unsigned long)((addr - g.ram_addr()) / kPageSize))), std::string::npos) << m;
  EXPECT_NE(m.find(strf("addr=0x%lx ", (unsigned long)addr)), std::string::npos) << m;
  EXPECT_NE(m.find(strf("version=%lu ", (unsigned long)v.versions[data_page])), std::string::npos) << m;
}

TEST(GuestVerifyDetects, CorruptedByte) {
  for (const char* write : {"page", "word"}) {
    ScratchDir dir;
    Tampered t = paused_guest(dir, write);
    ASSERT_OK(t.guest.control().verify());
    uint64_t p = busiest_page(t.ram.view);
    ASSERT_GE(t.ram.view.versions[p], 2u);
    uint64_t addr = t.ram.view.guest_addr(t.ram.view.data_page(p)) + 1000;
    uint8_t byte = t.ram.view.data_page(p)[1000] ^ 0x40;
    ASSERT_OK(write_remote(t.guest.pid(), addr, &byte, 1));
    expect_detected(t.guest, t.ram.view, p);
  }
}

TEST(GuestVerifyDetects, WriteToNeverWrittenPage) {
  ScratchDir dir;
  Tampered t = paused_guest(dir, "page", "2000");
  const RamView& v = t.ram.view;
  uint64_t p = uint64_t(std::find(v.versions, v.versions + v.data_pages(), 0) - v.versions);
  ASSERT_LT(p, v.data_pages()) << "every page was written; use a larger RAM";
  uint64_t junk = 0x1234;
  ASSERT_OK(write_remote(t.guest.pid(), v.guest_addr(v.data_page(p)) + 4088, &junk, 8));
  expect_detected(t.guest, v, p);
}

// A lost write: the page still holds the previous version's content.
TEST(GuestVerifyDetects, LostWrite) {
  for (const char* write : {"page", "word"}) {
    ScratchDir dir;
    Tampered t = paused_guest(dir, write);
    const RamView& v = t.ram.view;
    uint64_t p = busiest_page(v);
    ASSERT_GE(v.versions[p], 2u);
    std::vector<uint8_t> old(kPageSize);
    fill_page(old.data(), v.config().content, v.config().write, v.config().seed, p, v.versions[p] - 1);
    ASSERT_NE(std::memcmp(old.data(), v.data_page(p), kPageSize), 0);
    ASSERT_OK(write_remote(t.guest.pid(), v.guest_addr(v.data_page(p)), old.data(), kPageSize));
    expect_detected(t.guest, v, p);
  }
}

struct PatternCase {
  const char* pattern;
  void (*check)(const RamView&);
};

void check_hotspot(const RamView& v) {  // hotspot:0.1:0.9
  uint64_t hot = 0, all = version_sum(v), n = v.data_pages();
  for (uint64_t i = 0; i < n / 10; i++) hot += v.versions[i];
  EXPECT_GT(double(hot), 0.8 * double(all)) << hot << " of " << all;
}

void check_sequential(const RamView& v) {  // one thread: a sweep, versions differ by at most 1
  auto [lo, hi] = std::minmax_element(v.versions, v.versions + v.data_pages());
  EXPECT_LE(*hi - *lo, 1u);
  EXPECT_GE(*hi, 1u);
}

void check_zipf(const RamView& v) {  // zipf:1: the first 10% of pages take about ln(n/10)/ln(n)
  uint64_t top = 0, all = version_sum(v);
  for (uint64_t i = 0; i < v.data_pages() / 10; i++) top += v.versions[i];
  EXPECT_GT(double(top), 0.45 * double(all)) << top << " of " << all;
  EXPECT_GE(v.versions[0], v.versions[v.data_pages() - 1]);
}

void check_spread(const RamView& v) {  // uniform: most pages written
  uint64_t written = 0;
  for (uint64_t i = 0; i < v.data_pages(); i++) written += v.versions[i] > 0;
  EXPECT_GT(double(written), 0.9 * double(v.data_pages()));
}

void check_stride(const RamView& v) {  // stride: every page once per n steps
  auto [lo, hi] = std::minmax_element(v.versions, v.versions + v.data_pages());
  EXPECT_LE(*hi - *lo, 1u);
}

void PrintTo(const PatternCase& c, std::ostream* os) { *os << c.pattern; }

class GuestPattern : public ::testing::TestWithParam<PatternCase> {};

TEST_P(GuestPattern, WritesLandWherePatternSays) {
  ScratchDir dir;
  GuestOptions o = options(1 << 20, "max");
  o.pattern = GetParam().pattern;
  GuestProcess g = ASSERT_OK(GuestProcess::spawn(guest_binary(), o, dir.path()));
  std::this_thread::sleep_for(200ms);
  ASSERT_OK(g.control().pause());
  GuestStatus st = ASSERT_OK(g.control().status());
  ASSERT_GT(st.steps, 2000u) << "too few steps to judge the pattern";
  RamCopy ram = ASSERT_OK(copy_ram(g.pid(), g.ram_addr(), g.ram_size()));
  EXPECT_EQ(version_sum(ram.view), st.steps);
  GetParam().check(ram.view);
  ASSERT_OK(g.control().verify());
}

INSTANTIATE_TEST_SUITE_P(Patterns, GuestPattern,
                         ::testing::Values(PatternCase{"uniform", check_spread},
                                           PatternCase{"hotspot:0.1:0.9", check_hotspot},
                                           PatternCase{"zipf:1", check_zipf},
                                           PatternCase{"sequential", check_sequential},
                                           PatternCase{"stride:7", check_stride},
                                           PatternCase{"stride:11", check_stride}),
                         [](const auto& info) {
                           std::string n = info.param.pattern;
                           std::replace(n.begin(), n.end(), ':', '_');
                           std::replace(n.begin(), n.end(), '.', '_');
                           return n;
                         });

TEST(GuestErrors, UnusableRamAddressIsNamed) {
  std::string cmd = "timeout 10 " + guest_binary() + " --ram 1M --ram-addr 0xffff800000000000 2>&1";
  std::FILE* f = ::popen(cmd.c_str(), "r");
  ASSERT_NE(f, nullptr);
  char buf[512] = {};
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  int st = ::pclose(f);
  std::string out(buf, n);
  EXPECT_NE(WEXITSTATUS(st), 0);
  EXPECT_NE(out.find("0xffff800000000000"), std::string::npos) << out;
  EXPECT_EQ(out.find("READY"), std::string::npos) << out;
}

TEST(GuestErrors, SpawnReportsEarlyExit) {
  ScratchDir dir;
  GuestOptions o;
  o.ram_bytes = 1 << 20;
  o.pattern = "spiral";
  auto g = GuestProcess::spawn(guest_binary(), o, dir.path());
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.error().message.find("exited before READY (status 1)"), std::string::npos) << g.error().message;
}

}  // namespace
}  // namespace lm::guest::test
