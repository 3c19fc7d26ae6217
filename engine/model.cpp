#include "engine/model.hpp"

#include <algorithm>
#include <cmath>

namespace lm::engine {

namespace {

// (1 − x^(k)) / (1 − x), the sum of x^0..x^(k−1); k when x == 1.
double geometric_sum(double x, unsigned k) {
  if (std::fabs(1.0 - x) < 1e-12) return double(k);
  return (1.0 - std::pow(x, double(k))) / (1.0 - x);
}

}  // namespace

ModelPrediction predict(const ModelInput& in) {
  ModelPrediction out;
  const double r = in.page_bytes * in.dirty_pages_per_s / in.link_bytes_per_s;
  const double m = std::max(1u, in.vms);
  const double effective = in.multi == MultiVm::parallel ? m * r : r;
  out.ratio = effective;
  out.converges = effective < 1.0;

  // n = min(max(ceil(log_r(V_th/Vm)), n_min), n_max); with no dirtying one round suffices,
  // and a ratio >= 1 never reaches the threshold.
  unsigned n = in.max_rounds;
  if (effective <= 0.0 || in.vm_bytes <= in.threshold_bytes) {
    n = 0;
  } else if (effective < 1.0 && in.threshold_bytes > 0) {
    double rounds = std::ceil(std::log(in.threshold_bytes / in.vm_bytes) / std::log(effective));
    n = unsigned(std::min(std::max(rounds, 0.0), double(in.max_rounds)));
  }
  n = std::max(n, std::min(in.min_rounds, in.max_rounds));
  out.rounds = n;

  const double one = in.vm_bytes / in.link_bytes_per_s;  // Vm/R
  if (m <= 1) {
    out.total_s = one * geometric_sum(r, n + 1) + in.resume_s;
    out.downtime_s = std::pow(r, n) * one + in.resume_s;
  } else if (in.multi == MultiVm::serial) {
    out.total_s = m * (one * geometric_sum(r, n + 1) + in.resume_s);
    out.downtime_s = std::pow(r, n) * one + in.resume_s;
  } else if (in.multi == MultiVm::serial_correlated) {
    out.total_s = m * one * geometric_sum(r, n + 1) + in.resume_s;
    out.downtime_s = one * std::pow(r, n) + (m - 1) * one * geometric_sum(r, n + 1) + in.resume_s;
  } else {
    out.total_s = m * one * geometric_sum(effective, n + 1) + in.resume_s;
    out.downtime_s = m * one * std::pow(effective, n) + in.resume_s;
  }
  return out;
}

}  // namespace lm::engine
