#include "engine/source.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstring>
#include <atomic>
#include <memory>
#include <mutex>
#include <thread>

#include "common/clock.hpp"
#include "compress/compressor.hpp"
#include "dirtytrack/page_reader.hpp"
#include "dirtytrack/probe.hpp"
#include "dirtytrack/process_freezer.hpp"
#include "dirtytrack/tracker.hpp"
#include "engine/control.hpp"
#include "engine/digest.hpp"
#include "engine/postcopy_source.hpp"
#include "engine/throttle.hpp"

namespace lm::engine {

namespace {

using transport::Channel;
using transport::OutMessage;
using transport::Session;

// Pages go to a sender thread (and through it to one bulk channel) by 64 KiB
// stripe of their address. A page therefore always travels on the same
// channel, so a newer version can never overtake an older one — the delta
// codec and plain overwrites both depend on that order.
constexpr unsigned kStripeShift = 16;

uint32_t mapping_prot(const dt::Mapping& m) {
  return (m.read ? PROT_READ : 0) | (m.write ? PROT_WRITE : 0) | (m.exec ? PROT_EXEC : 0);
}

Result<transport::MappingTable> mapping_table(const dt::MappingList& mappings, uint32_t generation) {
  std::vector<transport::MappingEntry> entries;
  for (const auto& m : mappings) entries.push_back({m.start, m.end, mapping_prot(m), 0});
  std::sort(entries.begin(), entries.end(), [](auto& a, auto& b) { return a.start < b.start; });
  return transport::MappingTable::make(std::move(entries), generation);
}

// Splits ranges at stripe boundaries and deals the pieces to `threads` lists.
std::vector<dt::RangeList> partition(const dt::RangeList& pages, unsigned threads) {
  std::vector<dt::RangeList> out(threads);
  for (const auto& r : pages) {
    for (uint64_t a = r.start; a < r.end;) {
      uint64_t stripe = a >> kStripeShift;
      uint64_t end = std::min(r.end, (stripe + 1) << kStripeShift);
      dt::append_merge(out[stripe % threads], {a, end});
      a = end;
    }
  }
  return out;
}

// Adds the calling thread's CPU time over its lifetime to an accumulator.
class CpuAccount {
 public:
  explicit CpuAccount(std::atomic<double>& sum) : sum_(sum), start_(thread_cpu_seconds()) {}
  ~CpuAccount() {
    double add = thread_cpu_seconds() - start_;
    double cur = sum_.load();
    while (!sum_.compare_exchange_weak(cur, cur + add)) {
    }
  }

 private:
  std::atomic<double>& sum_;
  double start_;
};

struct RoundTotals {
  uint64_t pages = 0;          // pages sent
  uint64_t wire_bytes = 0;     // message bytes
  uint64_t payload_bytes = 0;  // page payloads
  uint64_t batches = 0;
  uint64_t unreadable = 0;     // pages whose mapping vanished while reading
  uint64_t send_ns = 0;        // time senders spent inside the channel (link-bound time)
  uint64_t passthrough_pages = 0;  // fixed:raw pages sent from the read buffer, not the compressor
  uint64_t duration_ns = 0;

