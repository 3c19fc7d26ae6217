#include "engine/destination.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include "common/clock.hpp"
#include "common/fd.hpp"
#include "compress/compressor.hpp"
#include "engine/control.hpp"
#include "engine/digest.hpp"
#include "engine/source.hpp"
#include "harness/guest/handoff.hpp"

namespace lm::engine {

using transport::Channel;
using transport::MsgType;
using transport::OutMessage;

namespace {

struct Region {
  uint64_t addr = 0;
  uint64_t bytes = 0;
  UniqueFd memfd;
  uint8_t* base = nullptr;

  Region() = default;
  Region(Region&& o) noexcept
      : addr(o.addr), bytes(o.bytes), memfd(std::move(o.memfd)), base(std::exchange(o.base, nullptr)) {}
  ~Region() {
    if (base) munmap(base, bytes);
  }
};

enum class Prealloc { no, yes };

// Maps a memfd for the engine to write into. With Prealloc::yes the memory is
// allocated and mapped up front (fallocate + MAP_POPULATE), like QEMU's
// -mem-prealloc: first touch of fresh memory costs several µs per page on
// these machines, which would otherwise be paid page by page while receiving.
Result<Region> map_region(uint64_t addr, uint64_t bytes, UniqueFd memfd, Prealloc prealloc = Prealloc::no) {
  Region r;
  r.addr = addr;
  r.bytes = bytes;
  r.memfd = std::move(memfd);
  if (prealloc == Prealloc::yes && fallocate(r.memfd.get(), 0, 0, off_t(bytes)) != 0)
    return Error::from_errno(strf("preallocate %llu bytes of destination memory", (unsigned long long)bytes));
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_SHARED | (prealloc == Prealloc::yes ? MAP_POPULATE : 0), r.memfd.get(), 0);
  if (p == MAP_FAILED)
    return Error::from_errno(strf("map destination memory for [0x%llx,0x%llx)", (unsigned long long)addr,
                                  (unsigned long long)(addr + bytes)));
  r.base = static_cast<uint8_t*>(p);
  return r;
}

Result<Region> new_image_region(uint64_t addr, uint64_t bytes) {
  int fd = memfd_create("livemig-image", MFD_CLOEXEC);
  if (fd < 0) return Error::from_errno("memfd_create for the destination image");
  UniqueFd memfd(fd);
  if (ftruncate(fd, off_t(bytes)) != 0)
    return Error::from_errno(strf("size the image of [0x%llx,+%llu)", (unsigned long long)addr,
                                  (unsigned long long)bytes));
  return map_region(addr, bytes, std::move(memfd));
}

std::optional<pid_t> image_source_pid(std::span<const std::byte> state) {
  ImageExecState image{};
  if (state.size() != sizeof image) return std::nullopt;
  std::memcpy(&image, state.data(), sizeof image);
  if (image.source_pid == 0 || image.source_pid > uint64_t(INT_MAX)) return std::nullopt;
  return pid_t(image.source_pid);
}

// The regions of the final mapping table, with its protections. Regions of
// mappings that went away before the freeze are not part of the image.
std::vector<ImageRegion> held_image(const std::vector<Region>& regions, const transport::MappingTable& table) {
  std::vector<ImageRegion> image;
  for (const auto& e : table.entries())
    for (const auto& r : regions)
      if (r.addr == e.start && r.bytes == e.end - e.start) image.push_back({r.addr, r.bytes, e.prot, r.base});
  return image;
}

}  // namespace

// Destination memory by source address, shared by the receiving threads.
// Pages are installed under a shared lock; a new mapping table (the source
// announces it in-band on every channel) takes the exclusive lock.
struct DestinationMemory {
  std::shared_mutex lock;
  std::vector<Region> regions;
  compress::DestinationMap map;
  PageHashes hashes{{}};
  uint32_t generation = 0;
  std::atomic<uint64_t> pages{0};
  std::atomic<uint64_t> batches{0};
  std::atomic<double> cpu_seconds{0};

  Result<void> add_region(Region r) {
    LM_TRY(map.add({r.addr, r.bytes, r.base}));
    hashes.add({r.addr, r.addr + r.bytes});
    regions.push_back(std::move(r));
    return ok();
  }

