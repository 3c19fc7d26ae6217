// Auto-converge: slow the source process down when it dirties memory faster
// than the link drains it. Two mechanisms, chosen at creation:
//  - a CPU cgroup we create and move the process into, with a CFS quota
//    (cgroup v2 cpu.max, or cgroup v1 cpu.cfs_quota_us where the cpu
//    controller is still on v1, as on the development machines);
//  - otherwise a SIGSTOP/SIGCONT duty cycle from a helper thread.
// release() always leaves the process running and where it was.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "common/error.hpp"

namespace lm::engine {

enum class ThrottleMechanism { cgroup_v2, cgroup_v1, signals };
std::string_view throttle_mechanism_name(ThrottleMechanism m);

class Throttler {
 public:
  // Tries a cgroup first; falls back to signals. `allow_cgroup` = false forces signals.
  static Result<std::unique_ptr<Throttler>> create(pid_t pid, bool allow_cgroup = true);
  ~Throttler();
  Throttler(const Throttler&) = delete;
  Throttler& operator=(const Throttler&) = delete;

  // Percent of the time the process may NOT run (0 = unthrottled, max 99).
  Result<void> set_percent(unsigned percent);
  unsigned percent() const { return percent_; }
  // Periods in which the process was held back so far: the cgroup's
  // nr_throttled, or the duty cycle's stop count.
  Result<uint64_t> throttled_periods() const;
  ThrottleMechanism mechanism() const { return mechanism_; }
  // Unthrottles, moves the process back to its cgroup, removes ours.
  Result<void> release();

 private:
  Throttler(pid_t pid, ThrottleMechanism m) : pid_(pid), mechanism_(m) {}
  Result<void> setup_cgroup(const std::string& mount, ThrottleMechanism m);
  void duty_cycle_loop();

  pid_t pid_;
  ThrottleMechanism mechanism_;
  unsigned percent_ = 0;
  std::string cgroup_dir_;       // ours
  std::string original_procs_;   // cgroup.procs of where the process was
  std::atomic<unsigned> duty_percent_{0};
  std::atomic<bool> duty_stop_{false};
  std::atomic<uint64_t> duty_stops_{0};
  std::thread duty_thread_;
  bool released_ = false;
};

}  // namespace lm::engine
