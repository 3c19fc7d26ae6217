#include "harness/compare.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <cstdio>

#include "common/strf.hpp"

namespace lm::compare {

namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

// Every version whose metrics are read the same way: 2 only added the timeline.
bool is_result_schema(const std::string& schema) {
  return schema == "livemig-result/1" || schema == "livemig-result/2";
}

// One metric's value in a result document, when the document has it.
std::optional<double> value_of(const Json& doc, const std::string& metric) {
  auto number = [](const Json& j, std::initializer_list<const char*> path) -> std::optional<double> {
    const Json* at = &j;
    for (const char* key : path) {
      if (!at->is_object() || !at->contains(key)) return std::nullopt;
      at = &(*at)[key];
    }
    if (!at->is_number()) return std::nullopt;
    return at->get<double>();
  };
  if (metric == "total-time") return number(doc, {"total-time"});
  if (metric == "downtime") return number(doc, {"downtime"});
  if (metric == "transferred") return number(doc, {"ram", "transferred"});
  if (metric == "throughput") return number(doc, {"ram", "mbps"});
  if (metric == "round0-throughput") {
    // The first pass over memory alone: the send path without setup or the
    // convergence that follows (both vary more from run to run).
    if (!doc.contains("rounds") || !doc["rounds"].is_array() || doc["rounds"].empty()) return std::nullopt;
    auto bytes = number(doc["rounds"][0], {"bytes"});
    auto ms = number(doc["rounds"][0], {"duration"});
    if (!bytes || !ms || *ms <= 0) return std::nullopt;
    return *bytes * 8 / (*ms * 1e3);  // Mbit/s
  }
  if (metric == "fault-latency-p50" || metric == "fault-latency-p99") {
    // Only runs that took post-copy faults have a latency.
    auto count = number(doc, {"postcopy", "fault-latency-us", "count"});
    if (!count || *count == 0) return std::nullopt;
    return number(doc, {"postcopy", "fault-latency-us", metric == "fault-latency-p50" ? "p50" : "p99"});
  }
  if (metric == "send-cpu-per-page") {
    // The senders' CPU per page: the send path's work, which a loaded
    // machine's run-queue waits, unlike every time above, do not inflate.
    auto pages = number(doc, {"send-path", "pages"});
    if (!pages || *pages == 0) return std::nullopt;
    return number(doc, {"send-path", "cpu-us-per-page"});
  }
  if (metric == "cpu-seconds-source") return number(doc, {"compression", "cpu-seconds-source"});
  if (metric == "cpu-seconds-destination") return number(doc, {"compression", "cpu-seconds-destination"});
  return std::nullopt;
}

Result<void> load_file(const fs::path& path, const std::string& run, ResultSet& into) {
  std::ifstream in(path);
  if (!in) return Error::from_errno(strf("read result %s", path.c_str()));
  Json doc = Json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Error::msg(strf("read result %s: not valid JSON", path.c_str()));
  if (!doc.is_object() || !is_result_schema(doc.value("schema", ""))) return ok();  // not a result document
  into.documents++;
  if (doc.value("status", "") != "completed") {
    into.failed.push_back(path.string());
    return ok();
  }
  std::string scenario = "?";
  if (doc.contains("config") && doc["config"].is_object()) scenario = doc["config"].value("name", "?");
  for (const Metric& m : metrics())
    if (auto v = value_of(doc, m.name)) {
      into.values[scenario][m.name].push_back(*v);
      into.runs[scenario][m.name].push_back(run);
    }
  if (doc.contains("host") && doc["host"].is_object() && doc["host"].contains("calibration-us")) {
    const Json& cal = doc["host"]["calibration-us"];
    double highest = -1;
    for (const char* when : {"before", "after"})
      if (cal.is_object() && cal.contains(when) && cal[when].is_number())
        highest = std::max(highest, cal[when].get<double>());
    if (highest > 0) into.calibration_us[scenario][run] = highest;
  }
  return ok();
}

std::string percent(double fraction) { return strf("%+.1f%%", fraction * 100); }

std::string number(double v) {
  if (v != 0 && (std::fabs(v) >= 1e6 || std::fabs(v) < 1e-2)) return strf("%.3g", v);
  return strf("%.2f", v);
}

const char* kMethod =
    "paired runs (same name on both sides): the median of the pairs' changes (candidate/base - 1) with a 95% "
    "percentile bootstrap interval (pairs resampled with replacement); other runs: the relative change of the "
    "medians with a 95% percentile bootstrap interval (both sides resampled with replacement)";

// How runs on a slowed host are set aside, as a clause of the method line.
std::string aside_rule(const Options& options) {
  if (!options.host_slowdown) return "";
  return strf("; a run whose host calibration is more than %.0f%% above the median of all runs' is set aside "
              "with its partner",
              *options.host_slowdown * 100);
}

// The two sides' values in the order of their run names, when the names
// are the same set with no repeats: the runs pair up.
bool pair_up(const std::vector<double>& bv, const std::vector<std::string>& bn, const std::vector<double>& cv,
             const std::vector<std::string>& cn, std::vector<double>& b, std::vector<double>& c) {
  if (bn.size() != cn.size() || bn.empty()) return false;
  std::map<std::string, double> base, cand;
  for (size_t i = 0; i < bn.size(); i++) base.emplace(bn[i], bv[i]);
  for (size_t i = 0; i < cn.size(); i++) cand.emplace(cn[i], cv[i]);
  if (base.size() != bn.size() || cand.size() != cn.size()) return false;
  b.clear();
  c.clear();
  for (const auto& [name, v] : base) {
    auto it = cand.find(name);
    if (it == cand.end()) return false;
    b.push_back(v);
    c.push_back(it->second);
  }
  return true;
}

}  // namespace

