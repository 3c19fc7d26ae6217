// The statistics behind 'livemig compare': medians, and a percentile
// bootstrap confidence interval for the relative change of the median
// between two independent samples (base, candidate).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace lm::stats {

// The median (the mean of the middle two for an even count); 0 when empty.
double median(std::span<const double> xs);

struct Interval {
  double low = 0;
  double high = 0;
};

struct BootstrapOptions {
  unsigned resamples = 10000;
  double confidence = 0.95;
  uint64_t seed = 1;  // fixed: the same inputs give the same interval
};

// median(candidate) / median(base) - 1, and its percentile bootstrap
// interval: both samples are resampled with replacement (independently,
// each its own size) and the change of the resampled medians is recorded;
// the interval is the central `confidence` of those changes. A zero base
// median has no relative change: {0, {0, 0}} when both are zero, else the
// change is taken against the candidate's scale (+-1).
double relative_change(double base_median, double candidate_median);
Interval bootstrap_relative_change(std::span<const double> base, std::span<const double> candidate,
                                   const BootstrapOptions& options = {});

// Paired samples (base[i] and candidate[i] ran side by side, under the same
// load): the median of the per-pair changes candidate[i] / base[i] - 1, and
// its percentile bootstrap interval (the pairs resampled with replacement).
// Load that drifts over the runs moves both runs of a pair and cancels.
double median_paired_change(std::span<const double> base, std::span<const double> candidate);
Interval bootstrap_paired_change(std::span<const double> base, std::span<const double> candidate,
                                 const BootstrapOptions& options = {});

}  // namespace lm::stats
