// SIGINT, SIGTERM and SIGHUP stop a migration command cleanly instead of
// killing it: they are blocked in every thread from the start of main()
// (threads inherit the mask) and read by one watcher thread, which turns the
// first of them into Cancel::request("interrupted by SIGINT"). The engine
// then rolls back or finishes according to its phase, and the command's own
// destructors end its children and remove its files.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "engine/cancel.hpp"
#include "engine/source.hpp"

namespace lm::cmd {

// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread. Call first in
// main(), before any thread exists. Programs started with lm::Subprocess
// (guests, redis, bench receivers) begin with an empty mask and default
// dispositions; a plain fork() without exec gets the mask main() started
// with back (pthread_atfork). Either way children still die of these signals.
void block_stop_signals();

// "SIGINT" for SIGINT; "signal N" for one without a name.
std::string signal_name(int sig);

class SignalWatcher {
 public:
  // Starts the watcher thread: the first stop signal requests `cancel`
  // ("interrupted by SIGINT"); later ones are read and ignored.
  static Result<std::unique_ptr<SignalWatcher>> start(std::shared_ptr<engine::Cancel> cancel);
  ~SignalWatcher();  // stops and joins the thread
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

 private:
  SignalWatcher() = default;
  void watch();
  std::shared_ptr<engine::Cancel> cancel_;
  UniqueFd signals_;  // signalfd of the three
  UniqueFd stop_;     // eventfd: the destructor's wake-up
  std::thread thread_;
};

// Fault injection (tests): with LM_FI_SIGNAL_AT=<source phase>:<SIGNAME>
// (e.g. "precopy:SIGTERM") in the environment, a hook for
// SourceOptions::on_phase that sends this process that signal on entering
// that phase and returns once `cancel` has seen it, so the phase it hits is
// deterministic. Empty without the variable; an error if it is malformed.
Result<std::function<void(engine::SourcePhase)>> signal_at_phase_from_env(std::shared_ptr<engine::Cancel> cancel);

}  // namespace lm::cmd
