// --rate is honoured (roughly) by one and by several writer threads, and the
// status rate reports it.
#include <gtest/gtest.h>

#include <thread>

#include "common/clock.hpp"
#include "guest_test_util.hpp"

namespace lm::guest::test {
namespace {

using namespace std::chrono_literals;

class GuestRate : public ::testing::TestWithParam<unsigned> {};

TEST_P(GuestRate, LimitedRateIsHonoured) {
  ScratchDir dir;
  GuestOptions o = options(2 << 20, "3000", GetParam());
  GuestProcess g = ASSERT_OK(GuestProcess::spawn(guest_binary(), o, dir.path()));
  std::this_thread::sleep_for(300ms);
  GuestStatus a = ASSERT_OK(g.control().status());
  Stopwatch sw;
  std::this_thread::sleep_for(1200ms);
  GuestStatus b = ASSERT_OK(g.control().status());
  double measured = double(b.steps - a.steps) / sw.elapsed_s();
  EXPECT_GT(measured, 3000 * 0.7);  // a loaded machine wakes sleepers late
  EXPECT_LT(measured, 3000 * 1.2);
  EXPECT_GT(b.steps_per_s, 3000 * 0.65);
  EXPECT_LT(b.steps_per_s, 3000 * 1.25);
  ASSERT_OK(g.control().verify());
}

TEST_P(GuestRate, PausedGuestDoesNotWriteAndDoesNotBurstAfter) {
  ScratchDir dir;
  GuestOptions o = options(2 << 20, "2000", GetParam());
  GuestProcess g = ASSERT_OK(GuestProcess::spawn(guest_binary(), o, dir.path()));
  std::this_thread::sleep_for(200ms);
  ASSERT_OK(g.control().pause());
  GuestStatus a = ASSERT_OK(g.control().status());
  std::this_thread::sleep_for(500ms);
  GuestStatus b = ASSERT_OK(g.control().status());
  EXPECT_EQ(a.steps, b.steps);
  ASSERT_OK(g.control().resume());
  std::this_thread::sleep_for(250ms);
  GuestStatus c = ASSERT_OK(g.control().status());
  EXPECT_LT(c.steps - b.steps, 2000 * 0.25 * 1.5 + 50) << "caught up for the paused time";
  EXPECT_GT(c.steps - b.steps, 2000 * 0.25 * 0.5);
}

INSTANTIATE_TEST_SUITE_P(Threads, GuestRate, ::testing::Values(1u, 4u),
                         [](const auto& info) { return strf("%uthreads", info.param); });

TEST(GuestRateMax, UnlimitedIsMuchFaster) {
  ScratchDir dir;
  GuestOptions o = options(2 << 20, "max");
  GuestProcess g = ASSERT_OK(GuestProcess::spawn(guest_binary(), o, dir.path()));
  std::this_thread::sleep_for(1100ms);
  GuestStatus s = ASSERT_OK(g.control().status());
  EXPECT_GT(s.steps_per_s, 20000) << "a page write takes a few microseconds";
}

}  // namespace
}  // namespace lm::guest::test
