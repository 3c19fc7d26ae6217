#include "engine/destination.hpp"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <optional>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include "common/clock.hpp"
#include "compress/compressor.hpp"
#include "engine/admission.hpp"
#include "engine/digest.hpp"
#include "engine/messages.hpp"
#include "engine/urgent_thread.hpp"

namespace lm::engine {

using transport::MsgType;

namespace {

// Destination memory by source address, shared by the receiving threads:
// views of the sink's regions (mapped here, or another process's memory
// written with process_vm_writev), with a hash per page when the source
// verifies. Pages are installed under a shared lock; a new mapping table (the
// source announces it in-band on every channel) takes the exclusive lock.
struct DestinationMemory {
  explicit DestinationMemory(PageSink& s) : sink(s) {}
  PageSink& sink;
  std::shared_mutex lock;
  compress::DestinationMap map;
  std::vector<SinkRegion> remote;  // regions written into their process (base null)
  bool hash_pages = true;          // the source verifies (kFeatureDigest)
  PageHashes hashes{{}};
  uint32_t generation = 0;
  std::atomic<uint64_t> pages{0};
  std::atomic<uint64_t> batches{0};
  std::atomic<double> cpu_seconds{0};

  // The limits the session was admitted with (max_ram_bytes resolved then:
  // MemAvailable shrinks as the sink fills). A later table's new mappings
  // count on top of those held (the sink drops those of mappings that went away).
  LimitsConfig admitted;
  std::string admitted_why;  // what the RAM limit is ("--max-ram; 75% of MemAvailable 22.9 GiB")
  uint64_t held_bytes = 0;   // committed up front (MemoryCommit::up_front)
  std::vector<transport::MappingEntry> held;
  // This session's RAM in all, told to the listener's pool (SessionSource::hold_ram).
  std::function<Result<void>(uint64_t bytes)> hold_ram = [](uint64_t) { return ok(); };

  bool per_page() const { return sink.memory_commit() == MemoryCommit::per_page; }

  Result<void> admit_table(const transport::MappingTable& table) const {
    AdmissionRequest more{held_bytes, held.size(), 0};
    for (const auto& e : table.entries()) {
      bool is_held = false;
      for (const auto& h : held) is_held |= h.start == e.start && h.end == e.end;
      if (is_held) continue;
      if (!per_page()) more.ram_bytes += e.end - e.start;
      more.mappings++;
    }
    LM_TRY(check_admission(admitted, more, std::nullopt));
    return per_page() ? ok() : hold_ram(more.ram_bytes);
  }

  // A per-page sink's pages received so far within the RAM limit; checked after
  // each batch, so the sink holds at most one batch more than the limit.
  Result<void> check_received() const {
    if (!per_page()) return ok();
    const uint64_t bytes = held_bytes + hashes.received_bytes();
    if (bytes <= admitted.max_ram_bytes) return hold_ram(bytes);
    return Error{ENOMEM, strf("destination refuses more pages: %s received, over its RAM limit %s (%s)",
                              binary_size_text(bytes).c_str(), binary_size_text(admitted.max_ram_bytes).c_str(),
                              admitted_why.c_str())};
  }

  Result<void> add_regions(const std::vector<SinkRegion>& regions) {
    for (const auto& r : regions) {
      held.push_back({r.addr, r.addr + r.bytes, 0, 0});
      if (!per_page()) held_bytes += r.bytes;
      if (r.base) LM_TRY(map.add({r.addr, r.bytes, r.base}));
      else if (r.pid > 0) remote.push_back(r);
      else return Error::msg(strf("destination region 0x%llx+%llu has neither memory nor a process",
                                  (unsigned long long)r.addr, (unsigned long long)r.bytes));
      hashes.add({r.addr, r.addr + r.bytes}, per_page());
    }
    return ok();
  }

  Result<void> prepare(const transport::MappingTable& table, ServeFaults faults, const SinkWait& wait) {
    auto regions = LM_TRY(sink.prepare(table, faults, wait));
    std::unique_lock g(lock);
    generation = table.generation();
    return add_regions(regions);
  }

