#include "engine/convergence.hpp"

#include <limits>

namespace lm::engine {

std::string_view stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::max_rounds: return "max-rounds";
    case StopReason::max_bytes: return "max-bytes";
    case StopReason::dirty_threshold: return "dirty-threshold";
    case StopReason::downtime_target: return "downtime-target";
  }
  return "unknown";
}

double ConvergencePolicy::expected_downtime_ms(const RoundProgress& p) {
  if (p.dirty_pages == 0) return 0;
  if (p.page_rate_per_s <= 0) return std::numeric_limits<double>::infinity();
  return double(p.dirty_pages) / p.page_rate_per_s * 1e3;
}

bool ConvergencePolicy::within_target(const RoundProgress& p) const {
  return config_.downtime_target_ms > 0 && expected_downtime_ms(p) <= config_.downtime_target_ms;
}

std::optional<StopReason> ConvergencePolicy::should_stop(const RoundProgress& p) const {
  // Cheapest-downtime reasons first: if the VM is already small enough, that
  // is why we stop, even if a limit was reached in the same round.
  if (within_target(p)) {
    const bool worth_a_round = config_.downtime_floor_ms > 0 && expected_downtime_ms(p) > config_.downtime_floor_ms &&
                               p.round_pages > 0 &&
                               double(p.dirty_pages) <= kRoundWorthShrink * double(p.round_pages);
    if (worth_a_round && !limit_reached(p)) return std::nullopt;
    return StopReason::downtime_target;
  }
  return limit_reached(p);
}

std::optional<StopReason> ConvergencePolicy::limit_reached(const RoundProgress& p) const {
  if (config_.dirty_pages_threshold > 0 && p.dirty_pages < config_.dirty_pages_threshold)
    return StopReason::dirty_threshold;
  if (config_.max_bytes_factor > 0 &&
      double(p.bytes_sent_total) > config_.max_bytes_factor * double(p.ram_bytes))
    return StopReason::max_bytes;
  if (p.rounds_done >= config_.max_rounds) return StopReason::max_rounds;
  return std::nullopt;
}

}  // namespace lm::engine
