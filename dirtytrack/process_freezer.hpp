// A ptrace hold on every thread of a process: seize and interrupt them all,
// keep them stopped, run system calls inside the process, and release it
// exactly as it was (registers, code bytes, pending signals).
//
// One holder per process: a second PTRACE_SEIZE on a traced thread fails, so
// the engine's stop-and-copy freeze and a tracker's remote system calls share
// one ProcessFreezer. ptrace binds to the *thread* that seized: call every
// method from the thread that called seize().
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

#include "common/error.hpp"

namespace lm::dt {

struct FreezeOptions {
  // How long to wait for each thread to reach its ptrace stop (a thread in
  // uninterruptible sleep stops only when it wakes).
  uint64_t stop_timeout_ms = 5000;
};

class ProcessFreezer {
 public:
  // Seizes and stops every thread of pid (threads created while seizing are
  // picked up). On error nothing stays attached.
  static Result<std::unique_ptr<ProcessFreezer>> seize(pid_t pid, FreezeOptions options = {});

  ProcessFreezer(const ProcessFreezer&) = delete;
  ProcessFreezer& operator=(const ProcessFreezer&) = delete;
  ~ProcessFreezer();  // release(), errors ignored

  pid_t pid() const { return pid_; }
  std::vector<pid_t> threads() const;
  bool frozen() const { return !released_; }

  // Runs one system call in the process (in one of its stopped threads, at a
  // `syscall` instruction of an executable mapping) and returns the kernel's
  // raw return value: >= 0 result, or -errno. The Result is an error only
  // when the injection itself failed (the process died, ptrace failed).
  Result<long> syscall(long nr, std::initializer_list<uint64_t> args = {});
  uint64_t syscalls_run() const { return syscalls_run_; }

  // Restores registers and code bytes, re-delivers signals that arrived while
  // stopped, and detaches every thread; the process runs on (unless
  // stop_on_release() is in force). Idempotent.
  Result<void> release();

  // Queues a SIGSTOP to every held thread, so that the process cannot run
  // again by accident: once ptrace lets go, by release() or because this
  // tracer died (SIGKILL included), each thread takes its SIGSTOP before it
  // executes an instruction and the process stays in a group stop (state T)
  // until someone sends SIGCONT or SIGKILL. Used from the moment another
  // copy of the process may run elsewhere. Idempotent.
  Result<void> stop_on_release();
  // Withdraws it: SIGCONT discards every pending stop signal (a rollback,
  // after which the process runs on). The process sees the SIGCONT only if
  // it handles that signal.
  Result<void> cancel_stop_on_release();
  bool stops_on_release() const { return stop_on_release_; }

 private:
  enum class StopKind { event, signal, syscall };
  struct Thread {
    pid_t tid;
    StopKind stop = StopKind::event;
    int pending_signal = 0;        // signal-delivery-stop we hold; given back at detach
    bool modified = false;         // registers changed by an injection
    user_regs_struct saved{};      // registers at the original stop
    user_regs_struct resume{};     // what to restore (syscall restart folded in)
  };

  explicit ProcessFreezer(pid_t pid, FreezeOptions options);
  Result<void> seize_all();
  Result<void> wait_stop(Thread& t);
  Result<int> wait_status(pid_t tid);
  Result<Thread*> injection_thread();
  Result<uint64_t> find_syscall_insn();
  Result<void> resume_until_syscall_stop(Thread& t);

  pid_t pid_;
  pid_t tracer_tid_;
  FreezeOptions options_;
  std::vector<Thread> threads_;
  std::vector<std::pair<pid_t, int>> requeue_signals_;  // suppressed during injection
  uint64_t syscall_insn_ = 0;
  bool poked_ = false;  // wrote a syscall instruction (no vdso): restore at release
  uint64_t poke_addr_ = 0;
  long poke_orig_ = 0;
  uint64_t syscalls_run_ = 0;
  bool released_ = false;
  bool stop_on_release_ = false;
};

}  // namespace lm::dt
