// The destination's phase machine in one process, without guests: the real
// Destination with a fake page sink over the in-process link, driven by a
// scripted source that speaks the engine's typed messages. For each phase of
// the diagram in engine/destination.hpp, each failure that can happen there
// is injected, and what the diagram promises is checked: discarded => the
// sink discarded its copy and the source was told why; kept => the sink kept
// and holds exactly the pages the source sent. Post-copy too: the VM is a
// thread of this process faulting on a userfaultfd the destination serves,
// so the postcopy and lost phases are covered without a guest.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/destination.hpp"
#include "engine/digest.hpp"
#include "engine/messages.hpp"
#include "engine/source.hpp"
#include "tests/engine/fake_page_sink.hpp"
#include "tests/engine/faulting_guest.hpp"
#include "transport/channel.hpp"
#include "transport/session.hpp"

namespace lm::engine::test {
namespace {

using P = DestinationPhase;

constexpr uint64_t kRamAddr = 0x7e0000000000;  // any address: the fake sink maps its own memory
constexpr uint64_t kRamPages = 64;
constexpr uint64_t kExtraAddr = 0x7e0000100000;  // the mapping a table change adds
constexpr uint64_t kExtraPages = 16;
const transport::Timeout kSilence(1000);       // the destination's patience
const transport::Timeout kSourceWait(5000);   // the source's: it outlasts the destination's

enum class Failure {
  none,
  sink_fails,            // the sink call of that phase fails
  vm_fails,              // resume: the VM reports it could not run
  vm_not_ready,          // resume: the VM ran but never became ready
  source_vanishes,       // the source's session is destroyed without a word
  source_error,          // the source sends its own error
  source_silent,         // the source says nothing
  unexpected_message,    // a message the phase does not expect
  bad_batch,             // a page outside the announced mappings
  corrupt_batch,         // a page whose content is not the source's: the digests differ
  table_change,          // a new mapping, announced in band (kept)
  sink_refuses_table,    // the sink cannot follow a new mapping table
  postcopy_unsupported,  // post-copy, and the sink cannot serve faults
  cancel,                // DestinationOptions::cancel
  cancel_after_release,  // verdict: the cancel reaches a source that released already (kept)
};

const char* failure_name(Failure f) {
  switch (f) {
    case Failure::none: return "none";
    case Failure::sink_fails: return "sink_fails";
    case Failure::vm_fails: return "vm_fails";
    case Failure::vm_not_ready: return "vm_not_ready";
    case Failure::source_vanishes: return "source_vanishes";
    case Failure::source_error: return "source_error";
    case Failure::source_silent: return "source_silent";
    case Failure::unexpected_message: return "unexpected_message";
    case Failure::bad_batch: return "bad_batch";
    case Failure::corrupt_batch: return "corrupt_batch";
    case Failure::table_change: return "table_change";
    case Failure::sink_refuses_table: return "sink_refuses_table";
    case Failure::postcopy_unsupported: return "postcopy_unsupported";
    case Failure::cancel: return "cancel";
    case Failure::cancel_after_release: return "cancel_after_release";
  }
  return "?";
}

enum class Mode { precopy, postcopy };

struct Case {
  P phase;          // where the failure is injected, and where the destination must notice it
  Failure failure;
  P end;            // kept, discarded or lost
  const char* why;  // in the destination's error (discarded, lost)
  // In what the source heard from the destination; nullptr when it cannot
  // hear (it is gone, finished, or itself the cause).
  const char* told;
  Mode mode = Mode::precopy;
};

std::string case_name(const Case& c) {
  return std::string(destination_phase_name(c.phase)) + "_" + failure_name(c.failure);
}

void PrintTo(const Case& c, std::ostream* os) { *os << case_name(c); }

const char* const kCancelReason = "test: interrupted";

const Case kCases[] = {
    {P::accept, Failure::cancel, P::discarded, kCancelReason, nullptr},
    {P::accept, Failure::source_silent, P::discarded, "timed out", nullptr},
    {P::accept, Failure::source_vanishes, P::discarded, "timed out", nullptr},
    {P::accept, Failure::unexpected_message, P::discarded, "test source: not a hello", nullptr},

    {P::prepare, Failure::sink_fails, P::discarded, "fake sink: prepare failed", "fake sink: prepare failed"},
    {P::prepare, Failure::cancel, P::discarded, kCancelReason, kCancelReason},
    {P::prepare, Failure::source_vanishes, P::discarded, "vanished", nullptr},

    {P::receive, Failure::sink_fails, P::discarded, "fake sink: take_exec_state failed",
     "fake sink: take_exec_state failed"},
    {P::receive, Failure::sink_refuses_table, P::discarded, "fake sink: adopt failed", "fake sink: adopt failed"},
    {P::receive, Failure::source_vanishes, P::discarded, "vanished", nullptr},
    {P::receive, Failure::source_error, P::discarded, "test source: tracker failed", nullptr},
    {P::receive, Failure::source_silent, P::discarded, "timed out", "timed out"},
    {P::receive, Failure::unexpected_message, P::discarded, "unexpected ready message", "unexpected ready message"},
    {P::receive, Failure::bad_batch, P::discarded, "outside", "outside"},
    {P::receive, Failure::cancel, P::discarded, kCancelReason, kCancelReason},
    {P::receive, Failure::table_change, P::kept, "", nullptr},

    {P::commit, Failure::postcopy_unsupported, P::discarded, "fake sink: no post-copy guest",
     "fake sink: no post-copy guest"},
    {P::commit, Failure::source_vanishes, P::discarded, "vanished", nullptr},
    {P::commit, Failure::cancel, P::discarded, kCancelReason, kCancelReason},

    {P::resume, Failure::sink_fails, P::discarded, "fake sink: resume failed", "fake sink: resume failed"},
    {P::resume, Failure::vm_fails, P::discarded, "fake sink: wait_running failed", "fake sink: wait_running failed"},
    {P::resume, Failure::vm_not_ready, P::discarded, "fake sink: wait_ready failed", "fake sink: wait_ready failed"},
    {P::resume, Failure::source_vanishes, P::discarded, "vanished", nullptr},
    {P::resume, Failure::cancel, P::discarded, kCancelReason, kCancelReason},

    {P::verdict, Failure::none, P::kept, "", nullptr},
    {P::verdict, Failure::corrupt_batch, P::discarded, "test source: digests differ", nullptr},
    {P::verdict, Failure::source_error, P::discarded, "test source: verify failed", nullptr},
    {P::verdict, Failure::source_vanishes, P::discarded, "vanished", nullptr},
    {P::verdict, Failure::source_silent, P::discarded, "timed out", "timed out"},
    {P::verdict, Failure::unexpected_message, P::discarded, "unexpected ready message", "unexpected ready message"},
    {P::verdict, Failure::sink_fails, P::discarded, "fake sink: keep failed", nullptr},
    {P::verdict, Failure::cancel, P::discarded, "test source: rolled back", kCancelReason},
    {P::verdict, Failure::cancel_after_release, P::kept, "", kCancelReason},
};

class Latch {
 public:
  void open() {
    {
      std::lock_guard g(lock_);
      open_ = true;
    }
    cv_.notify_all();
  }
  bool wait(transport::Timeout limit = kSourceWait) {
    std::unique_lock g(lock_);
    return cv_.wait_for(g, limit, [this] { return open_; });
  }

