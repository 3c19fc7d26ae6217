// --write-log: each closed epoch lists the pages written in it. With writers
// paused around the epoch switches the logged data pages are exactly the
// pages whose version changed; while running, every change is logged in the
// epoch it happened in or the next; churn pages are logged too.
#include <gtest/gtest.h>

#include <signal.h>

#include <fstream>
#include <set>
#include <thread>

#include "guest_test_util.hpp"

namespace lm::guest::test {
namespace {

using namespace std::chrono_literals;

std::vector<uint64_t> versions_of(const RamCopy& c) {
  return std::vector<uint64_t>(c.view.versions, c.view.versions + c.view.data_pages());
}

std::set<uint64_t> changed_pages(const RamView& layout, const std::vector<uint64_t>& a, const std::vector<uint64_t>& b) {
  std::set<uint64_t> out;
  for (size_t i = 0; i < a.size(); i++)
    if (a[i] != b[i]) out.insert(layout.guest_addr(layout.data_page(i)));
  return out;
}

std::set<uint64_t> data_pages_of(const RamView& v, const WriteLogEpoch& e) {
  std::set<uint64_t> out;
  uint64_t data_start = v.guest_addr(v.data);
  for (uint64_t p : e.pages)
    if (p >= data_start) out.insert(p);
  return out;
}

void expect_epochs_well_formed(const std::vector<WriteLogEpoch>& log) {
  for (size_t i = 0; i < log.size(); i++) {
    EXPECT_EQ(log[i].epoch, i) << "epochs are numbered 0, 1, 2, ... in order";
    std::set<uint64_t> unique(log[i].pages.begin(), log[i].pages.end());
    EXPECT_EQ(unique.size(), log[i].pages.size()) << "epoch " << i << " lists a page twice";
    for (uint64_t p : log[i].pages) EXPECT_EQ(p % kPageSize, 0u);
  }
}

TEST(GuestWriteLog, PausedEpochsMatchVersionChangesExactly) {
  ScratchDir dir;
  GuestOptions o = options(2 << 20, "4000", 2);
  o.write_log = dir.file("writes.log");
  GuestProcess g = ASSERT_OK(GuestProcess::spawn(guest_binary(), o, dir.path()));
  std::vector<std::set<uint64_t>> expected;  // by epoch
  std::this_thread::sleep_for(50ms);
  ASSERT_OK(g.control().pause());
  RamCopy before = ASSERT_OK(copy_ram(g.pid(), g.ram_addr(), g.ram_size()));
  for (uint64_t e = 1; e <= 5; e++) {
    EXPECT_EQ(ASSERT_OK(g.control().next_epoch()), e);
    ASSERT_OK(g.control().resume());
    std::this_thread::sleep_for(e == 3 ? 0ms : 60ms);  // epoch 3: (almost) nothing
    ASSERT_OK(g.control().pause());
    RamCopy after = ASSERT_OK(copy_ram(g.pid(), g.ram_addr(), g.ram_size()));
    expected.resize(e + 1);
    expected[e] = changed_pages(after.view, versions_of(before), versions_of(after));
    before = std::move(after);
  }
  ASSERT_OK(g.control().next_epoch());
  EXPECT_EQ(ASSERT_OK(g.stop(5000)), 0);

  auto log = ASSERT_OK(read_write_log(o.write_log));
  ASSERT_EQ(log.size(), 7u) << "epochs 0..5 closed by requests, 6 closed at quit";
  expect_epochs_well_formed(log);
  const RamView& v = before.view;
  for (uint64_t e = 1; e <= 5; e++) {
    EXPECT_EQ(data_pages_of(v, log[e]), expected[e]) << "epoch " << e;
    for (uint64_t p : log[e].pages) {
      EXPECT_GE(p, g.ram_addr());
      EXPECT_LT(p, g.ram_addr() + g.ram_size());
    }
    // Each step also writes its thread state and version-table entry.
    if (!expected[e].empty()) EXPECT_GT(log[e].pages.size(), expected[e].size());
  }
  EXPECT_GT(expected[1].size(), 50u);
  EXPECT_TRUE(log[6].pages.empty()) << "paused in epoch 6";
  // Epoch 0 holds the header written at start-up.
  EXPECT_TRUE(std::count(log[0].pages.begin(), log[0].pages.end(), g.ram_addr()));
}

TEST(GuestWriteLog, RunningEpochsCoverEveryChange) {
  ScratchDir dir;
  GuestOptions o = options(4 << 20, "max", 4);
  o.pattern = "zipf:0.8";
  o.write_log = dir.file("writes.log");
  GuestProcess g = ASSERT_OK(GuestProcess::spawn(guest_binary(), o, dir.path()));
  // Snapshot k is read after epoch k opened: a change between snapshots k and
  // k+1 was made by a step begun in epoch k or k+1.
  std::vector<std::vector<uint64_t>> snaps;
  RamCopy layout = ASSERT_OK(copy_ram(g.pid(), g.ram_addr(), g.ram_size()));
  for (uint64_t e = 1; e <= 8; e++) {
    EXPECT_EQ(ASSERT_OK(g.control().next_epoch()), e);
    snaps.push_back(versions_of(ASSERT_OK(copy_ram(g.pid(), g.ram_addr(), g.ram_size()))));
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_OK(g.control().verify());
  EXPECT_EQ(ASSERT_OK(g.stop(5000)), 0);
  auto log = ASSERT_OK(read_write_log(o.write_log));
  ASSERT_EQ(log.size(), 9u);
  expect_epochs_well_formed(log);
  for (size_t k = 0; k + 1 < snaps.size(); k++) {
    uint64_t e = k + 1;  // snaps[k] was taken in epoch e
    auto changed = changed_pages(layout.view, snaps[k], snaps[k + 1]);
    auto logged = data_pages_of(layout.view, log[e]);
    auto next = data_pages_of(layout.view, log[e + 1]);
    logged.insert(next.begin(), next.end());
    ASSERT_FALSE(changed.empty());
    for (uint64_t p : changed)
      ASSERT_TRUE(logged.count(p)) << strf("page 0x%lx changed in epoch %lu but is not logged in %lu or %lu",
                                           (unsigned long)p, (unsigned long)e, (unsigned long)e,
                                           (unsigned long)e + 1);
  }
}

std::string read_maps(pid_t pid) {
  std::ifstream f(strf("/proc/%d/maps", pid));
  return std::string(std::istreambuf_iterator<char>(f), {});
}

TEST(GuestChurn, MappingsChangeWritesAreLoggedAndRamVerifies) {
  ScratchDir dir;
  GuestOptions o = options(2 << 20, "2000");
  o.churn = true;
  o.write_log = dir.file("writes.log");
  GuestProcess g = ASSERT_OK(GuestProcess::spawn(guest_binary(), o, dir.path()));
  std::set<std::string> maps_seen;
  for (int i = 0; i < 10; i++) {
    maps_seen.insert(read_maps(g.pid()));
    ASSERT_OK(g.control().next_epoch());
    std::this_thread::sleep_for(80ms);
  }
  ASSERT_OK(g.control().verify());
  ASSERT_OK(g.control().pause());
  std::string paused_maps = read_maps(g.pid());
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(read_maps(g.pid()), paused_maps) << "churn must stop while paused";
  ASSERT_OK(g.control().resume());
  EXPECT_GE(maps_seen.size(), 8u) << "the address space should change between samples";
  EXPECT_EQ(ASSERT_OK(g.stop(5000)), 0);

  auto log = ASSERT_OK(read_write_log(o.write_log));
  expect_epochs_well_formed(log);
  size_t outside = 0, epochs_with_churn = 0;
  for (const auto& e : log) {
    size_t here = 0;
    for (uint64_t p : e.pages) here += p < g.ram_addr() || p >= g.ram_addr() + g.ram_size();
    outside += here;
    epochs_with_churn += here > 0;
  }
  EXPECT_GT(outside, 100u);
  EXPECT_GE(epochs_with_churn, 9u);
}

}  // namespace
}  // namespace lm::guest::test

namespace lm::guest::test {
namespace {

TEST(GuestLifecycle, SigtermClosesTheLastEpochAndExitsZero) {
  ScratchDir dir;
  GuestOptions o = options(1 << 20, "1000");
  o.write_log = dir.file("writes.log");
  GuestProcess g = ASSERT_OK(GuestProcess::spawn(guest_binary(), o, dir.path()));
  std::string control = g.control_path();
  EXPECT_EQ(ASSERT_OK(g.control().next_epoch()), 1u);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(::kill(g.pid(), SIGTERM), 0);
  EXPECT_EQ(ASSERT_OK(g.wait_exit(5000)), 0);
  EXPECT_FALSE(std::filesystem::exists(control)) << "control socket left behind";
  auto log = ASSERT_OK(read_write_log(o.write_log));
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[1].epoch, 1u);
  EXPECT_FALSE(log[1].pages.empty());
}

}  // namespace
}  // namespace lm::guest::test
