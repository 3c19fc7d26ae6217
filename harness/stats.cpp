#include "harness/stats.hpp"

#include <algorithm>
#include <cmath>
#include <random>

namespace lm::stats {

double median(std::span<const double> xs) {
  if (xs.empty()) return 0;
  std::vector<double> v(xs.begin(), xs.end());
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + mid, v.end());
  if (v.size() % 2) return v[mid];
  const double upper = v[mid];
  const double lower = *std::max_element(v.begin(), v.begin() + mid);
  return (lower + upper) / 2;
}

double relative_change(double base_median, double candidate_median) {
  if (base_median == 0) {
    if (candidate_median == 0) return 0;
    return candidate_median > 0 ? 1 : -1;
  }
  return candidate_median / base_median - 1;
}

namespace {

// The value at quantile q of sorted xs (linear interpolation).
double quantile(const std::vector<double>& sorted, double q) {
  const double pos = q * double(sorted.size() - 1);
  const size_t i = size_t(std::floor(pos));
  if (i + 1 >= sorted.size()) return sorted.back();
  return sorted[i] + (pos - double(i)) * (sorted[i + 1] - sorted[i]);
}

// The central `confidence` of the sorted values.
Interval central(std::vector<double>& values, double confidence) {
  std::sort(values.begin(), values.end());
  const double tail = (1 - confidence) / 2;
  return {quantile(values, tail), quantile(values, 1 - tail)};
}

std::vector<double> paired_changes(std::span<const double> base, std::span<const double> candidate) {
  std::vector<double> changes(std::min(base.size(), candidate.size()));
  for (size_t i = 0; i < changes.size(); i++) changes[i] = relative_change(base[i], candidate[i]);
  return changes;
}

}  // namespace

double median_paired_change(std::span<const double> base, std::span<const double> candidate) {
  return median(paired_changes(base, candidate));
}

Interval bootstrap_paired_change(std::span<const double> base, std::span<const double> candidate,
                                 const BootstrapOptions& options) {
  const std::vector<double> pairs = paired_changes(base, candidate);
  if (pairs.empty() || options.resamples == 0) return {};
  std::mt19937_64 rng(options.seed);
  std::uniform_int_distribution<size_t> pick(0, pairs.size() - 1);
  std::vector<double> r(pairs.size()), changes(options.resamples);
  for (double& change : changes) {
    for (double& x : r) x = pairs[pick(rng)];
    change = median(r);
  }
  return central(changes, options.confidence);
}

Interval bootstrap_relative_change(std::span<const double> base, std::span<const double> candidate,
                                   const BootstrapOptions& options) {
  if (base.empty() || candidate.empty() || options.resamples == 0) return {};
  std::mt19937_64 rng(options.seed);
  std::uniform_int_distribution<size_t> pick_base(0, base.size() - 1), pick_candidate(0, candidate.size() - 1);
  std::vector<double> b(base.size()), c(candidate.size()), changes(options.resamples);
  for (double& change : changes) {
    for (double& x : b) x = base[pick_base(rng)];
    for (double& x : c) x = candidate[pick_candidate(rng)];
    change = relative_change(median(b), median(c));
  }
  return central(changes, options.confidence);
}

}  // namespace lm::stats