 private:
  std::mutex lock_;
  std::condition_variable cv_;
  bool open_ = false;
};

// The source's memory: what the destination must hold in the end.
struct SourceMemory {
  struct Region {
    uint64_t addr;
    std::vector<uint8_t> bytes;
  };
  std::vector<Region> regions;

  void add(uint64_t addr, uint64_t pages) { regions.push_back({addr, std::vector<uint8_t>(pages * kPageSize)}); }
  uint8_t* page(uint64_t addr) {
    for (auto& r : regions)
      if (addr >= r.addr && addr < r.addr + r.bytes.size()) return r.bytes.data() + (addr - r.addr);
    return nullptr;
  }
  // Version `v` of page `addr`: not zero, different per page and version.
  void write(uint64_t addr, uint32_t v) {
    uint8_t* p = page(addr);
    for (uint64_t i = 0; i < kPageSize; i += 8) {
      uint64_t word = (addr + i) * 0x9e3779b97f4a7c15ull + v;
      std::memcpy(p + i, &word, 8);
    }
  }
  std::vector<transport::DigestEntry> digests() {
    std::vector<PageRange> ranges;
    for (auto& r : regions) ranges.push_back({r.addr, r.addr + r.bytes.size()});
    PageHashes hashes(ranges);
    for (auto& r : regions)
      for (uint64_t off = 0; off < r.bytes.size(); off += kPageSize) hashes.set(r.addr + off, page_hash(&r.bytes[off]));
    return hashes.digests();
  }
};

bool same_digests(std::span<const transport::DigestEntry> a, std::span<const transport::DigestEntry> b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++)
    if (a[i].start != b[i].start || a[i].end != b[i].end || a[i].hash != b[i].hash) return false;
  return true;
}

transport::MappingTable table_of(const SourceMemory& m, uint32_t generation) {
  std::vector<transport::MappingEntry> entries;
  for (const auto& r : m.regions) entries.push_back({r.addr, r.addr + r.bytes.size(), 3, 0});
  auto t = transport::MappingTable::make(std::move(entries), generation);
  EXPECT_TRUE(t.ok()) << t.error().message;
  return t ? *t : transport::MappingTable{};
}

// A source that follows the protocol (docs/protocol.md) until the case
// makes it fail; it runs on the test's thread.
class ScriptedSource {
 public:
  ScriptedSource(const Case& c, transport::Dial dial, Latch& dest_in_phase, Latch& source_gone,
                 uint64_t ram_addr = kRamAddr)
      : c_(c), dial_(std::move(dial)), dest_in_phase_(dest_in_phase), source_gone_(source_gone) {
    memory.add(ram_addr, kRamPages);
  }

