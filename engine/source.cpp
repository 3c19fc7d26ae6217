#include "engine/source.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <span>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stop_token>
#include <thread>
#include <vector>

#include "common/background.hpp"
#include "common/clock.hpp"
#include "common/fd.hpp"
#include "common/json.hpp"
#include "compress/adaptive.hpp"
#include "compress/compressor.hpp"
#include "dirtytrack/probe.hpp"
#include "dirtytrack/tracker.hpp"
#include "engine/messages.hpp"
#include "engine/digest.hpp"
#include "engine/postcopy_source.hpp"
#include "engine/source_process.hpp"
#include "engine/timeline.hpp"
#include "engine/urgent_thread.hpp"

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

// Same addresses and protections: the table the peer holds still describes them.
bool same_layout(const dt::MappingList& mappings, const transport::MappingTable& held) {
  const auto& e = held.entries();
  return std::equal(mappings.begin(), mappings.end(), e.begin(), e.end(),
                    [](const dt::Mapping& x, const transport::MappingEntry& y) {
                      return x.start == y.start && x.end == y.end && mapping_prot(x) == y.prot;
                    });
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

// fixed:raw: the read buffer is the payload, the compressor is not needed.
bool sends_raw(const compress::PolicySpec& p) {
  return p.kind == compress::PolicyKind::fixed && p.fixed.codec == Codec::raw;
}

struct RoundTotals {
  uint64_t pages = 0;          // pages sent
  uint64_t wire_bytes = 0;     // message bytes
  uint64_t payload_bytes = 0;  // page payloads
  uint64_t batches = 0;
  uint64_t unreadable = 0;     // pages whose mapping vanished while reading
  // The senders' time inside the channel on sampled batches (one in four),
  // split by their schedstat: on a CPU (pushing bytes through the transport:
  // on veth or loopback most of the network stack), waiting for a CPU, and
  // the rest, blocked because the link was full.
  struct InChannel {
    double wall_s = 0, run_s = 0, wait_s = 0;
    uint64_t bytes = 0, batches = 0;
    InChannel& operator+=(const InChannel& o) {
      wall_s += o.wall_s, run_s += o.run_s, wait_s += o.wait_s, bytes += o.bytes, batches += o.batches;
      return *this;
    }
  } sampled;
  uint64_t passthrough_pages = 0;  // fixed:raw pages sent from the read buffer, not the compressor
  uint64_t compressed_pages = 0;   // pages sent with a compressing codec (not raw, zero or uniform)
  uint64_t duration_ns = 0;

  RoundTotals& operator+=(const RoundTotals& o) {
    pages += o.pages;
    wire_bytes += o.wire_bytes;
    payload_bytes += o.payload_bytes;
    batches += o.batches;
    unreadable += o.unreadable;
    sampled += o.sampled;
    passthrough_pages += o.passthrough_pages;
    compressed_pages += o.compressed_pages;
    return *this;
  }
};

// What the senders' `totals` over `elapsed_s` (each of `threads` senders)
// tell the adaptive policy about the link. Saturated: the senders spent more
// than 15% of their time blocked in the channel, so the rate they achieved
// is the link's; otherwise the link took all they gave it and is at least
// that fast.
compress::LinkReport link_report(const RoundTotals& t, double elapsed_s, unsigned threads, bool raw_window) {
  constexpr uint64_t kMinSampledBatches = 8;
  compress::LinkReport r;
  r.raw_window = raw_window;  // also when nothing else is known yet
  const RoundTotals::InChannel& in = t.sampled;
  if (elapsed_s <= 0 || !in.batches || !t.batches) return r;
  r.bytes_per_s = double(t.wire_bytes) / elapsed_s;
  // Over a few sampled batches only: the policy keeps the lowest figure.
  if (in.bytes && in.batches >= kMinSampledBatches) r.send_cpu_ns_per_byte = in.run_s * 1e9 / double(in.bytes);
  const double blocked_s = std::max(0.0, in.wall_s - in.run_s - in.wait_s) * double(t.batches) / double(in.batches);
  r.held_back = blocked_s > 0.15 * elapsed_s * threads;
  // Only batches sent (nearly) raw measure the link: senders also block on
  // a destination short of CPU, and decoding compressed pages takes it more
  // (AdaptiveModel::probe_link_first). 0.9 Gbit/s was "measured" that way on
  // the 10 Gbit/s rig.
  r.saturated = r.held_back && r.raw_window;
  return r;
}

// Bytes the peer acknowledged over a window, from the bulk channels'
// counters at its start and end; nullopt if they are not known, or if a
// channel waited on the destination's receive window for over 10% of the
// window (`window_ns`): the destination, not the link, set the pace then.
std::optional<uint64_t> acked_over(std::span<const transport::LinkCounters> from,
                                   std::span<const transport::LinkCounters> to, uint64_t window_ns) {
  if (from.empty() || from.size() != to.size()) return std::nullopt;
  uint64_t acked = 0;
  for (size_t c = 0; c < from.size(); c++) {
    if (double(to[c].peer_limited_us - from[c].peer_limited_us) > 0.1e-3 * double(window_ns)) return std::nullopt;
    acked += to[c].acked_bytes - from[c].acked_bytes;
  }
  return acked;
}

// Pages of a batch sent with a compressing codec.
uint64_t compressed_pages(const std::vector<PageEntry>& entries) {
  uint64_t n = 0;
  for (const PageEntry& e : entries) n += e.codec != Codec::raw && e.codec != Codec::zero && e.codec != Codec::uniform;
  return n;
}

// A planted regression for the perf-gate tests (tests/harness): with
// LIVEMIG_TEST_SEND_SLOWDOWN_PCT=P every sender, after sending a batch, keeps
// its CPU busy for P% of the CPU time that batch took (read, compress,
// encode, send): the send path does P% more work, as a real regression of it
// would, so the senders' CPU per page (and on an idle machine the time) grows
// by P%. Busy work rather than a sleep: a sleep is invisible to CPU time, and
// the wall time of a loaded machine hides it. Not for production use.
double test_send_slowdown_from_env() {
  const char* v = std::getenv("LIVEMIG_TEST_SEND_SLOWDOWN_PCT");
  if (!v || !*v) return 0;
  const double pct = std::strtod(v, nullptr);
  return pct > 0 && pct <= 1000 ? pct / 100 : 0;
}

// Keeps the calling thread's CPU busy until it has used `seconds` more CPU
// time (time spent waiting for a CPU does not count).
void burn_thread_cpu(double seconds) {
  const double until = thread_cpu_seconds() + seconds;
  volatile uint64_t x = 0;
  while (thread_cpu_seconds() < until)
    for (int i = 0; i < 256; i++) x = x * 6364136223846793005ull + 1442695040888963407ull;
}

// The calling thread's time on a CPU (its CPU clock) and runnable but
// waiting for one (the second field of /proc/thread-self/schedstat);
// negative when the kernel keeps no schedstat. Not schedstat's first field:
// for a running thread it moves only at scheduler ticks, so around one short
// send it reads 0 or a whole tick.
struct ThreadTimes {
  double run_s = -1, wait_s = -1;
  bool known() const { return run_s >= 0; }
};
ThreadTimes thread_times() {
  // Opened once per thread (it names the thread that opened it) and read
  // from its start each time: one pread, and the CPU clock.
  thread_local const UniqueFd schedstat(::open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC));
  if (!schedstat.valid()) return {};
  char buf[128];
  const ssize_t n = ::pread(schedstat.get(), buf, sizeof buf - 1, 0);
  unsigned long long wait_ns = 0;
  if (n <= 0) return {};
  buf[n] = 0;
  if (std::sscanf(buf, "%*s %llu", &wait_ns) != 1) return {};
  return {thread_cpu_seconds(), double(wait_ns) * 1e-9};
}

// The host's CPU-seconds so far idle (idle and iowait) and in softirq, from
// /proc/stat's clock ticks (10 ms); negative when not readable.
struct HostCpuTimes {
  double idle_s = -1, softirq_s = -1;
};
HostCpuTimes host_cpu_times() {
  const UniqueFd stat(::open("/proc/stat", O_RDONLY | O_CLOEXEC));
  char buf[256];
  const ssize_t n = stat.valid() ? ::pread(stat.get(), buf, sizeof buf - 1, 0) : -1;
  if (n <= 0) return {};
  buf[n] = 0;
  unsigned long long idle = 0, iowait = 0, softirq = 0;
  if (std::sscanf(buf, "cpu %*s %*s %*s %llu %llu %*s %llu", &idle, &iowait, &softirq) != 3) return {};
  const double tick_s = 1.0 / double(sysconf(_SC_CLK_TCK));
  return {double(idle + iowait) * tick_s, double(softirq) * tick_s};
}

// Times one sampled batch's stays inside the channel into `into`.
class InChannelClock {
 public:
  InChannelClock(bool sample, RoundTotals::InChannel& into) : sample_(sample), into_(into) {}
  void enter() {
    if (!sample_) return;
    at_ = thread_times();
    wall_ns_ = now_ns();
  }
  void leave() {
    if (!sample_) return;
    const ThreadTimes now = thread_times();
    if (!at_.known() || !now.known()) {
      sample_ = false;
      return;
    }
    span_.wall_s += double(now_ns() - wall_ns_) * 1e-9;
    span_.run_s += now.run_s - at_.run_s;
    span_.wait_s += now.wait_s - at_.wait_s;
  }
  void count(uint64_t bytes) {
    if (!sample_) return;
    span_.bytes = bytes;
    span_.batches = 1;
    into_ += span_;
  }

