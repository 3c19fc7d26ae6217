#include <gtest/gtest.h>

#include <cmath>

#include "engine/convergence.hpp"

using namespace lm::engine;

namespace {

RoundProgress progress(unsigned rounds, uint64_t dirty, uint64_t sent, double rate) {
  RoundProgress p;
  p.rounds_done = rounds;
  p.dirty_pages = dirty;
  p.bytes_sent_total = sent;
  p.ram_bytes = 1ull << 30;
  p.page_rate_per_s = rate;
  return p;
}

TEST(Convergence, EachCriterionIsReported) {
  ConvergenceConfig off{.max_rounds = 1000, .max_bytes_factor = 0, .dirty_pages_threshold = 0, .downtime_target_ms = 0};

  auto c = off;
  c.max_rounds = 5;
  EXPECT_EQ(ConvergencePolicy(c).should_stop(progress(5, 1e6, 0, 1)), StopReason::max_rounds);
  EXPECT_EQ(ConvergencePolicy(c).should_stop(progress(4, 1e6, 0, 1)), std::nullopt);

  c = off;
  c.max_bytes_factor = 2.0;
  EXPECT_EQ(ConvergencePolicy(c).should_stop(progress(3, 1e6, (2ull << 30) + 1, 1)), StopReason::max_bytes);
  EXPECT_EQ(ConvergencePolicy(c).should_stop(progress(3, 1e6, 2ull << 30, 1)), std::nullopt);

  c = off;
  c.dirty_pages_threshold = 100;
  EXPECT_EQ(ConvergencePolicy(c).should_stop(progress(3, 99, 0, 1)), StopReason::dirty_threshold);
  EXPECT_EQ(ConvergencePolicy(c).should_stop(progress(3, 100, 0, 1)), std::nullopt);

  c = off;
  c.downtime_target_ms = 300;
  // 30000 pages at 100000 pages/s: 300 ms expected.
  EXPECT_EQ(ConvergencePolicy(c).should_stop(progress(3, 30000, 0, 100000)), StopReason::downtime_target);
  EXPECT_EQ(ConvergencePolicy(c).should_stop(progress(3, 30001, 0, 100000)), std::nullopt);
}

// Within the target, one more round is run while the last one left at most
// half the pages it sent and the expected downtime is above the floor.
TEST(Convergence, WithinTheTargetARoundThatHalvesWhatIsLeftIsWorthRunning) {
  ConvergenceConfig c{.max_rounds = 30, .max_bytes_factor = 0, .dirty_pages_threshold = 0, .downtime_target_ms = 300,
                      .downtime_floor_ms = 20};
  auto at = [](uint64_t left, uint64_t round_pages) {
    RoundProgress p = progress(2, left, 0, 100000);  // 100000 pages/s: 20000 pages are 200 ms
    p.round_pages = round_pages;
    return p;
  };
  const ConvergencePolicy policy(c);
  EXPECT_EQ(policy.should_stop(at(20000, 40000)), std::nullopt) << "halved: one more round";
  EXPECT_EQ(policy.should_stop(at(20001, 40000)), StopReason::downtime_target) << "not halved";
  EXPECT_EQ(policy.should_stop(at(20000, 0)), StopReason::downtime_target) << "the last round's size unknown";
  EXPECT_EQ(policy.should_stop(at(2000, 40000)), StopReason::downtime_target) << "20 ms: at the floor";
  EXPECT_EQ(policy.should_stop(at(2001, 40000)), std::nullopt);
  EXPECT_EQ(policy.should_stop(at(40000, 100000)), std::nullopt) << "400 ms: above the target, as before";

  auto off = c;
  off.downtime_floor_ms = 0;  // stop as soon as the target is met
  EXPECT_EQ(ConvergencePolicy(off).should_stop(at(20000, 40000)), StopReason::downtime_target);

  // A limit reached ends the rounds; the target met is still the reason given.
  auto limited = c;
  limited.max_rounds = 2;
  EXPECT_EQ(ConvergencePolicy(limited).should_stop(at(20000, 40000)), StopReason::downtime_target);
  limited = c;
  limited.max_bytes_factor = 1.0;
  RoundProgress over = at(20000, 40000);
  over.bytes_sent_total = (1ull << 30) + 1;
  EXPECT_EQ(ConvergencePolicy(limited).should_stop(over), StopReason::downtime_target);
}

TEST(Convergence, UnknownRateNeverPredictsSmallDowntime) {
  EXPECT_TRUE(std::isinf(ConvergencePolicy::expected_downtime_ms(progress(1, 10, 0, 0))));
  EXPECT_EQ(ConvergencePolicy::expected_downtime_ms(progress(1, 0, 0, 0)), 0);
}

}  // namespace
