#include "engine/postcopy_source.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "engine/messages.hpp"
#include "engine/urgent_thread.hpp"

namespace lm::engine {

using transport::OutMessage;

namespace {

// Shared by the request server and the pushers.
struct PushState {
  std::mutex lock;
  Prepager prepager;
  std::atomic<uint64_t> last_fault_ns{0};
  // Requested when every thread is to end; it ends their waits at once.
  std::stop_source stop_source;
  // Pushing starts once the destination runs: before, it would only compete
  // for the CPU with the requests the resume itself waits for (downtime).
  std::atomic<bool> resumed{false};
  // Under `lock`: wakes the pushers on the resume and on every request.
  std::condition_variable_any changed;
  uint64_t requests_seen = 0;
  std::mutex error_lock;
  std::optional<Error> error;
  bool link_broke = false;  // the first error was a channel failing, not a fatal one
  std::atomic<uint64_t> requests{0}, pages_requested{0}, pages_pushed{0}, already_pushed{0}, wire_bytes{0};
  std::atomic<double> cpu{0};
  Timeline* timeline;  // may be null

  PushState(PrepagingKind kind, unsigned pivots, const dt::RangeList& needed, Timeline* timeline)
      : prepager(kind, pivots, needed), timeline(timeline) {
    count_left();
  }
  // Under `lock` (or before the threads start): the pages still needed.
  void count_left() {
    if (timeline) timeline->set_left(prepager.unsent());
  }
  void count_sent(uint64_t wire, uint64_t pages) {
    wire_bytes += wire;
    if (timeline) timeline->sent(wire, pages, 0);
  }
  void failed(Error e) {
    std::lock_guard g(error_lock);
    if (!error) error = std::move(e);
    stop();
  }
  // The destination said why it stopped: that is the cause, even when a
  // channel breaking as its echo was noticed first.
  void destination_failed(Error e) {
    std::lock_guard g(error_lock);
    error = std::move(e);
    link_broke = false;
    stop();
  }
  // A channel failed (reset, EOF, silence): recoverable by dialling again.
  Error lost_link(Error e) {
    std::lock_guard g(error_lock);
    if (!error) {
      error = e;
      link_broke = true;
    }
    stop();
    return e;
  }
  void stop() { stop_source.request_stop(); }
  bool stopped() const { return stop_source.stop_requested(); }
  void set_resumed() {
    std::lock_guard g(lock);
    resumed = true;
    changed.notify_all();
  }
  void add_cpu(double s) {
    double cur = cpu.load();
    while (!cpu.compare_exchange_weak(cur, cur + s)) {
    }
  }
};

// Reads `addrs` from the frozen process into `buffer`, page after page.
Result<void> read_frozen(const SourceProcess& process, std::span<const uint64_t> addrs, std::byte* buffer) {
  dt::RangeList ranges;
  for (uint64_t a : addrs) ranges.push_back({a, a + kPageSize});
  auto report = LM_TRY(process.read(ranges, {buffer, addrs.size() * kPageSize}));
  if (!report.failed.empty())
    return Error::msg(strf("post-copy: page 0x%llx of the frozen pid %d cannot be read",
                           (unsigned long long)report.failed.front().start, process.pid()));
  return ok();
}

// Reads `addrs` from the frozen process and compresses them into `batch`.
Result<void> read_pages(const SourceProcess& process, compress::Compressor& compressor,
                        std::span<const uint64_t> addrs, std::byte* buffer, compress::CompressedBatch& batch) {
  LM_TRY(read_frozen(process, addrs, buffer));
  std::vector<const uint8_t*> ptrs;
  for (size_t i = 0; i < addrs.size(); i++) ptrs.push_back(reinterpret_cast<const uint8_t*>(buffer) + i * kPageSize);
  return compressor.compress_batch(addrs, ptrs, batch);
}

// Priority channel: answers every request at once, whatever was pushed. The
// pages go raw, read straight into the message: a fault waits for them, and
// compressing a page or two costs it more than the link saves.
Result<void> serve_requests(transport::Session& session, const SourceProcess& process, PushState& st,
                            transport::Timeout timeout) {
  make_this_thread_urgent();
  const Peer peer = Peer::priority(session, timeout);
  // Grown to the largest request, not made for the largest possible one:
  // fresh memory costs ~5 µs per page here (16 MiB of it was ~150 ms of
  // downtime, before the guest's first fault was served).
  std::vector<std::byte> buffer;
  std::vector<PageEntry> entries;
  OutMessage reply;
  while (!st.stopped()) {
    auto received = peer.receive(transport::kForever, st.stop_source.get_token());
    if (!received) {
      if (st.stopped()) break;
      return st.lost_link(std::move(received).error());
    }
    auto request = LM_TRY(peer.decode<PageRequest>(*received));
    if (buffer.size() < request.addrs.size() * kPageSize) buffer.resize(request.addrs.size() * kPageSize);
    LM_TRY(read_frozen(process, request.addrs, buffer.data()));
    entries.clear();
    for (uint64_t a : request.addrs) entries.push_back({a, uint32_t(kPageSize), Codec::raw, 0, 0});
    peer.encode(reply, PageReply{request.request_id, entries, {buffer.data(), entries.size() * kPageSize}});
    if (auto r = peer.send_encoded(reply); !r) return st.lost_link(std::move(r).error());
    // The pushers learn of the fault after its reply left.
    {
      std::lock_guard g(st.lock);
      for (uint64_t a : request.addrs)
        if (!st.prepager.on_fault(a)) st.already_pushed++;
      st.last_fault_ns = now_ns();  // before the pushers wake: they judge idleness by it
      st.requests_seen++;
      st.count_left();
    }
    st.changed.notify_all();
    st.requests++;
    st.pages_requested += entries.size();
    st.count_sent(reply.size(), entries.size());
  }
  return ok();
}

// One bulk channel: pushes what the policy hands out until nothing is left,
// then marks the channel's end.
Result<void> push_pages(transport::Session& session, size_t c, compress::Compressor& compressor,
                        const SourceProcess& process, PushState& st, const PostcopySourceOptions& o) {
  const Peer peer = Peer::bulk(session, c, o.timeout);
  std::vector<uint64_t> addrs(o.push_batch_pages);
  std::vector<std::byte> buffer(size_t(o.push_batch_pages) * kPageSize);
  compress::CompressedBatch batch;
  OutMessage m;
  uint64_t pushed = 0;
  const std::stop_token stop = st.stop_source.get_token();
  {
    std::unique_lock g(st.lock);
    st.changed.wait(g, stop, [&] { return st.resumed.load(); });
  }
  // On a group's link: in a round while this pusher has pages to push (one
  // that waits for faults or idleness must hold no other VM back).
  LinkShare::Round on_link(o.link_share, false);
  while (!st.stopped()) {
    size_t n = 0;
    bool drained = false;
    uint64_t requests_seen = 0;
    {
      std::lock_guard g(st.lock);
      bool idle = now_ns() - st.last_fault_ns.load() > uint64_t(o.idle_ms) * 1000000;
      n = st.prepager.next(addrs, idle);
      drained = st.prepager.unsent() == 0;
      requests_seen = st.requests_seen;
      st.count_left();
    }
    if (n == 0) {
      on_link.end();
      if (drained) break;
      // Held back until the guest has not faulted for idle_ms (the policy),
      // or a request changed what is left.
      std::unique_lock g(st.lock);
      int64_t idle_in_ns = int64_t(st.last_fault_ns.load() + uint64_t(o.idle_ms) * 1000000) - int64_t(now_ns());
      st.changed.wait_for(g, stop, std::chrono::nanoseconds(std::max<int64_t>(idle_in_ns, 1000000)),
                          [&] { return st.requests_seen != requests_seen; });
      continue;
    }
    std::span<uint64_t> taken(addrs.data(), n);
    std::sort(taken.begin(), taken.end());
    LM_TRY(read_pages(process, compressor, taken, buffer.data(), batch));
    peer.encode(m, PageReply{0, batch.entries,
                             {reinterpret_cast<const std::byte*>(batch.payload.data()), batch.payload.size()}});
    if (o.link_share) {
      on_link.begin();
      if (!o.link_share->acquire(m.size(), n, stop)) break;  // stopped meanwhile
    }
    if (auto r = peer.send_encoded(m); !r) return st.lost_link(std::move(r).error());
    st.count_sent(m.size(), n);
    st.pages_pushed += n;
    pushed += n;
  }
  if (st.stopped()) return ok();
  if (auto r = peer.send(RoundEnd{.flags = kRoundEndFinal, .pages = pushed}); !r)
    return st.lost_link(std::move(r).error());
  return ok();
}

// The destination reports it runs the VM: the downtime ends (the first time).
void note_resumed(const PostcopySourceOptions& o, PostcopySourceOutcome& out, uint64_t freeze_ns,
                  uint64_t& resumed_ns) {
  if (out.resumed) return;
  out.resumed = true;
  resumed_ns = now_ns();
  out.resumed_ns = resumed_ns;
  out.resumed_after_ms = double(resumed_ns - freeze_ns) * 1e-6;
  if (o.on_resumed) o.on_resumed();
}

// Control: the destination's resume, then its completion digests. True
// once they arrived; otherwise `st` says why not.
bool await_completion(const Peer& control, PushState& st, const PostcopySourceOptions& o,
                      PostcopySourceOutcome& out, uint64_t freeze_ns, uint64_t& resumed_ns,
                      std::optional<UrgentScope>& awaiting_resume) {
  Stopwatch waited;
  while (!st.stopped()) {
    auto limit = out.resumed ? o.completion_timeout : o.timeout;
    auto left = limit - transport::Timeout(int64_t(waited.elapsed_ms()));
    if (left.count() <= 0) {
      st.failed(Error::msg(strf("post-copy: no %s from the destination within %lld ms",
                                out.resumed ? "completion" : "resume", (long long)limit.count())));
      return false;
    }
    auto received = control.receive(left, st.stop_source.get_token());
    if (!received) {
      if (st.stopped()) return false;
      if (received.error().code == ETIMEDOUT) continue;  // the limit, checked above
      st.lost_link(std::move(received).error());
      return false;
    }
    auto m = control.decode<Resumed, Digest>(*received);
    if (!m && received->type == transport::MsgType::error) {
      st.destination_failed(std::move(m).error());
      return false;
    }
    if (!m) {
      st.failed(std::move(m).error());
      return false;
    }
    if (std::holds_alternative<Resumed>(*m) != !out.resumed) {  // resumed once, then the digests
      st.failed(control.unexpected(received->type));
      return false;
    }
    if (std::holds_alternative<Resumed>(*m)) {
      note_resumed(o, out, freeze_ns, resumed_ns);
      awaiting_resume.reset();
      st.last_fault_ns = resumed_ns;  // policy none: the guest gets idle_ms to fault first
      st.set_resumed();
      waited = Stopwatch();
      continue;
    }
    const auto& digests = std::get<Digest>(*m).entries;
    out.digests.assign(digests.begin(), digests.end());
    out.complete_after_ms = double(now_ns() - resumed_ns) * 1e-6;
    return true;
  }
  return false;
}

// Dials the destination again until it answers with its account of the
// pages it still needs (resumed first if it runs the VM, then one bitmap per
// mapping, then ready), or until the reconnect timeout.
Result<dt::RangeList> reconnect(transport::Session& session, const PostcopySourceOptions& o, const Error& cause,
                                PostcopySourceOutcome& out, uint64_t freeze_ns, uint64_t& resumed_ns) {
  Stopwatch down;
  std::string last = cause.message;
  for (;;) {
    double left = double(o.reconnect_timeout.count()) - down.elapsed_ms();
    if (left <= 0) break;
    auto fresh = o.redial(transport::Timeout(int64_t(left) + 1));
    if (!fresh) {
      last = fresh.error().message;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    session = std::move(*fresh);
    const Peer control = Peer::control(session, o.timeout);
    dt::RangeList still;
    std::optional<Error> broke;
    for (bool ready = false; !ready && !broke;) {
      auto received = control.receive(o.timeout);
      if (!received) {
        broke = std::move(received).error();
        break;
      }
      auto m = LM_TRY((control.decode<Resumed, DirtyBitmap, Ready>(*received)));
      if (std::holds_alternative<Resumed>(m)) {
        note_resumed(o, out, freeze_ns, resumed_ns);
      } else if (const auto* v = std::get_if<DirtyBitmap>(&m)) {
        auto part = dt::from_page_bitmap(v->bits, v->start, v->pages);
        still.insert(still.end(), part.begin(), part.end());
      } else {
        ready = true;
      }
    }
    if (broke) {
      last = broke->message;
      continue;
    }
    dt::coalesce(still);
    out.reconnects++;
    out.link_down_ms += down.elapsed_ms();
    return still;
  }
  return Error::sys(ETIMEDOUT, strf("post-copy: the link to the destination broke (%s) and was not restored within "
                                    "%lld ms (last: %s)",
                                    cause.message.c_str(), (long long)o.reconnect_timeout.count(), last.c_str()));
}

}  // namespace

Result<void> run_postcopy_source(transport::Session& session, const SourceProcess& process,
                                 std::vector<std::unique_ptr<compress::Compressor>>& workers,
                                 const PostcopySourceOptions& o, const dt::RangeList& needed, uint64_t freeze_ns,
                                 PostcopySourceOutcome& out) {
  if (workers.size() < session.bulk_count())
    return Error::msg(strf("post-copy: %zu compressors for %zu bulk channels", workers.size(), session.bulk_count()));

  uint64_t resumed_ns = 0;
  dt::RangeList unsent = needed;
  for (;;) {  // one pass per link: the first, then one per recovery
    PushState st(o.prepaging, o.pivots, unsent, o.timeline);
    if (out.resumed) {
      st.resumed = true;
      st.last_fault_ns = now_ns();
    }
    // Until the destination runs the VM this thread is the downtime's
    // (urgent; the threads it starts are not).
    std::optional<UrgentScope> awaiting_resume;
    if (!out.resumed) awaiting_resume.emplace();
    std::vector<std::thread> threads;
    auto spawn = [&](auto body) {
      threads.emplace_back([&st, body] {
        double cpu0 = thread_cpu_seconds();
        auto r = body();
        if (!r) st.failed(std::move(r).error());
        st.add_cpu(thread_cpu_seconds() - cpu0);
      });
    };
    spawn([&] { return serve_requests(session, process, st, o.timeout); });
    for (size_t c = 0; c < session.bulk_count(); c++)
      spawn([&, c] { return push_pages(session, c, *workers[c], process, st, o); });
    struct Join {
      PushState& st;
      std::vector<std::thread>& threads;
      ~Join() {
        st.stop();
        for (auto& t : threads)
          if (t.joinable()) t.join();
      }
    } join{st, threads};
    // The commit follows the threads' start: the guest's first faults, which
    // its running report waits for, find the request server ready.
    if (out.committed_ns == 0) {
      const Peer control = Peer::control(session, o.timeout);
      LM_TRY(send_page_bitmaps(control, session.mappings(), needed));
      LM_TRY(control.send(ExecState{o.exec_state_kind, {}}));
      out.committed_ns = now_ns();
    }
    // Committed: the destination may resume the VM from here on.

    const bool complete = await_completion(Peer::control(session, o.timeout), st, o, out, freeze_ns, resumed_ns,
                                           awaiting_resume);
    st.stop();
    for (auto& t : threads) t.join();
    threads.clear();
    out.requests += st.requests;
    out.pages_requested += st.pages_requested;
    out.pages_pushed += st.pages_pushed;
    out.replies_already_pushed += st.already_pushed;
    out.wire_bytes += st.wire_bytes;
    out.cpu_seconds += st.cpu;
    if (complete && !st.error) return ok();
    Error e = st.error ? *st.error : Error::msg("post-copy: serving stopped");
    // Channels that broke before the destination resumed may only be the
    // echo of its own failure: if it said why on control first, it
    // discarded its copy (up to `resumed` it always does), nothing runs
    // there, and the source may roll back.
    if (st.link_broke && !out.resumed)
      if (auto why = Peer::control(session, o.timeout).pending_error(transport::Timeout(100)); why)
        return std::move(*why);
    // A broken link after the commit leaves it open whether the destination
    // runs the VM; its own error message (or a fatal error here) does not.
    if (out.resumed || st.link_broke) out.destination_may_run = true;
    if (!st.link_broke || !o.redial) return e;
    unsent = LM_TRY(reconnect(session, o, e, out, freeze_ns, resumed_ns));
  }
}

}  // namespace lm::engine
