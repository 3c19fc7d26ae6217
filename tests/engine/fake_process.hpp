// A fake process for the in-process engine tests: an address space of a few
// mappings in this process's memory, written by a thread while it "runs",
// with its own dirty tracker. The engine sees it through its two seams
// (engine::SourceProcess, dt::Tracker); the test sees its state (running,
// frozen, stopped, killed), its step counter (does it run?), the memory it
// held when frozen, and makes any of its operations fail.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/clock.hpp"
#include "dirtytrack/maps.hpp"
#include "dirtytrack/tracker.hpp"
#include "engine/source.hpp"
#include "engine/source_process.hpp"

namespace lm::engine::test {

// What a test can make fail, one operation of either face.
enum class FakeOp {
  check_target, mappings, read, populated, throttle, unthrottle, freeze, stop_on_release, thaw,
  tracker_start, tracker_protect, tracker_collect, tracker_stop, count_
};

enum class FakeState { running, frozen, stopped, killed };

inline const char* fake_state_name(FakeState s) {
  switch (s) {
    case FakeState::running: return "running";
    case FakeState::frozen: return "frozen";
    case FakeState::stopped: return "stopped";
    case FakeState::killed: return "killed";
  }
  return "?";
}

struct FakeProcessOptions {
  pid_t pid = 4'100'000;  // named in messages and the image's manifest only
  unsigned mappings = 3;
  uint64_t pages_per_mapping = 64;
  uint64_t first_address = 0x7f1000000000;
  // While running, a thread writes one page every interval (0: no thread).
  unsigned write_interval_us = 200;
  // While running, every tracker collect first writes this many pages (the
  // process dirtying memory as fast as a round takes).
  unsigned pages_per_collect = 0;
  uint64_t seed = 1;
};

class FakeProcess {
 public:
  explicit FakeProcess(FakeProcessOptions o) : o_(o), memory_(o.mappings * o.pages_per_mapping * kPageSize) {
    touched_.assign(pages(), false);
    dirty_.assign(pages(), false);
    mapped_.assign(o.mappings, true);
    // Three pages in four hold data at the start; the rest were never touched.
    for (uint64_t i = 0; i < pages(); i++)
      if (i % 4 != 3) write_locked(i);
    steps_ = 0;
    if (o.write_interval_us) writer_ = std::jthread([this](std::stop_token stop) { run(stop); });
  }
  ~FakeProcess() {
    if (writer_.joinable()) {
      writer_.request_stop();
      writer_.join();
    }
  }

  // The engine's faces; both refer to this object, which must outlive them.
  std::unique_ptr<SourceProcess> source();
  std::unique_ptr<dt::Tracker> tracker();