  RoundTotals& operator+=(const RoundTotals& o) {
    pages += o.pages;
    wire_bytes += o.wire_bytes;
    payload_bytes += o.payload_bytes;
    batches += o.batches;
    unreadable += o.unreadable;
    send_ns += o.send_ns;
    passthrough_pages += o.passthrough_pages;
    return *this;
  }
};

// The bulk senders of one migration: `threads` workers, each with its own
// compressor, reader and buffers, sharing the session's bulk channels.
class BulkSender {
 public:
  BulkSender(pid_t pid, Session& session, std::vector<std::unique_ptr<compress::Compressor>>& workers,
             unsigned batch_pages, transport::Timeout timeout, uint64_t fault_corrupt_batch, bool raw_passthrough)
      : pid_(pid),
        session_(session),
        workers_(workers),
        batch_pages_(batch_pages),
        timeout_(timeout),
        fault_corrupt_batch_(fault_corrupt_batch),
        raw_passthrough_(raw_passthrough) {
    for (size_t i = 0; i < session.bulk_count(); i++) channel_locks_.push_back(std::make_unique<std::mutex>());
    // Buffers live as long as the migration and are touched once here: first
    // touch of fresh memory costs several µs per page on these machines,
    // more than reading or copying the page.
    for (size_t t = 0; t < workers.size(); t++) {
      slots_.push_back(std::make_unique<Slot[]>(kSlots));
      for (unsigned i = 0; i < kSlots; i++) {
        Slot& s = slots_.back()[i];
        s.pages = std::make_unique<std::byte[]>(size_t(batch_pages_) * kPageSize);
        std::memset(s.pages.get(), 0, size_t(batch_pages_) * kPageSize);
        s.batch.payload.resize(size_t(batch_pages_) * kPageSize);
        std::memset(s.batch.payload.data(), 0, s.batch.payload.size());
        s.batch.entries.reserve(batch_pages_);
        s.addrs.reserve(batch_pages_);
        s.ptrs.reserve(batch_pages_);
      }
    }
  }

  // Sends every page of `pages`; returns when all sends completed.
  Result<RoundTotals> send_round(const dt::RangeList& pages, uint32_t round) {
    Stopwatch clock;
    unsigned threads = unsigned(workers_.size());
    auto parts = partition(pages, threads);
    std::vector<RoundTotals> totals(threads);
    std::vector<std::optional<Error>> errors(threads);
    std::atomic<bool> failed{false};
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; t++) {
      pool.emplace_back([&, t] {
        CpuAccount account(cpu_seconds_);
        auto r = send_part(t, parts[t], round, failed);
        if (r) totals[t] = *r;
        else {
          errors[t] = std::move(r).error();
          failed = true;
        }
      });
    }
    for (auto& th : pool) th.join();
    for (auto& e : errors)
      if (e) return std::move(*e);
    RoundTotals sum;
    for (const auto& t : totals) sum += t;
    sum.duration_ns = clock.elapsed_ns();
    return sum;
  }

  double cpu_seconds() const { return cpu_seconds_.load(); }

  // In-band end-of-round mark on every bulk channel: the destination knows a
  // channel has delivered everything of the round once it reads this.
  Result<void> mark_round_end(const transport::RoundEndBody& body) {
    for (size_t c = 0; c < session_.bulk_count(); c++) {
      OutMessage m;
      transport::encode_round_end(m, session_.negotiated().version, body);
      std::lock_guard lock(*channel_locks_[c]);
      LM_TRY(transport::send_message(session_.bulk(c), m, timeout_));
    }
    return ok();
  }

 private:
  struct Slot {
    std::unique_ptr<std::byte[]> pages;
    std::vector<uint64_t> addrs;
    std::vector<const uint8_t*> ptrs;
    compress::CompressedBatch batch;
    OutMessage message;
    uint64_t seq = 0;  // send in flight on the channel, 0 when free
  };
  static constexpr unsigned kSlots = 3;  // read/compress one batch while two are on the wire

