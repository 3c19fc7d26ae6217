// Urgent threads (engine/urgent_thread.hpp): real-time FIFO where the host
// allows it, else nice -20; the threads they start are normal again; a
// scope gives the thread back its own scheduling.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <thread>

#include "engine/urgent_thread.hpp"

using namespace lm::engine;

namespace {

struct Sched {
  int policy = -1;
  int nice = 0;
};
Sched this_thread_sched() {
  SchedAttr a;
  if (!get_this_thread_sched(a)) return {};
  return {int(a.policy), a.nice};
}
bool urgent(const Sched& s) { return s.policy == SCHED_FIFO || (s.policy == SCHED_OTHER && s.nice == -20); }

TEST(UrgentThread, UrgentThreadsStartNormalOnes) {
  Sched in_urgent, in_child;
  bool made = false;
  std::thread([&] {
    made = make_this_thread_urgent();
    in_urgent = this_thread_sched();
    std::thread([&] { in_child = this_thread_sched(); }).join();
  }).join();
  if (!made) GTEST_SKIP() << "this host refuses SCHED_FIFO and nice -20 (no CAP_SYS_NICE)";
  EXPECT_TRUE(urgent(in_urgent)) << "policy " << in_urgent.policy << " nice " << in_urgent.nice;
  if (geteuid() == 0) {
    EXPECT_EQ(in_urgent.policy, SCHED_FIFO) << "root may run real-time threads";
  }
  EXPECT_EQ(in_child.policy, SCHED_OTHER);
  EXPECT_EQ(in_child.nice, 0) << "a thread started by an urgent one must not inherit it";
}

TEST(UrgentThread, ScopeRestoresTheThreadsOwnScheduling) {
  Sched before, inside, after;
  std::thread([&] {
    ASSERT_EQ(setpriority(PRIO_PROCESS, gettid(), 5), 0);
    before = this_thread_sched();
    {
      UrgentScope urgent_now;
      inside = this_thread_sched();
    }
    after = this_thread_sched();
  }).join();
  EXPECT_EQ(before.nice, 5);
  if (!urgent(inside)) GTEST_SKIP() << "this host refuses SCHED_FIFO and nice -20 (no CAP_SYS_NICE)";
  EXPECT_EQ(after.policy, before.policy);
  EXPECT_EQ(after.nice, before.nice);
}

}  // namespace