 private:
  bool sample_;
  RoundTotals::InChannel& into_;
  RoundTotals::InChannel span_;
  ThreadTimes at_;
  uint64_t wall_ns_ = 0;
};

// The bulk senders of one migration: `threads` workers, each with its own
// compressor and buffers, sharing the session's bulk channels and reading
// the process concurrently.
class BulkSender {
 public:
  struct Slot {
    std::unique_ptr<std::byte[]> pages;
    std::vector<uint64_t> addrs;
    std::vector<const uint8_t*> ptrs;
    compress::CompressedBatch batch;
    OutMessage message;
    uint64_t seq = 0;  // send in flight on the channel, 0 when free
  };
  static constexpr unsigned kSlots = 3;  // read/compress one batch while two are on the wire
  using Buffers = std::vector<std::unique_ptr<Slot[]>>;  // kSlots per sender thread

  // The buffers of `threads` sender threads, made before the sender (setup
  // makes them on a thread of its own while it waits). They live as long as the
  // migration and are touched once here: first touch of fresh memory costs
  // several µs per page on these machines, more than reading or copying the
  // page.
  static Result<Buffers> make_buffers(unsigned threads, unsigned batch_pages) {
    const size_t bytes = size_t(batch_pages) * kPageSize;
    Buffers buffers;
    try {
      for (unsigned t = 0; t < threads; t++) {
        buffers.push_back(std::make_unique<Slot[]>(kSlots));
        for (unsigned i = 0; i < kSlots; i++) {
          Slot& s = buffers.back()[i];
          s.pages = std::make_unique<std::byte[]>(bytes);
          std::memset(s.pages.get(), 0, bytes);
          s.batch.payload.resize(bytes);
          std::memset(s.batch.payload.data(), 0, s.batch.payload.size());
          s.batch.entries.reserve(batch_pages);
          s.addrs.reserve(batch_pages);
          s.ptrs.reserve(batch_pages);
        }
      }
    } catch (const std::bad_alloc&) {
      return Error::sys(ENOMEM, strf("sender buffers (%u threads, %u x 2 x %zu KiB each)", threads, kSlots,
                                     bytes >> 10));
    }
    return buffers;
  }

  BulkSender(const SourceProcess& process, Session& session,
             std::vector<std::unique_ptr<compress::Compressor>>& workers, Buffers buffers, unsigned batch_pages,
             transport::Timeout timeout, uint64_t fault_corrupt_batch, bool raw_passthrough,
             transport::PayloadCheck payload_check, const Cancel* cancel, LinkShare::Member* link_share)
      : process_(process),
        session_(session),
        workers_(workers),
        batch_pages_(batch_pages),
        timeout_(timeout),
        fault_corrupt_batch_(fault_corrupt_batch),
        raw_passthrough_(raw_passthrough),
        payload_check_(payload_check),
        cancel_(cancel),
        test_send_slowdown_(test_send_slowdown_from_env()),
        link_share_(link_share),
        slots_(std::move(buffers)) {
    for (size_t i = 0; i < session.bulk_count(); i++) channel_locks_.push_back(std::make_unique<std::mutex>());
    handed_bytes_.assign(session.bulk_count(), 0);
  }

  // Sends every page of `pages` on the pool's threads, counting them into
  // `timeline`; returns when all sends completed. `last`: no page of this
  // round is sent again (stop-and-copy).
  Result<RoundTotals> send_round(const dt::RangeList& pages, uint32_t round, Timeline& timeline, bool last) {
    begin_round(round, timeline, dt::total_pages(pages), last);
    feed(pages);
    return finish_round(Finish::sent);
  }

  // A round whose pages come in pieces (round 0 while the tracker protects
  // chunk by chunk): begin_round(), feed() each piece as soon as it may be
  // read, finish_round(). The threads send each piece as it comes, keeping
  // their batches in flight across pieces.
  void begin_round(uint32_t round, Timeline& timeline, uint64_t known_pages = 0, bool last = false) {
    const unsigned threads = unsigned(workers_.size());
    start_pool();
    timeline.begin_round(round, known_pages);
    on_link_.emplace(link_share_);  // the group's other VMs wait for this one only while it sends
    {
      std::lock_guard g(jobs_lock_);
      round_clock_ = Stopwatch();
      job_.parts.assign(threads, {});
      job_.closed = false;
      job_.round = round;
      job_.last = last;
      job_.timeline = &timeline;
      job_.totals.assign(threads, {});
      job_.errors.assign(threads, std::nullopt);
      job_.running = threads;
      failed_ = false;
      job_.generation++;
    }
    jobs_cv_.notify_all();
  }

  // More pages of the round begun (beyond its `known_pages` the caller
  // tells the timeline).
  void feed(const dt::RangeList& pages) {
    if (pages.empty()) return;
    std::vector<dt::RangeList> parts = partition(pages, unsigned(workers_.size()));
    {
      std::lock_guard g(jobs_lock_);
      for (size_t t = 0; t < parts.size(); t++)
        if (!parts[t].empty()) job_.parts[t].push_back(std::move(parts[t]));
    }
    jobs_cv_.notify_all();
  }

  // A sender failed this round: finish_round() says why; feeding more is in vain.
  bool failing() const { return failed_; }

  // Ends the round: `sent` waits until every page fed was sent, `abandon`
  // stops the threads at their next batch (the caller failed). Either way no
  // thread reads or sends for the round any more when it returns.
  enum class Finish { sent, abandon };
  Result<RoundTotals> finish_round(Finish how) {
    {
      std::lock_guard g(jobs_lock_);
      job_.closed = true;
      if (how == Finish::abandon) failed_ = true;
    }
    jobs_cv_.notify_all();
    std::unique_lock g(jobs_lock_);
    done_cv_.wait(g, [&] { return job_.running == 0; });
    on_link_.reset();
    for (auto& e : job_.errors)
      if (e) return std::move(*e);
    RoundTotals sum;
    for (const auto& t : job_.totals) sum += t;
    sum.duration_ns = round_clock_.elapsed_ns();
    return sum;
  }

  double cpu_seconds() const { return cpu_seconds_.load(); }
  // What the sender threads did over all rounds: pages sent, and the time
  // they were runnable but waited for a CPU (negative: not known).
  uint64_t pages_sent() const { return pages_sent_.load(); }
  double run_queue_wait_seconds() const { return run_queue_wait_known_ ? run_queue_wait_seconds_.load() : -1; }

  // In-band end-of-round mark on every bulk channel: the destination knows a
  // channel has delivered everything of the round once it reads this.
  Result<void> mark_round_end(const RoundEnd& body) {
    for (size_t c = 0; c < session_.bulk_count(); c++) {
      std::lock_guard lock(*channel_locks_[c]);
      LM_TRY(Peer::bulk(session_, c, timeout_).send(body));
    }
    return ok();
  }