  Result<RoundTotals> send_part(unsigned t, const dt::RangeList& ranges, uint32_t round,
                                const std::atomic<bool>& failed) {
    RoundTotals totals;
    if (ranges.empty()) return totals;
    size_t c = t % session_.bulk_count();
    Channel& channel = session_.bulk(c);
    std::mutex& lock = *channel_locks_[c];
    compress::Compressor& compressor = *workers_[t];
    dt::PageReader reader(pid_);
    Slot* slots = slots_[t].get();

    auto wait_slot = [&](Slot& s) -> Result<void> {
      if (s.seq == 0) return ok();
      uint64_t t0 = now_ns();
      std::lock_guard g(lock);
      auto r = channel.wait_sent(s.seq, timeout_);
      totals.send_ns += now_ns() - t0;
      s.seq = 0;
      return r;
    };

    size_t range_index = 0;
    uint64_t offset = 0;  // into ranges[range_index]
    for (uint64_t n = 0; range_index < ranges.size() && !failed; n++) {
      Slot& s = slots[n % kSlots];
      LM_TRY(wait_slot(s));
      // The next batch: up to batch_pages pages taken from the ranges in order.
      dt::RangeList batch;
      uint64_t want = batch_pages_;
      while (want > 0 && range_index < ranges.size()) {
        const PageRange& r = ranges[range_index];
        uint64_t take = std::min(want, r.pages() - offset);
        batch.push_back({r.start + offset * kPageSize, r.start + (offset + take) * kPageSize});
        want -= take;
        offset += take;
        if (offset == r.pages()) {
          range_index++;
          offset = 0;
        }
      }
      uint64_t count = batch_pages_ - want;
      auto report = LM_TRY(reader.read(batch, {s.pages.get(), count * kPageSize}));
      s.addrs.clear();
      s.ptrs.clear();
      uint64_t i = 0;
      for (const auto& r : batch) {
        for (uint64_t a = r.start; a < r.end; a += kPageSize, i++) {
          // A page whose mapping vanished is not sent; the next collect
          // reports the mapping change.
          if (!report.failed.empty() && dt::contains(report.failed, a)) {
            totals.unreadable++;
            continue;
          }
          s.addrs.push_back(a);
          s.ptrs.push_back(reinterpret_cast<const uint8_t*>(s.pages.get()) + i * kPageSize);
        }
      }
      if (s.addrs.empty()) continue;
      std::span<std::byte> payload;
      if (raw_passthrough_ && s.addrs.size() == count) {
        // fixed:raw with every page read: the read buffer is the payload,
        // saving a copy per page.
        s.batch.entries.clear();
        for (uint64_t a : s.addrs) s.batch.entries.push_back({a, uint32_t(kPageSize), Codec::raw, 0, 0});
        payload = {s.pages.get(), count * kPageSize};
        totals.passthrough_pages += count;
      } else {
      // Re-sent pages may go as a delta against the version sent before; the
      // stripe-to-channel rule guarantees the destination applied it first.
      LM_TRY(compressor.compress_batch(s.addrs, s.ptrs, s.batch,
                                       round == 0 ? compress::SendKind::first : compress::SendKind::resend));
        payload = {reinterpret_cast<std::byte*>(s.batch.payload.data()), s.batch.payload.size()};
      }
      transport::encode_page_batch(s.message, session_.negotiated().version, round, s.batch.entries, payload);
      if (fault_corrupt_batch_ && ++batches_encoded_ == fault_corrupt_batch_ && !payload.empty())
        payload[payload.size() / 2] ^= std::byte{0x40};
      uint64_t t0 = now_ns();
      {
        std::lock_guard g(lock);
        s.seq = LM_TRY(channel.send(s.message.pieces(), timeout_));
      }
      totals.send_ns += now_ns() - t0;
      totals.pages += s.addrs.size();
      totals.wire_bytes += s.message.size();
      // Adaptive feedback while the round runs (round 0 may be the whole
      // migration): the rate at which the link absorbed this thread's data
      // while it was sending, times the senders sharing it.
      if (totals.batches % 8 == 7 && totals.send_ns > 0)
        compressor.report_link_rate(double(totals.wire_bytes) / (double(totals.send_ns) * 1e-9) *
                                    double(workers_.size()));
      totals.payload_bytes += payload.size();
      totals.batches++;
    }
    for (unsigned i = 0; i < kSlots; i++) LM_TRY(wait_slot(slots[i]));
    return totals;
  }