  // --- the test's side ---------------------------------------------------------
  // The nth call of `op` from now on fails with `code` (once).
  void fail(FakeOp op, unsigned nth = 1, int code = EIO) {
    std::lock_guard g(lock_);
    fail_at_[size_t(op)] = calls_[size_t(op)] + nth;
    fail_code_[size_t(op)] = code;
  }
  unsigned calls(FakeOp op) const { return locked(calls_)[size_t(op)]; }
  FakeState state() const { return locked(state_); }
  bool stops_on_release() const { return locked(stop_on_release_); }
  bool tracking() const { return locked(tracking_); }
  unsigned throttle_percent() const { return locked(throttle_); }
  unsigned max_throttle_percent() const { return locked(max_throttle_); }
  // Pages written since it started: it ran if this moved.
  uint64_t steps() const { return steps_.load(); }
  // Waits up to `ms` for the step counter to pass `than`.
  bool runs_past(uint64_t than, int ms = 3000) const {
    Stopwatch sw;
    while (steps() <= than && sw.elapsed_ms() < ms) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return steps() > than;
  }
  std::vector<PageRange> ranges() const {
    std::lock_guard g(lock_);
    std::vector<PageRange> out;
    for (unsigned m = 0; m < o_.mappings; m++)
      if (mapped_[m]) out.push_back(range_of(m));
    return out;
  }
  PageRange range(unsigned m) const { return range_of(m); }
  // Unmaps mapping m; map_again(m) maps it anew at the same address, zero
  // filled, and (as a real tracker does with a new mapping) dirty whole.
  void unmap(unsigned m) {
    std::lock_guard g(lock_);
    mapped_[m] = false;
  }
  void map_again(unsigned m) {
    std::lock_guard g(lock_);
    mapped_[m] = true;
    for (uint64_t i = m * o_.pages_per_mapping; i < (m + 1) * o_.pages_per_mapping; i++) {
      std::memset(memory_.data() + i * kPageSize, 0, kPageSize);
      touched_[i] = false;
      dirty_[i] = true;
    }
  }
  // Called at the start of the tracker's nth collect (1, 2, ...), unlocked.
  void before_collect(std::function<void(unsigned)> f) {
    std::lock_guard g(lock_);
    before_collect_ = std::move(f);
  }
  // The bytes of [addr, addr + bytes) as they were at the last freeze.
  std::vector<std::byte> frozen_bytes(uint64_t addr, uint64_t bytes) const {
    std::lock_guard g(lock_);
    std::vector<std::byte> out(bytes);
    for (uint64_t off = 0; off < bytes; off += kPageSize) {
      int64_t i = index_of(addr + off);
      if (i >= 0 && !frozen_image_.empty())
        std::memcpy(out.data() + off, frozen_image_.data() + uint64_t(i) * kPageSize, kPageSize);
    }
    return out;
  }
  // Pauses or resumes the writing thread (a quiet process sends nothing
  // after round 0, so a test knows which batch is which).
  void set_writing(bool on) {
    std::lock_guard g(lock_);
    writing_ = on;
  }
  // Writes a page as the process would (the tracker sees it).
  void write_page(uint64_t addr) {
    std::lock_guard g(lock_);
    write_locked(uint64_t(index_of(addr)));
  }
  // Changes a page behind the tracker's back, even frozen: the memory the
  // engine reads then differs from what it sent.
  void corrupt_page(uint64_t addr) {
    std::lock_guard g(lock_);
    memory_[uint64_t(index_of(addr)) * kPageSize + 100] ^= std::byte{0x5a};
  }

 private:
  friend class FakeSource;
  template <class T>
  T locked(const T& field) const {
    std::lock_guard g(lock_);
    return field;
  }
  friend class FakeTracker;

  uint64_t pages() const { return o_.mappings * o_.pages_per_mapping; }
  // Mappings lie 16 pages apart, so they are distinct mappings.
  PageRange range_of(unsigned m) const {
    uint64_t start = o_.first_address + m * (o_.pages_per_mapping + 16) * kPageSize;
    return {start, start + o_.pages_per_mapping * kPageSize};
  }
  int64_t index_of(uint64_t addr) const {
    for (unsigned m = 0; m < o_.mappings; m++)
      if (mapped_[m] && range_of(m).contains(addr))
        return int64_t(m * o_.pages_per_mapping + ((addr - range_of(m).start) >> kPageShift));
    return -1;
  }
  uint64_t addr_of(uint64_t index) const {
    return range_of(unsigned(index / o_.pages_per_mapping)).start + (index % o_.pages_per_mapping) * kPageSize;
  }

  // Text-like, integer and random pages, by the page's index and the step.
  void write_locked(uint64_t index) {
    const uint64_t step = ++steps_;
    std::byte* page = memory_.data() + index * kPageSize;
    uint64_t x = o_.seed * 0x9e3779b97f4a7c15ull + step * 0xbf58476d1ce4e5b9ull + index;
    for (size_t at = 0; at < kPageSize; at += 8) {
      uint64_t word = 0;
      switch (index % 3) {
        case 0: word = 0x2064726f77206120ull + (at % 64 == 0 ? step : 0); break;  // " a word "
        case 1: word = step * 1000 + at; break;
        default: x ^= x << 13, x ^= x >> 7, x ^= x << 17, word = x; break;
      }
      std::memcpy(page + at, &word, 8);
    }
    touched_[index] = true;
    dirty_[index] = true;
  }

