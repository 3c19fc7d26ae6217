// engine/timeline.hpp on its own: the samples' spacing, counters from
// several threads, pages left, the dirty rate of the collect interval a
// sample lies in, the events in time order, finish() twice. A real
// migration's timeline is tests/harness/test_timeline.py.
#include <gtest/gtest.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "common/clock.hpp"
#include "engine/timeline.hpp"

using namespace lm;
using namespace lm::engine;
using namespace std::chrono_literals;

TEST(Timeline, SamplesEveryIntervalAndCountsEveryThread) {
  Timeline timeline;
  timeline.phase("precopy");
  timeline.begin_round(0, 4000);
  std::vector<std::jthread> senders;
  for (int t = 0; t < 4; t++)
    senders.emplace_back([&] {
      for (int i = 0; i < 50; i++) {
        timeline.sent(1000, 20, 20);
        std::this_thread::sleep_for(10ms);
      }
    });
  senders.clear();  // joined: 4 x 50 batches of 20 pages, 1000 bytes each
  TimelineRecord r = timeline.finish();

  ASSERT_GE(r.samples.size(), 4u);
  EXPECT_EQ(r.interval_ms, 100);
  const TimelineSample& last = r.samples.back();
  EXPECT_EQ(last.bytes, 200u * 1000);
  EXPECT_EQ(last.pages_sent, 4000u);
  EXPECT_EQ(last.pages_left, 0u);
  EXPECT_EQ(last.phase, "precopy");
  std::vector<double> gaps;
  for (size_t i = 1; i + 1 < r.samples.size(); i++) gaps.push_back(r.samples[i].t_ms - r.samples[i - 1].t_ms);
  ASSERT_FALSE(gaps.empty());
  std::sort(gaps.begin(), gaps.end());
  const double median = gaps[gaps.size() / 2];
  EXPECT_GE(median, 90);
  EXPECT_LE(median, 115);
  // The rates add up to the bytes.
  double bytes = 0, from = 0;
  for (const auto& s : r.samples) {
    bytes += s.mbps * 1e6 / 8 * (s.t_ms - from) * 1e-3;
    from = s.t_ms;
  }
  EXPECT_NEAR(bytes, 200e3, 200.0);
  for (size_t i = 1; i < r.samples.size(); i++) EXPECT_GE(r.samples[i].bytes, r.samples[i - 1].bytes);
}

TEST(Timeline, PagesLeftNeverBelowZeroAndSetBetweenRounds) {
  Timeline timeline(20ms);
  timeline.begin_round(0, 10);
  timeline.sent(4096, 16, 16);  // more than the set (a page read twice): clamped at 0
  std::this_thread::sleep_for(50ms);
  timeline.set_left(300);  // the collect's dirty set, the next round's
  std::this_thread::sleep_for(50ms);
  TimelineRecord r = timeline.finish();
  ASSERT_GE(r.samples.size(), 3u);
  EXPECT_EQ(r.samples.front().pages_left, 0u);
  EXPECT_EQ(r.samples.back().pages_left, 300u);
  EXPECT_EQ(r.samples.back().round, 0u);
}

TEST(Timeline, DirtyRateIsTheCollectIntervalsASampleLiesIn) {
  const uint64_t start = now_ns();
  Timeline timeline(20ms);
  std::this_thread::sleep_for(200ms);
  const uint64_t mid = now_ns();
  std::this_thread::sleep_for(200ms);
  const uint64_t end = now_ns();
  timeline.dirtied(1000, start, mid);  // 1000 pages over ~0.2 s
  timeline.dirtied(100, mid, end);     // 100 pages over ~0.2 s
  std::this_thread::sleep_for(100ms);  // nothing tracked
  TimelineRecord r = timeline.finish();
  const double first = 1000 / (double(mid - start) * 1e-9), second = 100 / (double(end - mid) * 1e-9);
  unsigned in_first = 0, in_second = 0, after = 0;
  const double mid_ms = double(mid - start) * 1e-6, end_ms = double(end - start) * 1e-6;
  for (const auto& s : r.samples) {
    // t_ms counts from the timeline's start, a little after `start`: stay clear of the edges.
    if (s.t_ms < mid_ms - 5) {
      EXPECT_NEAR(s.dirty_rate, first, first * 1e-6) << s.t_ms;
      in_first++;
    } else if (s.t_ms > mid_ms + 5 && s.t_ms < end_ms - 5) {
      EXPECT_NEAR(s.dirty_rate, second, second * 1e-6) << s.t_ms;
      in_second++;
    } else if (s.t_ms > end_ms + 5) {
      EXPECT_EQ(s.dirty_rate, 0) << s.t_ms;
      after++;
    }
  }
  EXPECT_GT(in_first, 0u);
  EXPECT_GT(in_second, 0u);
  EXPECT_GT(after, 0u);
}

TEST(Timeline, EventsInTimeOrderAndFinishTwice) {
  Timeline timeline(20ms);
  const uint64_t freeze = now_ns();
  timeline.phase("precopy");
  timeline.begin_round(0, 5);
  timeline.phase("stop-and-copy");
  std::this_thread::sleep_for(30ms);
  timeline.downtime(freeze, now_ns());  // the freeze before the phases recorded after it
  TimelineRecord r = timeline.finish();
  std::vector<std::string> order;
  for (const auto& e : r.events) order.push_back(e.event == "phase" ? e.phase : e.event);
  EXPECT_EQ(order, (std::vector<std::string>{"setup", "freeze", "precopy", "round", "stop-and-copy", "resumed"}));
  EXPECT_TRUE(std::is_sorted(r.events.begin(), r.events.end(),
                             [](const auto& a, const auto& b) { return a.t_ms < b.t_ms; }));
  EXPECT_EQ(r.events[3].round, 0);
  EXPECT_EQ(r.events[3].pages, 5);
  const size_t samples = r.samples.size();
  EXPECT_EQ(timeline.finish().samples.size(), samples);
}
