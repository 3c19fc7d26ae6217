// A request to stop a running migration, made from another thread (a signal
// watcher, a test, the runner's deadline). Each side checks it wherever it
// waits; what stopping means depends on the phase it is in (a source before
// the commit is thawed; a VM the destination already runs is not abandoned:
// see the phase diagrams in engine/source.hpp and engine/destination.hpp).
#pragma once

#include <atomic>
#include <cerrno>
#include <mutex>
#include <string>

#include "common/error.hpp"

namespace lm::engine {

class Cancel {
 public:
  // The first reason is kept ("interrupted by SIGINT").
  void request(std::string reason) {
    std::lock_guard g(lock_);
    if (requested_.load(std::memory_order_relaxed)) return;
    reason_ = std::move(reason);
    requested_.store(true, std::memory_order_release);
  }
  bool requested() const { return requested_.load(std::memory_order_acquire); }
  std::string reason() const {
    std::lock_guard g(lock_);
    return reason_;
  }
  // The error a cancelled wait returns: the reason, with ECANCELED.
  Error error() const { return Error{ECANCELED, reason()}; }

 private:
  std::atomic<bool> requested_{false};
  mutable std::mutex lock_;
  std::string reason_;
};

}  // namespace lm::engine