  // A table announced on one of the channels; the first to arrive adopts it.
  // Memory is by address: where the new table still maps an address its
  // content and hash stay (a grown mapping keeps its pages; a replaced one
  // the source sends whole). The sink's new regions come first (it moves
  // what they overlap into them), then what it drops goes from the map, the
  // hashes (carried into the new ranges) and the held list.
  Result<void> adopt_table(const transport::MappingTable& table) {
    std::unique_lock g(lock);
    if (table.generation() <= generation) return ok();
    LM_TRY(admit_table(table));
    generation = table.generation();
    auto added = LM_TRY(sink.adopt(table));
    for (const auto& r : added) hashes.add({r.addr, r.addr + r.bytes}, per_page());
    for (const PageRange& r : LM_TRY(sink.drop(table))) {
      map.remove(r.start, r.bytes());
      std::erase_if(remote, [&](const SinkRegion& s) { return s.addr == r.start && s.bytes == r.bytes(); });
      hashes.remove(r);
      if (!per_page()) held_bytes -= r.bytes();
      std::erase_if(held, [&](const transport::MappingEntry& h) { return h.start == r.start && h.end == r.end; });
    }
    return add_regions(added);
  }

  // Whether page addr has memory here now.
  bool maps(uint64_t addr) const {
    return map.find(addr) || std::any_of(remote.begin(), remote.end(), [&](const SinkRegion& r) {
             return addr - r.addr < r.bytes;
           });
  }

  // A channel still on an older table than the one adopted (another channel
  // saw the new one first) may carry pages of mappings gone since: they are
  // left out by design. Its other pages are written (a newer version of the
  // same page follows on the same channel). Empty when nothing is left out.
  std::optional<std::pair<std::vector<PageEntry>, std::vector<uint8_t>>> without_dropped(
      const transport::MappingTable& channel_table, std::span<const PageEntry> entries,
      std::span<const uint8_t> payload) const {
    if (channel_table.generation() >= generation) return std::nullopt;
    if (std::all_of(entries.begin(), entries.end(), [&](const PageEntry& e) { return maps(e.addr); }))
      return std::nullopt;
    std::pair<std::vector<PageEntry>, std::vector<uint8_t>> kept;
    size_t at = 0;
    for (const auto& e : entries) {
      if (maps(e.addr)) {
        kept.first.push_back(e);
        kept.second.insert(kept.second.end(), payload.begin() + at, payload.begin() + at + e.length);
      }
      at += e.length;
    }
    return kept;
  }

  // The process whose memory holds every page of `entries`, or -1 when they
  // are all mapped here; an error when they are split between both.
  Result<pid_t> writer_of(std::span<const PageEntry> entries) const {
    if (remote.empty() || entries.empty()) return pid_t(-1);
    auto region_of = [&](uint64_t addr) -> const SinkRegion* {
      for (const auto& r : remote)
        if (addr - r.addr < r.bytes) return &r;
      return nullptr;
    };
    const SinkRegion* first = region_of(entries.front().addr);
    for (const auto& e : entries) {
      const SinkRegion* r = region_of(e.addr);
      if (r != first && (!r || !first || r->pid != first->pid))
        return Error::msg(strf("page 0x%llx: a batch spans memory of different processes", (unsigned long long)e.addr));
    }
    return first ? first->pid : pid_t(-1);
  }