  // Image target: a memfd for every mapping of the table not held yet.
  // Regions of mappings that went away stay (their pages are simply not
  // verified any more).
  Result<void> adopt_table(const transport::MappingTable& table) {
    std::unique_lock g(lock);
    if (table.generation() < generation) return ok();
    generation = table.generation();
    for (const auto& e : table.entries()) {
      bool held = false;
      for (const auto& r : regions) held |= r.addr == e.start && r.bytes == e.end - e.start;
      if (held) continue;
      LM_TRY(add_region(LM_TRY(new_image_region(e.start, e.end - e.start))));
    }
    return ok();
  }

  void add_cpu(double s) {
    double cur = cpu_seconds.load();
    while (!cpu_seconds.compare_exchange_weak(cur, cur + s)) {
    }
  }
};

Result<std::unique_ptr<Destination>> Destination::listen(DestinationOptions options) {
  std::unique_ptr<Destination> d(new Destination(std::move(options)));
  d->listener_ = LM_TRY_CTX(transport::listen(d->o_.listen, d->o_.session.channel),
                            strf("destination listen on %s", d->o_.listen.c_str()));
  return d;
}

Destination::Destination(DestinationOptions options) : o_(std::move(options)) {}
Destination::~Destination() = default;

std::string Destination::address() const { return listener_->address(); }

namespace {

// Receives one bulk channel until its final round mark.
Result<void> receive_bulk(Channel& channel, DestinationMemory& st, transport::MappingTable table, uint32_t codecs,
                          transport::Timeout timeout, const std::atomic<bool>& abort, bool image_target) {
  compress::Decompressor decompressor;
  const transport::Timeout slice(200);
  uint64_t idle_ms = 0;
  while (!abort) {
    auto received = transport::recv_message(channel, slice);
    if (!received) {
      if (received.error().code == ETIMEDOUT && idle_ms < uint64_t(timeout.count())) {
        idle_ms += uint64_t(slice.count());
        continue;
      }
      return std::move(received).error();
    }
    idle_ms = 0;
    const auto& m = *received;
    switch (m.type) {
      case MsgType::page_batch: {
        auto view = LM_TRY(transport::decode_page_batch(m, table, codecs));
        std::shared_lock g(st.lock);
        LM_TRY_CTX(decompressor.decompress_batch(
                       view.entries,
                       {reinterpret_cast<const uint8_t*>(view.payload.data()), view.payload.size()}, st.map),
                   channel.name());
        for (const auto& e : view.entries) st.hashes.set(e.addr, page_hash(st.map.find(e.addr)));
        st.pages += view.entries.size();
        st.batches++;
        break;
      }
      case MsgType::round_end: {
        auto end = LM_TRY(transport::decode_round_end(m));
        if (end.flags & transport::kRoundEndFinal) return ok();
        break;
      }
      case MsgType::mappings: {
        table = LM_TRY(transport::decode_mappings(m));
        if (image_target) LM_TRY(st.adopt_table(table));
        break;
      }
      case MsgType::error:
        return transport::peer_error(m, channel.name());
      default:
        return Error::msg(strf("%s: unexpected %s message on a bulk channel", channel.name().c_str(),
                               std::string(transport::msg_type_name(m.type)).c_str()));
    }
  }
  return Error::msg(strf("%s: receiving stopped: the migration failed elsewhere", channel.name().c_str()));
}

}  // namespace

