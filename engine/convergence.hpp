// When pre-copy stops iterating: a small policy object (the brief's four stop
// criteria), consulted after every round; the first criterion met is the
// reason reported in the results.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace lm::engine {

enum class StopReason {
  max_rounds,        // rounds reached the maximum
  max_bytes,         // bytes sent exceed a multiple of the VM's size
  dirty_threshold,   // pages dirtied in the last round fell below a threshold
  downtime_target,   // expected downtime fell below the target
};

std::string_view stop_reason_name(StopReason r);

struct ConvergenceConfig {
  unsigned max_rounds = 30;             // pre-copy rounds including round 0
  double max_bytes_factor = 0;          // 0: off; else stop when sent > factor × RAM
  uint64_t dirty_pages_threshold = 0;   // 0: off
  double downtime_target_ms = 300;      // 0: off (QEMU's default downtime-limit is 300 ms)
  // Within the target, pre-copy goes on while a round pays for itself: while
  // the last round left at most half the pages it sent (a ms more of total
  // time then buys at least half a ms less downtime) and the expected
  // downtime is above this floor. 0: stop as soon as the target is met.
  double downtime_floor_ms = 20;
};

// A round left at most this share of the pages it sent: one more is worth it.
inline constexpr double kRoundWorthShrink = 0.5;

struct RoundProgress {
  unsigned rounds_done = 0;          // completed rounds, round 0 included
  uint64_t dirty_pages = 0;          // pages dirtied during the last round (left to send)
  uint64_t round_pages = 0;          // pages the last round sent (0: unknown)
  uint64_t bytes_sent_total = 0;     // on the wire so far
  uint64_t ram_bytes = 0;            // the VM's size
  double page_rate_per_s = 0;        // pages delivered per second, measured (after compression)
};

class ConvergencePolicy {
 public:
  explicit ConvergencePolicy(ConvergenceConfig config) : config_(config) {}

  // Expected downtime if we stopped now: pages left / measured page rate.
  static double expected_downtime_ms(const RoundProgress& p);
  // The expected downtime meets the target (never when the target is off).
  bool within_target(const RoundProgress& p) const;
  std::optional<StopReason> should_stop(const RoundProgress& p) const;
  const ConvergenceConfig& config() const { return config_; }

 private:
  // The criteria other than the downtime target: threshold, bytes, rounds.
  std::optional<StopReason> limit_reached(const RoundProgress& p) const;
  ConvergenceConfig config_;
};

}  // namespace lm::engine