  void add_cpu(double s) {
    double cur = cpu_seconds.load();
    while (!cpu_seconds.compare_exchange_weak(cur, cur + s)) {
    }
  }
};

}  // namespace

Result<std::unique_ptr<Destination>> Destination::listen(DestinationOptions options) {
  LM_TRY_CTX(transport::check_key_for_address(options.listen, options.session, "listen on"), "destination");
  auto listener = LM_TRY_CTX(transport::listen(options.listen, options.session.channel),
                             strf("destination listen on %s", options.listen.c_str()));
  return over(std::move(listener), std::move(options));
}

Destination::Destination(DestinationOptions options, std::shared_ptr<SessionSource> sessions)
    : o_(std::move(options)), sessions_(std::move(sessions)) {}
Destination::~Destination() = default;

namespace {

// Receives one bulk channel until its final round mark, checking addresses
// against the mapping table its own stream announced.
Result<void> receive_bulk(Peer peer, DestinationMemory& st, transport::MappingTable table,
                          transport::Timeout timeout, std::stop_token abort) {
  compress::Decompressor decompressor;
  ProcessPageWriter writer;
  // Each page hashed as it is decoded or still in the payload, while in cache.
  // A per-page sink's pages are counted against the RAM limit, hashed or not.
  compress::PageVisitor hash;
  if (st.hash_pages)
    hash = [&st](const PageEntry& e, const uint8_t* bytes) { st.hashes.set(e.addr, page_hash(bytes)); };
  else if (st.per_page())
    hash = [&st](const PageEntry& e, const uint8_t*) { st.hashes.mark(e.addr); };
  peer.check_against(table);
  for (;;) {
    auto m = LM_TRY((peer.expect<PageBatch, RoundEnd, Mappings>(timeout, abort)));
    if (const auto* batch = std::get_if<PageBatch>(&m)) {
      std::shared_lock g(st.lock);
      std::span<const PageEntry> entries = batch->entries;
      std::span<const uint8_t> payload{reinterpret_cast<const uint8_t*>(batch->payload.data()),
                                       batch->payload.size()};
      const auto current = st.without_dropped(table, entries, payload);
      if (current) {
        entries = current->first;
        payload = current->second;
      }
      const pid_t pid = LM_TRY_CTX(st.writer_of(entries), peer.channel().name());
      if (pid > 0)
        LM_TRY_CTX(writer.write(pid, entries, payload, decompressor, hash), peer.channel().name());
      else
        LM_TRY_CTX(decompressor.decompress_batch(entries, payload, st.map, hash), peer.channel().name());
      st.pages += entries.size();
      st.batches++;
      LM_TRY_CTX(st.check_received(), peer.channel().name());
    } else if (const auto* end = std::get_if<RoundEnd>(&m)) {
      if (end->flags & kRoundEndFinal) return ok();
    } else {
      table = std::move(std::get<Mappings>(m).table);
      LM_TRY_CTX(st.adopt_table(table), peer.channel().name());
    }
  }
}

}  // namespace

std::string_view destination_phase_name(DestinationPhase p) {
  switch (p) {
    case DestinationPhase::accept: return "accept";
    case DestinationPhase::prepare: return "prepare";
    case DestinationPhase::receive: return "receive";
    case DestinationPhase::commit: return "commit";
    case DestinationPhase::resume: return "resume";
    case DestinationPhase::postcopy: return "postcopy";
    case DestinationPhase::verdict: return "verdict";
    case DestinationPhase::kept: return "kept";
    case DestinationPhase::discarded: return "discarded";
    case DestinationPhase::lost: return "lost";
  }
  return "?";
}

namespace {

// The arrows of the diagram in destination.hpp.
bool transition_allowed(DestinationPhase from, DestinationPhase to) {
  using P = DestinationPhase;
  switch (from) {
    case P::accept: return to == P::prepare || to == P::discarded;
    case P::prepare: return to == P::receive || to == P::discarded;
    case P::receive: return to == P::commit || to == P::discarded;
    case P::commit: return to == P::resume || to == P::discarded;
    case P::resume: return to == P::verdict || to == P::postcopy || to == P::discarded;
    case P::postcopy: return to == P::verdict || to == P::lost;
    case P::verdict: return to == P::kept || to == P::discarded || to == P::lost;
    default: return false;
  }
}

// What a failure in `phase` means (the one place that decides it).
DestinationPhase on_failure(DestinationPhase phase, bool postcopy) {
  switch (phase) {
    case DestinationPhase::postcopy: return DestinationPhase::lost;
    case DestinationPhase::verdict: return postcopy ? DestinationPhase::lost : DestinationPhase::discarded;
    default: return DestinationPhase::discarded;
  }
}

// `session` with the admission check of `limits` (unless the caller set its
// own). Against MemAvailable now, or, `fixed`, only against the limits
// admitted before: a post-copy recovery must not count the memory the sink
// took since.
// A per-page sink's mappings are charged as their pages arrive, not here.
enum class AgainstMemAvailable { now, no };
transport::SessionConfig admitting(const transport::SessionConfig& session, const LimitsConfig& limits,
                                   AgainstMemAvailable against, MemoryCommit commit) {
  transport::SessionConfig c = session;
  if (c.admit) return c;
  c.admit = [limits, against, commit](const transport::Negotiated& n,
                                      const transport::MappingTable* table) -> Result<void> {
    const uint64_t up_front = table && commit == MemoryCommit::up_front ? table->total_bytes() : 0;
    const AdmissionRequest r{up_front, table ? table->entries().size() : 0, n.bulk_channels};
    return check_admission(limits, r,
                           against == AgainstMemAvailable::now ? mem_available_bytes() : std::nullopt);
  };
  return c;
}

// The bulk receivers of the pre-copy rounds, one thread per bulk channel.
class BulkReceivers {
 public:
  void start(transport::Session& session, DestinationMemory& st, transport::Timeout timeout) {
    for (size_t c = 0; c < session.bulk_count(); c++) {
      threads_.emplace_back([this, &session, &st, c, table = session.mappings(), timeout] {
        double cpu0 = thread_cpu_seconds();
        auto r = receive_bulk(Peer::bulk(session, c, timeout), st, table, timeout, abort_.get_token());
        if (!r) {
          {
            std::lock_guard g(first_error_lock_);
            if (!first_error_) first_error_ = std::move(r).error();
          }
          abort_.request_stop();
        }
        st.add_cpu(thread_cpu_seconds() - cpu0);
      });
    }
  }
  bool failed() const { return abort_.stop_requested(); }
  // Stopped when a receiver fails (or stop()): ends the other waits at once.
  std::stop_token failure() const { return abort_.get_token(); }
  void stop() {
    abort_.request_stop();
    join();
  }
  void join() {
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  // The first failure is the cause; the other channels then stop with
  // "failed elsewhere" and must not mask it. After join().
  std::optional<Error> take_error() { return std::exchange(first_error_, std::nullopt); }
  ~BulkReceivers() { stop(); }

 private:
  std::stop_source abort_;
  std::mutex first_error_lock_;
  std::optional<Error> first_error_;
  std::vector<std::thread> threads_;
};

}  // namespace

// Where a destination's sessions come from (destination.hpp).
class SessionSource {
 public:
  virtual ~SessionSource() = default;
  // The next new session `config` admits; `recovering`: that session's
  // post-copy recovery (the caller checks the id it got).
  virtual Result<transport::Session> accept(const transport::SessionConfig& config, transport::Timeout timeout,
                                            std::stop_token stop, std::optional<uint64_t> recovering) = 0;
  // Session `id` holds `bytes` of RAM in all now: ok, or refused because the
  // listener's other sessions hold the rest of its limit.
  virtual Result<void> hold_ram(uint64_t id, uint64_t bytes) = 0;
  // The destination that accepted session `id` ended, `kept` or failed.
  virtual void ended(uint64_t id, bool kept) = 0;
  virtual std::string address() const = 0;
};

namespace {

// A listener of its own: each accept is accept_session's (channels of other
// sessions are dropped).
class OwnListener final : public SessionSource {
 public:
  explicit OwnListener(std::unique_ptr<transport::Listener> listener) : listener_(std::move(listener)) {}
  Result<transport::Session> accept(const transport::SessionConfig& config, transport::Timeout timeout,
                                    std::stop_token stop, std::optional<uint64_t>) override {
    return transport::accept_session(*listener_, config, timeout, std::move(stop));
  }
  Result<void> hold_ram(uint64_t, uint64_t) override { return ok(); }  // its one session's limit is checked
  void ended(uint64_t, bool) override {}
  std::string address() const override { return listener_->address(); }

