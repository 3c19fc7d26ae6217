#include <gtest/gtest.h>

#include "livemig_config.h"

#include <fstream>

#include "harness/scenario.hpp"
#include "harness/sweep.hpp"
#include "tests/common/temp_dir.hpp"

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

// Parsed once into typed values: the policy, the pre-paging order and the
// durations are what the engine takes, not text it parses again.
TEST(Scenario, ValuesAreTyped) {
  auto c = parse_scenario(kDoc, "doc", {"postcopy.prepaging=\"bubble-forward\"", "workload.warmup-ms=150",
                                        "postcopy.reconnect-timeout-ms=0", "timeout-s=90"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->migration.policy.kind, lm::compress::PolicyKind::fixed);
  EXPECT_EQ(c->migration.policy.fixed.codec, lm::Codec::lz4);
  EXPECT_EQ(c->migration.policy.name, "fixed:lz4");
  EXPECT_EQ(c->postcopy.prepaging, PrepagingKind::bubble_forward);
  EXPECT_EQ(c->workload.warmup, std::chrono::milliseconds(150));
  EXPECT_EQ(c->postcopy.reconnect_timeout, std::chrono::milliseconds(0));
  EXPECT_EQ(c->timeout, std::chrono::seconds(90));
}

TEST(Scenario, DefaultsAreTheConfigs) {
  auto c = parse_scenario("", "doc", {});
  ASSERT_TRUE(c.ok()) << c.error().message;
  const ScenarioConfig defaults;
  EXPECT_EQ(c->migration.policy.kind, lm::compress::PolicyKind::adaptive);
  EXPECT_EQ(c->migration.policy.name, defaults.migration.policy.name);
  EXPECT_EQ(c->postcopy.prepaging, PrepagingKind::bubble);
  EXPECT_EQ(c->postcopy.reconnect_timeout, std::chrono::milliseconds(kDefaultReconnectTimeoutMs));
  // The flags' help shows them as a scenario would write them.
  EXPECT_EQ(setting_text(defaults, "migration.policy"), "adaptive");
  EXPECT_EQ(setting_text(defaults, "postcopy.prepaging"), "bubble");
  EXPECT_EQ(setting_text(defaults, "postcopy.reconnect-timeout-ms"), "10000");
  EXPECT_EQ(setting_text(defaults, "workload.ram"), "1G");
  EXPECT_EQ(setting_text(defaults, "migration.mode"), "precopy");
  EXPECT_EQ(setting_text(defaults, "no.such-key"), "");
}

// A bad value is refused naming the key and the value, whether it comes from
// a scenario, --set, or a flag (apply_setting).
TEST(Scenario, BadTypedValuesAreNamed) {
  for (const char* set : {"migration.policy=\"fixed:nosuch\"", "migration.policy=\"fixed\"",
                          "postcopy.prepaging=\"nosuch\"", "workload.warmup-ms=-1", "workload.warmup-ms=\"1s\"",
                          "postcopy.reconnect-timeout-ms=3600001", "timeout-s=0", "migration.mode=\"sideways\""}) {
    auto c = parse_scenario("", "doc", {set});
    ASSERT_FALSE(c.ok()) << set;
    std::string key = std::string(set).substr(0, std::string(set).find('='));
    EXPECT_NE(c.error().message.find("key '" + key + "'"), std::string::npos) << c.error().message;
  }
  ScenarioConfig c;
  auto policy = apply_setting(c, "migration.policy", "fixed:nosuch");
  ASSERT_FALSE(policy.ok());
  EXPECT_NE(policy.error().message.find("'fixed:nosuch'"), std::string::npos) << policy.error().message;
  auto prepaging = apply_setting(c, "postcopy.prepaging", "nosuch");
  ASSERT_FALSE(prepaging.ok());
  EXPECT_NE(prepaging.error().message.find("'nosuch'"), std::string::npos) << prepaging.error().message;
  EXPECT_EQ(c.migration.policy.name, "adaptive") << "a refused value changed the config";
  EXPECT_TRUE(apply_setting(c, "postcopy.prepaging", "none").ok());
  EXPECT_EQ(c.postcopy.prepaging, PrepagingKind::none);
  EXPECT_FALSE(apply_setting(c, "no.such-key", "1").ok());
}

// link.*: a rate (tc's units) implies the rig's namespaces; "unlimited" alone
// is no rig; the value shows as it was written; dpdk and groups are refused.
TEST(Scenario, LinkKeys) {
  const ScenarioConfig defaults;
  EXPECT_FALSE(defaults.link.uses_rig());
  EXPECT_EQ(setting_text(defaults, "link.rate"), "unlimited");
  for (auto [text, bps] : {std::pair{"1gbit", 1'000'000'000ull}, {"2.5gbit", 2'500'000'000ull},
                           {"10gbit", 10'000'000'000ull}, {"500mbit", 500'000'000ull}}) {
    auto c = parse_scenario("", "doc", {std::string("link.rate=\"") + text + "\""});
    ASSERT_TRUE(c.ok()) << c.error().message;
    EXPECT_EQ(c->link.rate_bps, bps) << text;
    EXPECT_TRUE(c->link.uses_rig()) << text;
    EXPECT_EQ(setting_text(*c, "link.rate"), text);
  }
  auto unlimited = parse_scenario("[link]\nrate = \"unlimited\"\n", "doc", {});
  ASSERT_TRUE(unlimited.ok()) << unlimited.error().message;
  EXPECT_FALSE(unlimited->link.uses_rig());
  auto ns = parse_scenario("[link]\nnamespaces = true\n", "doc", {});
  ASSERT_TRUE(ns.ok()) << ns.error().message;
  EXPECT_TRUE(ns->link.uses_rig());
  EXPECT_EQ(ns->link.rate_bps, 0u);

  auto bad = parse_scenario("", "doc", {"link.rate=\"1gbps\""});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("link.rate"), std::string::npos) << bad.error().message;
  auto dpdk = parse_scenario("", "doc", {"link.rate=\"1gbit\"", "migration.transport=\"dpdk\""});
  ASSERT_FALSE(dpdk.ok());
#if LM_HAVE_DPDK
  EXPECT_NE(dpdk.error().message.find("qdisc_bypass"), std::string::npos) << dpdk.error().message;
#endif
  auto group = parse_scenario("", "doc", {"link.namespaces=true", "group.vms=2"});
  ASSERT_FALSE(group.ok());
  EXPECT_NE(group.error().message.find("groups"), std::string::npos) << group.error().message;
}

// A sweep file `name` written into `dir`; its path.
std::string sweep_file(const lm::test::TempDir& dir, const char* name, const std::string& text) {
  std::string path = dir.path + "/" + name + ".toml";
  std::ofstream(path) << text;
  return path;
}

std::vector<std::string> labels_in_run_order(const Sweep& s, unsigned pass) {
  std::vector<std::string> out;
  for (size_t i : sweep_run_order(s, pass)) out.push_back(s.points[i].label);
  return out;
}

// Points keep their numbering (keys nested sorted, the last fastest);
// interleave changes only the order they run in.
TEST(Sweep, InterleaveRunsOneKeysValuesBackToBackAlternatingPerPass) {
  lm::test::TempDir dir("livemig-sweep-test");
  ASSERT_FALSE(dir.path.empty());
  const std::string head = "base = \"x.toml\"\n";
  const std::string axes = "[sweep]\n\"a\" = [1, 2]\n\"b\" = [\"p\", \"q\", \"r\"]\n\"c\" = [7, 8]\n";
  auto plain = load_sweep(sweep_file(dir, "plain", head + axes));
  ASSERT_TRUE(plain.ok()) << plain.error().message;
  ASSERT_EQ(plain->points.size(), 12u);
  EXPECT_EQ(plain->points[0].label, "a=1,b=p,c=7");
  EXPECT_EQ(plain->points[1].label, "a=1,b=p,c=8");
  EXPECT_EQ(plain->points[2].label, "a=1,b=q,c=7");
  for (unsigned pass : {1u, 2u}) {
    auto order = sweep_run_order(*plain, pass);
    for (size_t i = 0; i < order.size(); i++) EXPECT_EQ(order[i], i) << "no interleave: point order, pass " << pass;
  }

  auto mixed = load_sweep(sweep_file(dir, "mixed", head + "interleave = \"b\"\n" + axes));
  ASSERT_TRUE(mixed.ok()) << mixed.error().message;
  ASSERT_EQ(mixed->points.size(), 12u);
  EXPECT_EQ(mixed->points[2].label, "a=1,b=q,c=7") << "the numbering does not change";
  const std::vector<std::string> first = labels_in_run_order(*mixed, 1);
  const std::vector<std::string> want1 = {"a=1,b=p,c=7", "a=1,b=q,c=7", "a=1,b=r,c=7", "a=1,b=p,c=8",
                                          "a=1,b=q,c=8", "a=1,b=r,c=8", "a=2,b=p,c=7", "a=2,b=q,c=7",
                                          "a=2,b=r,c=7", "a=2,b=p,c=8", "a=2,b=q,c=8", "a=2,b=r,c=8"};
  EXPECT_EQ(first, want1);
  const std::vector<std::string> second = labels_in_run_order(*mixed, 2);
  ASSERT_EQ(second.size(), 12u);
  EXPECT_EQ(std::vector<std::string>(second.begin(), second.begin() + 3),
            (std::vector<std::string>{"a=1,b=r,c=7", "a=1,b=q,c=7", "a=1,b=p,c=7"}))
      << "backwards in even passes";
  EXPECT_EQ(labels_in_run_order(*mixed, 3), want1);

  auto unknown = load_sweep(sweep_file(dir, "unknown", head + "interleave = \"d\"\n" + axes));
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message.find("not a key of [sweep]"), std::string::npos) << unknown.error().message;
  auto not_text = load_sweep(sweep_file(dir, "not_text", head + "interleave = 3\n" + axes));
  ASSERT_FALSE(not_text.ok());
}

TEST(Scenario, SyntaxErrorHasPosition) {
  auto c = parse_scenario("[migration\n", "bad.toml", {});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("bad.toml"), std::string::npos);
}

}  // namespace