 private:
  // Thread t's share of the round: every piece fed to it, in order, until
  // the round is closed and none is left (or a thread failed).
  Result<RoundTotals> send_part(unsigned t, uint32_t round, Timeline& timeline, const std::atomic<bool>& failed,
                                std::stop_token stop) {
    RoundTotals totals;
    const uint64_t part_start_ns = now_ns();
    struct {
      uint64_t ns, wire, pages, compressed;
      bool first;
      std::vector<transport::LinkCounters> counters;
      HostCpuTimes host;
    } window{part_start_ns, sent_wire_bytes_, sent_pages_, sent_compressed_pages_, true, link_counters(),
             host_cpu_times()};
    size_t c = t % session_.bulk_count();
    const Peer peer = Peer::bulk(session_, c, timeout_);
    Channel& channel = peer.channel();
    std::mutex& lock = *channel_locks_[c];
    compress::Compressor& compressor = *workers_[t];
    const ProbeBase probe_base = probe_base_of(c, window.counters);
    Slot* slots = slots_[t].get();

    auto wait_slot = [&](Slot& s) -> Result<void> {
      if (s.seq == 0) return ok();
      std::lock_guard g(lock);
      auto r = channel.wait_sent(s.seq, timeout_);
      s.seq = 0;
      return r;
    };

    uint64_t n = 0;  // batches, over all pieces: the slot to use next
    for (std::optional<dt::RangeList> ranges; (ranges = next_piece(t, stop));) {
      RangeCursor cursor{*ranges};
      for (; !cursor.done() && !failed; n++) {
        if (cancel_ && cancel_->requested()) return cancel_->error();
        const double batch_cpu0 = test_send_slowdown_ > 0 ? thread_cpu_seconds() : 0;
        // One batch in four: reading the schedstat is a system call.
        InChannelClock in_channel(n % 4 == 0, totals.sampled);
        Slot& s = slots[n % kSlots];
        in_channel.enter();
        LM_TRY(wait_slot(s));
        in_channel.leave();
        const dt::RangeList batch = cursor.take(batch_pages_);
        const uint64_t count = dt::total_pages(batch);
        LM_TRY(read_batch(batch, count, s, totals));
        if (s.addrs.empty()) continue;
        std::span<std::byte> payload = LM_TRY(payload_of(s, count, round, compressor, totals));
        peer.encode(s.message, PageBatch{round, s.batch.entries, payload, payload_check_});
        if (fault_corrupt_batch_ && ++batches_encoded_ == fault_corrupt_batch_ && !payload.empty())
          payload[payload.size() / 2] ^= std::byte{0x40};
        if (link_share_) LM_TRY(link_share_->acquire(s.message.size(), s.addrs.size(), cancel_));
        in_channel.enter();  // a probe held back waits for the link, as a full channel does
        LM_TRY(hold_probe_in_flight(compressor, c, probe_base));
        {
          std::lock_guard g(lock);
          s.seq = LM_TRY(channel.send(s.message.pieces(), timeout_));
          handed_bytes_[c] += s.message.size();
        }
        in_channel.leave();
        in_channel.count(s.message.size());
        totals.pages += s.addrs.size();
        totals.wire_bytes += s.message.size();
        timeline.sent(s.message.size(), s.addrs.size(), count);
        // Adaptive feedback while the round runs (round 0 may be the whole
        // migration): the senders' time blocked in the channel, and their
        // rates over windows.
        sent_wire_bytes_ += s.message.size();
        sent_pages_ += s.addrs.size();
        const uint64_t compressed = compressed_pages(s.batch.entries);
        totals.compressed_pages += compressed;
        sent_compressed_pages_ += compressed;
        // All senders' rates over a window of 50 ms or more, not since the
        // part began: the plan changes along the way. Counting bytes
        // written, the first 150 ms fill the socket buffers (which grow
        // meanwhile) faster than the link drains them, so they only start
        // the next window; bytes acknowledged need no such wait (a probe of
        // 200 ms sent 15k raw pages at 2.5 Gbit/s). Windows end at the batch
        // that reaches their length (8 batches are 55 ms of raw pages at
        // 2.5 Gbit/s: the probe ran raw 290 ms, not 200).
        const uint64_t now = now_ns();
        const bool wait_for_buffers = window.first && window.counters.empty();
        const bool window_ends = now - window.ns >= (wait_for_buffers ? 150'000'000u : 50'000'000u);
        if (window_ends || totals.batches % 8 == 7) {
          const bool measured = window_ends && !wait_for_buffers;
          const uint64_t wire = sent_wire_bytes_, pages = sent_pages_, compressed = sent_compressed_pages_;
          // Raw: at most 1 page in 10 went through a compressing codec
          // (zero and uniform pages are not compression: raw sends them so).
          const bool raw = measured && 10 * (compressed - window.compressed) <= pages - window.pages;
          compress::LinkReport link = link_report(totals, double(now - part_start_ns) * 1e-9, 1, raw);
          link.bytes_per_s = 0;  // not known unless a window ends here
          std::vector<transport::LinkCounters> counters;
          const HostCpuTimes host = window_ends ? host_cpu_times() : HostCpuTimes{};
          if (window_ends) counters = link_counters();
          if (measured) {
            const double per_s = 1e9 / double(now - window.ns);
            link.bytes_per_s = double(wire - window.wire) * per_s;
            link.pages_per_s = double(pages - window.pages) * per_s;
            link.since_ns = window.ns;
            // Counted in bytes acknowledged where the channels keep them.
            link.acked = !window.counters.empty() && window.counters.size() == counters.size();
            const std::optional<uint64_t> acked = acked_over(window.counters, counters, now - window.ns);
            if (link.acked) link.bytes_per_s = acked ? double(*acked) * per_s : 0;
            if (host.idle_s >= 0 && window.host.idle_s >= 0) {
              link.idle_cpus = std::max(0.0, host.idle_s - window.host.idle_s) * per_s;
              if (acked && *acked > 0)
                link.softirq_ns_per_byte = std::max(0.0, host.softirq_s - window.host.softirq_s) * 1e9 / double(*acked);
            }
          }
          if (window_ends) window = {now, wire, pages, compressed, false, std::move(counters), host};
          compressor.report_link(link);
        }
        totals.payload_bytes += payload.size();
        totals.batches++;
        if (test_send_slowdown_ > 0) burn_thread_cpu((thread_cpu_seconds() - batch_cpu0) * test_send_slowdown_);
      }
    }
    for (unsigned i = 0; i < kSlots; i++) LM_TRY(wait_slot(slots[i]));
    return totals;
  }

  // While the adaptive policy probes the link with raw batches (round 0's
  // start), a channel holds at most kProbeInFlight bytes of them not yet
  // acknowledged, or a quarter of what the link took so far if more (a
  // fast link is held only in its first milliseconds). Unbounded, the
  // senders handed 20 MiB to the channels in the first 35 ms at 1 Gbit/s
  // (batches in flight, socket buffers, the qdisc), and the probe sent
  // 28-36 MiB raw, 6% of the migration's time there; 2 MiB still keeps the
  // link busy (Sweep G, docs/compress.md). Only where the channel counts
  // acknowledged bytes.
  static constexpr int64_t kProbeInFlight = 2 << 20;
  struct ProbeBase {
    bool known = false;
    uint64_t acked = 0, handed = 0;  // channel c's counters when the part began
  };
  ProbeBase probe_base_of(size_t c, const std::vector<transport::LinkCounters>& counters) {
    if (c >= counters.size()) return {};
    std::lock_guard g(*channel_locks_[c]);
    return {true, counters[c].acked_bytes, handed_bytes_[c]};
  }
  Result<void> hold_probe_in_flight(const compress::Compressor& compressor, size_t c, const ProbeBase& base) {
    if (!base.known) return ok();
    Channel& channel = session_.bulk(c);
    while (compressor.probing_link()) {
      const std::optional<transport::LinkCounters> now = channel.link_counters();
      if (!now) return ok();
      uint64_t handed;
      {
        std::lock_guard g(*channel_locks_[c]);
        handed = handed_bytes_[c];
        // The channel finishes its sends only when called (io_uring: a
        // short send is resubmitted on its completion): without this, two
        // senders holding here on one channel waited for each other.
        (void)channel.send_completed();
      }
      const int64_t acked = int64_t(now->acked_bytes - base.acked);
      if (int64_t(handed - base.handed) - acked <= std::max(kProbeInFlight, acked / 4)) return ok();
      if (cancel_ && cancel_->requested()) return cancel_->error();
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return ok();
  }

  // Every bulk channel's link counters, or none if a channel keeps none.
  std::vector<transport::LinkCounters> link_counters() {
    std::vector<transport::LinkCounters> all;
    for (size_t c = 0; c < session_.bulk_count(); c++) {
      std::optional<transport::LinkCounters> one = session_.bulk(c).link_counters();
      if (!one) return {};
      all.push_back(*one);
    }
    return all;
  }

  // Thread t's next piece of the round; nullopt once the round is closed and
  // nothing is left for it, or a thread failed, or the pool stops.
  std::optional<dt::RangeList> next_piece(unsigned t, std::stop_token stop) {
    std::unique_lock g(jobs_lock_);
    if (!jobs_cv_.wait(g, stop, [&] { return failed_ || !job_.parts[t].empty() || job_.closed; }))
      return std::nullopt;
    if (failed_ || job_.parts[t].empty()) return std::nullopt;
    dt::RangeList piece = std::move(job_.parts[t].front());
    job_.parts[t].pop_front();
    return piece;
  }

  // Pages of a round's ranges, batch by batch, in order.
  struct RangeCursor {
    const dt::RangeList& ranges;
    size_t index = 0;
    uint64_t offset = 0;  // pages into ranges[index]

    bool done() const { return index >= ranges.size(); }
    dt::RangeList take(uint64_t pages) {
      dt::RangeList batch;
      while (pages > 0 && !done()) {
        const PageRange& r = ranges[index];
        uint64_t n = std::min(pages, r.pages() - offset);
        batch.push_back({r.start + offset * kPageSize, r.start + (offset + n) * kPageSize});
        pages -= n;
        offset += n;
        if (offset == r.pages()) {
          index++;
          offset = 0;
        }
      }
      return batch;
    }
  };

  // Reads `batch` into the slot; its addrs/ptrs list the pages that were read.
  // A page whose mapping vanished is not sent: the next collect reports the
  // mapping change.
  Result<void> read_batch(const dt::RangeList& batch, uint64_t count, Slot& s, RoundTotals& totals) {
    auto report = LM_TRY(process_.read(batch, {s.pages.get(), count * kPageSize}));
    s.addrs.clear();
    s.ptrs.clear();
    uint64_t i = 0;
    for (const auto& r : batch) {
      for (uint64_t a = r.start; a < r.end; a += kPageSize, i++) {
        if (!report.failed.empty() && dt::contains(report.failed, a)) {
          totals.unreadable++;
          continue;
        }
        s.addrs.push_back(a);
        s.ptrs.push_back(reinterpret_cast<const uint8_t*>(s.pages.get()) + i * kPageSize);
      }
    }
    return ok();
  }

  // The batch's payload: with every page read, the read buffer itself for
  // fixed:raw (no copy per page) and for an adaptive plan that sends pages
  // raw (compress_batch_in); else the compressor's output.
  Result<std::span<std::byte>> payload_of(Slot& s, uint64_t count, uint32_t round, compress::Compressor& compressor,
                                          RoundTotals& totals) {
    if (raw_passthrough_ && s.addrs.size() == count) {
      s.batch.entries.clear();
      for (uint64_t a : s.addrs) s.batch.entries.push_back({a, uint32_t(kPageSize), Codec::raw, 0, 0});
      totals.passthrough_pages += count;
      return std::span<std::byte>{s.pages.get(), count * kPageSize};
    }
    // Re-sent pages may go as a delta against the version sent before; the
    // stripe-to-channel rule guarantees the destination applied it first.
    const auto kind = round == 0  ? compress::SendKind::first
                      : job_.last ? compress::SendKind::last
                                  : compress::SendKind::resend;
    // Every page read: the compressor may use the read buffer as the payload.
    if (s.addrs.size() == count)
      return compressor.compress_batch_in(s.addrs, {s.pages.get(), count * kPageSize}, s.batch, kind);
    LM_TRY(compressor.compress_batch(s.addrs, s.ptrs, s.batch, kind));
    return std::span<std::byte>{reinterpret_cast<std::byte*>(s.batch.payload.data()), s.batch.payload.size()};
  }

  // The pool: one thread per compressor for the whole migration, woken per
  // round. Threads stay alive until the sender is destroyed, so the sends a
  // thread queued (io_uring) are never cancelled by its exit.
  void start_pool() {
    if (!pool_.empty()) return;
    for (unsigned t = 0; t < workers_.size(); t++)
      pool_.emplace_back([this, t](std::stop_token stop) { pool_thread(stop, t); });
  }

  void pool_thread(std::stop_token stop, unsigned t) {
    uint64_t done_generation = 0;
    for (;;) {
      {
        std::unique_lock g(jobs_lock_);
        if (!jobs_cv_.wait(g, stop, [&] { return job_.generation != done_generation; })) return;
        done_generation = job_.generation;
      }
      const double cpu0 = thread_cpu_seconds();
      const ThreadTimes times0 = thread_times();
      auto r = send_part(t, job_.round, *job_.timeline, failed_, stop);
      add(cpu_seconds_, thread_cpu_seconds() - cpu0);
      const ThreadTimes times1 = thread_times();
      if (!times0.known() || !times1.known())
        run_queue_wait_known_ = false;
      else
        add(run_queue_wait_seconds_, times1.wait_s - times0.wait_s);
      std::lock_guard g(jobs_lock_);
      if (r) {
        pages_sent_ += r->pages;
        job_.totals[t] = *r;
      } else {
        job_.errors[t] = std::move(r).error();
        failed_ = true;
        jobs_cv_.notify_all();  // the others may wait for a piece
      }
      if (--job_.running == 0) done_cv_.notify_all();
    }
  }

  static void add(std::atomic<double>& to, double seconds) {
    double cur = to.load();
    while (!to.compare_exchange_weak(cur, cur + seconds)) {
    }
  }

  const SourceProcess& process_;
  Session& session_;
  std::vector<std::unique_ptr<compress::Compressor>>& workers_;
  std::atomic<double> cpu_seconds_{0};  // CPU of the sender threads, all rounds
  std::atomic<double> run_queue_wait_seconds_{0};
  std::atomic<bool> run_queue_wait_known_{true};  // false once a thread could not read its schedstat
  std::atomic<uint64_t> pages_sent_{0};
  unsigned batch_pages_;
  transport::Timeout timeout_;
  uint64_t fault_corrupt_batch_;
  bool raw_passthrough_;
  transport::PayloadCheck payload_check_;
  const Cancel* cancel_;  // may be null
  double test_send_slowdown_;  // test only: LIVEMIG_TEST_SEND_SLOWDOWN_PCT / 100
  LinkShare::Member* link_share_;  // may be null: the link is this migration's alone
  // By all senders: the link's rate, and whether the pages went raw.
  std::atomic<uint64_t> sent_wire_bytes_{0}, sent_pages_{0}, sent_compressed_pages_{0};
  std::atomic<uint64_t> batches_encoded_{0};
  Buffers slots_;
  std::vector<std::unique_ptr<std::mutex>> channel_locks_;
  std::vector<uint64_t> handed_bytes_;  // per bulk channel, under its lock: page batches handed to it

  // The round being sent; written under jobs_lock_ before `generation`
  // changes, read by each pool thread after it saw the change (`parts` and
  // `closed` only under jobs_lock_: they change while the round runs).
  struct Job {
    uint64_t generation = 0;
    uint32_t round = 0;
    bool last = false;  // the pages' last send
    Timeline* timeline = nullptr;
    std::vector<std::deque<dt::RangeList>> parts;  // per thread: the pieces fed and not yet taken
    bool closed = false;  // no more pieces come
    std::vector<RoundTotals> totals;
    std::vector<std::optional<Error>> errors;
    unsigned running = 0;  // threads still sending this round
  };
  std::mutex jobs_lock_;
  std::condition_variable_any jobs_cv_;
  std::condition_variable done_cv_;
  Job job_;
  Stopwatch round_clock_;
  std::optional<LinkShare::Round> on_link_;  // from begin_round() to finish_round()
  std::atomic<bool> failed_{false};  // a thread failed this round: the others stop early
  std::vector<std::jthread> pool_;   // last: stopped and joined first
};

}  // namespace