  void run() {
    auto r = c_.mode == Mode::postcopy ? postcopy_script() : c_.phase == P::accept ? fail_accept() : script();
    if (!r) told = heard(std::move(r).error());
  }

  SourceMemory memory;                // what a kept copy must hold
  std::optional<std::string> told;    // what the destination said, when the source failed

 private:
  bool at(P phase, Failure f) const { return c_.phase == phase && c_.failure == f; }
  Peer control() { return Peer::control(*session_, kSourceWait); }

  // The error a failed step ends with; the destination's own word when it
  // sent one (a broken channel is often only its echo).
  std::string heard(Error e) {
    if (session_)
      if (auto why = control().pending_error(transport::Timeout(500)); why) return why->message;
    return e.message;
  }

  // Waits for the destination to say something; it can only be an error.
  Result<void> word_from_destination() {
    auto word = control().expect<Close>(kSourceWait);
    if (word) return Error::msg("test source: the destination sent a close");
    return std::move(word).error();
  }

  // Destroys the session without a word once the destination entered
  // `phase` (it waits there until the source is gone).
  bool vanish_at(P phase) {
    if (!at(phase, Failure::source_vanishes)) return false;
    EXPECT_TRUE(dest_in_phase_.wait()) << "the destination never entered " << destination_phase_name(phase);
    session_.reset();
    source_gone_.open();
    return true;
  }

  Result<void> fail_accept() {
    transport::SessionConfig config;
    if (at(P::accept, Failure::source_vanishes)) {
      // The control channel joins, then the source dies before the rest.
      int dials = 0;
      auto dies_after_control = [&](transport::Timeout t) -> Result<std::unique_ptr<transport::Channel>> {
        if (++dials > 1) return Error::msg("test source: died");
        return dial_(t);
      };
      EXPECT_FALSE(transport::Session::connect_with(dies_after_control, config, table_of(memory, 0)).ok());
    } else if (at(P::accept, Failure::unexpected_message)) {
      auto channel = LM_TRY(dial_(kSourceWait));
      Peer(*channel, transport::kProtocolVersionMax, {}, kSourceWait).send_error(Error::msg("test source: not a hello"));
      dest_in_phase_.wait(kSourceWait);  // keep it open until the destination gave up
    }
    return ok();
  }

  Result<void> script() {
    transport::SessionConfig config;
    config.bulk_channels = 2;
    if (!at(P::commit, Failure::postcopy_unsupported)) config.features &= ~uint64_t(transport::kFeaturePostCopy);
    session_.emplace(LM_TRY(transport::Session::connect_with(dial_, config, table_of(memory, 0))));
    if (vanish_at(P::prepare)) return ok();
    LM_TRY(control().expect<Ready>());
    if (vanish_at(P::receive)) return ok();
    if (at(P::receive, Failure::source_silent)) return word_from_destination();
    LM_TRY(rounds());
    LM_TRY(control().send(ExecState{uint32_t(ExecStateKind::guest_ram), {}}));
    if (vanish_at(P::commit)) return ok();
    auto digest = LM_TRY(control().expect<Digest>());
    const bool verified = same_digests(digest.entries, memory.digests());
    if (vanish_at(P::resume)) return ok();
    LM_TRY(control().expect<Resumed>());
    if (vanish_at(P::verdict)) return ok();
    return verdict(verified);
  }

