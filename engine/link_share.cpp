#include "engine/link_share.hpp"

#include <algorithm>

namespace lm::engine {

namespace {
using Clock = std::chrono::steady_clock;
double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
}  // namespace

LinkShare::LinkShare(LinkShareConfig config)
    : config_(config), start_(Clock::now()), tokens_(burst()), refilled_(start_) {}

double LinkShare::tokens_at(Clock::time_point now) const {
  return std::min(tokens_ + seconds(now - refilled_) * config_.rate_bytes_per_s, burst());
}

std::shared_ptr<LinkShare::Member> LinkShare::join(double weight) {
  std::lock_guard g(lock_);
  vms_.push_back({});
  vms_.back().weight = weight > 0 ? weight : 1;
  return std::shared_ptr<Member>(new Member(*this, vms_.size() - 1));
}

void LinkShare::account_busy(Clock::time_point now) {
  if (sending_ > 0) busy_s_ += seconds(now - busy_since_);
  busy_since_ = now;
}

void LinkShare::Member::begin_round() {
  LinkShare& l = link_;
  std::lock_guard g(l.lock_);
  State& me = l.vms_[index_];
  if (me.rounds++ > 0) return;
  // Start-time fair queueing: a VM back from idling starts level with the
  // least-served VM still sending, with no credit saved up meanwhile.
  double least = -1;
  for (const auto& v : l.vms_)
    if (&v != &me && v.rounds > 0) least = least < 0 ? v.virtual_bytes : std::min(least, v.virtual_bytes);
  if (least >= 0) me.virtual_bytes = std::max(me.virtual_bytes, least);
  l.account_busy(Clock::now());
  l.sending_++;
  l.generation_++;
  l.changed_.notify_all();
}

void LinkShare::Member::end_round() {
  LinkShare& l = link_;
  std::lock_guard g(l.lock_);
  State& me = l.vms_[index_];
  if (me.rounds == 0 || --me.rounds > 0) return;
  l.account_busy(Clock::now());
  l.sending_--;
  l.generation_++;
  l.changed_.notify_all();
}

bool LinkShare::may_send(size_t vm, uint64_t bytes, Clock::time_point now, Clock::duration& wait) const {
  wait = Clock::duration::max();
  const State& me = vms_[vm];
  double least = me.virtual_bytes;
  for (const auto& v : vms_)
    if (v.rounds > 0) least = std::min(least, v.virtual_bytes);
  if (me.virtual_bytes > least + double(config_.quantum_bytes)) return false;  // woken by the others' grants
  for (const auto& v : vms_)  // of those waiting, the least served goes first
    if (v.waiting > 0 && v.virtual_bytes < me.virtual_bytes) return false;
  (void)bytes;
  if (config_.rate_bytes_per_s <= 0) return true;
  const double tokens = tokens_at(now);
  if (tokens > 0) return true;  // a batch may overdraw; the next waits until the debt is paid
  wait = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(-tokens / config_.rate_bytes_per_s + 1e-6));
  return false;
}

Result<void> LinkShare::Member::acquire(uint64_t wire_bytes, uint64_t pages, const Cancel* cancel) {
  if (!acquire(wire_bytes, pages, cancel ? cancel->token() : std::stop_token{})) return cancel->error();
  return ok();
}

bool LinkShare::Member::acquire(uint64_t wire_bytes, uint64_t pages, std::stop_token stop) {
  LinkShare& l = link_;
  std::unique_lock g(l.lock_);
  State& waiter = l.vms_[index_];
  waiter.waiting++;
  struct Leave {  // under the lock: the others may go once this one no longer waits
    LinkShare& link;
    unsigned& waiting;
    ~Leave() {
      waiting--;
      link.generation_++;
      link.changed_.notify_all();
    }
  } leave{l, waiter.waiting};
  for (;;) {
    if (stop.stop_requested()) return false;
    auto now = Clock::now();
    Clock::duration wait;
    if (l.may_send(index_, wire_bytes, now, wait)) break;
    const uint64_t seen = l.generation_;  // one change (or the tokens), then look again
    if (wait == Clock::duration::max())
      l.changed_.wait(g, stop, [&] { return l.generation_ != seen; });
    else
      l.changed_.wait_until(g, stop, now + wait, [&] { return l.generation_ != seen; });
  }
  auto now = Clock::now();
  if (l.config_.rate_bytes_per_s > 0) {
    l.tokens_ = l.tokens_at(now) - double(wire_bytes);
    l.refilled_ = now;
  }
  State& me = l.vms_[index_];
  me.virtual_bytes += double(wire_bytes) / me.weight;
  me.bytes += wire_bytes;
  if (l.sending_ == l.vms_.size()) me.contended += wire_bytes;
  size_t bucket = size_t((now - l.start_) / l.config_.bucket);
  if (me.series.size() <= bucket) me.series.resize(bucket + 1, 0);
  me.series[bucket] += wire_bytes;
  l.pages_ += pages;
  l.generation_++;
  l.changed_.notify_all();
  return true;
}

LinkShare::Figures LinkShare::figures() const {
  std::lock_guard g(lock_);
  Figures f;
  size_t buckets = 0;
  for (const auto& v : vms_) buckets = std::max(buckets, v.series.size());
  for (const auto& v : vms_) {
    f.series.push_back(v.series);
    f.series.back().resize(buckets, 0);
    f.bytes.push_back(v.bytes);
    f.contended_bytes.push_back(v.contended);
  }
  f.pages = pages_;
  f.busy_s = busy_s_ + (sending_ > 0 ? seconds(Clock::now() - busy_since_) : 0);
  f.bucket_ms = std::chrono::duration<double, std::milli>(config_.bucket).count();
  return f;
}

}  // namespace lm::engine