std::string_view source_phase_name(SourcePhase p) {
  switch (p) {
    case SourcePhase::setup: return "setup";
    case SourcePhase::precopy: return "precopy";
    case SourcePhase::stop_and_copy: return "stop-and-copy";
    case SourcePhase::commit: return "commit";
    case SourcePhase::postcopy: return "postcopy";
    case SourcePhase::verify: return "verify";
    case SourcePhase::released: return "released";
    case SourcePhase::rolled_back: return "rolled-back";
    case SourcePhase::lost: return "lost";
  }
  return "unknown";
}

namespace {

enum class OnFailure { roll_back, lose_vm };

// The one place that decides what a failure means (diagram in source.hpp).
OnFailure on_failure(SourcePhase phase, bool destination_may_run) {
  switch (phase) {
    case SourcePhase::setup:
    case SourcePhase::precopy:
    case SourcePhase::stop_and_copy:
    case SourcePhase::commit:
      return OnFailure::roll_back;
    case SourcePhase::postcopy:
    case SourcePhase::verify:
      return destination_may_run ? OnFailure::lose_vm : OnFailure::roll_back;
    case SourcePhase::released:
    case SourcePhase::rolled_back:
    case SourcePhase::lost:
      break;
  }
  return OnFailure::roll_back;
}

bool transition_allowed(SourcePhase from, SourcePhase to) {
  using P = SourcePhase;
  if (to == P::rolled_back || to == P::lost) return from != P::released && from != P::rolled_back && from != P::lost;
  switch (from) {
    case P::setup: return to == P::precopy || to == P::stop_and_copy;
    case P::precopy: return to == P::stop_and_copy;
    case P::stop_and_copy: return to == P::commit;
    case P::commit: return to == P::verify || to == P::postcopy;
    case P::postcopy: return to == P::verify;
    case P::verify: return to == P::released;
    default: return false;
  }
}

// Figures summed over the rounds, for the result and the model.
struct SendFigures {
  uint64_t wire_bytes = 0;
  uint64_t raw_bytes = 0;
  uint64_t passthrough_pages = 0;  // fixed:raw pages that bypassed the compressor
  double page_rate = 0;            // pages delivered per second, last full round
  uint64_t precopy_pages = 0;      // pages sent by the iterative rounds
  uint64_t precopy_ns = 0;         // and the time they took
  uint64_t first_round_pages = 0;
  // The model's D: pages dirtied over the collect intervals they were counted
  // in, and those intervals' seconds (D = their ratio, a rate over the whole
  // pre-copy like the guest's own write rate).
  double dirtied_pages = 0;
  double dirtied_over_s = 0;
};

// One migration of the source side: the phases of source.hpp as methods,
// each returning the next phase; run() drives them and routes every failure
// through fail().
class SourceRun {
 public:
  SourceRun(const SourceOptions& o, transport::Dial dial, const std::string& peer, MigrationResult& result)
      : o_(o), dial_(std::move(dial)), peer_(peer), result_(result), policy_(o.convergence) {}
  ~SourceRun() { stop_tracker(); }

  Result<void> run() {
    for (;;) {
      Result<SourcePhase> next = step();
      if (!next) return fail(std::move(next).error());
      if (*next == SourcePhase::released) return finish();
      enter(*next);
    }
  }

 private:
  Result<SourcePhase> step() {
    switch (phase_) {
      case SourcePhase::setup: return setup();
      case SourcePhase::precopy: return precopy();
      case SourcePhase::stop_and_copy: return stop_and_copy();
      case SourcePhase::commit: return commit();
      case SourcePhase::postcopy: return postcopy();
      case SourcePhase::verify: return verify();
      default: return Error::msg(strf("source pid %d: no step from phase %s", pid(),
                                      std::string(source_phase_name(phase_)).c_str()));
    }
  }

  void enter(SourcePhase next) {
    if (!transition_allowed(phase_, next)) {
      std::fprintf(stderr, "livemig: source phase %s -> %s is not a transition\n",
                   std::string(source_phase_name(phase_)).c_str(), std::string(source_phase_name(next)).c_str());
      std::abort();
    }
    phase_ = next;
    timeline_.phase(source_phase_name(next));
    if (o_.on_phase) o_.on_phase(next);
  }

  const Cancel* cancel() const { return o_.cancel.get(); }
  // A pre-copy page is checked where a mismatch still rolls back: by the
  // destination's digests, compared before the source is released. Post-copy
  // and hybrid commit first, so each message checks its own payload there.
  transport::PayloadCheck payload_check() const {
    return o_.mode == MigrationMode::precopy && o_.verify ? transport::PayloadCheck::digest
                                                          : transport::PayloadCheck::checksum;
  }
  pid_t pid() const { return process_ ? process_->pid() : o_.pid; }
  Result<void> check_cancel() const {
    if (cancel() && cancel()->requested()) return cancel()->error();
    return ok();
  }
  // The control channel; waits on it end early on a cancel.
  Peer control() { return Peer::control(*session_, o_.timeout, cancel()); }