  // Round 0 sends three of every four pages; round 1 rewrites the first
  // eight, and is the last.
  Result<void> rounds() {
    std::vector<uint64_t> pages;
    for (uint64_t i = 0; i < kRamPages; i++)
      if (i % 4 != 3) pages.push_back(kRamAddr + i * kPageSize);
    for (uint64_t a : pages) memory.write(a, 0);
    LM_TRY(send_pages(0, pages));
    LM_TRY(end_round(0, 0));
    if (at(P::receive, Failure::source_error)) {
      control().send_error(Error::msg("test source: tracker failed"));
      return ok();
    }
    if (at(P::receive, Failure::unexpected_message)) LM_TRY(control().send(Ready{now_ns(), 0}));
    if (at(P::receive, Failure::bad_batch)) {
      LM_TRY(send_pages(1, {kExtraAddr}, 0));
      return word_from_destination();  // no commit: the bulk failure is noticed while receiving
    }
    pages.clear();
    for (uint64_t i = 0; i < 8; i++) pages.push_back(kRamAddr + i * kPageSize);
    if (at(P::receive, Failure::table_change) || at(P::receive, Failure::sink_refuses_table)) {
      memory.add(kExtraAddr, kExtraPages);
      LM_TRY(announce(table_of(memory, 1)));
      if (at(P::receive, Failure::sink_refuses_table)) return word_from_destination();
      for (uint64_t i = 0; i < kExtraPages; i += 2) pages.push_back(kExtraAddr + i * kPageSize);
    }
    for (uint64_t a : pages) memory.write(a, 1);
    LM_TRY(send_pages(1, pages));
    return end_round(1, kRoundEndFinal);
  }

  // Raw pages as the source holds them (a page outside its memory: zero).
  struct Batch {
    std::vector<PageEntry> entries;
    std::vector<std::byte> payload;
  };
  Batch batch_of(std::span<const uint64_t> pages) {
    Batch b;
    const std::vector<std::byte> zero(kPageSize);
    for (uint64_t a : pages) {
      b.entries.push_back({a, uint32_t(kPageSize), Codec::raw, 0, 0});
      const auto* p = reinterpret_cast<const std::byte*>(memory.page(a));
      b.payload.insert(b.payload.end(), p ? p : zero.data(), (p ? p : zero.data()) + kPageSize);
    }
    return b;
  }
  // The bulk channel of a page: by 64 KiB stripe, as the real source deals them.
  size_t channel_of(uint64_t addr) const { return (addr >> 16) % session_->bulk_count(); }

  Result<void> send_pages(uint64_t round, const std::vector<uint64_t>& pages, std::optional<size_t> only = {}) {
    for (size_t c = 0; c < session_->bulk_count(); c++) {
      std::vector<uint64_t> mine;
      for (uint64_t a : pages)
        if ((only ? *only : channel_of(a)) == c) mine.push_back(a);
      if (mine.empty()) continue;
      Batch b = batch_of(mine);
      if (at(P::verdict, Failure::corrupt_batch) && round == 1) b.payload[kPageSize - 1] ^= std::byte{1};
      LM_TRY(Peer::bulk(*session_, c, kSourceWait).send(PageBatch{round, b.entries, b.payload}));
    }
    return ok();
  }

  Result<void> end_round(uint32_t round, uint32_t flags) {
    for (size_t c = 0; c < session_->bulk_count(); c++)
      LM_TRY(Peer::bulk(*session_, c, kSourceWait).send(RoundEnd{.round = round, .flags = flags}));
    return ok();
  }

  Result<void> announce(transport::MappingTable table) {
    Mappings next{std::move(table)};
    for (size_t c = 0; c < session_->bulk_count(); c++) LM_TRY(Peer::bulk(*session_, c, kSourceWait).send(next));
    LM_TRY(control().send(next));
    session_->set_mappings(std::move(next.table));
    return ok();
  }