  void run(std::stop_token stop) {
    uint64_t x = o_.seed | 1;
    while (!stop.stop_requested()) {
      std::this_thread::sleep_for(std::chrono::microseconds(o_.write_interval_us));
      std::lock_guard g(lock_);
      if (state_ != FakeState::running || !writing_) continue;
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      if (mapped_[unsigned(x % pages() / o_.pages_per_mapping)]) write_locked(x % pages());
    }
  }

  // Counts the call; the injected failure when this is the one.
  Result<void> call(FakeOp op, const char* what) {
    std::lock_guard g(lock_);
    return call_locked(op, what);
  }
  Result<void> call_locked(FakeOp op, const char* what) {
    if (++calls_[size_t(op)] != fail_at_[size_t(op)]) return ok();
    return Error::sys(fail_code_[size_t(op)], strf("injected: %s of fake pid %d failed", what, o_.pid));
  }

  // Sorted ranges of the pages whose flag is set.
  dt::RangeList ranges_where(const std::vector<bool>& flags) const {
    dt::RangeList out;
    for (uint64_t i = 0; i < flags.size(); i++)
      if (flags[i]) dt::append_merge(out, {addr_of(i), addr_of(i) + kPageSize});
    return out;
  }
  dt::MappingList mapping_list() const {
    dt::MappingList out;
    for (unsigned m = 0; m < o_.mappings; m++) {
      if (!mapped_[m]) continue;
      dt::Mapping map;
      map.start = range_of(m).start;
      map.end = range_of(m).end;
      map.read = map.write = true;
      out.push_back(map);
    }
    return out;
  }

