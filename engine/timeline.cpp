#include "engine/timeline.hpp"

#include <algorithm>

#include "common/clock.hpp"

namespace lm::engine {

Timeline::Timeline(std::chrono::milliseconds interval)
    : origin_ns_(now_ns()), interval_(interval), last_ns_(origin_ns_) {
  record_.interval_ms = double(interval.count());
  event(origin_ns_, "phase", phase_, -1, -1);
  sampler_ = std::jthread([this](std::stop_token stop) { sample_loop(stop); });
}

Timeline::~Timeline() = default;  // the jthread asks its sampler to stop and joins it

void Timeline::event(uint64_t at_ns, std::string what, std::string phase, int64_t round, int64_t pages) {
  record_.events.push_back({ms_at(at_ns), std::move(what), std::move(phase), round, pages});
}

void Timeline::begin_round(unsigned round, uint64_t pages) {
  std::lock_guard g(lock_);
  round_ = round;
  left_.store(int64_t(pages), std::memory_order_relaxed);
  event(now_ns(), "round", "", round, int64_t(pages));
}

void Timeline::dirtied(uint64_t pages, uint64_t from_ns, uint64_t to_ns) {
  if (to_ns <= from_ns) return;
  std::lock_guard g(lock_);
  dirtied_.push_back({from_ns, to_ns, pages});
}

void Timeline::phase(std::string_view phase) {
  std::lock_guard g(lock_);
  phase_ = std::string(phase);
  event(now_ns(), "phase", phase_, -1, -1);
}

void Timeline::downtime(uint64_t from_ns, uint64_t to_ns) {
  std::lock_guard g(lock_);
  event(from_ns, "freeze", "", -1, -1);
  event(to_ns, "resumed", "", -1, -1);
}

// Samples on the interval's boundaries from the origin; a wake-up that came
// late (a loaded machine) samples when it runs, with its real time, and the
// next one aims at the first boundary at least half an interval later: no
// bursts of catch-up samples.
void Timeline::sample_loop(std::stop_token stop) {
  const uint64_t step = uint64_t(interval_.count());
  uint64_t next = origin_ns_ + step;
  std::unique_lock g(wake_lock_);
  for (;;) {
    const uint64_t now = now_ns();
    if (now < next) {
      wake_.wait_for(g, stop, std::chrono::nanoseconds(next - now), [] { return false; });
      if (stop.stop_requested()) return;
      continue;
    }
    take_sample(now);
    next = now + step - (now - origin_ns_) % step;
    if (next - now < step / 2) next += step;  // late by most of an interval: not twice in a row
  }
}

void Timeline::take_sample(uint64_t at_ns) {
  TimelineSample s;
  s.t_ms = ms_at(at_ns);
  {
    std::lock_guard g(lock_);
    s.phase = phase_;
    s.round = round_;
  }
  s.bytes = bytes_.load(std::memory_order_relaxed);
  s.pages_sent = pages_sent_.load(std::memory_order_relaxed);
  s.pages_left = uint64_t(std::max<int64_t>(0, left_.load(std::memory_order_relaxed)));
  const double seconds = double(at_ns - last_ns_) * 1e-9;
  s.mbps = seconds > 0 ? double(s.bytes - last_bytes_) * 8 / 1e6 / seconds : 0;
  last_bytes_ = s.bytes;
  last_ns_ = at_ns;
  record_.samples.push_back(std::move(s));
}

TimelineRecord Timeline::finish() {
  if (finished_) return record_;
  finished_ = true;
  sampler_.request_stop();
  if (sampler_.joinable()) sampler_.join();
  take_sample(now_ns());
  std::lock_guard g(lock_);
  for (auto& s : record_.samples) {
    const uint64_t at = origin_ns_ + uint64_t(s.t_ms * 1e6);
    for (const auto& d : dirtied_)
      if (d.from_ns < at && at <= d.to_ns) {
        s.dirty_rate = double(d.pages) / (double(d.to_ns - d.from_ns) * 1e-9);
        break;
      }
  }
  std::stable_sort(record_.events.begin(), record_.events.end(),
                   [](const TimelineEvent& a, const TimelineEvent& b) { return a.t_ms < b.t_ms; });
  return record_;
}

}  // namespace lm::engine