const char* better_name(Better b) { return b == Better::lower ? "lower" : "higher"; }

const char* verdict_name(Verdict v) {
  switch (v) {
    case Verdict::improved: return "improved";
    case Verdict::regressed: return "regressed";
    case Verdict::unchanged: return "unchanged";
    case Verdict::noisy: return "noisy";
  }
  return "?";
}

const std::vector<Metric>& metrics() {
  static const std::vector<Metric> all = {
      {"total-time", Better::lower, "ms"},
      {"downtime", Better::lower, "ms", 0.20},
      {"transferred", Better::lower, "bytes"},
      {"throughput", Better::higher, "Mbit/s"},
      {"round0-throughput", Better::higher, "Mbit/s"},
      {"fault-latency-p50", Better::lower, "us"},
      {"fault-latency-p99", Better::lower, "us", 0.20},
      {"send-cpu-per-page", Better::lower, "us"},
      {"cpu-seconds-source", Better::lower, "s"},
      {"cpu-seconds-destination", Better::lower, "s"},
  };
  return all;
}

Result<ResultSet> load(const std::vector<std::string>& paths) {
  ResultSet set;
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<fs::path> files;
      for (auto it = fs::recursive_directory_iterator(p, ec); !ec && it != fs::recursive_directory_iterator();
           it.increment(ec))
        if (it->is_regular_file() && it->path().extension() == ".json") files.push_back(it->path());
      if (ec) return Error::sys(ec.value(), strf("read results directory %s", p.c_str()));
      std::sort(files.begin(), files.end());
      for (const auto& f : files) LM_TRY(load_file(f, fs::relative(f, p).string(), set));
    } else {
      LM_TRY(load_file(p, fs::path(p).filename().string(), set));
    }
  }
  if (set.documents == 0) {
    std::string where;
    for (const auto& p : paths) where += (where.empty() ? "" : ", ") + p;
    return Error::msg(strf("no result documents (livemig-result/1 or /2) in %s", where.c_str()));
  }
  return set;
}

double Options::threshold_for(const std::string& metric) const {
  if (auto it = per_metric.find(metric); it != per_metric.end()) return it->second;
  for (const Metric& m : metrics())
    if (metric == m.name) return std::max(threshold, m.min_threshold);
  return threshold;
}

Verdict judge(Better better, stats::Interval interval, double threshold, size_t base_n,
              size_t candidate_n, unsigned min_repeat) {
  if (base_n < min_repeat || candidate_n < min_repeat) return Verdict::noisy;
  // In "worse" terms: positive is worse whichever way the metric goes.
  const double sign = better == Better::lower ? 1 : -1;
  const double lo = std::min(sign * interval.low, sign * interval.high);
  const double hi = std::max(sign * interval.low, sign * interval.high);
  if (lo > threshold) return Verdict::regressed;
  if (hi < -threshold) return Verdict::improved;
  if (lo >= -threshold && hi <= threshold) return Verdict::unchanged;
  return Verdict::noisy;
}

std::vector<SlowedRun> slowed_runs(const ResultSet& base, const ResultSet& candidate, const Options& options) {
  std::vector<SlowedRun> out;
  if (!options.host_slowdown) return out;
  std::vector<double> all;
  for (const auto* side : {&base, &candidate})
    for (const auto& [scenario, runs] : side->calibration_us)
      for (const auto& [run, us] : runs) all.push_back(us);
  if (all.empty()) return out;
  const double median = stats::median(all);
  for (const auto* side : {&base, &candidate})
    for (const auto& [scenario, runs] : side->calibration_us)
      for (const auto& [run, us] : runs)
        if (us > (1 + *options.host_slowdown) * median) out.push_back({scenario, run, us, median});
  return out;
}

