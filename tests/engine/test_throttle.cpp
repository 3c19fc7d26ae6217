// Auto-converge throttling on a real busy process: each mechanism must cut
// its CPU time, and release() must leave it running where it was.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "engine/throttle.hpp"

using namespace lm::engine;

namespace {

struct BusyChild {
  pid_t pid;
  BusyChild() {
    pid = fork();
    if (pid == 0) {
      alarm(60);  // never outlive the test
      for (;;) asm volatile("" ::: "memory");
    }
  }
  ~BusyChild() {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
};

double cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), {});
  auto close = s.rfind(')');
  std::istringstream in(s.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15; i++) {
    in >> field;
    if (i == 14) utime = std::strtod(field.c_str(), nullptr);
    if (i == 15) stime = std::strtod(field.c_str(), nullptr);
  }
  return (utime + stime) / double(sysconf(_SC_CLK_TCK));
}

double cpu_share_over(pid_t pid, std::chrono::milliseconds d) {
  double a = cpu_seconds(pid);
  std::this_thread::sleep_for(d);
  return (cpu_seconds(pid) - a) / (double(d.count()) / 1e3);
}

char proc_state(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), {});
  return s[s.rfind(')') + 2];
}

std::string cgroup_of(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/cgroup");
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

void check_mechanism(bool allow_cgroup) {
  BusyChild child;
  std::string before = cgroup_of(child.pid);
  auto t = Throttler::create(child.pid, allow_cgroup);
  ASSERT_TRUE(t.ok()) << t.error().message;
  std::printf("mechanism: %s\n", std::string(throttle_mechanism_name((*t)->mechanism())).c_str());
  double free_share = cpu_share_over(child.pid, std::chrono::milliseconds(600));
  ASSERT_TRUE((*t)->set_percent(70).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  auto periods_before = (*t)->throttled_periods();
  ASSERT_TRUE(periods_before.ok()) << periods_before.error().message;
  double throttled = cpu_share_over(child.pid, std::chrono::milliseconds(1000));
  auto periods_after = (*t)->throttled_periods();
  ASSERT_TRUE(periods_after.ok()) << periods_after.error().message;
  std::printf("cpu share free %.2f throttled-70%% %.2f, throttled periods %llu\n", free_share, throttled,
              (unsigned long long)(*periods_after - *periods_before));
  // The machine may be busy (the free share is then low too), so check the
  // bound the throttle sets (30% of one CPU, plus slack) and that it acted.
  EXPECT_LT(throttled, 0.45);
  EXPECT_GE(*periods_after - *periods_before, 3u) << "the throttle never held the process back";
  ASSERT_TRUE((*t)->release().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_NE(proc_state(child.pid), 'T');
  EXPECT_EQ(cgroup_of(child.pid), before);
}

TEST(Throttle, CgroupOrBestAvailable) { check_mechanism(true); }
TEST(Throttle, SignalDutyCycle) { check_mechanism(false); }

TEST(Throttle, UnknownPidIsNamed) {
  auto t = Throttler::create(999999999);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().message.find("999999999"), std::string::npos);
}

}  // namespace
