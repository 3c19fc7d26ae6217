// livemig compare BASE CANDIDATE [--threshold 5%] [--metric-threshold M=P] [--host-slowdown 30%|off]
//                 [--format text|markdown|json]
#include <cstdio>

#include "harness/commands.hpp"
#include "harness/compare.hpp"

namespace lm::cmd {

namespace {

struct CompareArgs {
  std::vector<std::string> sides;  // BASE CANDIDATE
  std::string threshold = "5%";
  std::vector<std::string> metric_thresholds;  // METRIC=PERCENT
  unsigned min_repeat = 3;
  std::string host_slowdown = "off";
  std::string format = "text";
};

}  // namespace

Run compare(CLI::App& app) {
  auto a = std::make_shared<CompareArgs>();
  std::string metric_list;
  for (const auto& m : compare::metrics())
    metric_list += strf("\n  %-24s %s is better (%s)", m.name, compare::better_name(m.better), m.unit);
  app.footer(
      "For each scenario (config.name) and metric present on both sides: the medians, the relative change "
      "(candidate/base - 1) with a 95% percentile bootstrap interval (10000 resamples, fixed seed), and a "
      "verdict. Runs with the same name on both sides (a perf-gate's OUT/base/S-i.json, OUT/candidate/S-i.json) "
      "are compared as pairs: the median of the pairs' changes, the pairs resampled; other runs as independent "
      "samples: the change of the medians, both sides resampled. The verdict: noisy with fewer than --min-repeat runs on a side; regressed (improved) when "
      "the whole interval lies beyond the threshold on the worse (better) side; "
      "unchanged when the interval lies within +-threshold; noisy otherwise. Failed runs are listed and not "
      "counted, and so are runs made on a slowed host: a run whose host.calibration-us (the CPU time of a fixed "
      "piece of work, before and after the run) is more than --host-slowdown above the median of every run's, "
      "with its partner of the same name.\nExit status: 0 nothing regressed, 1 a metric regressed, 2 bad command line, 3 unreadable "
      "results.\nMetrics:" +
      metric_list);
  app.add_option("BASE CANDIDATE", a->sides,
                 "two result documents or directories of them (every *.json under a directory)")
      ->required()
      ->expected(2);
  app.add_option("--threshold", a->threshold, "the relative change that counts, for every metric (5%)")
      ->capture_default_str();
  app.add_option("--metric-threshold", a->metric_thresholds, "METRIC=PERCENT: one metric's own threshold (repeatable)")
      ->type_name("METRIC=PERCENT");
  app.add_option("--min-repeat", a->min_repeat, "fewer runs than this on a side: noisy")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000u));
  app.add_option("--host-slowdown", a->host_slowdown,
                 "set aside runs whose host calibration is more than this above the median (e.g. 30%; off: none)")
      ->capture_default_str();
  app.add_option("--format", a->format, "text, markdown or json")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "markdown", "json"}));
  return [a] {
    auto o = compare::make_options(a->threshold, a->metric_thresholds, a->min_repeat, a->host_slowdown);
    if (!o) {
      std::fprintf(stderr, "livemig compare: %s\n", o.error().message.c_str());
      return 2;
    }
    return compare::compare_and_print({a->sides[0]}, {a->sides[1]}, *o, a->format);
  };
}

}  // namespace lm::cmd