  Result<void> verdict(bool verified) {
    if (!verified) {
      control().send_error(Error::msg("test source: digests differ"));
      return ok();
    }
    if (at(P::verdict, Failure::source_error)) {
      control().send_error(Error::msg("test source: verify failed"));
      return ok();
    }
    if (at(P::verdict, Failure::unexpected_message)) LM_TRY(control().send(Ready{now_ns(), 0}));
    const bool waits_for_word = at(P::verdict, Failure::unexpected_message) || at(P::verdict, Failure::source_silent) ||
                                at(P::verdict, Failure::cancel) || at(P::verdict, Failure::cancel_after_release) ||
                                at(P::resume, Failure::vm_not_ready);
    if (waits_for_word) {
      told = word_from_destination().error().message;
      if (at(P::verdict, Failure::cancel)) control().send_error(Error::msg("test source: rolled back"));
      if (!at(P::verdict, Failure::cancel_after_release)) return ok();
    }
    LM_TRY(control().send(Close{}));
    return session_->close(transport::Timeout(2000));
  }

  // Pure post-copy (docs/postcopy.md): no pre-copy round, the map of needed
  // pages, the commit; then requests are served on the priority channel and,
  // after a while, every needed page is pushed on the bulk channels.
  Result<void> postcopy_script() {
    transport::SessionConfig config;
    config.bulk_channels = 2;
    session_.emplace(LM_TRY(transport::Session::connect_with(dial_, config, table_of(memory, 0))));
    LM_TRY(control().expect<Ready>());
    LM_TRY(end_round(0, kRoundEndFinal));
    std::vector<uint64_t> needed;  // three of every four pages hold data, the rest stay zero
    dt::RangeList ranges;
    const uint64_t ram = memory.regions.front().addr;
    for (uint64_t i = 0; i < kRamPages; i++) {
      if (i % 4 == 3) continue;
      needed.push_back(ram + i * kPageSize);
      memory.write(needed.back(), 0);
      ranges.push_back({needed.back(), needed.back() + kPageSize});
    }
    LM_TRY(send_page_bitmaps(control(), session_->mappings(), ranges));
    LM_TRY(control().send(ExecState{uint32_t(ExecStateKind::guest_ram), {}}));
    std::stop_source stop;
    std::thread server([&] { serve_requests(stop.get_token()); });
    auto joined = [&](Result<void> r) {
      stop.request_stop();
      server.join();
      return r;
    };
    auto resumed = control().expect<Resumed>();
    if (!resumed) return joined(std::move(resumed).error());
    if (at(P::postcopy, Failure::source_vanishes)) {
      (void)joined(ok());
      vanish_at(P::postcopy);
      return ok();
    }
    usleep(100000);  // the VM faults its first pages in on demand
    if (auto pushed = push(needed); !pushed) return joined(std::move(pushed).error());
    auto digest = control().expect<Digest>(kSourceWait);
    LM_TRY(joined(ok()));
    const bool verified = same_digests(LM_TRY(std::move(digest)).entries, memory.digests());
    if (vanish_at(P::verdict)) return ok();
    return verdict(verified);
  }

  Result<void> push(const std::vector<uint64_t>& pages) {
    for (size_t c = 0; c < session_->bulk_count(); c++) {
      std::vector<uint64_t> mine;
      for (uint64_t a : pages)
        if (channel_of(a) == c) mine.push_back(a);
      const Peer bulk = Peer::bulk(*session_, c, kSourceWait);
      for (size_t i = 0; i < mine.size(); i += 8) {
        Batch b = batch_of(std::span(mine).subspan(i, std::min<size_t>(8, mine.size() - i)));
        LM_TRY(bulk.send(PageReply{0, b.entries, b.payload}));
      }
      LM_TRY(bulk.send(RoundEnd{.flags = kRoundEndFinal, .pages = mine.size()}));
    }
    return ok();
  }

  void serve_requests(std::stop_token stop) {
    const Peer peer = Peer::priority(*session_, kSourceWait);
    while (!stop.stop_requested()) {
      auto request = peer.expect<PageRequest>(kSourceWait, stop);
      if (!request) return;
      std::vector<uint64_t> addrs(request->addrs.begin(), request->addrs.end());
      Batch b = batch_of(addrs);
      if (!peer.send(PageReply{request->request_id, b.entries, b.payload})) return;
    }
  }

