#include "harness/signals.hpp"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>

#include "common/strf.hpp"

namespace lm::cmd {

namespace {

constexpr int kStopSignals[] = {SIGINT, SIGTERM, SIGHUP};

sigset_t stop_signal_set() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kStopSignals) sigaddset(&set, s);
  return set;
}

// The mask main() started with, for children: the one piece of process-wide
// state a signal mask needs (written once, before any thread exists).
sigset_t g_mask_at_start;

void restore_mask_in_child() { pthread_sigmask(SIG_SETMASK, &g_mask_at_start, nullptr); }

}  // namespace

void block_stop_signals() {
  sigset_t set = stop_signal_set();
  pthread_sigmask(SIG_BLOCK, &set, &g_mask_at_start);
  pthread_atfork(nullptr, nullptr, restore_mask_in_child);
}

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : strf("signal %d", sig);
}

Result<std::unique_ptr<SignalWatcher>> SignalWatcher::start(std::shared_ptr<engine::Cancel> cancel) {
  std::unique_ptr<SignalWatcher> w(new SignalWatcher());
  w->cancel_ = std::move(cancel);
  sigset_t set = stop_signal_set();
  w->signals_.reset(signalfd(-1, &set, SFD_CLOEXEC));
  if (!w->signals_.valid()) return Error::from_errno("signalfd for SIGINT, SIGTERM, SIGHUP");
  w->stop_.reset(eventfd(0, EFD_CLOEXEC));
  if (!w->stop_.valid()) return Error::from_errno("eventfd for the signal watcher");
  w->thread_ = std::thread([raw = w.get()] { raw->watch(); });
  return w;
}

SignalWatcher::~SignalWatcher() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof one);
    thread_.join();
  }
}

void SignalWatcher::watch() {
  for (;;) {
    pollfd p[2] = {{signals_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents) return;
    signalfd_siginfo info{};
    if (::read(signals_.get(), &info, sizeof info) == ssize_t(sizeof info))
      cancel_->request("interrupted by " + signal_name(int(info.ssi_signo)));
  }
}

Result<std::function<void(engine::SourcePhase)>> signal_at_phase_from_env(std::shared_ptr<engine::Cancel> cancel) {
  const char* spec = std::getenv("LM_FI_SIGNAL_AT");
  if (!spec || !*spec) return std::function<void(engine::SourcePhase)>();
  std::string s = spec;
  auto colon = s.find(':');
  std::string phase = s.substr(0, colon), name = colon == std::string::npos ? "" : s.substr(colon + 1);
  int sig = 0;
  for (int candidate : kStopSignals)
    if (signal_name(candidate) == name) sig = candidate;
  if (sig == 0)
    return Error::msg(strf("LM_FI_SIGNAL_AT='%s': expected <source phase>:<SIGINT|SIGTERM|SIGHUP>", spec));
  return std::function<void(engine::SourcePhase)>([phase, sig, cancel](engine::SourcePhase p) {
    if (engine::source_phase_name(p) != phase) return;
    ::kill(::getpid(), sig);  // to the process: the watcher thread reads it, not this one
    // Until the watcher cancelled (at most 2 s): the phase then sees it.
    std::mutex lock;
    std::condition_variable_any cancelled;
    std::unique_lock hold(lock);
    cancelled.wait_for(hold, cancel->token(), std::chrono::seconds(2), [] { return false; });
  });
}

}  // namespace lm::cmd