  // --- setup: refuse bad targets, session, tracker, compressors -----------------------
  // Tracking starts once the destination is ready: what it finds populated
  // is round 0, and nothing written during the destination's setup is sent
  // twice. The handshake announces the mappings read beforehand.
  //
  // What needs neither the handshake nor the ready runs on threads of its
  // own beside the critical path (attach, mappings, handshake, tracker
  // start): the host probe and the tracker's preparation beside the
  // handshake, the senders' compressors and buffers from the connect on.
  // Each part of the breakdown is what this thread waited for; a failure of
  // either is reported when it is waited for, and an early return joins both
  // threads first, so nothing they made (a ptrace seize, a userfaultfd)
  // outlives the setup.
  Result<SourcePhase> setup() {
    if (o_.on_phase) o_.on_phase(SourcePhase::setup);
    SetupBreakdown& parts = result_.setup_breakdown;
    uint64_t lap_ns = now_ns();
    auto lap = [&](double& part) {  // the time since the previous lap goes to `part`
      const uint64_t now = now_ns();
      part += double(now - lap_ns) * 1e-6;
      lap_ns = now;
    };
    result_.policy = o_.policy.name;
    std::optional<Background<SenderParts>> senders;  // from the connect on
    process_ = LM_TRY(o_.make_process ? o_.make_process() : linux_process(o_.pid));
    const pid_t pid = process_->pid();
    LM_TRY(process_->check_target(o_.allow_other_user ? dt::OtherUsers::allow : dt::OtherUsers::refuse));
    lap(parts.attach);
    if (o_.exec_state == ExecStateKind::guest_ram && o_.after == AfterMigration::keep)
      return Error::msg(strf("source pid %d: --after keep with a destination that resumes the VM would run it twice",
                             pid));
    // The host probe (a fork to try ptrace, a test userfaultfd: tens of ms
    // here) and the tracker's preparation (uffd-wp: its userfaultfd made in
    // the target, which seizes it for a moment) while the handshake below
    // waits on the network; `tracker-probe` is what is left to wait for after it.
    // Pure post-copy tracks nothing: the process is frozen as soon as the
    // destination is ready, and what it holds then is read at the freeze.
    const bool tracks = o_.mode != MigrationMode::postcopy;
    Background<std::unique_ptr<dt::Tracker>> prober([this, pid, tracks]() -> Result<std::unique_ptr<dt::Tracker>> {
      if (!tracks) return std::unique_ptr<dt::Tracker>();
      auto tracker = LM_TRY(o_.make_tracker ? o_.make_tracker() : dt::make_tracker(o_.tracker));
      LM_TRY_CTX(tracker->prepare({pid, o_.scope, nullptr}), strf("track pid %d", pid));
      return tracker;
    });
    const dt::MappingList announced = LM_TRY_CTX(process_->mappings(o_.scope), strf("source pid %d", pid));
    lap(parts.mappings);
    auto table = LM_TRY(mapping_table(announced, generation_));
    result_.ram_total = table.total_bytes();
    session_config_ = o_.session;
    session_config_.bulk_channels = uint16_t(o_.channels);
    session_config_.dialing = transport::Dialing::concurrent;  // the dial functions given to run() are thread-safe
    // The destination asks the resumed guest for a userfaultfd only for post-copy,
    // and hashes pages only for a verify (post-copy's digests end its serving).
    if (o_.mode == MigrationMode::precopy) session_config_.features &= ~uint64_t(transport::kFeaturePostCopy);
    if (o_.mode == MigrationMode::precopy && !o_.verify)
      session_config_.features &= ~uint64_t(transport::kFeatureDigest);
    LM_TRY(check_cancel());  // before a destination starts preparing for us
    lap_ns = now_ns();  // the rest goes to `other`, below
    session_ = LM_TRY_CTX(Session::connect_with(dial_, session_config_, table),
                          strf("source pid %d: connect to %s", pid, peer_.c_str()));
    result_.transport = peer_.substr(0, peer_.find(':'));
    lap(parts.connect);
    // The senders' compressors and buffers (first touch of ~12 MiB: tens of
    // ms of CPU, more under load) from here, beside the waits for the probe
    // and the destination's ready and the tracker start: made beside the
    // handshake, they took the CPU its channels were set up with.
    senders.emplace([this] { return make_sender_parts(); });
    tracker_ = LM_TRY_CTX(prober.wait(), strf("source pid %d", pid));
    result_.tracker = tracker_ ? std::string(tracker_->name()) : "none";
    lap(parts.tracker_probe);
    // The destination says when its memory is ready for round 0. Its
    // preparation is not the source's setup (QEMU's destination is prepared
    // before `migrate`): the wait is a figure of its own.
    const double prepare_from_ms = total_.elapsed_ms();
    const Ready ready = LM_TRY_CTX(control().expect<Ready>(),
                                   strf("source pid %d: waiting for the destination at %s", pid, peer_.c_str()));
    prepare_ms_ = total_.elapsed_ms() - prepare_from_ms;
    if (o_.before_tracking) {
      const double held_from_ms = total_.elapsed_ms();
      LM_TRY(o_.before_tracking([&]() -> Result<void> {
        return announce_mappings(LM_TRY_CTX(process_->mappings(o_.scope), strf("source pid %d", pid)));
      }));
      result_.group_wait_ms = total_.elapsed_ms() - held_from_ms;
    }
    lap_ns = now_ns();  // the waits are not setup
    result_.population_ms = double(ready.population_ns) * 1e-6;
    result_.destination_ram = ready.memory;
    LM_TRY(start_tracker());
    lap(parts.tracker_start);
    SenderParts made = LM_TRY_CTX(senders->wait(), strf("source pid %d", pid));
    workers_ = std::move(made.workers);
    threads_ = unsigned(workers_.size());
    sender_ = std::make_unique<BulkSender>(*process_, *session_, workers_, std::move(made.buffers), o_.batch_pages,
                                           o_.timeout, o_.fault_corrupt_batch, sends_raw(workers_.front()->policy()),
                                           payload_check(), cancel(), o_.link_share.get());
    lap(parts.senders);
    result_.setup_time_ms = total_.elapsed_ms() - prepare_ms_ - result_.group_wait_ms;
    parts.other = std::max(0.0, result_.setup_time_ms - (parts.attach + parts.tracker_probe + parts.mappings +
                                                         parts.connect + parts.senders + parts.tracker_start));
    return o_.mode == MigrationMode::postcopy ? SourcePhase::stop_and_copy : SourcePhase::precopy;
  }

  // Its populated pages are round 0; mappings that changed since the
  // handshake are announced before any page of it. A tracker that protects
  // in chunks (uffd-wp) only registers here: send_round_zero() protects.
  // Without a tracker (pure post-copy) the freeze reads what to send.
  Result<void> start_tracker() {
    if (!tracker_) return ok();
    auto info = LM_TRY_CTX(tracker_->start({pid(), o_.scope, nullptr, o_.protect_chunk_bytes}),
                           strf("track pid %d", pid()));
    tracker_running_ = true;
    last_collect_ns_ = now_ns();
    pending_ = info.populated;
    if (!same_layout(info.mappings, session_->mappings())) LM_TRY(announce_mappings(info.mappings));
    return ok();
  }

  // What the bulk senders are made of that needs no session: runs on a
  // thread of its own (setup()), touching nothing of this object but options.
  struct SenderParts {
    std::vector<std::unique_ptr<compress::Compressor>> workers;  // one per sender thread
    BulkSender::Buffers buffers;
  };
  bool destination_shares_cpus() const {
    return o_.destination_shares_cpus.value_or(transport::same_host_address(peer_));
  }
  Result<SenderParts> make_sender_parts() const {
    if (o_.fault_prepare_senders) return Error::sys(ENOMEM, "sender buffers: injected failure (fault_prepare_senders)");
    compress::CompressorOptions copts;
    // CPU the compressors may count on: on one host (loopback, memif, the
    // rig's namespaces) the destination's receiving and decompressing share
    // the same cores.
    copts.destination_shares_cpus = destination_shares_cpus();
    copts.workers = o_.workers;
    SenderParts parts;
    auto first = LM_TRY_CTX(compress::Compressor::create(o_.policy, copts), "source");
    first->probe_link_first();
    const unsigned threads = std::max(o_.workers, o_.channels);
    for (unsigned i = 1; i < threads; i++) parts.workers.push_back(first->make_worker());
    parts.workers.insert(parts.workers.begin(), std::move(first));
    parts.buffers = LM_TRY(BulkSender::make_buffers(threads, o_.batch_pages));
    return parts;
  }

  // New or moved mappings: the new table goes in-band on every channel
  // before any page of the next round, so each receiver checks addresses
  // against the table its own stream announced.
  Result<void> announce_mappings(const dt::MappingList& mappings) {
    Mappings next{LM_TRY(mapping_table(mappings, ++generation_))};
    forget_sent_versions(session_->mappings(), mappings);
    for (size_t c = 0; c < session_->bulk_count(); c++) LM_TRY(Peer::bulk(*session_, c, o_.timeout).send(next));
    LM_TRY(control().send(next));
    result_.ram_total = std::max(result_.ram_total, next.table.total_bytes());
    session_->set_mappings(std::move(next.table));
    return ok();
  }

  // The destination drops the memory of addresses a new table no longer
  // maps (a mapping appearing there later starts from zero), so their
  // last-sent versions leave the delta cache: a delta against one would be
  // applied to a page that no longer holds it. Addresses kept by both tables
  // keep their pages at the destination, however their mappings changed.
  // Before round 1 nothing is cached (round 0 sends are first sends), and
  // the senders may still be in the making on another thread (setup()).
  void forget_sent_versions(const transport::MappingTable& before, const dt::MappingList& after) {
    if (round_ == 0) return;
    compress::DeltaCache* cache = workers_.front()->delta_cache();
    if (!cache || cache->empty()) return;
    dt::RangeList was;
    for (const auto& e : before.entries()) was.push_back({e.start, e.end});
    dt::coalesce(was);
    for (const auto& r : dt::subtract(was, dt::ranges_of(after))) cache->erase(r.start, r.end);
  }