std::vector<Row> compare(const ResultSet& base, const ResultSet& candidate, const Options& options) {
  // A slowed run is set aside on both sides: its partner ran beside it.
  std::map<std::string, std::set<std::string>> aside;
  for (const SlowedRun& s : slowed_runs(base, candidate, options)) aside[s.scenario].insert(s.run);
  auto kept = [&](const std::string& scenario, const std::vector<double>& values,
                  const std::vector<std::string>& runs, std::vector<double>& v, std::vector<std::string>& n) {
    const auto it = aside.find(scenario);
    for (size_t i = 0; i < values.size(); i++)
      if (it == aside.end() || !it->second.count(runs[i])) {
        v.push_back(values[i]);
        n.push_back(runs[i]);
      }
  };
  std::vector<Row> rows;
  for (const auto& [scenario, base_metrics] : base.values) {
    auto cand = candidate.values.find(scenario);
    if (cand == candidate.values.end()) continue;
    for (const Metric& m : metrics()) {
      auto b = base_metrics.find(m.name);
      auto c = cand->second.find(m.name);
      if (b == base_metrics.end() || c == cand->second.end()) continue;
      std::vector<double> bv, cv;
      std::vector<std::string> bn, cn;
      kept(scenario, b->second, base.runs.at(scenario).at(m.name), bv, bn);
      kept(scenario, c->second, candidate.runs.at(scenario).at(m.name), cv, cn);
      Row row;
      row.scenario = scenario;
      row.metric = m.name;
      row.better = m.better;
      row.base_n = bv.size();
      row.candidate_n = cv.size();
      if (bv.empty() || cv.empty()) {  // every run of a side set aside
        row.threshold = options.threshold_for(m.name);
        rows.push_back(row);
        continue;
      }
      row.base_median = stats::median(bv);
      row.candidate_median = stats::median(cv);
      std::vector<double> pb, pc;
      row.paired = pair_up(bv, bn, cv, cn, pb, pc);
      if (row.paired) {
        row.change = stats::median_paired_change(pb, pc);
        row.interval = stats::bootstrap_paired_change(pb, pc, options.bootstrap);
      } else {
        row.change = stats::relative_change(row.base_median, row.candidate_median);
        row.interval = stats::bootstrap_relative_change(bv, cv, options.bootstrap);
      }
      row.threshold = options.threshold_for(m.name);
      row.verdict = judge(m.better, row.interval, row.threshold, row.base_n, row.candidate_n,
                          options.min_repeat);
      rows.push_back(row);
    }
  }
  return rows;
}

bool any_regressed(const std::vector<Row>& rows) {
  return std::any_of(rows.begin(), rows.end(), [](const Row& r) { return r.verdict == Verdict::regressed; });
}

std::string format_text(const std::vector<Row>& rows, const Options& options) {
  std::ostringstream out;
  out << strf("%-24s %-24s %-6s %14s %14s %8s %19s %7s  %s\n", "scenario", "metric", "better", "base (n)",
              "candidate (n)", "change", "95% interval", "thresh", "verdict");
  for (const Row& r : rows)
    out << strf("%-24s %-24s %-6s %14s %14s %8s %19s %7s  %s\n", r.scenario.c_str(), r.metric.c_str(),
                better_name(r.better), strf("%s (%zu)", number(r.base_median).c_str(), r.base_n).c_str(),
                strf("%s (%zu)", number(r.candidate_median).c_str(), r.candidate_n).c_str(),
                percent(r.change).c_str(),
                strf("[%s, %s]", percent(r.interval.low).c_str(), percent(r.interval.high).c_str()).c_str(),
                strf("%.1f%%", r.threshold * 100).c_str(), verdict_name(r.verdict));
  out << strf("method: %s; noisy below %u runs a side%s\n", kMethod, options.min_repeat, aside_rule(options).c_str());
  return out.str();
}

std::string format_markdown(const std::vector<Row>& rows, const Options& options) {
  std::ostringstream out;
  out << "| scenario | metric | better | base median (n) | candidate median (n) | change | 95% interval | "
         "threshold | verdict |\n|---|---|---|---:|---:|---:|---|---:|---|\n";
  for (const Row& r : rows)
    out << strf("| %s | %s | %s | %s (%zu) | %s (%zu) | %s | [%s, %s] | %.1f%% | %s%s%s |\n", r.scenario.c_str(),
                r.metric.c_str(), better_name(r.better), number(r.base_median).c_str(), r.base_n,
                number(r.candidate_median).c_str(), r.candidate_n, percent(r.change).c_str(),
                percent(r.interval.low).c_str(), percent(r.interval.high).c_str(), r.threshold * 100,
                r.verdict == Verdict::regressed ? "**" : "", verdict_name(r.verdict),
                r.verdict == Verdict::regressed ? "**" : "");
  out << strf("\nMethod: %s; noisy below %u runs a side%s.\n", kMethod, options.min_repeat,
              aside_rule(options).c_str());
  return out.str();
}

