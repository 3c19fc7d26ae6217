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

TEST(Convergence, UnknownRateNeverPredictsSmallDowntime) {
  EXPECT_TRUE(std::isinf(ConvergencePolicy::expected_downtime_ms(progress(1, 10, 0, 0))));
  EXPECT_EQ(ConvergencePolicy::expected_downtime_ms(progress(1, 0, 0, 0)), 0);
}

}  // namespace