  // --- precopy: round k sends what round k-1 dirtied ---------------------------------
  Result<SourcePhase> precopy() {
    for (;;) {
      LM_TRY(check_cancel());
      RoundTotals t = LM_TRY(round_ == 0 ? send_round_zero() : sender_->send_round(pending_, round_, timeline_, false));
      const double seconds = std::max(1e-9, double(t.duration_ns) * 1e-9);
      count_round(t, seconds);
      RoundEnd end{round_, 0, t.pages, t.payload_bytes, 0, dt::total_pages(pending_), t.duration_ns,
                                  t.batches};
      LM_TRY(sender_->mark_round_end(end));

      auto collected = LM_TRY(collect_paced());
      if (!collected.changes.empty()) LM_TRY(announce_mappings(collected.mappings));
      pending_ = collected.dirty;
      if (o_.hold_hot_pages) hold_hot_pages(collected.held);
      // Held pages are written still, only no longer reported: they count in
      // the dirty rate (auto-converge judges by it) as they do in the
      // expected downtime.
      const double dirty_rate = double(collected.dirty_pages + held_pages_) / collect_interval_s_;
      timeline_.dirtied(collected.dirty_pages + held_pages_, last_collect_ns_ - uint64_t(collect_interval_s_ * 1e9),
                        last_collect_ns_);
      if (round_ > 0 || t.pages > 0) {
        // The model's D counts a held page as dirtied in this interval only
        // as often as a tracked one was (the tracker no longer sees it):
        // counting every held page in every interval, as the rate above
        // does, inflates D more the shorter the interval. Summed over the
        // intervals, not a mean of per-round rates, in which a 10 ms round
        // weighed as much as round 0 (tests/engine/test_precopy.cpp,
        // PrecopyModel).
        const double scope_pages = double(result_.ram_total / kPageSize);
        const double tracked = std::max(1.0, scope_pages - double(held_pages_));
        figures_.dirtied_pages +=
            double(collected.dirty_pages) * (1.0 + double(held_pages_) / tracked);
        figures_.dirtied_over_s += collect_interval_s_;
      }
      result_.rounds.push_back({round_, t.pages, t.wire_bytes, double(t.duration_ns) * 1e-6, dirty_rate});
      round_++;

      // Held pages go after the freeze: they count in the expected downtime.
      const uint64_t left = dt::total_pages(pending_) + held_pages_;
      timeline_.set_left(left);
      const RoundProgress progress{.rounds_done = round_,
                                   .dirty_pages = left,
                                   .round_pages = t.pages,
                                   .bytes_sent_total = figures_.wire_bytes,
                                   .ram_bytes = result_.ram_total,
                                   .page_rate_per_s = figures_.page_rate};
      if (o_.on_round)
        o_.on_round({round_, left, figures_.wire_bytes, double(t.wire_bytes) * 8 / seconds / 1e9,
                     ConvergencePolicy::expected_downtime_ms(progress)});
      stop_ = policy_.should_stop(progress);
      if (stop_) return SourcePhase::stop_and_copy;
      // Going on within the target only to cut the downtime: aim for the floor.
      if (policy_.within_target(progress))
        downtime_aim_ms_ = std::min(downtime_aim_ms_, o_.convergence.downtime_floor_ms);
      LM_TRY(auto_converge(dirty_rate));
    }
  }

  // Round 0: what the tracker's start found populated, then, while the
  // tracker protects the rest chunk by chunk (uffd-wp), each chunk's
  // populated pages as soon as it is protected, so that chunk k+1 is
  // protected while chunk k is read and sent. No page is read before its
  // chunk is protected: a write before the read is sent with it, a write
  // after it is in the first collect.
  Result<RoundTotals> send_round_zero() {
    sender_->begin_round(round_, timeline_, dt::total_pages(pending_));
    sender_->feed(pending_);
    // Round 0's dirty rate counts from when its pages became tracked: writes
    // into a chunk before its protection are sent in round 0 itself and are
    // never counted dirty. So the interval starts at the chunks' protection
    // times, weighted by their pages (a uniform writer's D was 65% low with
    // the registration as its start).
    double tracked_at_ns = 0, tracked_pages = 0;  // from last_collect_ns_
    auto protect = [&]() -> Result<void> {
      while (!sender_->failing()) {
        LM_TRY(check_cancel());
        const uint64_t from_ns = now_ns();
        auto chunk = LM_TRY_CTX(tracker_->protect_next(), strf("track pid %d", pid()));
        const uint64_t done_ns = now_ns();
        result_.tracker_protect_ms += double(done_ns - from_ns) * 1e-6;
        if (!chunk) return ok();
        const double pages = double(dt::total_pages(*chunk));
        tracked_at_ns += pages * double(done_ns - last_collect_ns_);
        tracked_pages += pages;
        timeline_.more_to_send(dt::total_pages(*chunk));
        sender_->feed(*chunk);
        pending_ = dt::unite(pending_, *chunk);
      }
      return ok();  // the senders' error comes from finish_round()
    }();
    if (!protect) {
      (void)sender_->finish_round(BulkSender::Finish::abandon);
      return std::move(protect).error();
    }
    if (tracked_pages > 0) last_collect_ns_ += uint64_t(tracked_at_ns / tracked_pages);
    return sender_->finish_round(BulkSender::Finish::sent);
  }

  // Pages found dirty by two consecutive collects are hot: re-protecting them
  // makes the process fault on its first write to each every round (~36 µs
  // per fault on a PVM host, ~0.75 µs under KVM), and they are sent again
  // anyway. The tracker leaves them writable and they are sent after the
  // freeze, as long as all held pages fit half the downtime aimed at (the
  // target; the floor once rounds go on within the target to cut the
  // downtime, which pages held then would fill) at the last round's rate.
  void hold_hot_pages(const dt::RangeList& held) {
    held_pages_ = dt::total_pages(held);
    const dt::RangeList hot = dt::intersect(last_dirty_, pending_);
    last_dirty_ = pending_;
    const double aim_s = downtime_aim_ms_ * 1e-3;
    const double budget = aim_s > 0 ? 0.5 * aim_s * figures_.page_rate
                                    : 0.5 * double(o_.convergence.dirty_pages_threshold);
    dt::RangeList take;
    uint64_t room = budget > double(held_pages_) ? uint64_t(budget) - held_pages_ : 0;
    for (const auto& r : hot) {
      if (room == 0) break;
      const uint64_t n = std::min(room, r.pages());
      take.push_back({r.start, r.start + n * kPageSize});
      room -= n;
    }
    // Still sent in the next round: a backend that cannot hold (soft-dirty,
    // hash) keeps tracking them, and a held page is reported `held` from the
    // next collect on.
    if (!take.empty()) tracker_->hold(take);
  }

  // Collects at most every kMinRoundInterval: a round that had (almost)
  // nothing to send would otherwise collect again at once, measuring only
  // the collect itself and stalling the guest with re-protection. The dirty
  // rate is measured over the interval since the previous collect.
  Result<dt::CollectResult> collect_paced() {
    constexpr uint64_t kMinRoundIntervalNs = 10'000'000;
    const uint64_t since = now_ns() - last_collect_ns_;
    if (since < kMinRoundIntervalNs) std::this_thread::sleep_for(std::chrono::nanoseconds(kMinRoundIntervalNs - since));
    auto collected = LM_TRY(tracker_->collect());
    const uint64_t now = now_ns();
    collect_interval_s_ = double(now - last_collect_ns_) * 1e-9;
    last_collect_ns_ = now;
    return collected;
  }

  void count_round(const RoundTotals& t, double seconds) {
    figures_.wire_bytes += t.wire_bytes;
    figures_.raw_bytes += t.pages * kPageSize;
    figures_.passthrough_pages += t.passthrough_pages;
    if (round_ > 0) result_.pages_resent += t.pages;
    if (t.pages == 0) return;
    figures_.page_rate = double(t.pages) / seconds;
    figures_.precopy_pages += t.pages;
    figures_.precopy_ns += t.duration_ns;
    if (round_ == 0) figures_.first_round_pages = t.pages;
    const compress::LinkReport link =
        link_report(t, double(t.duration_ns) * 1e-9, threads_, 10 * t.compressed_pages <= t.pages);
    if (link.bytes_per_s > 0)
      for (auto& w : workers_) w->report_link(link);
  }

  // Auto-converge (QEMU-like): the process dirties faster than half of what
  // the link drains, so slow it down, more each round it keeps doing so.
  Result<void> auto_converge(double dirty_rate) {
    if (!o_.auto_converge.enabled || !throttle_supported_ || round_ < 2 || dirty_rate <= 0.5 * figures_.page_rate)
      return ok();
    unsigned next = throttle_percent_ == 0 ? o_.auto_converge.initial_percent
                                           : throttle_percent_ + o_.auto_converge.increment_percent;
    auto applied = process_->throttle(std::min(next, o_.auto_converge.max_percent));
    if (!applied && applied.error().code == ENOTSUP) {  // this process cannot be slowed: migrate without
      throttle_supported_ = false;
      return ok();
    }
    throttle_percent_ = LM_TRY(std::move(applied));
    result_.cpu_throttle_percentage = std::max(result_.cpu_throttle_percentage, throttle_percent_);
    result_.throttle_mechanism = process_->throttle_mechanism();
    return ok();
  }