 private:
  std::unique_ptr<transport::Listener> listener_;
};

// One listener for several destinations: a session goes to a destination
// waiting for a new one unless its id was handed out before (then it is
// that session's recovery, admitted as its destination says). A destination
// waiting for a new session is timed out only once no session of the
// listener ran for its timeout: a source busy with another VM (a serial
// group's) is not silent. The sessions' RAM together stays within one limit.
class SharedListener final : public SessionSource {
 public:
  SharedListener(std::unique_ptr<transport::Listener> listener, transport::SessionConfig fresh, RamLimit ram)
      : listener_(std::move(listener)), server_(*listener_, admitting_by_id(std::move(fresh))), ram_(std::move(ram)) {}

  Result<transport::Session> accept(const transport::SessionConfig& config, transport::Timeout timeout,
                                    std::stop_token stop, std::optional<uint64_t> recovering) override {
    if (recovering) {
      std::lock_guard g(lock_);
      recovering_[*recovering] = config.admit;
    }
    auto wanted = [this, recovering](uint64_t id) {
      std::lock_guard g(lock_);
      return recovering ? id == *recovering : !taken_.contains(id);
    };
    for (;;) {
      auto session = server_.next(timeout, stop, wanted);
      if (!session && session.error().code == ETIMEDOUT && !recovering && ran_within(timeout)) continue;
      if (session && !recovering) {
        std::lock_guard g(lock_);
        taken_.insert(session->negotiated().session_id);
        running_.insert(session->negotiated().session_id);
      }
      return session;
    }
  }
  Result<void> hold_ram(uint64_t id, uint64_t bytes) override { return ram_.hold(id, bytes); }
  void ended(uint64_t id, bool kept) override {
    if (!kept) ram_.release(id);
    std::lock_guard g(lock_);
    running_.erase(id);
    last_ended_ns_ = now_ns();
  }
  std::string address() const override { return server_.address(); }