std::string format_json(const std::vector<Row>& rows, const Options& options, const ResultSet& base,
                        const ResultSet& candidate) {
  nlohmann::ordered_json j;
  j["schema"] = "livemig-compare/1";
  j["method"] = kMethod;
  j["confidence"] = options.bootstrap.confidence;
  j["resamples"] = options.bootstrap.resamples;
  j["min-repeat"] = options.min_repeat;
  j["regressed"] = any_regressed(rows);
  j["base"] = {{"documents", base.documents}, {"failed", base.failed}};
  j["candidate"] = {{"documents", candidate.documents}, {"failed", candidate.failed}};
  if (options.host_slowdown) j["host-slowdown"] = *options.host_slowdown;
  auto aside = nlohmann::ordered_json::array();
  for (const SlowedRun& r : slowed_runs(base, candidate, options))
    aside.push_back({{"scenario", r.scenario}, {"run", r.run}, {"calibration-us", r.calibration_us},
                     {"median-us", r.median_us}});
  j["slowed-host"] = std::move(aside);
  auto list = nlohmann::ordered_json::array();
  for (const Row& r : rows)
    list.push_back({{"scenario", r.scenario},
                    {"metric", r.metric},
                    {"better", better_name(r.better)},
                    {"base-n", r.base_n},
                    {"candidate-n", r.candidate_n},
                    {"base-median", r.base_median},
                    {"candidate-median", r.candidate_median},
                    {"paired", r.paired},
                    {"change", r.change},
                    {"interval", {r.interval.low, r.interval.high}},
                    {"threshold", r.threshold},
                    {"verdict", verdict_name(r.verdict)}});
  j["rows"] = std::move(list);
  return j.dump(2) + "\n";
}

// Exit status: 0 nothing regressed, 1 a metric regressed beyond its
// threshold, 2 a bad command line, 3 results that could not be read.
int compare_and_print(const std::vector<std::string>& base, const std::vector<std::string>& candidate,
                    const Options& options, const std::string& format) {
  auto b = load(base);
  auto c = b ? load(candidate) : Result<ResultSet>(b.error());
  if (!b || !c) {
    std::fprintf(stderr, "livemig compare: %s\n", (!b ? b.error() : c.error()).message.c_str());
    return 3;
  }
  const auto rows = compare(*b, *c, options);
  if (rows.empty()) {
    std::fprintf(stderr, "livemig compare: the two sets share no scenario with a metric to compare\n");
    return 3;
  }
  for (const auto* side : {&*b, &*c})
    for (const auto& f : side->failed) std::fprintf(stderr, "livemig compare: %s: a failed run, not counted\n", f.c_str());
  const auto slowed = slowed_runs(*b, *c, options);
  for (const SlowedRun& r : slowed)
    std::fprintf(stderr,
                 "livemig compare: %s %s: made on a slowed host (calibration %.0f us, median %.0f us), not "
                 "counted on either side\n",
                 r.scenario.c_str(), r.run.c_str(), r.calibration_us, r.median_us);
  std::string out = format == "json"       ? format_json(rows, options, *b, *c)
                    : format == "markdown" ? format_markdown(rows, options)
                                           : format_text(rows, options);
  std::fputs(out.c_str(), stdout);
  return any_regressed(rows) ? 1 : 0;
}

Result<Options> make_options(const std::string& threshold, const std::vector<std::string>& metric_thresholds,
                             unsigned min_repeat, const std::string& host_slowdown) {
  Options o;
  o.threshold = LM_TRY(parse_percent(threshold));
  o.min_repeat = min_repeat;
  if (host_slowdown == "off")
    o.host_slowdown.reset();
  else
    o.host_slowdown = LM_TRY(parse_percent(host_slowdown));
  for (const auto& spec : metric_thresholds) {
    const auto eq = spec.find('=');
    const std::string name = spec.substr(0, eq);
    const bool known =
        std::any_of(metrics().begin(), metrics().end(), [&](const Metric& m) { return name == m.name; });
    if (eq == std::string::npos || !known)
      return Error::msg(strf("metric threshold '%s': expected METRIC=PERCENT with one of the metrics of "
                             "'livemig compare --help'",
                             spec.c_str()));
    o.per_metric[name] = LM_TRY(parse_percent(spec.substr(eq + 1)));
  }
  return o;
}

Result<double> parse_percent(std::string_view text) {
  std::string s(text);
  if (!s.empty() && s.back() == '%') s.pop_back();
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || errno || !std::isfinite(v) || v < 0)
    return Error::msg(strf("'%.*s' is not a percentage (e.g. 5%%)", int(text.size()), text.data()));
  return v / 100;
}

}  // namespace lm::compare
