// A request to stop a running migration, made from another thread (a signal
// watcher, a test, the runner's deadline). Each side checks it between steps
// and its waits end on it at once (token()); what stopping means depends on
// the phase it is in (a source before the commit is thawed; a VM the
// destination already runs is not abandoned: see the phase diagrams in
// engine/source.hpp and engine/destination.hpp).
#pragma once

#include <cerrno>
#include <mutex>
#include <stop_token>
#include <string>

#include "common/error.hpp"

namespace lm::engine {

class Cancel {
 public:
  // The first reason is kept ("interrupted by SIGINT"). Runs the callbacks
  // registered on token() (std::stop_callback) on this thread, after the
  // reason is set.
  void request(std::string reason) {
    {
      std::lock_guard g(lock_);
      if (reason_set_) return;
      reason_ = std::move(reason);
      reason_set_ = true;
    }
    stop_.request_stop();
  }
  bool requested() const { return stop_.stop_requested(); }
  // For waits that end at once on a cancel: pass it to Channel::recv,
  // Listener::accept or accept_session, or register a std::stop_callback on
  // it (which unregisters when it is destroyed).
  std::stop_token token() const { return stop_.get_token(); }
  std::string reason() const {
    std::lock_guard g(lock_);
    return reason_;
  }
  // The error a cancelled wait returns: the reason, with ECANCELED.
  Error error() const { return Error{ECANCELED, reason()}; }

 private:
  std::stop_source stop_;
  mutable std::mutex lock_;
  bool reason_set_ = false;
  std::string reason_;
};

}  // namespace lm::engine
