// 'livemig compare': two sets of result documents (repeated runs of the same
// scenarios), compared scenario by scenario and metric by metric.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "harness/stats.hpp"

namespace lm::compare {

enum class Better { lower, higher };
enum class Verdict { improved, regressed, unchanged, noisy };
const char* better_name(Better b);
const char* verdict_name(Verdict v);

// The metrics compared, in the order they are shown.
struct Metric {
  const char* name;
  Better better;
  const char* unit;
  // The least threshold the metric is judged by without --metric-threshold:
  // figures of a few milliseconds or one tail sample move more than 5%
  // between runs of one binary on a shared machine (docs/benchmarks.md).
  double min_threshold = 0;
};
const std::vector<Metric>& metrics();

// Per scenario (the document's config.name), per metric: one value per run,
// and beside it the run's name (its path under the directory given, or its
// file name), which pairs it with the other side's run of the same name.
struct ResultSet {
  std::map<std::string, std::map<std::string, std::vector<double>>> values;
  std::map<std::string, std::map<std::string, std::vector<std::string>>> runs;
  std::vector<std::string> failed;  // documents of runs that did not complete (not counted)
  unsigned documents = 0;           // result documents read
  // Per scenario, per run: the higher of the run's host calibrations
  // (host.calibration-us, before and after), for the runs that have one.
  std::map<std::string, std::map<std::string, double>> calibration_us;
};

// Reads result documents (schema livemig-result/1 or /2) from files and, for a
// directory, every *.json under it; other JSON (a sweep's summary.json) is
// skipped. An error names the file that could not be read or parsed.
Result<ResultSet> load(const std::vector<std::string>& paths);

struct Options {
  double threshold = 0.05;                     // relative change that counts
  std::map<std::string, double> per_metric;    // overrides, by metric name
  unsigned min_repeat = 3;                     // fewer runs on a side: noisy
  // A run whose host calibration is more than this above the median of
  // every run's (both sides) was made while the host ran slow, and is set
  // aside with its partner of the same name; nullopt: none is.
  std::optional<double> host_slowdown;
  stats::BootstrapOptions bootstrap;
  double threshold_for(const std::string& metric) const;
};

struct Row {
  std::string scenario;
  std::string metric;
  Better better = Better::lower;
  size_t base_n = 0, candidate_n = 0;
  double base_median = 0, candidate_median = 0;
  bool paired = false;  // every run has a partner of its name on the other side
  double change = 0;    // candidate / base - 1 of the medians; paired: the median of the pairs' changes
  stats::Interval interval;
  double threshold = 0;
  Verdict verdict = Verdict::noisy;
};

// The verdict of one metric: noisy with fewer than min_repeat runs on a
// side; regressed (improved) when the whole interval lies beyond the
// threshold on the worse (better) side; unchanged when the whole interval
// lies within +-threshold; else noisy.
Verdict judge(Better better, stats::Interval interval, double threshold, size_t base_n,
              size_t candidate_n, unsigned min_repeat);

// The runs set aside as made on a slowed host (Options::host_slowdown), by
// scenario: their names, and each one's calibration against the median.
struct SlowedRun {
  std::string scenario, run;
  double calibration_us = 0, median_us = 0;
};
std::vector<SlowedRun> slowed_runs(const ResultSet& base, const ResultSet& candidate, const Options& options);

// Rows for every scenario and metric present on both sides, without the
// slowed runs. When every run
// of a metric on one side has a run of the same name on the other (a
// perf-gate's OUT/base/S-i.json and OUT/candidate/S-i.json, which ran one
// after the other) the two are compared as pairs (stats::bootstrap_paired_change),
// else as independent samples (stats::bootstrap_relative_change).
std::vector<Row> compare(const ResultSet& base, const ResultSet& candidate, const Options& options);
bool any_regressed(const std::vector<Row>& rows);

std::string format_text(const std::vector<Row>& rows, const Options& options);
std::string format_markdown(const std::vector<Row>& rows, const Options& options);
std::string format_json(const std::vector<Row>& rows, const Options& options, const ResultSet& base,
                        const ResultSet& candidate);

// Loads both sides, prints the comparison on stdout in `format` (text,
// markdown, json) and returns the exit status of 'livemig compare': 0
// nothing regressed, 1 a metric regressed beyond its threshold, 3 results
// that could not be read (or share no scenario).
int compare_and_print(const std::vector<std::string>& base, const std::vector<std::string>& candidate,
                      const Options& options, const std::string& format);

// Options from their command-line texts: the threshold ("5%"), per-metric
// overrides ("downtime=10%", names from metrics()), the fewest runs a side,
// the host slowdown ("30%", or "off").
Result<Options> make_options(const std::string& threshold, const std::vector<std::string>& metric_thresholds,
                             unsigned min_repeat, const std::string& host_slowdown);

// "5%" or "5": a percentage, as a fraction (0.05).
Result<double> parse_percent(std::string_view text);

}  // namespace lm::compare