  // --- stop_and_copy: freeze, final collect; pre-copy sends the rest ---------------------
  Result<SourcePhase> stop_and_copy() {
    result_.stop_reason = stop_ ? std::string(stop_reason_name(*stop_)) : "postcopy";
    LM_TRY(process_->unthrottle());
    if (o_.before_freeze) o_.before_freeze();
    // Untracked (pure post-copy): the walk of the freeze below, done once
    // while the process runs, finds the page tables and its memory warm
    // (final collect 4.3 -> 3.3 ms, 1 GiB guest). Its errors are the real one's.
    if (!tracker_) (void)read_populated();
    downtime_urgent_.emplace();  // until the destination runs the VM
    freeze_ns_ = now_ns();
    LM_TRY(process_->freeze());
    frozen_ns_ = now_ns();
    if (!tracker_) return freeze_untracked();
    auto final_dirty = LM_TRY(tracker_->collect_final());
    if (!final_dirty.changes.empty()) LM_TRY(announce_mappings(final_dirty.mappings));
    collected_ns_ = now_ns();
    timeline_.dirtied(final_dirty.dirty_pages + held_pages_, last_collect_ns_, frozen_ns_);
    final_mappings_ = final_dirty.mappings;
    // What the previous collect found (the loop stopped before sending it)
    // together with what was dirtied since.
    pending_ = dt::unite(pending_, dt::unite(final_dirty.dirty, final_dirty.held));
    if (o_.mode != MigrationMode::precopy) return stay_stopped_from_commit();

    RoundTotals last = LM_TRY(sender_->send_round(pending_, round_, timeline_, true));
    figures_.wire_bytes += last.wire_bytes;
    figures_.raw_bytes += last.pages * kPageSize;
    figures_.passthrough_pages += last.passthrough_pages;
    result_.pages_resent += last.pages;
    LM_TRY(sender_->mark_round_end({round_, kRoundEndFinal, last.pages, last.payload_bytes, 0,
                                    dt::total_pages(pending_), last.duration_ns, last.batches}));
    result_.rounds.push_back({round_, last.pages, last.wire_bytes, double(last.duration_ns) * 1e-6, 0});
    // The tracker stops after the commit (verify()): unregistering a large
    // write-protected range rewrites every entry of it, tens of ms per 2 GiB
    // here, and the frozen source needs nothing of it meanwhile (the
    // userfaultfd is the engine's only: it goes with the engine).
    return stay_stopped_from_commit();
  }

  // Pure post-copy, frozen: every page holding data now is sent, in the
  // mappings of now (one walk of the page tables, as a final collect's).
  Result<SourcePhase> freeze_untracked() {
    auto [now, populated] = LM_TRY(read_populated());
    if (!same_layout(now, session_->mappings())) LM_TRY(announce_mappings(now));
    pending_ = std::move(populated);
    collected_ns_ = now_ns();
    final_mappings_ = std::move(now);
    return stay_stopped_from_commit();
  }
  Result<std::pair<dt::MappingList, dt::RangeList>> read_populated() {
    dt::MappingList now = LM_TRY_CTX(process_->mappings(o_.scope), strf("source pid %d", pid()));
    dt::RangeList populated = LM_TRY_CTX(process_->populated(now), strf("source pid %d", pid()));
    return std::pair{std::move(now), std::move(populated)};
  }

  // From the commit on the destination may run the VM: the source must not
  // run again by accident, even if this engine dies (source.hpp).
  Result<SourcePhase> stay_stopped_from_commit() {
    if (o_.exec_state == ExecStateKind::guest_ram) LM_TRY(process_->stop_on_release());
    return SourcePhase::commit;
  }

  // --- commit: from here the destination may run the VM ------------------------------
  Result<SourcePhase> commit() {
    if (o_.mode != MigrationMode::precopy) {
      // Ends the pre-copy phase on every bulk channel; postcopy() commits.
      LM_TRY(sender_->mark_round_end({round_, kRoundEndFinal, 0, 0, 0, dt::total_pages(pending_), 0, 0}));
      return SourcePhase::postcopy;
    }
    const ImageExecState image_state{uint64_t(pid())};
    LM_TRY(control().send(ExecState{uint32_t(o_.exec_state), o_.exec_state == ExecStateKind::image
                                                                  ? std::as_bytes(std::span(&image_state, 1))
                                                                  : std::span<const std::byte>{}}));
    committed_ns_ = now_ns();
    if (o_.verify) {
      auto digest = LM_TRY(control().expect<Digest>());
      dest_digests_.assign(digest.entries.begin(), digest.entries.end());
    }
    const auto reported = LM_TRY((control().expect<Resumed, Ready>()));
    // Downtime ends when the destination reports its process running (or, for
    // an image, complete); the receive time is used so the figure holds across
    // hosts too (it includes one message latency). So does the migration.
    record_downtime(now_ns());
    if (o_.on_resumed) o_.on_resumed();
    // On this host the destination's clock is ours: the resume splits at the
    // moment its guest ran again.
    if (const auto* resumed = std::get_if<Resumed>(&reported);
        resumed && transport::same_host_address(peer_) && resumed->time_ns >= committed_ns_ &&
        resumed->time_ns <= committed_ns_ + uint64_t(result_.downtime_breakdown.resume * 1e6))
      result_.downtime_breakdown.resume_running = double(resumed->time_ns - committed_ns_) * 1e-6;
    completed_at_ms_ = total_.elapsed_ms();
    return SourcePhase::verify;
  }

  // --- postcopy: postcopy_source.cpp ----------------------------------------------------
  Result<SourcePhase> postcopy() {
    downtime_urgent_.reset();  // run_postcopy_source() makes it urgent until the resume
    PostcopySourceOptions po;
    // The tracker stays until the destination completed: the process never
    // runs here again unless the migration fails before the resume, and
    // unregistering its uffd-wp takes the mm's lock for ~16 ms per GiB,
    // stalling the page reads that serve the resumed guest's first faults.
    po.exec_state_kind = uint32_t(o_.exec_state);
    po.prepaging = o_.postcopy.prepaging;
    po.pivots = o_.postcopy.pivots;
    po.timeout = o_.timeout;
    po.reconnect_timeout = o_.postcopy.reconnect_timeout;
    po.link_share = o_.link_share.get();
    po.timeline = &timeline_;
    po.on_resumed = o_.on_resumed;
    if (o_.postcopy.reconnect_timeout.count() > 0)
      po.redial = [this](transport::Timeout within) {
        auto again = session_config_;
        again.session_id = session_->negotiated().session_id;
        again.handshake_timeout = std::min(again.handshake_timeout, within);
        return Session::connect_with(dial_, again, session_->mappings());
      };
    PostcopySourceOutcome pc;
    auto served = run_postcopy_source(*session_, *process_, workers_, po, pending_, freeze_ns_, pc);
    destination_may_run_ = pc.destination_may_run;
    result_.pages_pushed = pc.pages_pushed;
    result_.postcopy_pages_requested = pc.pages_requested;
    result_.postcopy_requests = pc.pages_requested;  // the runner replaces it with the destination's count
    figures_.wire_bytes += pc.wire_bytes;
    figures_.raw_bytes += (pc.pages_pushed + pc.pages_requested) * kPageSize;
    result_.postcopy_reconnects = pc.reconnects;
    result_.postcopy_link_down_ms = pc.link_down_ms;
    LM_TRY(std::move(served));
    completed_at_ms_ = total_.elapsed_ms();
    // Completed: the destination resumed and runs the VM. A failure from here
    // on (a digest mismatch, a cancel) must lose it, never thaw this copy.
    destination_may_run_ = true;
    committed_ns_ = pc.committed_ns;
    record_downtime(pc.resumed_ns);
    result_.postcopy_complete_ms = pc.complete_after_ms;
    dest_digests_ = std::move(pc.digests);
    if (tracker_running_) LM_TRY(stop_tracker_checked());
    return SourcePhase::verify;
  }

  // --- verify: the destination's digests against the frozen image ------------------------
  Result<SourcePhase> verify() {
    if (tracker_running_) LM_TRY(stop_tracker_checked());
    if (o_.verify) {
      Stopwatch verify_clock;
      std::vector<PageRange> ranges;
      for (const auto& e : session_->mappings().entries()) ranges.push_back({e.start, e.end});
      auto data = LM_TRY(process_->populated(final_mappings_));
      auto mine = LM_TRY(digest_process(*process_, ranges, data));
      result_.verify_pages = LM_TRY(compare_digests(mine, dest_digests_));
      result_.verify_ok = true;
      result_.verify_time_ms = verify_clock.elapsed_ms();
    }
    // A post-copy VM runs at the destination: an interruption cannot undo that.
    // Before a pre-copy verdict either side may still stop: a destination
    // that was interrupted says so on control (without waiting for it).
    if (!destination_may_run_) {
      LM_TRY(check_cancel());
      if (auto why = control().pending_error(transport::Timeout(0)); why) return std::move(*why);
    }
    // Verdict: the destination keeps the VM (or the image).
    LM_TRY(control().send(Close{kCloseDone}));
    return SourcePhase::released;
  }