  pid_t pid_;
  Session& session_;
  std::vector<std::unique_ptr<compress::Compressor>>& workers_;
  std::atomic<double> cpu_seconds_{0};  // CPU of the sender threads, all rounds
  unsigned batch_pages_;
  transport::Timeout timeout_;
  uint64_t fault_corrupt_batch_;
  bool raw_passthrough_;
  std::atomic<uint64_t> batches_encoded_{0};
  std::vector<std::unique_ptr<std::mutex>> channel_locks_;
  std::vector<std::unique_ptr<Slot[]>> slots_;  // kSlots per sender thread
};

// Ends a process we hold frozen. Its traced threads turn into zombies that
// only their tracer (this thread) can reap; until then the parent cannot
// reap the process, so wait for every non-leader thread here.
void kill_frozen(dt::ProcessFreezer& freezer) {
  const pid_t pid = freezer.pid();
  kill(pid, SIGKILL);
  for (pid_t tid : freezer.threads()) {
    if (tid == pid) continue;
    Stopwatch sw;
    int status = 0;
    while (sw.elapsed_ms() < 5000) {
      pid_t r = waitpid(tid, &status, __WALL | WNOHANG);
      if (r == tid && (WIFEXITED(status) || WIFSIGNALED(status))) break;
      if (r < 0) break;  // not ours to wait for any more
      if (r == 0) usleep(1000);
    }
  }
  (void)freezer.release();  // nothing left to detach; errors are expected
}

}  // namespace

