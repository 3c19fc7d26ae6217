// The threads a frozen or faulting VM waits for run urgent while it waits:
// post-copy's fault path (the destination reading faults and installing
// replies, the source answering requests) and the source's stop-and-copy.
// Urgent is SCHED_FIFO at the lowest real-time priority, else (no
// CAP_SYS_NICE, or a cgroup without real-time time) nice -20 with the
// shortest fair slice. Measured on 2 cores, 1 GiB guest writing at full
// speed (configs/postcopy.toml), fault p99: 1.5-4.4 ms at nice -20 (a
// waking fair thread waited for the 4 ms tick behind the pushers), 1.1-4.0
// ms with the short slice too, 0.22-0.38 ms as SCHED_FIFO (docs/postcopy.md).
// Threads the urgent one starts are normal: the kernel resets them.
#pragma once

#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace lm::engine {

// struct sched_attr (<linux/sched/types.h> clashes with glibc's <sched.h>).
struct SchedAttr {
  uint32_t size = sizeof(SchedAttr);
  uint32_t policy = SCHED_OTHER;
  uint64_t flags = 0;
  int32_t nice = 0;
  uint32_t priority = 0;
  uint64_t runtime_ns = 0;  // SCHED_OTHER: the fair slice (0: the default; kernel 6.12+)
  uint64_t deadline_ns = 0, period_ns = 0;
  uint32_t util_min = 0, util_max = 0;
};
inline constexpr uint64_t kSchedResetOnFork = 1;  // SCHED_FLAG_RESET_ON_FORK
inline constexpr uint64_t kUrgentSliceNs = 100'000;  // the kernel's shortest

inline bool get_this_thread_sched(SchedAttr& a) { return syscall(SYS_sched_getattr, 0, &a, sizeof a, 0) == 0; }
inline bool set_this_thread_sched(SchedAttr a) {
  a.size = sizeof a;
  return syscall(SYS_sched_setattr, 0, &a, 0) == 0;
}

// False when the host refuses both: the thread runs on as it was.
inline bool make_this_thread_urgent() {
  SchedAttr fifo;
  fifo.policy = SCHED_FIFO;
  fifo.priority = 1;
  fifo.flags = kSchedResetOnFork;
  if (set_this_thread_sched(fifo)) return true;
  SchedAttr fair;
  fair.nice = -20;
  fair.flags = kSchedResetOnFork;
  fair.runtime_ns = kUrgentSliceNs;
  if (set_this_thread_sched(fair)) return true;
  fair.runtime_ns = 0;  // a kernel without custom slices
  return set_this_thread_sched(fair);
}

// Urgent from construction to destruction, then back to the thread's own scheduling.
class UrgentScope {
 public:
  UrgentScope() {
    restore_ = get_this_thread_sched(before_) && make_this_thread_urgent();
  }
  ~UrgentScope() {
    if (restore_) (void)set_this_thread_sched(before_);
  }
  UrgentScope(const UrgentScope&) = delete;
  UrgentScope& operator=(const UrgentScope&) = delete;

 private:
  SchedAttr before_;
  bool restore_ = false;
};

}  // namespace lm::engine