  // --- released: the destination holds a verified copy -------------------------------------
  Result<void> finish() {
    enter(SourcePhase::released);
    switch (o_.after) {
      case AfterMigration::kill:
        process_->kill();
        result_.source_state = "killed";
        break;
      case AfterMigration::stop:
        if (auto r = process_->stop_on_release(); !r) process_->kill();  // never run twice
        (void)process_->thaw();
        result_.source_state = process_->stops_on_release() ? "stopped" : "killed";
        break;
      case AfterMigration::keep:
        (void)process_->cancel_stop_on_release();
        (void)process_->thaw();
        result_.source_state = "running";
        break;
    }
    (void)session_->close(transport::Timeout(2000));
    result_.completed = true;
    record_figures();
    return ok();
  }

  // --- failures -------------------------------------------------------------------------
  Result<void> fail(Error e) {
    downtime_urgent_.reset();
    // A channel that broke may only be the echo of the destination's own
    // failure: if it said why on the control channel, that is the cause.
    if (session_) {
      if (e.code != ECANCELED)
        if (auto why = control().pending_error(); why) e = std::move(*why);
      control().send_error(e);
    }
    if (process_) (void)process_->unthrottle();
    if (on_failure(phase_, destination_may_run_) == OnFailure::lose_vm) {
      e = Error{e.code, "post-copy failed after the destination resumed the VM; the VM is lost (its memory is split "
                        "between the hosts: the frozen source is ended, not run on): " + e.message};
      stop_tracker();
      process_->kill();
      (void)session_->close(transport::Timeout(2000));
      result_.source_state = "killed";
      enter(SourcePhase::lost);
    } else {
      stop_tracker();
      if (process_ && process_->frozen()) {
        (void)process_->cancel_stop_on_release();
        (void)process_->thaw();
      }
      result_.source_state = "running";
      enter(SourcePhase::rolled_back);
    }
    result_.completed = false;
    result_.error = e.message;
    result_.source_phase = std::string(source_phase_name(phase_));
    record_times();
    record_cpu();
    return e;
  }

  void stop_tracker() {
    if (tracker_running_) (void)tracker_->stop(process_->freezer());
    tracker_running_ = false;
  }
  Result<void> stop_tracker_checked() {
    tracker_running_ = false;
    return tracker_->stop(process_->freezer());
  }

  // QEMU's total-time: the migration on a prepared destination, up to the
  // destination running the VM (or holding the image); the verification and
  // release after it, and the wait for the destination's preparation, are
  // only in the end-to-end time.
  void record_times() {
    result_.end_to_end_time_ms = total_.elapsed_ms();
    const double end_ms = completed_at_ms_ >= 0 ? completed_at_ms_ : result_.end_to_end_time_ms;
    result_.total_time_ms = end_ms - prepare_ms_ - result_.group_wait_ms;
    result_.destination_prepare_time_ms = prepare_ms_;
    result_.timeline = timeline_.finish();
  }

  void record_cpu() {
    result_.cpu_seconds_source = thread_cpu_seconds() - cpu_start_ + (sender_ ? sender_->cpu_seconds() : 0);
    if (!sender_) return;
    result_.send_pages = sender_->pages_sent();
    result_.send_cpu_seconds = sender_->cpu_seconds();
    result_.send_run_queue_wait_seconds = sender_->run_queue_wait_seconds();
  }

  void record_downtime(uint64_t resumed_ns) {
    downtime_urgent_.reset();
    auto ms = [](uint64_t from, uint64_t to) { return double(to - from) * 1e-6; };
    result_.downtime_ms = ms(freeze_ns_, resumed_ns);
    timeline_.downtime(freeze_ns_, resumed_ns);
    result_.downtime_breakdown = {ms(freeze_ns_, frozen_ns_), ms(frozen_ns_, collected_ns_),
                                  ms(collected_ns_, committed_ns_), ms(committed_ns_, resumed_ns)};
  }

  void record_figures();

  const SourceOptions& o_;
  const transport::Dial dial_;
  const std::string peer_;
  MigrationResult& result_;
  SourcePhase phase_ = SourcePhase::setup;
  Stopwatch total_;               // the whole run, end to end
  double prepare_ms_ = 0;          // waiting for the destination's `ready`
  double completed_at_ms_ = -1;    // on total_: the destination runs the VM (holds the image)
  const double cpu_start_ = thread_cpu_seconds();

  std::unique_ptr<SourceProcess> process_;  // before the senders that read it
  unsigned throttle_percent_ = 0;          // auto-converge in force
  bool throttle_supported_ = true;         // false once the process said ENOTSUP
  std::unique_ptr<dt::Tracker> tracker_;
  bool tracker_running_ = false;
  std::optional<Session> session_;
  transport::SessionConfig session_config_;
  std::vector<std::unique_ptr<compress::Compressor>> workers_;
  unsigned threads_ = 1;
  std::unique_ptr<BulkSender> sender_;

  uint32_t generation_ = 0;       // of the announced mapping table
  dt::RangeList pending_;         // pages the next round (or post-copy) sends
  dt::RangeList last_dirty_;      // what the previous collect found dirty
  uint64_t held_pages_ = 0;       // left writable by the tracker, sent after the freeze
  double downtime_aim_ms_ = o_.convergence.downtime_target_ms;  // the target, then the floor
  dt::MappingList final_mappings_;
  std::vector<transport::DigestEntry> dest_digests_;
  bool destination_may_run_ = false;  // post-copy: the destination runs the VM, or may
  uint64_t freeze_ns_ = 0;     // the downtime's steps: freeze asked,
  uint64_t frozen_ns_ = 0;     // every thread held,
  uint64_t collected_ns_ = 0;  // the last collect done,
  uint64_t committed_ns_ = 0;  // the execution state sent
  std::optional<UrgentScope> downtime_urgent_;  // this thread, from the freeze to the resume
  unsigned round_ = 0;
  uint64_t last_collect_ns_ = 0;     // tracker start, then each collect
  double collect_interval_s_ = 1e-9;  // between the last two collects
  ConvergencePolicy policy_;
  std::optional<StopReason> stop_;
  SendFigures figures_;
  Timeline timeline_;  // sampling from the start; finished by record_times()
};

void SourceRun::record_figures() {
  result_.source_phase = std::string(source_phase_name(phase_));
  record_times();
  result_.transferred = figures_.wire_bytes;
  result_.dirty_sync_count = round_ + 1;
  result_.mbps = double(figures_.wire_bytes) * 8 / 1e6 / std::max(1e-9, result_.total_time_ms * 1e-3);
  uint64_t pages_total = figures_.raw_bytes / kPageSize;
  result_.pages_per_second = double(pages_total) / std::max(1e-9, result_.total_time_ms * 1e-3);
  compress::CompressStats stats;
  for (const auto& w : workers_) stats += w->stats();
  auto all = stats.total();
  const uint64_t passthrough = figures_.passthrough_pages;
  result_.pages_duplicate = stats.codec_total(Codec::zero).pages + stats.codec_total(Codec::uniform).pages;
  result_.pages_normal = all.pages - result_.pages_duplicate + passthrough;
  result_.pages_compressed = all.pages - result_.pages_duplicate - stats.codec_total(Codec::raw).pages;
  const uint64_t bytes_in = all.bytes_in + passthrough * kPageSize;
  const uint64_t bytes_out = all.bytes_out + passthrough * kPageSize;
  result_.compression_ratio = bytes_out ? double(bytes_in) / double(bytes_out) : 0;
  {
    JsonWriter detail(false);
    detail.begin_object();
    stats.write_json(detail, "senders");
    if (!workers_.empty() && workers_.front()->model()) workers_.front()->model()->write_json(detail, "adaptive");
    detail.end_object();
    result_.compression_detail = detail.str();
  }
  record_cpu();

  // The analytic model with what this run measured: R over all iterative
  // rounds, D the pages dirtied over the collect intervals of those rounds
  // (time-weighted: the same interval as the pages it counts), T_res the
  // measured resume, and Vm the memory round 0 had to send
  // (never-touched pages are not sent, so they are not part of Vm).
  const double rate = figures_.precopy_ns
                          ? double(figures_.precopy_pages) * kPageSize / (double(figures_.precopy_ns) * 1e-9)
                          : 0;
  result_.model_input.link_bytes_per_s = rate;
  result_.model_input.dirty_pages_per_s =
      figures_.dirtied_over_s > 0 ? figures_.dirtied_pages / figures_.dirtied_over_s : 0;
  result_.model_input.vm_bytes = double(figures_.first_round_pages * kPageSize);
  result_.model_input.threshold_bytes =
      o_.convergence.downtime_target_ms > 0 ? rate * o_.convergence.downtime_target_ms / 1e3
                                            : double(o_.convergence.dirty_pages_threshold * kPageSize);
  result_.model_input.max_rounds = o_.convergence.max_rounds;
  result_.model_input.min_rounds = 1;  // round 0 is always sent live
  result_.model_input.resume_s = result_.downtime_breakdown.resume * 1e-3;  // T_res, as a group's model takes it
  if (result_.model_input.link_bytes_per_s > 0) result_.model = predict(result_.model_input);
}

}  // namespace

Result<void> SourceMigration::run(const std::string& address, MigrationResult& result) {
  if (auto keyed = transport::check_key_for_address(address, o_.session, "connect to"); !keyed) {
    result.error = "source: " + keyed.error().message;
    return std::move(keyed).error().context("source");
  }
  transport::Dial dial = [address, options = o_.session.channel](transport::Timeout t) {
    return transport::connect(address, options, t);
  };
  return run(std::move(dial), address, result);
}

Result<void> SourceMigration::run(transport::Dial dial, const std::string& peer, MigrationResult& result) {
  return SourceRun(o_, std::move(dial), peer, result).run();
}

}  // namespace lm::engine
