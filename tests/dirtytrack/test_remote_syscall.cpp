// Remote system calls by ptrace: the target's own work is unaffected whether
// it was blocked in read(), in nanosleep(), or busy, and nothing is left
// attached or changed afterwards.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <fstream>
#include <thread>

#include "dirtytrack/process_freezer.hpp"
#include "dirtytrack/remote_syscall.hpp"
#include "target_process.hpp"

namespace {

using lm::dt::ProcessFreezer;
using lm::test::TargetProcess;

// "TracerPid:" of every thread is 0 and none is in a ptrace stop.
bool untraced(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("TracerPid:", 0) == 0) return std::stoi(line.substr(10)) == 0;
  return false;
}

// What dt_target's "busy N" answers.
std::string busy_reply(uint64_t n) {
  uint64_t x = 1;
  for (uint64_t i = 0; i < n; i++) x = x * 6364136223846793005ull + 1442695040888963407ull;
  return lm::strf("ok %llx", (unsigned long long)x);
}

// Runs getpid and an mmap/munmap pair inside the target and checks results.
void inject_some(ProcessFreezer& f, pid_t pid) {
  auto r = f.syscall(SYS_getpid);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, pid);
  auto m = f.syscall(SYS_mmap, {0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, uint64_t(-1), 0});
  ASSERT_TRUE(m.ok()) << m.error().message;
  ASSERT_GT(*m, 0) << "mmap in target returned " << *m;
  auto u = f.syscall(SYS_munmap, {uint64_t(*m), 8192});
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(*u, 0);
}

TEST(RemoteSyscall, TargetBlockedInReadRunsOnUnaffected) {
  TargetProcess t;
  ASSERT_TRUE(t.ok()) << t.error();
  ASSERT_EQ(t.send("pid"), "ok " + lm::strf("%x", t.pid()));  // now blocked in read() again
  usleep(20000);
  {
    auto f = ProcessFreezer::seize(t.pid());
    ASSERT_TRUE(f.ok()) << f.error().message;
    inject_some(**f, t.pid());
    ASSERT_TRUE((*f)->release().ok());
  }
  EXPECT_TRUE(untraced(t.pid()));
  EXPECT_EQ(t.send("busy 3"), busy_reply(3)) << "read() result disturbed";
  EXPECT_EQ(t.quit(), 0);
}

TEST(RemoteSyscall, TargetBlockedInNanosleepKeepsItsSleep) {
  TargetProcess t;
  ASSERT_TRUE(t.ok()) << t.error();
  ASSERT_TRUE(t.post("sleep 1f4"));  // 500 ms
  usleep(100000);
  {
    auto f = ProcessFreezer::seize(t.pid());
    ASSERT_TRUE(f.ok()) << f.error().message;
    for (int i = 0; i < 20; i++) inject_some(**f, t.pid());
    ASSERT_TRUE((*f)->release().ok());
  }
  auto v = t.values(t.reply());
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0], 0u) << "nanosleep returned an error (errno " << v[0] << ")";
  EXPECT_GE(v[1], 0x1f4u) << "nanosleep was cut short";
  EXPECT_LT(v[1], 0x1f4u + 1000u);
  EXPECT_TRUE(untraced(t.pid()));
  EXPECT_EQ(t.quit(), 0);
}

TEST(RemoteSyscall, BusyMultiThreadedTargetComputesTheSameResult) {
  TargetProcess t;
  ASSERT_TRUE(t.ok()) << t.error();
  ASSERT_EQ(t.send("spinners 2"), "ok");
  ASSERT_EQ(t.send("threads 2"), "ok");
  std::string expected = t.send("busy 5000000");
  ASSERT_EQ(expected.rfind("ok ", 0), 0u);
  ASSERT_TRUE(t.post("busy 5000000"));
  for (int round = 0; round < 10; round++) {
    auto f = ProcessFreezer::seize(t.pid());
    ASSERT_TRUE(f.ok()) << f.error().message;
    EXPECT_EQ((*f)->threads().size(), 5u);
    inject_some(**f, t.pid());
    ASSERT_TRUE((*f)->release().ok());
    usleep(2000);
  }
  EXPECT_EQ(t.reply(), expected);
  EXPECT_TRUE(untraced(t.pid()));
  EXPECT_EQ(t.quit(), 0);
}

TEST(RemoteSyscall, UserfaultfdCreatedFetchedAndClosedLeavesNoFd) {
  TargetProcess t;
  ASSERT_TRUE(t.ok()) << t.error();
  ASSERT_EQ(t.send("pid").rfind("ok", 0), 0u);
  auto f = ProcessFreezer::seize(t.pid());
  ASSERT_TRUE(f.ok()) << f.error().message;
  auto fd = lm::dt::remote_userfaultfd(**f, O_CLOEXEC | O_NONBLOCK | 1 /* UFFD_USER_MODE_ONLY */);
  ASSERT_TRUE(fd.ok()) << fd.error().message;
  EXPECT_TRUE(*lm::dt::has_userfaultfd(t.pid()));
  auto local = lm::dt::fetch_fd(t.pid(), *fd);
  ASSERT_TRUE(local.ok()) << local.error().message;
  ASSERT_TRUE(lm::dt::remote_close(**f, *fd).ok());
  ASSERT_TRUE((*f)->release().ok());
  EXPECT_FALSE(*lm::dt::has_userfaultfd(t.pid()));
  EXPECT_TRUE(local->valid());
  EXPECT_EQ(t.quit(), 0);
}

TEST(RemoteSyscall, UnknownPidIsNamed) {
  auto f = ProcessFreezer::seize(4194303);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.error().message.find("4194303"), std::string::npos) << f.error().message;
}

TEST(RemoteSyscall, KernelThreadIsRefusedWithReason) {
  auto f = ProcessFreezer::seize(2);  // kthreadd
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.error().message.find("pid 2"), std::string::npos) << f.error().message;
  EXPECT_EQ(f.error().code, EPERM) << f.error().message;
}

TEST(RemoteSyscall, SecondHolderIsRefusedAndFirstKeepsWorking) {
  TargetProcess t;
  ASSERT_TRUE(t.ok()) << t.error();
  ASSERT_EQ(t.send("threads 3"), "ok");
  auto first = ProcessFreezer::seize(t.pid());
  ASSERT_TRUE(first.ok()) << first.error().message;
  std::string second_error;
  std::thread other([&] {
    auto second = ProcessFreezer::seize(t.pid());
    if (!second.ok()) second_error = second.error().message;
  });
  other.join();
  EXPECT_NE(second_error.find("PTRACE_SEIZE"), std::string::npos) << second_error;
  inject_some(**first, t.pid());
  ASSERT_TRUE((*first)->release().ok());
  EXPECT_TRUE(untraced(t.pid()));
  EXPECT_EQ(t.send("busy 1"), busy_reply(1));
  EXPECT_EQ(t.quit(), 0);
}

TEST(RemoteSyscall, TargetExitingWhileHeldIsAnErrorNotAHang) {
  TargetProcess t;
  ASSERT_TRUE(t.ok()) << t.error();
  ASSERT_EQ(t.send("pid").rfind("ok", 0), 0u);
  auto f = ProcessFreezer::seize(t.pid());
  ASSERT_TRUE(f.ok()) << f.error().message;
  ::kill(t.pid(), SIGKILL);
  usleep(50000);
  auto r = (*f)->syscall(SYS_getpid);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find(std::to_string(t.pid())), std::string::npos) << r.error().message;
  (void)(*f)->release();
}

}  // namespace
