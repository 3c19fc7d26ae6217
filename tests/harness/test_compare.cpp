// The statistics and verdicts of 'livemig compare' (harness/stats.*, harness/compare.*).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#include "harness/compare.hpp"
#include "harness/stats.hpp"

namespace {

using lm::compare::Better;
using lm::compare::Verdict;
namespace fs = std::filesystem;

TEST(Stats, Median) {
  EXPECT_EQ(lm::stats::median(std::vector<double>{3, 1, 2}), 2);
  EXPECT_EQ(lm::stats::median(std::vector<double>{4, 1, 3, 2}), 2.5);
  EXPECT_EQ(lm::stats::median(std::vector<double>{7}), 7);
  EXPECT_EQ(lm::stats::median(std::vector<double>{}), 0);
}

TEST(Stats, RelativeChange) {
  EXPECT_DOUBLE_EQ(lm::stats::relative_change(100, 120), 0.2);
  EXPECT_DOUBLE_EQ(lm::stats::relative_change(100, 80), -0.2);
  EXPECT_EQ(lm::stats::relative_change(0, 0), 0);
  EXPECT_EQ(lm::stats::relative_change(0, 5), 1);
}

TEST(Stats, BootstrapOfIdenticalSamplesIsZeroWide) {
  std::vector<double> a = {10, 10, 10, 10};
  auto i = lm::stats::bootstrap_relative_change(a, a);
  EXPECT_EQ(i.low, 0);
  EXPECT_EQ(i.high, 0);
}

TEST(Stats, BootstrapOfSeparatedSamplesExcludesZero) {
  std::vector<double> base = {100, 101, 99, 102, 98}, cand = {120, 122, 118, 121, 119};
  auto i = lm::stats::bootstrap_relative_change(base, cand);
  EXPECT_GT(i.low, 0.15);
  EXPECT_LT(i.high, 0.26);
  EXPECT_LE(i.low, 0.2);
  EXPECT_GE(i.high, 0.2);
  // The seed is fixed: the same inputs give the same interval.
  auto again = lm::stats::bootstrap_relative_change(base, cand);
  EXPECT_EQ(i.low, again.low);
  EXPECT_EQ(i.high, again.high);
}

TEST(Stats, BootstrapOfOverlappingSamplesContainsZero) {
  std::vector<double> base = {100, 130, 90, 115, 80}, cand = {95, 125, 105, 85, 120};
  auto i = lm::stats::bootstrap_relative_change(base, cand);
  EXPECT_LT(i.low, 0);
  EXPECT_GT(i.high, 0);
}

// Load that drifts over the runs moves both runs of a pair: as pairs the
// +10% of every pair is clear, as independent samples the drift hides it.
TEST(Stats, PairsCancelADrift) {
  std::vector<double> base = {100, 120, 140, 160, 180, 200}, cand;
  for (double b : base) cand.push_back(b * 1.1);
  EXPECT_NEAR(lm::stats::median_paired_change(base, cand), 0.1, 1e-12);
  auto paired = lm::stats::bootstrap_paired_change(base, cand);
  EXPECT_NEAR(paired.low, 0.1, 1e-12);
  EXPECT_NEAR(paired.high, 0.1, 1e-12);
  auto independent = lm::stats::bootstrap_relative_change(base, cand);
  EXPECT_LT(independent.low, 0);
  EXPECT_GT(independent.high, 0.2);
}

TEST(Verdict, TooFewRunsAreNoisy) {
  EXPECT_EQ(lm::compare::judge(Better::lower, {0.4, 0.6}, 0.05, 2, 2, 3), Verdict::noisy);
  EXPECT_EQ(lm::compare::judge(Better::lower, {0.4, 0.6}, 0.05, 3, 2, 3), Verdict::noisy);
}

TEST(Verdict, LowerIsBetter) {
  EXPECT_EQ(lm::compare::judge(Better::lower, {0.15, 0.25}, 0.05, 3, 3, 3), Verdict::regressed);
  EXPECT_EQ(lm::compare::judge(Better::lower, {-0.25, -0.15}, 0.05, 3, 3, 3), Verdict::improved);
  EXPECT_EQ(lm::compare::judge(Better::lower, {-0.02, 0.03}, 0.05, 3, 3, 3), Verdict::unchanged);
  // A change beyond the threshold whose interval reaches back within it: cannot tell.
  EXPECT_EQ(lm::compare::judge(Better::lower, {0.02, 0.22}, 0.05, 6, 6, 3), Verdict::noisy);
  // Beyond the threshold but the interval reaches zero: cannot tell.
  EXPECT_EQ(lm::compare::judge(Better::lower, {-0.05, 0.4}, 0.05, 3, 3, 3), Verdict::noisy);
  // Significant but within the threshold: not a regression, not unchanged-within-threshold either.
  EXPECT_EQ(lm::compare::judge(Better::lower, {0.01, 0.08}, 0.05, 3, 3, 3), Verdict::noisy);
  EXPECT_EQ(lm::compare::judge(Better::lower, {0.01, 0.04}, 0.05, 3, 3, 3), Verdict::unchanged);
}

TEST(Verdict, HigherIsBetter) {
  EXPECT_EQ(lm::compare::judge(Better::higher, {-0.25, -0.15}, 0.05, 3, 3, 3), Verdict::regressed);
  EXPECT_EQ(lm::compare::judge(Better::higher, {0.15, 0.25}, 0.05, 3, 3, 3), Verdict::improved);
}

TEST(Options, Percentages) {
  EXPECT_DOUBLE_EQ(*lm::compare::parse_percent("5%"), 0.05);
  EXPECT_DOUBLE_EQ(*lm::compare::parse_percent("12.5"), 0.125);
  EXPECT_FALSE(lm::compare::parse_percent("five"));
  EXPECT_FALSE(lm::compare::parse_percent("-1%"));
  auto o = lm::compare::make_options("5%", {"downtime=20%"}, 3, "30%");
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_DOUBLE_EQ(o->threshold_for("downtime"), 0.2);
  EXPECT_DOUBLE_EQ(o->threshold_for("total-time"), 0.05);
  // Without an override, downtime and the p99 are judged by at least 20%;
  // an override, or a larger --threshold, still decides.
  auto d = lm::compare::make_options("5%", {}, 3, "30%");
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_DOUBLE_EQ(d->threshold_for("downtime"), 0.2);
  EXPECT_DOUBLE_EQ(d->threshold_for("fault-latency-p99"), 0.2);
  EXPECT_DOUBLE_EQ(d->threshold_for("fault-latency-p50"), 0.05);
  EXPECT_DOUBLE_EQ(d->threshold_for("send-cpu-per-page"), 0.05);
  EXPECT_DOUBLE_EQ(lm::compare::make_options("5%", {"downtime=3%"}, 3, "30%")->threshold_for("downtime"), 0.03);
  EXPECT_DOUBLE_EQ(lm::compare::make_options("30%", {}, 3, "30%")->threshold_for("downtime"), 0.3);
  EXPECT_FALSE(lm::compare::make_options("5%", {"no-such-metric=1%"}, 3, "30%"));
  EXPECT_FALSE(lm::compare::make_options("5%", {"downtime"}, 3, "30%"));
  EXPECT_DOUBLE_EQ(*d->host_slowdown, 0.3);
  EXPECT_FALSE(lm::compare::make_options("5%", {}, 3, "off")->host_slowdown);
  EXPECT_FALSE(lm::compare::make_options("5%", {}, 3, "slow"));
}

// Result documents written into a fresh directory.
class Documents : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "lm-compare-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write(const std::string& name, const std::string& text) {
    fs::create_directories((dir_ / name).parent_path());
    std::ofstream(dir_ / name) << text;
    return dir_ / name;
  }
  static std::string result(const std::string& scenario, double total, double mbps, const char* status = "completed",
                            int schema = 1) {
    return lm::strf(R"({"schema": "livemig-result/%d", "status": "%s", "config": {"name": "%s"},
      "total-time": %g, "downtime": 10, "ram": {"transferred": 1000, "mbps": %g},
      "compression": {"cpu-seconds-source": 0.5, "cpu-seconds-destination": 0.25}})",
                    schema, status, scenario.c_str(), total, mbps);
  }
  fs::path dir_;
};