 private:
  using Admit = std::function<Result<void>(const transport::Negotiated&, const transport::MappingTable*)>;
  bool ran_within(transport::Timeout t) {
    std::lock_guard g(lock_);
    return !running_.empty() || (last_ended_ns_ > 0 && now_ns() - last_ended_ns_ < uint64_t(t.count()) * 1000000);
  }
  // A recovery's channels are admitted by its destination's check (against
  // the limits admitted before), all others by `fresh`'s.
  transport::SessionConfig admitting_by_id(transport::SessionConfig fresh) {
    fresh.admit = [this, first = fresh.admit](const transport::Negotiated& n,
                                              const transport::MappingTable* table) -> Result<void> {
      Admit admit = first;
      {
        std::lock_guard g(lock_);
        if (auto it = recovering_.find(n.session_id); it != recovering_.end() && it->second) admit = it->second;
      }
      return admit ? admit(n, table) : ok();
    };
    return fresh;
  }

  std::mutex lock_;
  std::set<uint64_t> taken_;                // the sessions handed out
  std::set<uint64_t> running_;              // of those, the ones whose destination has not ended
  uint64_t last_ended_ns_ = 0;
  std::map<uint64_t, Admit> recovering_;  // by session id: their destination's admission
  std::unique_ptr<transport::Listener> listener_;
  transport::SessionServer server_;
  RamPool ram_;
};

// One migration of the destination side: the phases of destination.hpp as
// methods, each returning the next phase; run() drives them and routes every
// failure through fail().
class DestinationRun {
 public:
  DestinationRun(const DestinationOptions& o, SessionSource& sessions, PageSink& sink)
      : o_(o),
        sessions_(sessions),
        sink_(sink),
        session_config_(admitting(o.session, o.limits, AgainstMemAvailable::now, sink.memory_commit())),
        st_(sink) {}

  Result<DestinationOutcome> run() {
    auto out = drive();
    if (session_) sessions_.ended(session_->negotiated().session_id, out.ok());
    return out;
  }

 private:
  Result<DestinationOutcome> drive() {
    if (o_.on_phase) o_.on_phase(phase_);
    for (;;) {
      Result<DestinationPhase> next = step();
      if (!next) return fail(std::move(next).error());
      if (*next == DestinationPhase::kept) return keep();
      enter(*next);
    }
  }

  Result<DestinationPhase> step() {
    switch (phase_) {
      case DestinationPhase::accept: return accept();
      case DestinationPhase::prepare: return prepare();
      case DestinationPhase::receive: return receive();
      case DestinationPhase::commit: return commit();
      case DestinationPhase::resume: return resume();
      case DestinationPhase::postcopy: return serve_postcopy();
      case DestinationPhase::verdict: return verdict();
      default: return Error::msg(strf("destination: no step from phase %s",
                                      std::string(destination_phase_name(phase_)).c_str()));
    }
  }

  void enter(DestinationPhase next) {
    if (!transition_allowed(phase_, next)) {
      std::fprintf(stderr, "livemig: destination phase %s -> %s is not a transition\n",
                   std::string(destination_phase_name(phase_)).c_str(),
                   std::string(destination_phase_name(next)).c_str());
      std::abort();
    }
    phase_ = next;
    if (o_.on_phase) o_.on_phase(next);
  }

  bool cancelled() const { return o_.cancel && o_.cancel->requested(); }
  // For waits outside this file; empty without a cancel.
  std::function<bool()> stopped() const {
    if (!o_.cancel) return {};
    return [this] { return cancelled(); };
  }
  Result<void> check_cancel() const {
    if (cancelled()) return o_.cancel->error();
    return ok();
  }
  // The control channel; waits on it end early on a cancel.
  Peer control() { return Peer::control(*session_, o_.timeout, o_.cancel.get()); }

