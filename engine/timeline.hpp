// The time series of one migration, every 100 ms: what went on the wire,
// what was left to send, how fast the process dirtied its memory, and in
// which phase and round. One Timeline belongs to one migration (a member of
// the source engine's run), so several migrations in one process each have
// their own.
//
// Who touches what:
// - counting points (any engine thread, at once): sent(), set_left(),
//   begin_round(), dirtied(), phase(), downtime(); atomics, and a short lock
//   for the rare ones (a phase, a round, a collect);
// - the sampler thread (owned here, started by the constructor): reads the
//   counters every interval and appends a sample; nothing else writes the
//   samples;
// - finish(): stops and joins the sampler, takes a last sample, and hands the
//   record over; the destructor joins it on every other path.
//
// The dirty rate is known only where the tracker counts: at each collect,
// over the interval since the previous one. A sample gets the rate of the
// collect interval it lies in, assigned by finish() once the intervals are
// known (0 where nothing was tracked: setup, the frozen process, post-copy).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "engine/results.hpp"

namespace lm::engine {

class Timeline {
 public:
  static constexpr std::chrono::milliseconds kInterval{100};

  // Starts sampling now; t_ms counts from here.
  explicit Timeline(std::chrono::milliseconds interval = kInterval);
  ~Timeline();
  Timeline(const Timeline&) = delete;
  Timeline& operator=(const Timeline&) = delete;

  // A page batch went on the wire: `wire_bytes` (the message), `pages` of it,
  // and `done` pages of the current set are no longer left to send.
  void sent(uint64_t wire_bytes, uint64_t pages, uint64_t done) {
    bytes_.fetch_add(wire_bytes, std::memory_order_relaxed);
    pages_sent_.fetch_add(pages, std::memory_order_relaxed);
    if (done) left_.fetch_sub(int64_t(done), std::memory_order_relaxed);
  }
  // Pages left to send: the next round's dirty set, or what post-copy still has to push.
  void set_left(uint64_t pages) { left_.store(int64_t(pages), std::memory_order_relaxed); }
  // Round `round` starts sending `pages` (round 0: those known yet).
  void begin_round(unsigned round, uint64_t pages);
  // The round begun has `pages` more to send (round 0, chunk by chunk).
  void more_to_send(uint64_t pages) { left_.fetch_add(int64_t(pages), std::memory_order_relaxed); }
  // A collect found `pages` dirtied between `from_ns` and `to_ns` (now_ns()).
  void dirtied(uint64_t pages, uint64_t from_ns, uint64_t to_ns);
  // The source entered `phase` (source_phase_name: a string literal's view is not kept, a copy is).
  void phase(std::string_view phase);
  // The downtime: the process frozen at `from_ns`, the destination running it at `to_ns`.
  void downtime(uint64_t from_ns, uint64_t to_ns);

  // Stops sampling, takes a last sample, and returns the record (again on a second call).
  TimelineRecord finish();

 private:
  void sample_loop(std::stop_token stop);
  void take_sample(uint64_t at_ns);
  double ms_at(uint64_t ns) const { return ns >= origin_ns_ ? double(ns - origin_ns_) * 1e-6 : 0; }
  void event(uint64_t at_ns, std::string what, std::string phase, int64_t round, int64_t pages);

  const uint64_t origin_ns_;
  const std::chrono::nanoseconds interval_;

  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> pages_sent_{0};
  std::atomic<int64_t> left_{0};  // may dip below 0 briefly while a new set is published: read clamped

  std::mutex lock_;  // the rare changes, and the events
  std::string phase_ = "setup";
  unsigned round_ = 0;
  struct Interval {
    uint64_t from_ns, to_ns, pages;
  };
  std::vector<Interval> dirtied_;
  TimelineRecord record_;  // samples: the sampler's until it is joined; events: under lock_

  uint64_t last_bytes_ = 0;  // the sampler's
  uint64_t last_ns_ = 0;
  bool finished_ = false;
  std::mutex wake_lock_;
  std::condition_variable_any wake_;
  std::jthread sampler_;  // last: joined first
};

}  // namespace lm::engine