Result<void> SourceMigration::run(const std::string& address, MigrationResult& result) {
  const pid_t pid = o_.pid;
  Stopwatch total;
  const double cpu_start = thread_cpu_seconds();
  result.policy = o_.policy;

  // --- setup: tracker, session, compressors ---------------------------------
  auto caps = dt::probe_dirtytrack();
  auto tracker = LM_TRY_CTX(dt::make_tracker(o_.tracker, caps), strf("source pid %d", pid));
  result.tracker = std::string(tracker->name());
  auto info = LM_TRY_CTX(tracker->start({pid, o_.scope, nullptr}), strf("track pid %d", pid));
  // From here on the tracker must be stopped on every path.
  struct TrackerStop {
    dt::Tracker& t;
    dt::ProcessFreezer* freezer = nullptr;
    bool armed = true;
    ~TrackerStop() {
      if (armed) (void)t.stop(freezer);
    }
  } tracker_stop{*tracker};

  uint32_t generation = 0;
  auto table = LM_TRY(mapping_table(info.mappings, generation));
  result.ram_total = table.total_bytes();
  auto session_config = o_.session;
  session_config.bulk_channels = uint16_t(o_.channels);
  // The destination asks the resumed guest for a userfaultfd only for post-copy.
  if (o_.mode == MigrationMode::precopy) session_config.features &= ~uint64_t(transport::kFeaturePostCopy);
  auto session = LM_TRY_CTX(Session::connect(address, session_config, table),
                            strf("source pid %d: connect to %s", pid, address.c_str()));
  result.transport = address.substr(0, address.find(':'));
  // The destination says when its memory is ready for round 0.
  LM_TRY_CTX(expect_message(session.control(), {transport::MsgType::ready}, o_.timeout),
             strf("source pid %d: waiting for the destination at %s", pid, address.c_str()));

  compress::CompressorOptions copts;
  // CPU the compressors may count on: on one host (loopback or memif) the
  // destination's receiving and decompressing share the same cores.
  const bool same_host = address.find("127.") != std::string::npos || address.find("localhost") != std::string::npos ||
                         address.rfind("dpdk:memif:", 0) == 0 || address.rfind("inproc", 0) == 0;
  copts.workers = same_host ? std::max(1u, o_.workers / 2) : o_.workers;
  auto first = LM_TRY_CTX(compress::Compressor::create(o_.policy, copts), "source");
  std::vector<std::unique_ptr<compress::Compressor>> workers;
  unsigned threads = std::max(o_.workers, o_.channels);
  for (unsigned i = 1; i < threads; i++) workers.push_back(first->make_worker());
  workers.insert(workers.begin(), std::move(first));
  BulkSender sender(pid, session, workers, o_.batch_pages, o_.timeout, o_.fault_corrupt_batch,
                    o_.policy == "fixed:raw");
  result.setup_time_ms = total.elapsed_ms();

  // Any failure from here until the verdict: tell the destination, stop
  // tracking, thaw the process if frozen. The process runs on.
  std::unique_ptr<dt::ProcessFreezer> freezer;
  std::unique_ptr<Throttler> throttler;
  auto fail = [&](Error e) -> Result<void> {
    // A channel that broke may only be the echo of the destination's own
    // failure: if it said why on the control channel, that is the cause.
    if (auto why = pending_peer_error(session.control()); why) e = std::move(*why);
    send_error_best_effort(session.control(), session.negotiated().version, e);
    if (throttler) (void)throttler->release();
    tracker_stop.armed = false;
    (void)tracker->stop(freezer.get());
    if (freezer) (void)freezer->release();
    result.completed = false;
    result.error = e.message;
    result.total_time_ms = total.elapsed_ms();
    result.cpu_seconds_source = thread_cpu_seconds() - cpu_start + sender.cpu_seconds();
    return e;
  };
#define SOURCE_TRY(expr)                                     \
  ({                                                         \
    auto r_ = (expr);                                        \
    if (!r_.ok()) return fail(std::move(r_).error());        \
    std::move(r_).value();                                   \
  })

  // New or moved mappings: the new table goes in-band on every channel
  // before any page of the next round, so each receiver checks addresses
  // against the table its own stream announced.
  auto announce_mappings = [&](const dt::MappingList& mappings) -> Result<void> {
    auto next = LM_TRY(mapping_table(mappings, ++generation));
    for (size_t c = 0; c <= session.bulk_count(); c++) {
      Channel& ch = c == session.bulk_count() ? session.control() : session.bulk(c);
      OutMessage m;
      transport::encode_mappings(m, session.negotiated().version, next);
      LM_TRY(transport::send_message(ch, m, o_.timeout));
    }
    result.ram_total = std::max(result.ram_total, next.total_bytes());
    session.set_mappings(std::move(next));
    return ok();
  };

  // --- pre-copy rounds --------------------------------------------------------
  ConvergencePolicy policy(o_.convergence);
  dt::RangeList pending = info.populated;
  uint64_t bytes_total = 0;
  uint64_t raw_bytes_total = 0;
  uint64_t passthrough_total = 0;  // fixed:raw pages that bypassed the compressor
  double link_rate = 0;       // wire bytes per second of link-bound time
  double page_rate = 0;       // pages delivered per second, last full round
  uint64_t precopy_pages = 0;  // pages sent by the iterative rounds
  uint64_t precopy_ns = 0;     // and the time they took
  uint64_t first_round_pages = 0;
  double dirty_rate_sum = 0;  // pages dirtied per second, summed over rounds >= 1
  unsigned dirty_rate_rounds = 0;
  unsigned round = 0;
  std::optional<StopReason> stop;
  while (o_.mode != MigrationMode::postcopy) {  // pure post-copy: no round at all
    RoundTotals t = SOURCE_TRY(sender.send_round(pending, round));
      bytes_total += t.wire_bytes;
    raw_bytes_total += t.pages * kPageSize;
    passthrough_total += t.passthrough_pages;
    if (round > 0) result.pages_resent += t.pages;
    double seconds = std::max(1e-9, double(t.duration_ns) * 1e-9);
    if (t.pages > 0) {
      page_rate = double(t.pages) / seconds;
      precopy_pages += t.pages;
      precopy_ns += t.duration_ns;
      if (round == 0) first_round_pages = t.pages;
      if (t.send_ns > 0) link_rate = double(t.wire_bytes) / (double(t.send_ns) * 1e-9 / threads);
      for (auto& w : workers) w->report_link_rate(link_rate);
    }
    transport::RoundEndBody end{round, 0, t.pages, t.payload_bytes, 0, dt::total_pages(pending), t.duration_ns,
                                t.batches};
    SOURCE_TRY(sender.mark_round_end(end));

    auto collected = SOURCE_TRY(tracker->collect());
    if (!collected.changes.empty()) SOURCE_TRY(announce_mappings(collected.mappings));
    pending = collected.dirty;
    double dirty_rate = double(collected.dirty_pages) / seconds;
    if (round > 0 || t.pages > 0) {
      dirty_rate_sum += dirty_rate;
      dirty_rate_rounds++;
    }
    result.rounds.push_back({round, t.pages, t.wire_bytes, double(t.duration_ns) * 1e-6, dirty_rate});
    round++;

    RoundProgress progress{round, collected.dirty_pages, bytes_total, result.ram_total, page_rate};
    if (o_.on_round)
      o_.on_round({round, collected.dirty_pages, bytes_total, double(t.wire_bytes) * 8 / seconds / 1e9,
                   ConvergencePolicy::expected_downtime_ms(progress)});
    stop = policy.should_stop(progress);
    if (stop) break;

    // Auto-converge (QEMU-like): the process dirties faster than half of what
    // the link drains, so slow it down, more each round it keeps doing so.
    if (o_.auto_converge.enabled && round >= 2 && dirty_rate > 0.5 * page_rate) {
      if (!throttler) throttler = SOURCE_TRY(Throttler::create(pid));
      unsigned next = throttler->percent() == 0 ? o_.auto_converge.initial_percent
                                                : throttler->percent() + o_.auto_converge.increment_percent;
      SOURCE_TRY(throttler->set_percent(std::min(next, o_.auto_converge.max_percent)));
      result.cpu_throttle_percentage = std::max(result.cpu_throttle_percentage, throttler->percent());
      result.throttle_mechanism = std::string(throttle_mechanism_name(throttler->mechanism()));
    }
  }
  result.stop_reason = stop ? std::string(stop_reason_name(*stop)) : "postcopy";

  // --- stop-and-copy ------------------------------------------------------------
  if (throttler) SOURCE_TRY(throttler->release());
  if (o_.before_freeze) o_.before_freeze();
  const uint64_t freeze_ns = now_ns();
  freezer = SOURCE_TRY(dt::ProcessFreezer::seize(pid).context(strf("freeze pid %d", pid)));
  tracker_stop.freezer = freezer.get();
  auto final_dirty = SOURCE_TRY(tracker->collect());
  if (!final_dirty.changes.empty()) SOURCE_TRY(announce_mappings(final_dirty.mappings));
  std::vector<transport::DigestEntry> dest_digests;
  // After the destination resumed in post-copy, it owns the VM: a failure
  // then loses it (the frozen source is not thawed, that would roll it back).
  bool vm_at_destination = false;
  auto lose_vm = [&](Error cause) -> Result<void> {
    Error e = std::move(cause).context("post-copy failed after the destination resumed the VM; the VM is lost");
    send_error_best_effort(session.control(), session.negotiated().version, e);
    tracker_stop.armed = false;
    (void)tracker->stop(freezer.get());
    kill_frozen(*freezer);
    (void)session.close(transport::Timeout(2000));
    result.completed = false;
    result.error = e.message;
    result.total_time_ms = total.elapsed_ms();
    return e;
  };
  if (o_.mode != MigrationMode::precopy) {  // --- post-copy: postcopy_source.cpp -------------
    // Pure post-copy: `pending` is still what was populated when tracking
    // began, and every page populated since is dirty; no scan in the downtime.
    const dt::RangeList needed = dt::unite(pending, final_dirty.dirty);
    // Ends the pre-copy phase on every bulk channel.
    SOURCE_TRY(sender.mark_round_end({round, 1, 0, 0, 0, dt::total_pages(needed), 0, 0}));
    PostcopySourceOptions po;
    // The tracker stays until the destination completed: the process never
    // runs here again unless the migration fails before the resume (fail()
    // stops the tracker before thawing), and unregistering its uffd-wp takes
    // the mm's lock for ~16 ms per GiB, stalling the page reads that serve
    // the resumed guest's first faults.
    po.pid = pid;
    po.exec_state_kind = uint32_t(o_.exec_state);
    po.prepaging = SOURCE_TRY(parse_prepaging(o_.postcopy.prepaging));
    po.pivots = o_.postcopy.pivots;
    po.timeout = o_.timeout;
    po.reconnect_timeout = transport::Timeout(o_.postcopy.reconnect_timeout_ms);
    if (o_.postcopy.reconnect_timeout_ms > 0)
      po.redial = [&](transport::Timeout within) {
        auto again = session_config;
        again.session_id = session.negotiated().session_id;
        again.handshake_timeout = std::min(again.handshake_timeout, within);
        return Session::connect(address, again, session.mappings());
      };
    PostcopySourceOutcome pc;
    auto served = run_postcopy_source(session, workers, po, needed, freeze_ns, pc);
    result.pages_pushed = pc.pages_pushed;
    result.postcopy_pages_requested = pc.pages_requested;
    result.postcopy_requests = pc.pages_requested;  // the runner replaces it with the destination's count
    bytes_total += pc.wire_bytes;
    raw_bytes_total += (pc.pages_pushed + pc.pages_requested) * kPageSize;
    result.postcopy_reconnects = pc.reconnects;
    result.postcopy_link_down_ms = pc.link_down_ms;
    if (!served)
      return pc.destination_may_run ? lose_vm(std::move(served).error()) : fail(std::move(served).error());
    vm_at_destination = true;
    result.downtime_ms = pc.resumed_after_ms;
    result.postcopy_complete_ms = pc.complete_after_ms;
    dest_digests = std::move(pc.digests);
    tracker_stop.armed = false;
    SOURCE_TRY(tracker->stop(freezer.get()));
  } else {
    // The last round sends what the previous collect found (the loop stopped
    // before sending it) together with what was dirtied since.
    const dt::RangeList final_pages = dt::unite(pending, final_dirty.dirty);
    RoundTotals last = SOURCE_TRY(sender.send_round(final_pages, round));
    bytes_total += last.wire_bytes;
    raw_bytes_total += last.pages * kPageSize;
    passthrough_total += last.passthrough_pages;
    result.pages_resent += last.pages;
    SOURCE_TRY(sender.mark_round_end({round, 1, last.pages, last.payload_bytes, 0, dt::total_pages(final_pages),
                                      last.duration_ns, last.batches}));
    result.rounds.push_back({round, last.pages, last.wire_bytes, double(last.duration_ns) * 1e-6, 0});
    // Leave nothing of ours in the process before it may run elsewhere.
    tracker_stop.armed = false;
    SOURCE_TRY(tracker->stop(freezer.get()));
    {
      OutMessage m;
      transport::encode_exec_state(m, session.negotiated().version, uint32_t(o_.exec_state), {});
      SOURCE_TRY(transport::send_message(session.control(), m, o_.timeout));
    }

    // --- verification and the destination's resume ---------------------------------
    if (o_.verify) {
      auto m = SOURCE_TRY(expect_message(session.control(), {transport::MsgType::digest}, o_.timeout));
      auto d = SOURCE_TRY(transport::decode_digest(m, session.mappings()));
      dest_digests.assign(d.begin(), d.end());
    }
    auto running = SOURCE_TRY(expect_message(session.control(), {transport::MsgType::resumed, transport::MsgType::ready},
                                     o_.timeout));
    (void)running;
    // Downtime ends when the destination reports its process running (or, for
    // an image, complete); the receive time is used so the figure holds across
    // hosts too (it includes one message latency).
    result.downtime_ms = double(now_ns() - freeze_ns) * 1e-6;
  }

  // From here a post-copy VM runs at the destination already.
#define VERDICT_TRY(expr)                                                                          \
  ({                                                                                               \
    auto r_ = (expr);                                                                              \
    if (!r_.ok()) return vm_at_destination ? lose_vm(std::move(r_).error()) : fail(std::move(r_).error()); \
    std::move(r_).value();                                                                         \
  })
  if (o_.verify) {
    Stopwatch verify_clock;
    std::vector<PageRange> ranges;
    for (const auto& e : session.mappings().entries()) ranges.push_back({e.start, e.end});
    auto data = VERDICT_TRY(dt::populated_pages(pid, final_dirty.mappings));
    auto mine = VERDICT_TRY(digest_process(pid, ranges, data));
    result.verify_pages = VERDICT_TRY(compare_digests(mine, dest_digests));
    result.verify_ok = true;
    result.verify_time_ms = verify_clock.elapsed_ms();
  }

  // Verdict: the destination keeps the VM; the source is released.
  {
    OutMessage m;
    transport::encode_close(m, session.negotiated().version, 0);
    VERDICT_TRY(transport::send_message(session.control(), m, o_.timeout));
  }
  kill_frozen(*freezer);
  (void)session.close(transport::Timeout(2000));
#undef VERDICT_TRY
#undef SOURCE_TRY

  result.completed = true;
  result.total_time_ms = total.elapsed_ms();
  result.transferred = bytes_total;
  result.dirty_sync_count = round + 1;
  result.mbps = double(bytes_total) * 8 / 1e6 / std::max(1e-9, result.total_time_ms * 1e-3);
  uint64_t pages_total = raw_bytes_total / kPageSize;
  result.pages_per_second = double(pages_total) / std::max(1e-9, result.total_time_ms * 1e-3);
  compress::CompressStats stats;
  for (const auto& w : workers) stats += w->stats();
  auto all = stats.total();
  result.pages_duplicate = stats.codec_total(Codec::zero).pages + stats.codec_total(Codec::uniform).pages;
  result.pages_normal = all.pages - result.pages_duplicate + passthrough_total;
  result.pages_compressed = all.pages - result.pages_duplicate - stats.codec_total(Codec::raw).pages;
  const uint64_t bytes_in = all.bytes_in + passthrough_total * kPageSize;
  const uint64_t bytes_out = all.bytes_out + passthrough_total * kPageSize;
  result.compression_ratio = bytes_out ? double(bytes_in) / double(bytes_out) : 0;
  result.cpu_seconds_source = thread_cpu_seconds() - cpu_start + sender.cpu_seconds();

  // The analytic model with what this run measured: R over all iterative
  // rounds, D averaged over them, and Vm the memory round 0 had to send
  // (never-touched pages are not sent, so they are not part of Vm).
  const double rate = precopy_ns ? double(precopy_pages) * kPageSize / (double(precopy_ns) * 1e-9) : 0;
  result.model_input.link_bytes_per_s = rate;
  result.model_input.dirty_pages_per_s = dirty_rate_rounds ? dirty_rate_sum / dirty_rate_rounds : 0;
  result.model_input.vm_bytes = double(first_round_pages * kPageSize);
  result.model_input.threshold_bytes =
      o_.convergence.downtime_target_ms > 0 ? rate * o_.convergence.downtime_target_ms / 1e3
                                            : double(o_.convergence.dirty_pages_threshold * kPageSize);
  result.model_input.max_rounds = o_.convergence.max_rounds;
  if (result.model_input.link_bytes_per_s > 0) result.model = predict(result.model_input);
  return ok();
}

}  // namespace lm::engine