  // --- accept: the source's session ---------------------------------------------------
  Result<DestinationPhase> accept() {
    auto session = sessions_.accept(session_config_, o_.timeout, o_.cancel ? o_.cancel->token() : std::stop_token(),
                                    std::nullopt);
    if (!session && cancelled()) return o_.cancel->error();
    session_.emplace(LM_TRY(std::move(session)));
    st_.admitted = o_.limits;
    const RamLimit ram = LM_TRY(ram_limit(o_.limits, mem_available_bytes()));
    st_.admitted.max_ram_bytes = ram.bytes;
    st_.admitted_why = ram.why;
    const uint64_t id = session_->negotiated().session_id;
    st_.hold_ram = [this, id](uint64_t bytes) { return sessions_.hold_ram(id, bytes); };
    if (!st_.per_page()) LM_TRY(st_.hold_ram(session_->mappings().total_bytes()));
    session_config_ = admitting(o_.session, st_.admitted, AgainstMemAvailable::no, sink_.memory_commit());
    since_accept_ = Stopwatch();
    // Post-copy (postcopy_destination.cpp): the source offers the feature only then.
    postcopy_ = session_->negotiated().features & transport::kFeaturePostCopy;
    // Digests only for a source that verifies (it offers the feature only then).
    digests_ = session_->negotiated().features & transport::kFeatureDigest;
    st_.hash_pages = digests_ || postcopy_;
    return DestinationPhase::prepare;
  }

  // --- prepare: the sink's memory; then `ready` -------------------------------------------
  Result<DestinationPhase> prepare() {
    auto prepared = st_.prepare(session_->mappings(), postcopy_ ? ServeFaults::yes : ServeFaults::no,
                                SinkWait{o_.timeout, stopped()});
    if (!prepared && cancelled()) return o_.cancel->error();  // the cancel is the cause, not the wait it ended
    LM_TRY(std::move(prepared));
    // Destination memory is ready: the source may start sending (its setup
    // time includes this preparation, its round 0 measures streaming only).
    LM_TRY(check_cancel());
    const PreparedMemory memory = sink_.prepared();
    LM_TRY(control().send(Ready{now_ns(), 0, memory.population_ns, memory.kind}));
    return DestinationPhase::receive;
  }

  // --- receive: pre-copy rounds until the commit (exec state) -----------------------------
  Result<DestinationPhase> receive() {
    receivers_.start(*session_, st_, o_.timeout);
    // The commit and the resume are the source's downtime (the threads an
    // urgent thread starts are normal).
    commit_urgent_.emplace();
    // Control channel: mapping updates, post-copy bitmaps, then the commit.
    const Peer peer = control();
    uint64_t batches_seen = st_.batches.load();
    for (;;) {
      auto m = peer.expect<Mappings, DirtyBitmap, ExecState>(o_.timeout, receivers_.failure());
      if (receivers_.failed()) return receivers_error();
      // Control is silent while a long round streams on the bulk channels
      // (round 0 over a slow link): the source is alive while pages arrive.
      if (!m && m.error().code == ETIMEDOUT && st_.batches.load() != batches_seen) {
        batches_seen = st_.batches.load();
        continue;
      }
      auto msg = LM_TRY(std::move(m));
      if (auto* table = std::get_if<Mappings>(&msg)) {
        session_->set_mappings(std::move(table->table));
      } else if (const auto* bitmap = std::get_if<DirtyBitmap>(&msg)) {
        if (!postcopy_) return peer.unexpected(MsgType::dirty_bitmap);
        // Each is kept until the end: together no more than the pages admitted.
        bitmap_pages_ += bitmap->pages;
        if (bitmap_pages_ > session_->mappings().total_bytes() / kPageSize)
          return Error{EPROTO, strf("destination: the source's dirty bitmaps name %llu pages, its mappings hold %llu",
                                    (unsigned long long)bitmap_pages_,
                                    (unsigned long long)(session_->mappings().total_bytes() / kPageSize))};
        needed_.add(*bitmap);
      } else {
        // The state points into this message, which the next receive replaces.
        LM_TRY(sink_.take_exec_state(std::get<ExecState>(msg)));
        return DestinationPhase::commit;
      }
    }
  }

  // A bulk channel failed: its error is the cause (fail() prefers the source's own).
  Error receivers_error() {
    receivers_.stop();
    auto e = receivers_.take_error();
    return e ? std::move(*e) : Error::msg("migration aborted");
  }

