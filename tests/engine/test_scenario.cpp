#include <gtest/gtest.h>

#include "harness/scenario.hpp"

using namespace lm::engine;

namespace {

const char* kDoc = R"(
name = "t"
[workload]
ram = "256M"
rate = 5000
pattern = "hotspot:0.2"
[migration]
transport = "tcp"
channels = 3
policy = "fixed:lz4"
[convergence]
max-rounds = 7
downtime-target-ms = 150.5
)";

TEST(Scenario, ParsesKnownKeys) {
  auto c = parse_scenario(kDoc, "doc", {});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->workload.ram_bytes, 256ull << 20);
  EXPECT_EQ(c->workload.rate, "5000");
  EXPECT_EQ(c->migration.transport, "tcp");
  EXPECT_EQ(c->migration.channels, 3u);
  EXPECT_EQ(c->convergence.max_rounds, 7u);
  EXPECT_DOUBLE_EQ(c->convergence.downtime_target_ms, 150.5);
}

TEST(Scenario, OverridesApplyInOrder) {
  auto c = parse_scenario(kDoc, "doc", {"migration.transport=uring", "workload.rate=max", "convergence.max-rounds=9"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->migration.transport, "uring");
  EXPECT_EQ(c->workload.rate, "max");
  EXPECT_EQ(c->convergence.max_rounds, 9u);
}

TEST(Scenario, UnknownKeyIsNamed) {
  auto c = parse_scenario("[migration]\nchanels = 2\n", "x.toml", {});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("unknown key 'migration.chanels'"), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find("x.toml"), std::string::npos);
  auto o = parse_scenario("", "x.toml", {"bogus.key=1"});
  ASSERT_FALSE(o.ok());
  EXPECT_NE(o.error().message.find("bogus.key"), std::string::npos);
}

TEST(Scenario, ImpossibleValuesAreNamed) {
  for (const char* doc : {"[migration]\nchannels = 0\n", "[migration]\ntransport = \"carrier-pigeon\"\n",
                          "[workload]\nram = \"12X\"\n", "[workload]\nram = 4097\n",
                          "[migration]\npolicy = \"fixed\"\n", "[workload]\nthreads = \"four\"\n"}) {
    auto c = parse_scenario(doc, "doc", {});
    ASSERT_FALSE(c.ok()) << doc;
    EXPECT_NE(c.error().message.find("key '"), std::string::npos) << c.error().message;
  }
}

// Values that used to pass the scenario check and fail only once the
// migration ran (some after the source was frozen).
TEST(Scenario, NamesAreCheckedAgainstWhatIsBuilt) {
  for (const char* set : {"migration.transport=\"inproc\"", "migration.policy=\"fixed:nosuchcodec\"",
                          "migration.policy=\"cbcx\"", "migration.tracker=\"dirty-bits\"",
                          "postcopy.prepaging=\"bubbles\""}) {
    auto c = parse_scenario("", "doc", {set});
    ASSERT_FALSE(c.ok()) << set;
    std::string key = std::string(set).substr(0, std::string(set).find('='));
    EXPECT_NE(c.error().message.find("key '" + key + "'"), std::string::npos) << c.error().message;
  }
  auto good = parse_scenario("", "doc", {"migration.transport=\"tcp\"", "migration.policy=\"fixed:zstd:3\"",
                                         "migration.tracker=\"hash\"", "postcopy.prepaging=\"bubble-forward\""});
  EXPECT_TRUE(good.ok()) << good.error().message;
}

TEST(Scenario, SyntaxErrorHasPosition) {
  auto c = parse_scenario("[migration\n", "bad.toml", {});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("bad.toml"), std::string::npos);
}

}  // namespace