  const FakeProcessOptions o_;
  mutable std::mutex lock_;  // everything below
  std::vector<std::byte> memory_;
  std::vector<bool> touched_;  // ever written: holds data
  std::vector<bool> dirty_;    // written since the tracker's last collect
  std::vector<bool> mapped_;   // per mapping
  dt::MappingList collected_mappings_;  // as the tracker's last collect saw them
  unsigned collects_ = 0;
  std::function<void(unsigned)> before_collect_;
  std::vector<std::byte> frozen_image_;
  FakeState state_ = FakeState::running;
  bool stop_on_release_ = false;
  bool tracking_ = false;
  unsigned unprotected_from_ = 0;  // a start in chunks: mappings from this one on are not tracked yet
  bool writing_ = true;
  unsigned throttle_ = 0, max_throttle_ = 0;
  std::array<unsigned, size_t(FakeOp::count_)> calls_{}, fail_at_{};
  std::array<int, size_t(FakeOp::count_)> fail_code_{};
  std::atomic<uint64_t> steps_{0};
  std::jthread writer_;  // last: stopped first
};

class FakeSource final : public SourceProcess {
 public:
  explicit FakeSource(FakeProcess& p) : p_(p) {}
  pid_t pid() const override { return p_.o_.pid; }
  Result<void> check_target(dt::OtherUsers) const override {
    return p_.call(FakeOp::check_target, "the target check");
  }
  Result<dt::ReadReport> read(std::span<const PageRange> ranges, std::span<std::byte> out) const override {
    std::lock_guard g(p_.lock_);
    LM_TRY(p_.call_locked(FakeOp::read, "a page read"));
    dt::ReadReport report;
    uint64_t at = 0;
    for (const auto& r : ranges)
      for (uint64_t a = r.start; a < r.end; a += kPageSize, at += kPageSize) {
        if (at + kPageSize > out.size()) return Error::msg("fake read: buffer too small");
        const int64_t i = p_.index_of(a);
        if (i < 0) {
          std::memset(out.data() + at, 0, kPageSize);
          dt::append_merge(report.failed, {a, a + kPageSize});
          continue;
        }
        std::memcpy(out.data() + at, p_.memory_.data() + uint64_t(i) * kPageSize, kPageSize);
        report.pages_read++;
      }
    return report;
  }
  Result<dt::MappingList> mappings(const dt::Scope&) const override {
    std::lock_guard g(p_.lock_);
    LM_TRY(p_.call_locked(FakeOp::mappings, "reading the mappings"));
    return p_.mapping_list();
  }
  Result<dt::RangeList> populated(const dt::MappingList& mappings) const override {
    std::lock_guard g(p_.lock_);
    LM_TRY(p_.call_locked(FakeOp::populated, "populated pages"));
    dt::RangeList in;
    for (const auto& m : mappings) in.push_back(m.range());
    dt::coalesce(in);
    return dt::intersect(p_.ranges_where(p_.touched_), in);
  }
  Result<unsigned> throttle(unsigned percent) override {
    std::lock_guard g(p_.lock_);
    LM_TRY(p_.call_locked(FakeOp::throttle, "throttling"));
    p_.throttle_ = std::min(percent, 99u);
    p_.max_throttle_ = std::max(p_.max_throttle_, p_.throttle_);
    return p_.throttle_;
  }
  Result<void> unthrottle() override {
    std::lock_guard g(p_.lock_);
    if (p_.throttle_ == 0) return ok();
    LM_TRY(p_.call_locked(FakeOp::unthrottle, "unthrottling"));
    p_.throttle_ = 0;
    return ok();
  }
  std::string throttle_mechanism() const override { return "fake"; }
  Result<void> freeze() override {
    std::lock_guard g(p_.lock_);
    LM_TRY(p_.call_locked(FakeOp::freeze, "freezing"));
    if (p_.state_ != FakeState::running) return Error::msg(strf("freeze fake pid %d: it is %s", p_.o_.pid,
                                                                fake_state_name(p_.state_)));
    p_.state_ = FakeState::frozen;
    p_.frozen_image_ = p_.memory_;
    return ok();
  }
  bool frozen() const override { return p_.state() == FakeState::frozen; }
  Result<void> stop_on_release() override {
    std::lock_guard g(p_.lock_);
    LM_TRY(p_.call_locked(FakeOp::stop_on_release, "stop on release"));
    if (p_.state_ != FakeState::frozen) return Error::msg("stop on release: the fake is not frozen");
    p_.stop_on_release_ = true;
    return ok();
  }
  Result<void> cancel_stop_on_release() override {
    std::lock_guard g(p_.lock_);
    p_.stop_on_release_ = false;
    return ok();
  }
  bool stops_on_release() const override { return p_.stops_on_release(); }
  Result<void> thaw() override {
    std::lock_guard g(p_.lock_);
    if (p_.state_ != FakeState::frozen) return ok();
    LM_TRY(p_.call_locked(FakeOp::thaw, "thawing"));
    p_.state_ = p_.stop_on_release_ ? FakeState::stopped : FakeState::running;
    return ok();
  }
  void kill() override {
    std::lock_guard g(p_.lock_);
    p_.state_ = FakeState::killed;
  }
  dt::ProcessFreezer* freezer() override { return nullptr; }