TEST_F(Documents, LoadsDirectoriesSkipsOtherJsonCountsFailures) {
  write("base/a-0.json", result("a", 100, 800));
  write("base/deeper/a-1.json", result("a", 102, 790));
  write("base/summary.json", R"({"schema": "livemig-sweep/1", "runs": []})");
  write("base/a-2.json", result("a", 0, 0, "failed"));
  auto set = lm::compare::load({(dir_ / "base").string()});
  ASSERT_TRUE(set) << set.error().message;
  EXPECT_EQ(set->documents, 3u);
  ASSERT_EQ(set->failed.size(), 1u);
  EXPECT_EQ(set->values["a"]["total-time"], (std::vector<double>{100, 102}));
  EXPECT_EQ(set->values["a"]["throughput"], (std::vector<double>{800, 790}));
  EXPECT_EQ(set->values["a"].count("fault-latency-p50"), 0u);  // a pre-copy run has none
  EXPECT_EQ(set->values["a"].count("send-cpu-per-page"), 0u);  // a document without send-path
}

// The send path's CPU per page, from the document's send-path section; none
// from a run whose senders sent nothing (post-copy alone).
TEST_F(Documents, SendCpuPerPage) {
  auto with = [&](const char* name, const char* send_path) {
    std::string doc = result("a", 100, 800);
    doc.insert(doc.rfind('}'), lm::strf(R"(, "send-path": %s)", send_path));
    write(name, doc);
  };
  with("d/0.json", R"({"pages": 16384, "cpu-seconds": 0.5, "cpu-us-per-page": 30.5})");
  with("d/1.json", R"({"pages": 0, "cpu-seconds": 0, "cpu-us-per-page": 0})");
  auto set = lm::compare::load({(dir_ / "d").string()});
  ASSERT_TRUE(set) << set.error().message;
  EXPECT_EQ(set->values["a"]["send-cpu-per-page"], (std::vector<double>{30.5}));
}