  // --- commit: every bulk channel ended; digests (pre-copy) or fault serving (post-copy) ---
  Result<DestinationPhase> commit() {
    // Every bulk channel has delivered its final round before the commit is acted on.
    receivers_.join();
    if (receivers_.failed()) return receivers_error();
    LM_TRY(check_cancel());
    if (!postcopy_) {
      if (digests_) LM_TRY(send_digests());
      return DestinationPhase::resume;
    }
    // Post-copy: serve the guest's faults from before it runs; the digests
    // follow at completion.
    PostcopyGuestRam ram = LM_TRY(sink_.postcopy_ram());
    PostcopyRecovery recovery;
    recovery.timeout = o_.reconnect_timeout;
    if (o_.reconnect_timeout.count() > 0)
      recovery.accept = [this, id = session_->negotiated().session_id](transport::Timeout t, std::stop_token stop) {
        return sessions_.accept(session_config_, t, std::move(stop), id);
      };
    serving_ = LM_TRY(PostcopyDestination::start(*session_, std::move(ram), std::move(needed_), st_.hashes,
                                                 o_.timeout, std::move(recovery)));
    return DestinationPhase::resume;
  }

  Result<void> send_digests() {
    auto digests = st_.hashes.digests();
    return control().send(Digest{digests});
  }

  // --- resume: the VM runs; the source hears `resumed` (a sink that runs nothing: `ready`) ---
  Result<DestinationPhase> resume() {
    LM_TRY(check_cancel());
    LM_TRY(sink_.resume());
    auto running = wait_running();
    if (!running && cancelled()) return o_.cancel->error();
    const uint64_t running_ns = LM_TRY(std::move(running));
    if (sink_.resumes_vm()) out_.resumed_at_ms = since_accept_.elapsed_ms();
    LM_TRY(check_cancel());
    if (serving_) {
      serving_->resumed(running_ns);  // a broken link here is recovered from like any other
      commit_urgent_.reset();
      return DestinationPhase::postcopy;
    }
    if (sink_.resumes_vm()) LM_TRY(control().send(Resumed{running_ns, st_.pages.load()}));
    else LM_TRY(control().send(Ready{running_ns, st_.pages.load()}));
    commit_urgent_.reset();
    LM_TRY(sink_.wait_ready(o_.timeout));
    return DestinationPhase::verdict;
  }

  // A post-copy guest's first steps fault on pages only the source has: a
  // link that breaks before its running report is recovered from here too.
  Result<uint64_t> wait_running() {
    if (!serving_) return sink_.wait_running({o_.timeout, stopped()});
    for (;;) {
      auto running = sink_.wait_running({o_.timeout, [this] { return cancelled() || serving_->link_broken(); }});
      if (running || !serving_->link_broken()) return running;
      LM_TRY(serving_->recover_link());
    }
  }

  // --- postcopy: serve faults to completion (a cancel is not obeyed: the VM runs here) ------
  Result<DestinationPhase> serve_postcopy() {
    LM_TRY(sink_.wait_ready(o_.timeout));
    const auto progress_before = sink_.progress();
    Stopwatch serving;
    LM_TRY(serving_->wait_complete(transport::Timeout(600000)));
    const auto progress_after = sink_.progress();
    if (progress_before && progress_after)
      out_.postcopy_rate = double(*progress_after - *progress_before) / std::max(1e-9, serving.elapsed_s());
    out_.postcopy = serving_->stats();
    LM_TRY(send_digests());
    return DestinationPhase::verdict;
  }

  // --- verdict: close = verified and released; error = discard ----------------------------
  // A cancel in a pre-copy verdict is told to the source once (it may have
  // released its copy already, so only it can decide) and the wait goes on;
  // post-copy does not hear it.
  Result<DestinationPhase> verdict() {
    const Peer peer = Peer::control(*session_, o_.timeout);  // no cancel: the source decides
    const std::stop_token tell = o_.cancel && !postcopy_ ? o_.cancel->token() : std::stop_token();
    Stopwatch waited;
    auto received = peer.receive(o_.timeout, tell);
    if (!received && tell.stop_requested()) {
      peer.send_error(o_.cancel->error());
      auto left = std::max(o_.timeout - transport::Timeout(int64_t(waited.elapsed_ms())), transport::Timeout(0));
      received = peer.receive(o_.timeout == transport::kForever ? o_.timeout : left);
    }
    auto m = LM_TRY_CTX(std::move(received), "waiting for the source's verdict");
    LM_TRY(peer.decode<Close>(m));
    (void)session_->close(transport::Timeout(2000));
    LM_TRY(sink_.keep(session_->mappings()));
    return DestinationPhase::kept;
  }