 private:
  FakeProcess& p_;
};

class FakeTracker final : public dt::Tracker {
 public:
  explicit FakeTracker(FakeProcess& p) : p_(p) {}
  std::string_view name() const override { return "fake"; }
  Result<dt::StartInfo> start(const dt::TrackRequest& request) override {
    std::lock_guard g(p_.lock_);
    LM_TRY(p_.call_locked(FakeOp::tracker_start, "tracker start"));
    if (request.pid != p_.o_.pid) return Error::msg(strf("fake tracker: asked for pid %d", request.pid));
    p_.tracking_ = true;
    std::fill(p_.dirty_.begin(), p_.dirty_.end(), false);
    p_.collected_mappings_ = p_.mapping_list();
    if (request.protect_chunk_bytes == 0) {
      p_.unprotected_from_ = p_.o_.mappings;
      return dt::StartInfo{p_.mapping_list(), p_.ranges_where(p_.touched_), 0};
    }
    p_.unprotected_from_ = 0;  // one mapping per chunk, as protect_next() comes
    return dt::StartInfo{p_.mapping_list(), {}, 0};
  }
  // The next mapping: what was written to it before counts as populated
  // (read after this), writes from now on are dirty.
  Result<std::optional<dt::RangeList>> protect_next() override {
    std::lock_guard g(p_.lock_);
    if (!p_.tracking_) return Error::msg("fake tracker: protect while not tracking");
    if (p_.unprotected_from_ == p_.o_.mappings) return std::optional<dt::RangeList>{};
    LM_TRY(p_.call_locked(FakeOp::tracker_protect, "tracker protect"));
    const unsigned m = p_.unprotected_from_++;
    const PageRange r = p_.range_of(m);
    const uint64_t first = m * p_.o_.pages_per_mapping;
    std::fill(p_.dirty_.begin() + long(first), p_.dirty_.begin() + long(first + p_.o_.pages_per_mapping), false);
    if (!p_.mapped_[m]) return std::optional<dt::RangeList>{dt::RangeList{}};
    return std::optional<dt::RangeList>{dt::intersect(p_.ranges_where(p_.touched_), {r})};
  }
  Result<dt::CollectResult> collect() override {
    std::function<void(unsigned)> hook;
    unsigned n;
    {
      std::lock_guard g(p_.lock_);
      hook = p_.before_collect_;
      n = ++p_.collects_;
    }
    if (hook) hook(n);
    std::lock_guard g(p_.lock_);
    LM_TRY(p_.call_locked(FakeOp::tracker_collect, "tracker collect"));
    if (!p_.tracking_) return Error::msg("fake tracker: collect while not tracking");
    if (p_.unprotected_from_ != p_.o_.mappings) return Error::msg("fake tracker: collect before protect_next() ended");
    if (p_.state_ == FakeState::running)
      for (unsigned i = 0; i < p_.o_.pages_per_collect; i++) p_.write_locked(i % p_.pages());
    dt::CollectResult r;
    r.mappings = p_.mapping_list();
    r.dirty = dt::intersect(p_.ranges_where(p_.dirty_), dt::ranges_of(r.mappings));
    r.dirty_pages = dt::total_pages(r.dirty);
    r.changes = dt::diff_mappings(p_.collected_mappings_, r.mappings);
    p_.collected_mappings_ = r.mappings;
    std::fill(p_.dirty_.begin(), p_.dirty_.end(), false);
    return r;
  }
  Result<void> stop(dt::ProcessFreezer*) override {
    std::lock_guard g(p_.lock_);
    p_.tracking_ = false;  // a real tracker leaves the target as it was, failing or not
    return p_.call_locked(FakeOp::tracker_stop, "tracker stop");
  }

 private:
  FakeProcess& p_;
};

inline std::unique_ptr<SourceProcess> FakeProcess::source() { return std::make_unique<FakeSource>(*this); }
inline std::unique_ptr<dt::Tracker> FakeProcess::tracker() { return std::make_unique<FakeTracker>(*this); }

// A source migrating `fake` (which must outlive it): fixed:lz4, at most 4
// rounds, small batches, 5 s waits. The caller adds its cancel and link.
inline SourceOptions fake_source_options(FakeProcess& fake) {
  SourceOptions o;
  o.make_process = [&fake]() -> Result<std::unique_ptr<SourceProcess>> { return fake.source(); };
  o.make_tracker = [&fake]() -> Result<std::unique_ptr<dt::Tracker>> { return fake.tracker(); };
  o.pid = 0;  // not used: make_process
  o.exec_state = ExecStateKind::guest_ram;
  o.policy = *compress::parse_policy("fixed:lz4");
  o.convergence.max_rounds = 4;
  o.convergence.downtime_target_ms = 0;
  o.timeout = transport::Timeout(5000);
  o.session.handshake_timeout = transport::Timeout(5000);
  o.batch_pages = 32;
  // The chunked start inside round 0 (opt-in, off by default): the fake
  // tracker protects mapping by mapping, and the matrix injects a failure there.
  o.protect_chunk_bytes = 128ull << 20;
  return o;
}

}  // namespace lm::engine::test
