// The running guest (executable only): writer threads stepping through the
// workload kept in RAM, pause/resume at step boundaries, write-log epochs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "common/error.hpp"
#include "common/page.hpp"
#include "harness/guest/layout.hpp"

namespace lm::guest {

// One thread that writes memory (a RAM writer or the churn thread). Its
// epoch slot implements the write-log barrier: `active_epoch` is the epoch
// its current step began in (kIdle between steps, kEntering while it reads
// the epoch).
struct WorkerSlot {
  static constexpr uint64_t kIdle = ~0ull;
  static constexpr uint64_t kEntering = ~0ull - 1;
  std::atomic<uint64_t> active_epoch{kIdle};
  std::mutex log_mu;
  std::map<uint64_t, std::unordered_set<uint64_t>> logged;  // epoch -> page addresses
  std::map<uint64_t, std::vector<PageRange>> unmapped;       // epoch -> ranges unmapped or moved away
};

class WriteLog {
 public:
  static Result<std::unique_ptr<WriteLog>> open(const std::string& path);
  // One epoch: the pages written, then the ranges unmapped (or moved away).
  Result<void> append(uint64_t epoch, std::vector<uint64_t> pages, std::vector<PageRange> unmapped);
  ~WriteLog();

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

class GuestRuntime {
 public:
  GuestRuntime(RamView ram, std::unique_ptr<WriteLog> log);
  ~GuestRuntime();

  // Starts the writers (and `extra` workers, e.g. churn, each given its slot).
  void start(std::vector<std::function<void(WorkerSlot&)>> extra);
  void stop();
  // Resume: a frozen image may hold a step in progress per writer, and the
  // pages are only consistent with the version table once it is redone. Runs
  // the next step of every writer (which redoes it, being idempotent) before
  // the writers start, so that the first verify already passes.
  void finish_interrupted_steps();

  // --- called by workers ---
  // At a step boundary: blocks while paused; false once the guest stops.
  bool boundary(WorkerSlot& slot);
  // Waits until `deadline_ns` (CLOCK_MONOTONIC) unless paused/stopped first.
  void sleep_until(uint64_t deadline_ns);
  // Epoch barrier around one step: begin returns the step's epoch.
  uint64_t begin_step(WorkerSlot& slot);
  void log_page(WorkerSlot& slot, uint64_t epoch, uint64_t addr);
  // A mapping's end of life in this epoch (munmap, moved away by mremap,
  // heap shrunk): a page written there earlier has nothing left to migrate.
  void log_unmap(WorkerSlot& slot, uint64_t epoch, PageRange range);
  void end_step(WorkerSlot& slot);
  bool logging() const { return log_ != nullptr; }

  // --- called by the control thread ---
  void pause();
  void resume();
  bool paused() const { return user_paused_; }
  // Closes the current epoch (waits for steps begun in it, appends it to the
  // log) and returns the new epoch.
  Result<uint64_t> next_epoch();
  uint64_t epoch() const { return epoch_.load(); }
  Result<uint64_t> verify();
  const RamView& ram() const { return ram_; }
  // A worker slot for writes made by the control thread itself (heap churn).
  WorkerSlot& control_slot() { return control_slot_; }

 private:
  void writer_main(uint32_t index, WorkerSlot& slot);
  void step(uint32_t index, WorkerSlot& slot);

  RamView ram_;
  WorkloadConfig cfg_;
  std::unique_ptr<WriteLog> log_;
  std::atomic<uint64_t> epoch_{0};
  std::vector<std::unique_ptr<WorkerSlot>> slots_;
  WorkerSlot control_slot_;
  std::vector<std::thread> threads_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> pause_requested_{false};
  unsigned paused_workers_ = 0;
  unsigned running_workers_ = 0;
  uint64_t pause_generation_ = 0;  // (mu_) bumps on every resume: writers restart their rate clock
  bool user_paused_ = false;
};

}  // namespace lm::guest
