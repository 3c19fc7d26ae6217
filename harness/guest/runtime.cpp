#include "harness/guest/runtime.hpp"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "common/clock.hpp"

namespace lm::guest {

Result<std::unique_ptr<WriteLog>> WriteLog::open(const std::string& path) {
  auto log = std::make_unique<WriteLog>();
  log->path_ = path;
  log->file_ = std::fopen(path.c_str(), "w");
  if (!log->file_) return Error::from_errno(strf("create write log %s", path.c_str()));
  return log;
}

WriteLog::~WriteLog() {
  if (file_) std::fclose(file_);
}

Result<void> WriteLog::append(uint64_t epoch, std::vector<uint64_t> pages, std::vector<PageRange> unmapped) {
  std::sort(pages.begin(), pages.end());
  std::fprintf(file_, "epoch %lu pages %zu\n", (unsigned long)epoch, pages.size());
  for (uint64_t p : pages) std::fprintf(file_, "0x%lx\n", (unsigned long)p);
  for (const auto& r : unmapped)
    std::fprintf(file_, "unmapped 0x%lx 0x%lx\n", (unsigned long)r.start, (unsigned long)r.end);
  if (std::fflush(file_) != 0 || std::ferror(file_)) return Error::from_errno(strf("write log %s", path_.c_str()));
  return ok();
}

GuestRuntime::GuestRuntime(RamView ram, std::unique_ptr<WriteLog> log)
    : ram_(ram), cfg_(ram.config()), log_(std::move(log)) {}

GuestRuntime::~GuestRuntime() { stop(); }

void GuestRuntime::start(std::vector<std::function<void(WorkerSlot&)>> extra) {
  std::lock_guard lock(mu_);
  for (uint32_t t = 0; t < cfg_.threads; t++) {
    slots_.push_back(std::make_unique<WorkerSlot>());
    WorkerSlot& slot = *slots_.back();
    running_workers_++;
    threads_.emplace_back([this, t, &slot] {
      pthread_setname_np(pthread_self(), strf("writer-%u", t).c_str());
      writer_main(t, slot);
      std::lock_guard l(mu_);
      running_workers_--;
      cv_.notify_all();
    });
  }
  for (auto& fn : extra) {
    slots_.push_back(std::make_unique<WorkerSlot>());
    WorkerSlot& slot = *slots_.back();
    running_workers_++;
    threads_.emplace_back([this, fn = std::move(fn), &slot] {
      fn(slot);
      std::lock_guard l(mu_);
      running_workers_--;
      cv_.notify_all();
    });
  }
}

void GuestRuntime::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  for (auto& t : threads_) t.join();
  threads_.clear();
}

bool GuestRuntime::boundary(WorkerSlot&) {
  if (stop_.load(std::memory_order_relaxed)) return false;
  if (!pause_requested_.load(std::memory_order_acquire)) return true;
  std::unique_lock lock(mu_);
  paused_workers_++;
  cv_.notify_all();
  cv_.wait(lock, [&] { return stop_.load() || !pause_requested_.load(); });
  paused_workers_--;
  return !stop_.load();
}

void GuestRuntime::sleep_until(uint64_t deadline_ns) {
  std::unique_lock lock(mu_);
  auto until = std::chrono::steady_clock::time_point(std::chrono::nanoseconds(deadline_ns));
  cv_.wait_until(lock, until, [&] { return stop_.load() || pause_requested_.load(); });
}

// The epoch barrier: a worker announces it is entering a step before it
// reads the epoch; next_epoch() bumps the epoch before it scans the slots.
// With sequentially consistent accesses, either the scan sees the worker
// (entering or in an old epoch) and waits, or the worker reads the new epoch.
uint64_t GuestRuntime::begin_step(WorkerSlot& slot) {
  slot.active_epoch.store(WorkerSlot::kEntering);
  uint64_t e = epoch_.load();
  slot.active_epoch.store(e);
  return e;
}

void GuestRuntime::log_page(WorkerSlot& slot, uint64_t epoch, uint64_t addr) {
  if (!log_) return;
  std::lock_guard lock(slot.log_mu);
  slot.logged[epoch].insert(page_floor(addr));
}

void GuestRuntime::log_unmap(WorkerSlot& slot, uint64_t epoch, PageRange range) {
  if (!log_) return;
  std::lock_guard lock(slot.log_mu);
  slot.unmapped[epoch].push_back(range);
}

void GuestRuntime::end_step(WorkerSlot& slot) { slot.active_epoch.store(WorkerSlot::kIdle); }

void GuestRuntime::pause() {
  std::unique_lock lock(mu_);
  if (user_paused_) return;
  pause_requested_ = true;
  cv_.notify_all();
  cv_.wait(lock, [&] { return paused_workers_ == running_workers_; });
  user_paused_ = true;
}

void GuestRuntime::resume() {
  std::lock_guard lock(mu_);
  pause_requested_ = false;
  user_paused_ = false;
  pause_generation_++;
  cv_.notify_all();
}

