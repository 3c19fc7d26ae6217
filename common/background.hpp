// Work that runs beside the caller's: a function started on a thread of its
// own, whose Result the caller collects when it needs it. The thread is
// always joined: by wait(), else by the destructor, so a caller that returns
// early (an error) never leaves the work running behind it, and whatever the
// work holds (a ptrace seize, a file) is released before the caller goes on.
//
//     Background<Buffers> buffers([&] { return make_buffers(n); });
//     ... the caller's own work ...
//     Buffers b = LM_TRY(buffers.wait());
#pragma once

#include <functional>
#include <optional>
#include <thread>
#include <utility>

#include "common/error.hpp"

namespace lm {

template <class T>
class Background {
 public:
  explicit Background(std::function<Result<T>()> work)
      : thread_([this, work = std::move(work)] { result_.emplace(work()); }) {}
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;
  ~Background() {
    if (thread_.joinable()) thread_.join();
  }

  // Joins the work and takes its result; call it once.
  Result<T> wait() {
    if (thread_.joinable()) thread_.join();
    return std::move(*result_);
  }

 private:
  std::optional<Result<T>> result_;  // before the thread: written by it, outlives it
  std::thread thread_;
};

}  // namespace lm
