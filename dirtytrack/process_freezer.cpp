#include "dirtytrack/process_freezer.hpp"

#include <dirent.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "common/clock.hpp"
#include "dirtytrack/maps.hpp"

namespace lm::dt {

namespace {

// Kernel-internal restart codes seen in rax when a syscall was interrupted.
constexpr long kERestartSys = 512;
constexpr long kERestartNoIntr = 513;
constexpr long kERestartNoHand = 514;
constexpr long kERestartRestartBlock = 516;

pid_t gettid_now() { return pid_t(::syscall(SYS_gettid)); }

std::vector<pid_t> list_tasks(pid_t pid) {
  std::vector<pid_t> out;
  DIR* d = ::opendir(strf("/proc/%d/task", pid).c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    out.push_back(pid_t(std::atoi(e->d_name)));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// The registers that make a thread stopped inside an interrupted system call
// re-issue it when it runs again, whatever stop it resumes from (the kernel
// only applies its own restart logic when resuming from a signal stop, and
// an injected call leaves the thread in a syscall-exit stop).
user_regs_struct restart_folded(const user_regs_struct& r) {
  user_regs_struct out = r;
  if (long(r.orig_rax) < 0) return out;
  switch (-long(r.rax)) {
    case kERestartSys:
    case kERestartNoIntr:
    case kERestartNoHand:
      out.rax = r.orig_rax;
      out.rip -= 2;
      out.orig_rax = uint64_t(-1);
      break;
    case kERestartRestartBlock:
      out.rax = SYS_restart_syscall;
      out.rip -= 2;
      out.orig_rax = uint64_t(-1);
      break;
    default:
      break;
  }
  return out;
}

}  // namespace

ProcessFreezer::ProcessFreezer(pid_t pid, FreezeOptions options)
    : pid_(pid), tracer_tid_(gettid_now()), options_(options) {}

ProcessFreezer::~ProcessFreezer() { (void)release(); }

std::vector<pid_t> ProcessFreezer::threads() const {
  std::vector<pid_t> out;
  for (const auto& t : threads_) out.push_back(t.tid);
  return out;
}

Result<std::unique_ptr<ProcessFreezer>> ProcessFreezer::seize(pid_t pid, FreezeOptions options) {
  if (pid <= 0) return Error::msg(strf("pid %d: not a process id", pid));
  if (pid == ::getpid()) return Error::msg(strf("pid %d: cannot freeze this process itself", pid));
  std::unique_ptr<ProcessFreezer> f(new ProcessFreezer(pid, options));
  auto r = f->seize_all();
  if (!r) {
    (void)f->release();
    return std::move(r).error();
  }
  return f;
}

Result<void> ProcessFreezer::seize_all() {
  // Seize until the thread list is stable: stopped threads cannot clone, so
  // a second pass that finds nothing new means every thread is held.
  for (int pass = 0; pass < 100; pass++) {
    std::vector<pid_t> tids = list_tasks(pid_);
    if (tids.empty()) {
      if (::kill(pid_, 0) != 0 && errno == ESRCH) return Error::sys(ESRCH, strf("pid %d", pid_));
      return Error::msg(strf("pid %d: no threads listed in /proc/%d/task", pid_, pid_));
    }
    size_t before = threads_.size();
    for (pid_t tid : tids) {
      bool known = std::any_of(threads_.begin(), threads_.end(), [&](const Thread& t) { return t.tid == tid; });
      if (known) continue;
      if (::ptrace(PTRACE_SEIZE, tid, nullptr, (void*)(long)PTRACE_O_TRACESYSGOOD) != 0) {
        int err = errno;
        if (err == ESRCH && tid != pid_) continue;  // the thread exited meanwhile
        if (err == EPERM)
          return Error::sys(err, strf("pid %d: PTRACE_SEIZE thread %d (already traced, a kernel thread, or "
                                      "not permitted: needs CAP_SYS_PTRACE or the same uid; see Yama "
                                      "ptrace_scope)",
                                      pid_, tid));
        return Error::sys(err, strf("pid %d: PTRACE_SEIZE thread %d", pid_, tid));
      }
      threads_.push_back(Thread{tid});
      if (::ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) != 0) {
        int err = errno;
        threads_.pop_back();
        ::ptrace(PTRACE_DETACH, tid, nullptr, nullptr);
        if (err == ESRCH && tid != pid_) continue;
        return Error::sys(err, strf("pid %d: PTRACE_INTERRUPT thread %d", pid_, tid));
      }
      auto w = wait_stop(threads_.back());
      if (!w) {
        // The thread exited before stopping: forget it (the main thread's
        // exit means the process is gone).
        if (w.error().code == ESRCH && tid != pid_) {
          threads_.pop_back();
          continue;
        }
        return std::move(w).error();
      }
    }
    if (threads_.size() == before && pass > 0) return ok();
  }
  return Error::msg(strf("pid %d: thread list never settled while seizing", pid_));
}

Result<int> ProcessFreezer::wait_status(pid_t tid) {
  uint64_t deadline = now_ns() + options_.stop_timeout_ms * 1000000ull;
  unsigned spins = 0;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(tid, &status, __WALL | WNOHANG);
    if (r == tid) return status;
    if (r < 0) {
      if (errno == EINTR) continue;
      return Error::sys(errno == ECHILD ? ESRCH : errno, strf("pid %d: waitpid thread %d", pid_, tid));
    }
    if (now_ns() > deadline)
      return Error::sys(ETIMEDOUT, strf("pid %d: thread %d did not stop within %llu ms (uninterruptible sleep?)",
                                        pid_, tid, (unsigned long long)options_.stop_timeout_ms));
    if (++spins < 200) {
      sched_yield();
    } else {
      timespec ts{0, 20000};
      nanosleep(&ts, nullptr);
    }
  }
}

Result<void> ProcessFreezer::wait_stop(Thread& t) {
  for (;;) {
    int status = LM_TRY(wait_status(t.tid));
    if (WIFEXITED(status) || WIFSIGNALED(status))
      return Error::sys(ESRCH, strf("pid %d: thread %d exited while being stopped", pid_, t.tid));
    if (!WIFSTOPPED(status)) continue;
    int sig = WSTOPSIG(status);
    unsigned event = unsigned(status) >> 16;
    if (event == PTRACE_EVENT_STOP) {
      t.stop = StopKind::event;  // the interrupt (or a group stop): held
      return ok();
    }
    if (sig == (SIGTRAP | 0x80)) {
      t.stop = StopKind::syscall;
      return ok();
    }
    // A signal arrived before our interrupt: hold the thread in its
    // signal-delivery stop and hand the signal back at detach.
    t.stop = StopKind::signal;
    t.pending_signal = sig;
    return ok();
  }
}

Result<ProcessFreezer::Thread*> ProcessFreezer::injection_thread() {
  for (auto& t : threads_)
    if (t.stop != StopKind::signal) return &t;
  // Every thread sits in a signal-delivery stop: take the first, keep its
  // signal for later and let it reach the pending interrupt stop.
  Thread& t = threads_.front();
  requeue_signals_.push_back({t.tid, t.pending_signal});
  t.pending_signal = 0;
  if (::ptrace(PTRACE_INTERRUPT, t.tid, nullptr, nullptr) != 0 || ::ptrace(PTRACE_CONT, t.tid, nullptr, nullptr) != 0)
    return Error::from_errno(strf("pid %d: resume thread %d to its interrupt stop", pid_, t.tid));
  LM_TRY(wait_stop(t));
  if (t.stop == StopKind::signal)
    return Error::msg(strf("pid %d: thread %d keeps receiving signals; cannot inject", pid_, t.tid));
  return &t;
}

Result<uint64_t> ProcessFreezer::find_syscall_insn() {
  if (syscall_insn_) return syscall_insn_;
  MappingList maps = LM_TRY(read_maps(pid_));
  for (const auto& m : maps) {
    if (m.kind != MappingKind::vdso || !m.read) continue;
    std::vector<unsigned char> code(m.bytes());
    iovec local{code.data(), code.size()};
    iovec remote{reinterpret_cast<void*>(m.start), code.size()};
    ssize_t n = ::process_vm_readv(pid_, &local, 1, &remote, 1, 0);
    for (ssize_t i = 0; i + 1 < n; i++) {
      if (code[size_t(i)] == 0x0f && code[size_t(i) + 1] == 0x05) {
        syscall_insn_ = m.start + uint64_t(i);
        return syscall_insn_;
      }
    }
  }
  // No vdso (vdso=0 on the kernel command line): write a syscall instruction
  // at the start of an executable mapping; release() puts the bytes back.
  for (const auto& m : maps) {
    if (!m.exec) continue;
    errno = 0;
    long word = ::ptrace(PTRACE_PEEKTEXT, pid_, (void*)m.start, nullptr);
    if (errno != 0) continue;
    long patched = (word & ~0xffffL) | 0x050f;
    if (::ptrace(PTRACE_POKETEXT, pid_, (void*)m.start, (void*)patched) != 0) continue;
    poked_ = true;
    poke_addr_ = m.start;
    poke_orig_ = word;
    syscall_insn_ = m.start;
    return syscall_insn_;
  }
  return Error::msg(strf("pid %d: no executable mapping to run a system call from", pid_));
}

Result<void> ProcessFreezer::resume_until_syscall_stop(Thread& t) {
  for (;;) {
    if (::ptrace(PTRACE_SYSCALL, t.tid, nullptr, nullptr) != 0)
      return Error::from_errno(strf("pid %d: PTRACE_SYSCALL thread %d", pid_, t.tid));
    int status = LM_TRY(wait_status(t.tid));
    if (WIFEXITED(status) || WIFSIGNALED(status))
      return Error::sys(ESRCH, strf("pid %d: thread %d exited during a remote system call", pid_, t.tid));
    if (!WIFSTOPPED(status)) continue;
    int sig = WSTOPSIG(status);
    if (sig == (SIGTRAP | 0x80)) {
      t.stop = StopKind::syscall;
      return ok();
    }
    if ((unsigned(status) >> 16) == PTRACE_EVENT_STOP) continue;  // a late interrupt or group stop
    // A signal arrived while the thread ran our call: suppress it now and
    // queue it again when we let go.
    requeue_signals_.push_back({t.tid, sig});
  }
}

Result<long> ProcessFreezer::syscall(long nr, std::initializer_list<uint64_t> args) {
  if (released_) return Error::msg(strf("pid %d: remote syscall %ld after release", pid_, nr));
  if (gettid_now() != tracer_tid_)
    return Error::msg(strf("pid %d: remote syscall %ld from thread %d, but thread %d holds the ptrace", pid_, nr,
                           gettid_now(), tracer_tid_));
  if (args.size() > 6) return Error::msg("a system call takes at most 6 arguments");
  uint64_t insn = LM_TRY(find_syscall_insn());
  Thread* t = LM_TRY(injection_thread());
  if (!t->modified) {
    if (::ptrace(PTRACE_GETREGS, t->tid, nullptr, &t->saved) != 0)
      return Error::from_errno(strf("pid %d: PTRACE_GETREGS thread %d", pid_, t->tid));
    t->resume = restart_folded(t->saved);
  }
  user_regs_struct regs = t->saved;
  uint64_t a[6] = {};
  std::copy(args.begin(), args.end(), a);
  regs.rip = insn;
  regs.rax = uint64_t(nr);
  regs.orig_rax = uint64_t(-1);  // no syscall restart on the way out of this stop
  regs.rdi = a[0];
  regs.rsi = a[1];
  regs.rdx = a[2];
  regs.r10 = a[3];
  regs.r8 = a[4];
  regs.r9 = a[5];
  if (::ptrace(PTRACE_SETREGS, t->tid, nullptr, &regs) != 0)
    return Error::from_errno(strf("pid %d: PTRACE_SETREGS thread %d", pid_, t->tid));
  t->modified = true;
  LM_TRY(resume_until_syscall_stop(*t));  // entry
  LM_TRY(resume_until_syscall_stop(*t));  // exit
  user_regs_struct out{};
  if (::ptrace(PTRACE_GETREGS, t->tid, nullptr, &out) != 0)
    return Error::from_errno(strf("pid %d: PTRACE_GETREGS thread %d", pid_, t->tid));
  if (long(out.orig_rax) != nr)
    return Error::msg(strf("pid %d: remote syscall %ld: thread %d stopped in syscall %ld instead", pid_, nr, t->tid,
                           long(out.orig_rax)));
  syscalls_run_++;
  return long(out.rax);
}

Result<void> ProcessFreezer::stop_on_release() {
  if (released_) return Error::msg(strf("pid %d: stop on release after release", pid_));
  if (stop_on_release_) return ok();
  // One SIGSTOP per thread, in its own queue: a thread that ptrace lets go
  // dequeues its own stop on the way back to user space, whichever thread
  // the kernel would have picked for a process-wide signal.
  for (const auto& t : threads_)
    if (::syscall(SYS_tgkill, pid_, t.tid, SIGSTOP) != 0 && errno != ESRCH)
      return Error::from_errno(strf("pid %d: queue SIGSTOP to thread %d", pid_, t.tid));
  stop_on_release_ = true;
  return ok();
}

Result<void> ProcessFreezer::cancel_stop_on_release() {
  if (!stop_on_release_) return ok();
  if (::kill(pid_, SIGCONT) != 0 && errno != ESRCH)
    return Error::from_errno(strf("pid %d: SIGCONT to withdraw the queued stop", pid_));
  // A stop the freezer suppressed during a remote call would be queued again at release.
  std::erase_if(requeue_signals_, [](const auto& p) { return p.second == SIGSTOP; });
  stop_on_release_ = false;
  return ok();
}

Result<void> ProcessFreezer::release() {
  if (released_) return ok();
  released_ = true;
  std::optional<Error> first;
  auto note = [&](Error e) {
    if (!first) first = std::move(e);
  };
  if (gettid_now() != tracer_tid_)
    note(Error::msg(strf("pid %d: release from thread %d, but thread %d holds the ptrace", pid_, gettid_now(),
                         tracer_tid_)));
  if (poked_ && ::ptrace(PTRACE_POKETEXT, pid_, (void*)poke_addr_, (void*)poke_orig_) != 0)
    note(Error::from_errno(strf("pid %d: restore code bytes at 0x%llx", pid_, (unsigned long long)poke_addr_)));
  for (auto& t : threads_) {
    if (t.modified && ::ptrace(PTRACE_SETREGS, t.tid, nullptr, &t.resume) != 0 && errno != ESRCH)
      note(Error::from_errno(strf("pid %d: restore registers of thread %d", pid_, t.tid)));
    if (::ptrace(PTRACE_DETACH, t.tid, nullptr, (void*)(long)t.pending_signal) != 0 && errno != ESRCH)
      note(Error::from_errno(strf("pid %d: PTRACE_DETACH thread %d", pid_, t.tid)));
  }
  for (auto [tid, sig] : requeue_signals_) ::syscall(SYS_tgkill, pid_, tid, sig);
  threads_.clear();
  if (first) return std::move(*first);
  return ok();
}

}  // namespace lm::dt