// Runs of the same name on both sides (a perf-gate's) are compared as pairs;
// a run without a partner makes the metric's comparison independent.
TEST_F(Documents, RunsOfTheSameNamePairUp) {
  const double drift[] = {100, 130, 160, 190};
  for (int i = 0; i < 4; i++) {
    write(lm::strf("base/s-%d.json", i), result("s", drift[i], 800));
    write(lm::strf("cand/s-%d.json", i), result("s", drift[i] * 1.2, 800));
    write(lm::strf("other/t-%d.json", i), result("s", drift[i] * 1.2, 800));
  }
  auto base = lm::compare::load({(dir_ / "base").string()});
  auto cand = lm::compare::load({(dir_ / "cand").string()});
  auto other = lm::compare::load({(dir_ / "other").string()});
  ASSERT_TRUE(base && cand && other);
  lm::compare::Options o;
  for (const auto& r : lm::compare::compare(*base, *cand, o))
    if (r.metric == "total-time") {
      EXPECT_TRUE(r.paired);
      EXPECT_NEAR(r.change, 0.2, 1e-9);
      EXPECT_EQ(r.verdict, Verdict::regressed);
    }
  for (const auto& r : lm::compare::compare(*base, *other, o))
    if (r.metric == "total-time") {
      EXPECT_FALSE(r.paired);
      EXPECT_EQ(r.verdict, Verdict::noisy);
    }
}

// A run made while the host ran slow (its calibration far above the
// others') is set aside with its partner: the candidate's one slow run made
// an unchanged binary's comparison noisy; without it, it is unchanged. Runs
// without a calibration are never set aside.
TEST_F(Documents, RunsOnASlowedHostAreSetAsideWithTheirPartners) {
  auto with_calibration = [&](const std::string& name, double total, double before_us, double after_us) {
    std::string doc = result("s", total, 800);
    doc.insert(doc.rfind('}'),
               lm::strf(R"(, "host": {"calibration-us": {"before": %g, "after": %g}})", before_us, after_us));
    write(name, doc);
  };
  const double totals[] = {100, 104, 98, 102, 101};
  for (int i = 0; i < 5; i++) {
    with_calibration(lm::strf("base/s-%d.json", i), totals[i], 1400 + i, 1410);
    const bool slowed = i == 2;  // this run's host slowed: 2.2x the CPU time after it, 1.7x the total time
    with_calibration(lm::strf("cand/s-%d.json", i), slowed ? 170 : totals[i] * 1.01, 1420, slowed ? 3100 : 1430);
    write(lm::strf("plain/s-%d.json", i), result("s", i == 2 ? 170 : totals[i] * 1.01, 800));
  }
  auto base = lm::compare::load({(dir_ / "base").string()});
  auto cand = lm::compare::load({(dir_ / "cand").string()});
  auto plain = lm::compare::load({(dir_ / "plain").string()});
  ASSERT_TRUE(base && cand && plain);
  EXPECT_DOUBLE_EQ(cand->calibration_us["s"]["s-2.json"], 3100);  // the higher of before and after

  auto o = *lm::compare::make_options("5%", {}, 3, "30%");
  const auto slowed = lm::compare::slowed_runs(*base, *cand, o);
  ASSERT_EQ(slowed.size(), 1u);
  EXPECT_EQ(slowed[0].run, "s-2.json");
  EXPECT_DOUBLE_EQ(slowed[0].calibration_us, 3100);
  auto total_time = [](const std::vector<lm::compare::Row>& rows) {
    for (const auto& r : rows)
      if (r.metric == "total-time") return r;
    return lm::compare::Row{};
  };
  const auto kept = total_time(lm::compare::compare(*base, *cand, o));
  EXPECT_EQ(kept.base_n, 4u);
  EXPECT_EQ(kept.candidate_n, 4u);
  EXPECT_TRUE(kept.paired);
  EXPECT_EQ(kept.verdict, Verdict::unchanged);

  o.host_slowdown.reset();
  EXPECT_TRUE(lm::compare::slowed_runs(*base, *cand, o).empty());
  const auto all = total_time(lm::compare::compare(*base, *cand, o));
  EXPECT_EQ(all.candidate_n, 5u);
  EXPECT_EQ(all.verdict, Verdict::noisy);

  // The same slow run without calibrations is counted, as before.
  o.host_slowdown = 0.3;
  EXPECT_EQ(total_time(lm::compare::compare(*base, *plain, o)).candidate_n, 5u);
}