  const Case& c_;
  transport::Dial dial_;
  Latch& dest_in_phase_;
  Latch& source_gone_;
  std::optional<transport::Session> session_;
};

// --- the tests --------------------------------------------------------------------------

// One case run: the destination on its own thread, the scripted source on
// the test's.
struct Ended {
  std::optional<Result<DestinationOutcome>> outcome;
  std::vector<P> phases;  // as entered
  SourceMemory memory;    // the source's, at the end
  std::optional<std::string> told;
};

void inject_into_sink(const Case& c, FakePageSink& sink, const std::shared_ptr<Cancel>& cancel) {
  if (c.failure == Failure::sink_fails) {
    const SinkCall call = c.phase == P::prepare ? SinkCall::prepare
                          : c.phase == P::receive ? SinkCall::take_exec_state
                          : c.phase == P::resume  ? SinkCall::resume
                                                  : SinkCall::keep;
    sink.fail(call);
  }
  if (c.failure == Failure::sink_refuses_table) sink.fail(SinkCall::adopt);
  if (c.failure == Failure::vm_fails) sink.fail(SinkCall::wait_running);
  if (c.failure == Failure::vm_not_ready) sink.fail(SinkCall::wait_ready);
  // A cancel while the sink waits for the VM to run (SinkWait::stopped).
  if (c.phase == P::resume && c.failure == Failure::cancel)
    sink.on(SinkCall::wait_running, [cancel] { cancel->request(kCancelReason); });
}

Ended run_case(const Case& c, const std::shared_ptr<FakePageSink>& sink, uint64_t ram_addr = kRamAddr) {
  auto cancel = std::make_shared<Cancel>();
  inject_into_sink(c, *sink, cancel);
  Latch dest_in_phase, source_gone;
  std::mutex phases_lock;
  Ended ended;
  DestinationOptions o;
  o.sink = sink;
  o.timeout = kSilence;
  o.reconnect_timeout = transport::Timeout(0);
  o.cancel = cancel;
  o.on_phase = [&](P p) {
    {
      std::lock_guard g(phases_lock);
      ended.phases.push_back(p);
    }
    if (p == P::discarded || p == P::kept || p == P::lost) dest_in_phase.open();  // nothing more to wait for
    if (p != c.phase) return;
    const bool cancel_here = c.failure == Failure::cancel || c.failure == Failure::cancel_after_release;
    if (cancel_here && c.phase != P::resume) cancel->request(kCancelReason);
    if (c.failure == Failure::source_vanishes && c.phase != P::accept) {
      dest_in_phase.open();
      EXPECT_TRUE(source_gone.wait()) << "the source did not vanish";
    }
  };
  auto link = transport::make_inproc_link(transport::ChannelOptions{}, "matrix");
  auto dest = Destination::over(std::move(link.listener), o);
  EXPECT_TRUE(dest.ok()) << dest.error().message;
  if (!dest) return ended;
  std::thread dest_thread([&] { ended.outcome = (*dest)->run(); });
  ScriptedSource source(c, link.dial, dest_in_phase, source_gone, ram_addr);
  source.run();
  dest_thread.join();
  ended.memory = std::move(source.memory);
  ended.told = std::move(source.told);
  return ended;
}

// What the diagram promises for the end the case expects.
void expect_end(const Case& c, const Ended& ended, const FakePageSink& sink) {
  ASSERT_TRUE(ended.outcome.has_value());
  const auto& seen = ended.phases;
  ASSERT_GE(seen.size(), 2u);
  EXPECT_EQ(seen.back(), c.end) << "ended " << destination_phase_name(seen.back());
  if (c.end == P::kept) {
    ASSERT_TRUE(ended.outcome->ok()) << ended.outcome->error().message;
    EXPECT_TRUE(sink.kept());
    EXPECT_FALSE(sink.discarded());
  } else {
    EXPECT_EQ(seen[seen.size() - 2], c.phase) << "the failure must be noticed in " << destination_phase_name(c.phase)
                                               << ", not in " << destination_phase_name(seen[seen.size() - 2]);
    ASSERT_FALSE(ended.outcome->ok()) << "the destination must not keep a copy";
    std::printf("destination: %s\n", ended.outcome->error().message.c_str());
    EXPECT_NE(ended.outcome->error().message.find(c.why), std::string::npos) << ended.outcome->error().message;
    EXPECT_TRUE(sink.discarded()) << "what the destination does not keep, the sink must discard";
    EXPECT_FALSE(sink.kept());
  }
  if (c.told) {
    ASSERT_TRUE(ended.told.has_value()) << "the source was not told anything";
    std::printf("source heard: %s\n", ended.told->c_str());
    EXPECT_NE(ended.told->find(c.told), std::string::npos) << *ended.told;
  }
}

class DestinationMatrix : public ::testing::TestWithParam<Case> {};

TEST_P(DestinationMatrix, FailureEndsAsTheDiagramSays) {
  const Case& c = GetParam();
  auto sink = std::make_shared<FakePageSink>();
  const Ended ended = run_case(c, sink);
  expect_end(c, ended, *sink);
  if (c.end != P::kept || HasFatalFailure()) return;
  EXPECT_EQ(ended.phases, (std::vector<P>{P::accept, P::prepare, P::receive, P::commit, P::resume, P::verdict, P::kept}));
  // Exactly the pages sent (their last versions), zero where none was.
  EXPECT_EQ(sink->regions().size(), ended.memory.regions.size());
  uint64_t pages = 0;
  for (const auto& r : ended.memory.regions)
    for (uint64_t off = 0; off < r.bytes.size(); off += kPageSize, pages++) {
      const uint8_t* held = sink->page(r.addr + off);
      ASSERT_NE(held, nullptr) << "no region at 0x" << std::hex << r.addr + off;
      EXPECT_EQ(std::memcmp(held, &r.bytes[off], kPageSize), 0) << "page 0x" << std::hex << r.addr + off;
    }
  const bool grew = c.failure == Failure::table_change;
  EXPECT_EQ(pages, kRamPages + (grew ? kExtraPages : 0));
  EXPECT_EQ(ended.outcome->value().pages_received, kRamPages / 4 * 3 + 8 + (grew ? kExtraPages / 2 : 0));
  EXPECT_EQ(sink->exec_kind, uint32_t(ExecStateKind::guest_ram));
}

INSTANTIATE_TEST_SUITE_P(Phases, DestinationMatrix, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return case_name(info.param); });

