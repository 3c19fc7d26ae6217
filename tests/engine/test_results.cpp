#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

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
  r.total_time_ms = 1234.56789012345;  // kept to the last digit
  r.source_state = "running";
  r.source_phase = "rolled-back";
  auto j = nlohmann::json::parse(result_to_json(r), nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << result_to_json(r);
  EXPECT_EQ(j["schema"], "livemig-result/2");
  EXPECT_EQ(j["status"], "failed");
  EXPECT_EQ(j["error"], r.error);
  EXPECT_EQ(j["total-time"].get<double>(), r.total_time_ms);
  for (const char* key : {"downtime", "setup-time", "tracker-protect-time", "destination-prepare-time",
                          "end-to-end-time", "stop-reason", "config", "host", "rounds", "verify"})
    EXPECT_TRUE(j.contains(key)) << key;
  for (const char* key : {"freeze", "final-collect", "final-send", "resume"})
    EXPECT_TRUE(j["downtime-breakdown"].contains(key)) << key;
  for (const char* key : {"attach", "tracker-probe", "mappings", "connect", "senders", "tracker-start", "other"})
    EXPECT_TRUE(j["setup-breakdown"].contains(key)) << key;
  EXPECT_EQ(j["ram"]["transferred"], 12345);
  EXPECT_EQ(j["ram"]["dirty-sync-count"], 3);
  EXPECT_TRUE(j["ram"].contains("duplicate"));
  EXPECT_TRUE(j["ram"].contains("mbps"));
  EXPECT_EQ(j["source"]["state"], "running");
  EXPECT_EQ(j["source"]["phase"], "rolled-back");
  EXPECT_FALSE(j.contains("postcopy")) << "pre-copy results have no post-copy section";
}

TEST(Results, TimelineSamplesAndEvents) {
  MigrationResult r;
  r.timeline.interval_ms = 100;
  r.timeline.samples.push_back({100.5, "precopy", 1, 4096, 0.33, 1, 7, 250});
  r.timeline.events.push_back({0, "phase", "setup", -1, -1});
  r.timeline.events.push_back({80, "round", "", 1, 8});
  r.timeline.events.push_back({90, "freeze", "", -1, -1});
  auto j = nlohmann::json::parse(result_to_json(r));
  EXPECT_EQ(j["timeline-interval"], 100);
  ASSERT_EQ(j["timeline"].size(), 1u);
  const auto& s = j["timeline"][0];
  EXPECT_EQ(s["t-ms"], 100.5);
  EXPECT_EQ(s["phase"], "precopy");
  EXPECT_EQ(s["round"], 1);
  EXPECT_EQ(s["bytes"], 4096);
  EXPECT_EQ(s["mbps"], 0.33);
  EXPECT_EQ(s["pages-sent"], 1);
  EXPECT_EQ(s["pages-left"], 7);
  EXPECT_EQ(s["dirty-rate"], 250);
  const auto& e = j["timeline-events"];
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0], nlohmann::json({{"t-ms", 0}, {"event", "phase"}, {"phase", "setup"}}));
  EXPECT_EQ(e[1], nlohmann::json({{"t-ms", 80}, {"event", "round"}, {"round", 1}, {"pages", 8}}));
  EXPECT_EQ(e[2], nlohmann::json({{"t-ms", 90}, {"event", "freeze"}}));
}

TEST(Results, BytesThatAreNotUtf8DoNotBreakTheDocument) {
  MigrationResult r;
  r.error = std::string("peer said \xff\xfe");
  auto j = nlohmann::json::parse(result_to_json(r), nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["error"].get<std::string>().rfind("peer said ", 0), 0u);
}