// A perf-gate of a revision before the timeline against one after it: both
// schemas are result documents, a later one is not.
TEST_F(Documents, ReadsSchemaOneAndTwoNotThree) {
  write("mixed/old.json", result("a", 100, 800, "completed", 1));
  write("mixed/new.json", result("a", 104, 790, "completed", 2));
  write("mixed/future.json", result("a", 1, 1, "completed", 3));
  auto set = lm::compare::load({(dir_ / "mixed").string()});
  ASSERT_TRUE(set) << set.error().message;
  EXPECT_EQ(set->documents, 2u);
  EXPECT_EQ(set->values["a"]["total-time"], (std::vector<double>{104, 100}));  // files in name order
}

TEST_F(Documents, UnreadableDocumentIsNamed) {
  auto bad = write("bad.json", "{not json");
  auto set = lm::compare::load({bad.string()});
  ASSERT_FALSE(set);
  EXPECT_NE(set.error().message.find("bad.json"), std::string::npos) << set.error().message;
  auto none = lm::compare::load({write("other.json", "{}").string()});
  ASSERT_FALSE(none);
}

TEST_F(Documents, PlantedRegressionIsFlaggedAndSameIsNot) {
  for (int i = 0; i < 4; i++) {
    write(lm::strf("base/%d.json", i), result("s", 100 + i, 800 - i));
    write(lm::strf("same/%d.json", i), result("s", 101 + i, 799 - i));
    write(lm::strf("slow/%d.json", i), result("s", 120 + i, 660 - i));
  }
  auto base = lm::compare::load({(dir_ / "base").string()});
  auto same = lm::compare::load({(dir_ / "same").string()});
  auto slow = lm::compare::load({(dir_ / "slow").string()});
  ASSERT_TRUE(base && same && slow);
  lm::compare::Options o;
  auto rows = lm::compare::compare(*base, *slow, o);
  ASSERT_FALSE(rows.empty());
  EXPECT_TRUE(lm::compare::any_regressed(rows));
  for (const auto& r : rows) {
    if (r.metric == "total-time" || r.metric == "throughput") {
      EXPECT_EQ(r.verdict, Verdict::regressed) << r.metric;
    }
    if (r.metric == "downtime") {
      EXPECT_EQ(r.verdict, Verdict::unchanged);
    }
  }
  EXPECT_FALSE(lm::compare::any_regressed(lm::compare::compare(*base, *same, o)));
  // Every format names the regression.
  EXPECT_NE(lm::compare::format_text(rows, o).find("regressed"), std::string::npos);
  EXPECT_NE(lm::compare::format_markdown(rows, o).find("**regressed**"), std::string::npos);
  EXPECT_NE(lm::compare::format_json(rows, o, *base, *slow).find("\"regressed\": true"), std::string::npos);
  // A per-metric threshold above the change lets it pass.
  o.per_metric = {{"total-time", 0.5}, {"throughput", 0.5}};
  EXPECT_FALSE(lm::compare::any_regressed(lm::compare::compare(*base, *slow, o)));
}

}  // namespace