  // --- kept: the source's verdict released the VM to us -----------------------------------
  Result<DestinationOutcome> keep() {
    enter(DestinationPhase::kept);
    out_.pages_received = st_.pages;
    out_.batches = st_.batches;
    out_.cpu_seconds = st_.cpu_seconds + (thread_cpu_seconds() - cpu_start_);
    return std::move(out_);
  }

  // --- failures: discard the copy, or lose a VM that ran here ------------------------------
  Result<DestinationOutcome> fail(Error cause) {
    receivers_.stop();
    serving_.reset();  // stops its threads, closes the userfaultfd (waiting faults retry as usual)
    if (!session_) {  // accept: nothing to discard, nobody to tell
      sink_.discard();
      enter(DestinationPhase::discarded);
      return cause;
    }
    // The cause, by precedence: the source's own error message; else this
    // error (a cancel is its own cause).
    Error e = std::move(cause);
    const Peer peer = Peer::control(*session_, o_.timeout);
    if (e.code != ECANCELED)
      if (auto why = peer.pending_error(); why) e = std::move(*why);
    peer.send_error(e);
    // The VM never ran from this copy, or ran and is lost: the sink ends it.
    sink_.discard();
    enter(on_failure(phase_, postcopy_));
    return std::move(e).context("destination");
  }

  const DestinationOptions& o_;
  SessionSource& sessions_;
  PageSink& sink_;
  DestinationPhase phase_ = DestinationPhase::accept;
  const double cpu_start_ = thread_cpu_seconds();
  Stopwatch since_accept_;
  DestinationOutcome out_;

  // The handshake's admission check; after the first session, the limits it was admitted with.
  transport::SessionConfig session_config_;
  std::optional<transport::Session> session_;
  bool postcopy_ = false;  // negotiated by the session
  uint64_t bitmap_pages_ = 0;  // named by the post-copy dirty bitmaps so far
  std::optional<UrgentScope> commit_urgent_;  // this thread, from the rounds to the resume
  bool digests_ = true;    // negotiated: the source verifies
  NeededPages needed_;
  // Declared after the session and before the receivers and the server: it
  // outlives the threads that write through its views.
  DestinationMemory st_;
  BulkReceivers receivers_;
  std::unique_ptr<PostcopyDestination> serving_;
};

}  // namespace

Result<std::unique_ptr<Destination>> Destination::over(std::unique_ptr<transport::Listener> listener,
                                                       DestinationOptions options) {
  if (!options.sink) return Error::msg("destination: no page sink");
  return std::unique_ptr<Destination>(
      new Destination(std::move(options), std::make_shared<OwnListener>(std::move(listener))));
}

Result<std::vector<std::unique_ptr<Destination>>> Destination::listen_shared(
    DestinationOptions options, const std::vector<std::shared_ptr<PageSink>>& sinks) {
  LM_TRY_CTX(transport::check_key_for_address(options.listen, options.session, "listen on"), "destination");
  auto listener = LM_TRY_CTX(transport::listen(options.listen, options.session.channel),
                             strf("destination listen on %s", options.listen.c_str()));
  return over_shared(std::move(listener), std::move(options), sinks);
}

Result<std::vector<std::unique_ptr<Destination>>> Destination::over_shared(
    std::unique_ptr<transport::Listener> listener, DestinationOptions options,
    const std::vector<std::shared_ptr<PageSink>>& sinks) {
  if (sinks.empty()) return Error::msg("destination: a shared listener serves at least one session (no page sink)");
  for (const auto& sink : sinks)
    if (!sink) return Error::msg("destination: no page sink");
  RamLimit ram = LM_TRY(ram_limit(options.limits, mem_available_bytes()));
  auto shared = std::make_shared<SharedListener>(
      std::move(listener),
      admitting(options.session, options.limits, AgainstMemAvailable::now, sinks.front()->memory_commit()),
      std::move(ram));
  std::vector<std::unique_ptr<Destination>> out;
  for (const auto& sink : sinks) {
    DestinationOptions o = options;
    o.sink = sink;
    out.push_back(std::unique_ptr<Destination>(new Destination(std::move(o), shared)));
  }
  return out;
}

std::string Destination::address() const { return sessions_->address(); }

Result<DestinationOutcome> Destination::run() { return DestinationRun(o_, *sessions_, *o_.sink).run(); }

}  // namespace lm::engine