Result<uint64_t> GuestRuntime::next_epoch() {
  uint64_t closed = epoch_.load();
  uint64_t opened = closed + 1;
  epoch_.store(opened);
  for (auto& slot : slots_) {
    for (;;) {
      uint64_t a = slot->active_epoch.load();
      if (a == WorkerSlot::kIdle || (a != WorkerSlot::kEntering && a >= opened)) break;
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
  if (log_) {
    std::unordered_set<uint64_t> pages;
    std::vector<PageRange> unmapped;
    auto take = [&](WorkerSlot& slot) {
      std::lock_guard lock(slot.log_mu);
      while (!slot.logged.empty() && slot.logged.begin()->first <= closed) {
        pages.merge(slot.logged.begin()->second);
        slot.logged.erase(slot.logged.begin());
      }
      while (!slot.unmapped.empty() && slot.unmapped.begin()->first <= closed) {
        auto& u = slot.unmapped.begin()->second;
        unmapped.insert(unmapped.end(), u.begin(), u.end());
        slot.unmapped.erase(slot.unmapped.begin());
      }
    };
    for (auto& slot : slots_) take(*slot);
    take(control_slot_);
    LM_TRY(log_->append(closed, std::vector<uint64_t>(pages.begin(), pages.end()), std::move(unmapped)));
  }
  return opened;
}

Result<uint64_t> GuestRuntime::verify() {
  bool was_paused = user_paused_;
  if (!was_paused) pause();
  auto r = verify_ram(ram_, PendingPages::strict);
  if (!was_paused) resume();
  return r;
}

namespace {

uint64_t next_random(uint64_t& state) {
  state += 0x9e3779b97f4a7c15ull;
  uint64_t z = state;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double unit_random(uint64_t& state) { return double(next_random(state) >> 11) * 0x1.0p-53; }

// Chooses the index (0..n-1) of the next page among a thread's n pages.
// Depends only on the RNG state and the step counter, both kept in RAM.
uint64_t pick_page(const WorkloadConfig& cfg, uint64_t& rng, uint64_t steps, uint64_t n) {
  switch (cfg.pattern) {
    case Pattern::uniform:
      return next_random(rng) % n;
    case Pattern::hotspot: {
      uint64_t hot = std::clamp<uint64_t>(uint64_t(double(n) * cfg.pattern_p1), 1, n);
      bool pick_hot = unit_random(rng) < cfg.pattern_p2;
      if (pick_hot || hot == n) return next_random(rng) % hot;
      return hot + next_random(rng) % (n - hot);
    }
    case Pattern::zipf: {
      // Inverse CDF of the continuous density x^-s on [1, n+1): rank 0 hottest.
      double s = cfg.pattern_p1, u = unit_random(rng), x;
      if (std::fabs(s - 1) < 1e-9) x = std::exp(u * std::log(double(n) + 1));
      else x = std::pow(1 + u * (std::pow(double(n) + 1, 1 - s) - 1), 1 / (1 - s));
      return std::min<uint64_t>(n - 1, uint64_t(x) - 1);
    }
    case Pattern::sequential:
      return steps % n;
    case Pattern::stride: {
      // Passes of m = n / g steps (g = gcd(stride, n)); pass k writes the pages
      // congruent to k mod g, so g passes write every page once.
      uint64_t stride = uint64_t(cfg.pattern_p1), g = std::gcd(stride, n), m = n / g;
      return ((steps % m) * stride + (steps / m) % g) % n;
    }
  }
  return 0;
}

}  // namespace

// One step: choose the page from the state in RAM, write its next version,
// then commit version, RNG and step counter. Re-running a step that was cut
// short anywhere gives a consistent page (see docs/guest.md).
void GuestRuntime::step(uint32_t index, WorkerSlot& slot) {
  ThreadState& ts = ram_.threads[index];
  const uint64_t T = cfg_.threads;
  const uint64_t n = (ram_.data_pages() - index + T - 1) / T;  // pages p with p % T == index
  uint64_t epoch = begin_step(slot);
  uint64_t rng = __atomic_load_n(&ts.rng, __ATOMIC_RELAXED);
  uint64_t steps = __atomic_load_n(&ts.steps, __ATOMIC_RELAXED);
  uint64_t page = pick_page(cfg_, rng, steps, n) * T + index;
  uint64_t version = __atomic_load_n(&ram_.versions[page], __ATOMIC_RELAXED) + 1;
  __atomic_store_n(&ts.pending_page, page, __ATOMIC_RELAXED);
  __atomic_store_n(&ts.pending_version, version, __ATOMIC_RELAXED);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  write_page_version(ram_.data_page(page), cfg_.content, cfg_.write, cfg_.seed, page, version);
  // Program order is what a freeze (SIGSTOP, ptrace) observes: commit last.
  std::atomic_signal_fence(std::memory_order_seq_cst);
  __atomic_store_n(&ram_.versions[page], version, __ATOMIC_RELEASE);
  __atomic_store_n(&ts.rng, rng, __ATOMIC_RELEASE);
  __atomic_store_n(&ts.steps, steps + 1, __ATOMIC_RELEASE);
  if (log_) {
    log_page(slot, epoch, ram_.guest_addr(ram_.data_page(page)));
    log_page(slot, epoch, ram_.guest_addr(&ram_.versions[page]));
    log_page(slot, epoch, ram_.guest_addr(&ts));
  }
  end_step(slot);
}

void GuestRuntime::finish_interrupted_steps() {
  for (uint32_t t = 0; t < cfg_.threads; t++) step(t, control_slot_);
}

void GuestRuntime::writer_main(uint32_t index, WorkerSlot& slot) {
  const uint64_t T = cfg_.threads;
  const double rate = cfg_.rate > 0 ? cfg_.rate / double(T) : 0;
  const uint64_t interval_ns = rate > 0 ? uint64_t(1e9 / rate) : 0;
  uint64_t generation = ~0ull, base_ns = 0, done = 0;
  while (boundary(slot)) {
    if (interval_ns) {
      uint64_t gen;
      {
        std::lock_guard lock(mu_);
        gen = pause_generation_;
      }
      uint64_t now = now_ns();
      if (gen != generation) generation = gen, base_ns = now, done = 0;
      uint64_t due = base_ns + done * interval_ns;
      if (now + 100000 < due) {
        sleep_until(due);
        continue;
      }
      if (now > due + 100000000) base_ns = now, done = 0;  // after a freeze: no burst to catch up
    }
    step(index, slot);
    done++;
  }
}

}  // namespace lm::guest