Result<DestinationOutcome> Destination::run() {
  DestinationOutcome out;
  const double cpu_start = thread_cpu_seconds();
  auto session = LM_TRY(transport::accept_session(*listener_, o_.session, o_.timeout));
  Stopwatch since_accept;
  memory_ = std::make_unique<DestinationMemory>();
  DestinationMemory& st = *memory_;
  const auto& table = session.mappings();
  // Post-copy (postcopy_destination.cpp): the source offers the feature only then.
  const bool postcopy = session.negotiated().features & transport::kFeaturePostCopy;
  PostcopyGuestRam postcopy_ram;
  NeededPages needed;

  // --- destination memory ---------------------------------------------------------
  std::unique_ptr<guest::GuestProcess> guest;
  std::optional<guest::HandoffServer> handoff;
  if (o_.target == DestinationTarget::guest) {
    if (table.entries().size() != 1)
      return Error::msg(strf("destination: a guest migration announces one RAM mapping, this one %zu",
                             table.entries().size()));
    const auto& ram = table.entries().front();
    std::string handoff_path = o_.work_dir + strf("/handoff-%d-%p.sock", getpid(), static_cast<void*>(this));
    handoff = LM_TRY(guest::HandoffServer::listen(handoff_path));
    guest = std::make_unique<guest::GuestProcess>(
        LM_TRY(guest::GuestProcess::spawn_resume(o_.guest_binary, handoff_path, o_.work_dir)));
    auto got = LM_TRY_CTX(handoff->accept(ram.start, ram.end - ram.start,
                                          postcopy ? guest::UffdWanted::yes : guest::UffdWanted::no,
                                          int(o_.timeout.count())),
                          strf("destination: resumed guest pid %d", guest->pid()));
    // Preallocating would put every page in the page cache, where a MISSING
    // fault never fires: post-copy's RAM must stay empty until filled.
    LM_TRY(st.add_region(LM_TRY(map_region(ram.start, ram.end - ram.start, std::move(got.memfd),
                                           o_.prealloc && !postcopy ? Prealloc::yes : Prealloc::no))));
    postcopy_ram = {std::move(got.uffd), got.minor_registered, st.regions.back().memfd.get(), st.regions.back().base,
                    {ram.start, ram.end}};
  } else {
    LM_TRY(st.adopt_table(table));
  }
  // On failure: the guest never ran from this image (abort), or is killed.
  struct Discard {
    std::optional<guest::HandoffServer>& handoff;
    std::unique_ptr<guest::GuestProcess>& guest;
    bool armed = true;
    ~Discard() {
      if (!armed) return;
      if (handoff) (void)handoff->abort();
      guest.reset();  // kills by PID and reaps
    }
  } discard{handoff, guest};

  // Destination memory is ready: the source may start sending (its setup
  // time includes this preparation, its round 0 measures streaming only).
  {
    OutMessage m;
    transport::encode_event(m, session.negotiated().version, MsgType::ready, {now_ns(), 0});
    LM_TRY(transport::send_message(session.control(), m, o_.timeout));
  }

  // --- receive ------------------------------------------------------------------------
  std::atomic<bool> abort{false};
  // The first failure is the cause; the other channels then stop with
  // "failed elsewhere" and must not mask it.
  std::mutex first_error_lock;
  std::optional<Error> first_error;
  std::vector<std::thread> receivers;
  std::atomic<size_t> bulk_done{0};
  for (size_t c = 0; c < session.bulk_count(); c++) {
    receivers.emplace_back([&, c] {
      double cpu0 = thread_cpu_seconds();
      auto r = receive_bulk(session.bulk(c), st, table, session.negotiated().codecs, o_.timeout, abort,
                            o_.target == DestinationTarget::image);
      if (!r) {
        std::lock_guard g(first_error_lock);
        if (!first_error) first_error = std::move(r).error();
        abort = true;
      }
      st.add_cpu(thread_cpu_seconds() - cpu0);
      bulk_done++;
    });
  }
  auto join_receivers = [&] {
    for (auto& t : receivers)
      if (t.joinable()) t.join();
  };
  // The cause, by precedence: the source's own error message; else the error
  // this path hit (`cause`); else the first bulk channel's failure.
  auto fail = [&](std::optional<Error> cause) -> Result<DestinationOutcome> {
    abort = true;
    join_receivers();
    std::optional<Error> e = pending_peer_error(session.control());
    if (!e) e = std::move(cause);
    if (!e && first_error) e = std::move(*first_error);
    if (!e) e = Error::msg("migration aborted");
    send_error_best_effort(session.control(), session.negotiated().version, *e);
    return std::move(*e).context("destination");
  };


  // Control channel: mapping updates, then the commit (exec state).
  const transport::Timeout slice(200);
  uint64_t idle_ms = 0;
  std::optional<transport::ExecStateView> exec;
  while (!exec) {
    if (abort) return fail(std::nullopt);
    auto received = transport::recv_message(session.control(), slice);
    if (!received) {
      if (received.error().code == ETIMEDOUT && idle_ms < uint64_t(o_.timeout.count())) {
        idle_ms += uint64_t(slice.count());
        continue;
      }
      return fail(std::move(received).error());
    }
    idle_ms = 0;
    const auto& m = *received;
    if (m.type == MsgType::error) return fail(transport::peer_error(m, session.control().name()));
    if (m.type == MsgType::mappings) {
      auto t = decode_mappings(m);
      if (!t) return fail(std::move(t).error());
      session.set_mappings(*t);
      continue;
    }
    if (m.type == MsgType::dirty_bitmap && postcopy) {
      auto v = transport::decode_dirty_bitmap(m, session.mappings());
      if (!v) return fail(std::move(v).error());
      needed.add(*v);
      continue;
    }
    if (m.type != MsgType::exec_state)
      return fail(Error::msg(strf("%s: unexpected %s message", session.control().name().c_str(),
                                  std::string(transport::msg_type_name(m.type)).c_str())));
    auto e = transport::decode_exec_state(m);
    if (!e) return fail(std::move(e).error());
    exec = *e;
    // The state points into this message, which ends with this iteration.
    if (e->kind == uint32_t(ExecStateKind::image)) out.source_pid = image_source_pid(e->state);
  }
  // Every bulk channel has delivered its final round before the commit is
  // acted on.
  join_receivers();
  if (first_error) return fail(std::nullopt);

  // Post-copy: serve the guest's faults from before it runs; the digests
  // follow at completion. Pre-copy: the digests now.
  std::unique_ptr<PostcopyDestination> postcopy_serving;
  auto send_digests = [&]() -> Result<void> {
    OutMessage m;
    auto digests = st.hashes.digests();
    transport::encode_digest(m, session.negotiated().version, digests);
    return transport::send_message(session.control(), m, o_.timeout);
  };
  if (postcopy) {
    if (o_.target != DestinationTarget::guest) return fail(Error::msg("post-copy needs a guest destination"));
    PostcopyRecovery recovery;
    recovery.timeout = o_.reconnect_timeout;
    if (o_.reconnect_timeout.count() > 0)
      recovery.accept = [this](transport::Timeout t) { return transport::accept_session(*listener_, o_.session, t); };
    auto started = PostcopyDestination::start(session, std::move(postcopy_ram), std::move(needed), st.hashes,
                                              o_.timeout, std::move(recovery));
    if (!started) return fail(std::move(started).error());
    postcopy_serving = std::move(*started);
  } else if (auto r = send_digests(); !r) {
    return fail(std::move(r).error());
  }
  uint64_t running_ns = now_ns();
  if (o_.target == DestinationTarget::guest) {
    if (exec->kind != uint32_t(ExecStateKind::guest_ram))
      return fail(Error::msg(strf("exec state kind %u cannot resume a livemig-guest", exec->kind)));
    if (auto r = handoff->go(); !r) return fail(std::move(r).error());
    auto resumed = handoff->wait_running(int(o_.timeout.count()));
    if (!resumed) return fail(std::move(resumed).error().context(strf("resume guest pid %d", guest->pid())));
    running_ns = *resumed;
    out.resumed_at_ms = since_accept.elapsed_ms();
  }
  if (postcopy_serving) {
    postcopy_serving->resumed(running_ns);  // a broken link here is recovered from like any other
  } else {
    OutMessage m;
    transport::encode_event(m, session.negotiated().version,
                            o_.target == DestinationTarget::guest ? MsgType::resumed : MsgType::ready,
                            {running_ns, st.pages.load()});
    if (auto r = transport::send_message(session.control(), m, o_.timeout); !r) return fail(std::move(r).error());
  }
  if (o_.target == DestinationTarget::guest) {
    if (auto r = guest->wait_ready(int(o_.timeout.count())); !r) return fail(std::move(r).error());
  }
  if (postcopy_serving) {
    auto steps_before = guest->control().status();
    Stopwatch serving;
    if (auto r = postcopy_serving->wait_complete(transport::Timeout(600000)); !r) return fail(std::move(r).error());
    auto steps_after = guest->control().status();
    if (steps_before && steps_after)
      out.postcopy_rate = double(steps_after->steps - steps_before->steps) / std::max(1e-9, serving.elapsed_s());
    out.postcopy = postcopy_serving->stats();
    if (auto r = send_digests(); !r) return fail(std::move(r).error());
  }

  // The source's verdict: close = verified and released; error = discard.
  auto verdict = transport::recv_message(session.control(), o_.timeout);
  if (!verdict) return fail(std::move(verdict).error().context("waiting for the source's verdict"));
  if (verdict->type == MsgType::error) return fail(transport::peer_error(*verdict, session.control().name()));
  if (verdict->type != MsgType::close)
    return fail(Error::msg(strf("%s: unexpected %s message instead of the verdict", session.control().name().c_str(),
                                std::string(transport::msg_type_name(verdict->type)).c_str())));
  (void)session.close(transport::Timeout(2000));
  if (handoff)
    if (auto r = handoff->release(); !r)
      return fail(std::move(r).error().context(strf("release the resumed guest pid %d", guest->pid())));

  discard.armed = false;
  out.guest = std::move(guest);
  out.image = held_image(st.regions, session.mappings());
  out.pages_received = st.pages;
  out.batches = st.batches;
  out.cpu_seconds = st.cpu_seconds + (thread_cpu_seconds() - cpu_start);
  return out;
}

}  // namespace lm::engine