// --- post-copy: the VM is a thread of this process --------------------------------------

const Case kPostcopyCases[] = {
    {P::verdict, Failure::none, P::kept, "", nullptr, Mode::postcopy},
    {P::postcopy, Failure::source_vanishes, P::lost, "vanished", nullptr, Mode::postcopy},
    {P::verdict, Failure::source_vanishes, P::lost, "vanished", nullptr, Mode::postcopy},
};

class DestinationPostcopy : public ::testing::TestWithParam<Case> {};

TEST_P(DestinationPostcopy, EndsAsTheDiagramSays) {
  const Case& c = GetParam();
  FaultingGuest guest;
  if (auto made = guest.create(kRamPages); !made) {
    if (no_userfaultfd_here(made.error()))
      GTEST_SKIP() << "no userfaultfd on shmem here: " << made.error().message;
    FAIL() << made.error().message;
  }
  auto sink = std::make_shared<FakePageSink>();
  sink->use_postcopy_ram(guest.memfd(), guest.take_uffd());
  sink->on(SinkCall::resume, [&] { guest.start(sink->steps); });
  const Ended ended = run_case(c, sink, guest.addr());
  guest.stop();
  expect_end(c, ended, *sink);
  if (c.end != P::kept || HasFatalFailure()) return;
  EXPECT_EQ(ended.phases,
            (std::vector<P>{P::accept, P::prepare, P::receive, P::commit, P::resume, P::postcopy, P::verdict, P::kept}));
  // The VM read every page as the source has it: pulled on a fault, pushed, or zero.
  ASSERT_EQ(guest.seen().size(), kRamPages);
  SourceMemory memory = ended.memory;
  for (uint64_t i = 0; i < kRamPages; i++) {
    uint64_t want;
    std::memcpy(&want, memory.page(guest.addr() + i * kPageSize), sizeof want);
    EXPECT_EQ(guest.seen()[i], want) << "page " << i;
  }
  const auto& out = ended.outcome->value();
  ASSERT_TRUE(out.postcopy.has_value());
  EXPECT_GT(out.postcopy->demand_faults, 0u) << "the VM ran before the pages came: it must have faulted";
  EXPECT_EQ(out.postcopy->zero_faults, kRamPages / 4) << "a page the source never wrote is resolved here, as zero";
}

INSTANTIATE_TEST_SUITE_P(Postcopy, DestinationPostcopy, ::testing::ValuesIn(kPostcopyCases),
                         [](const auto& info) { return case_name(info.param); });

}  // namespace
}  // namespace lm::engine::test
