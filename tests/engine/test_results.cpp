#include <gtest/gtest.h>

#include "engine/results.hpp"
#include "harness/result_json.hpp"

using namespace lm::engine;

TEST(Results, NearestRankPercentiles) {
  std::vector<double> s;
  for (int i = 100; i >= 1; i--) s.push_back(i);
  auto st = latency_stats(s);
  EXPECT_EQ(st.count, 100u);
  EXPECT_EQ(st.p50, 50);
  EXPECT_EQ(st.p90, 90);
  EXPECT_EQ(st.p99, 99);
  EXPECT_EQ(st.max, 100);
  std::vector<double> one{7};
  EXPECT_EQ(latency_stats(one).p50, 7);
}

TEST(Results, JsonHasQemuNamesAndFailure) {
  MigrationResult r;
  r.completed = false;
  r.error = "destination 127.0.0.1:7000 closed the connection";
  r.transferred = 12345;
  r.dirty_sync_count = 3;
  auto j = result_to_json(r);
  for (const char* key : {"\"schema\": \"livemig-result/1\"", "\"status\": \"failed\"", "\"error\": \"destination",
                          "\"total-time\"", "\"downtime\"", "\"setup-time\"", "\"transferred\": 12345",
                          "\"dirty-sync-count\": 3", "\"duplicate\"", "\"mbps\""})
    EXPECT_NE(j.find(key), std::string::npos) << key << "\n" << j;
}
