// The destination's phase machine in one process, without guests: the real
// Destination with a fake page sink over the in-process link, driven by a
// scripted source that speaks the engine's typed messages. For each phase of
// the diagram in engine/destination.hpp, each failure that can happen there
// is injected, and what the diagram promises is checked: discarded => the
// sink discarded its copy and the source was told why; kept => the sink kept
// and holds exactly the pages the source sent.
#include <gtest/gtest.h>

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

struct Case {
  P phase;          // where the failure is injected, and where the destination must notice it
  Failure failure;
  P end;            // kept or discarded
  const char* why;  // in the destination's error (discarded)
  // In what the source heard from the destination; nullptr when it cannot
  // hear (it is gone, finished, or itself the cause).
  const char* told;
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
  ScriptedSource(const Case& c, transport::Dial dial, Latch& dest_in_phase, Latch& source_gone)
      : c_(c), dial_(std::move(dial)), dest_in_phase_(dest_in_phase), source_gone_(source_gone) {
    memory.add(kRamAddr, kRamPages);
  }

  void run() {
    auto r = c_.phase == P::accept ? fail_accept() : script();
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

  // Pages go by 64 KiB stripe to a bulk channel, as the real source deals them.
  Result<void> send_pages(uint64_t round, const std::vector<uint64_t>& pages, std::optional<size_t> only = {}) {
    for (size_t c = 0; c < session_->bulk_count(); c++) {
      std::vector<PageEntry> entries;
      std::vector<std::byte> payload;
      for (uint64_t a : pages) {
        if ((only ? *only : (a >> 16) % session_->bulk_count()) != c) continue;
        entries.push_back({a, uint32_t(kPageSize), Codec::raw, 0, 0});
        const uint8_t* p = memory.page(a);
        std::vector<uint8_t> zero(kPageSize);
        payload.insert(payload.end(), reinterpret_cast<const std::byte*>(p ? p : zero.data()),
                       reinterpret_cast<const std::byte*>(p ? p : zero.data()) + kPageSize);
        if (at(P::verdict, Failure::corrupt_batch) && round == 1 && entries.size() == 1) payload.back() ^= std::byte{1};
      }
      if (entries.empty()) continue;
      LM_TRY(Peer::bulk(*session_, c, kSourceWait).send(PageBatch{round, entries, payload}));
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

  const Case& c_;
  transport::Dial dial_;
  Latch& dest_in_phase_;
  Latch& source_gone_;
  std::optional<transport::Session> session_;
};

// --- the test ---------------------------------------------------------------------------

class DestinationMatrix : public ::testing::TestWithParam<Case> {};

TEST_P(DestinationMatrix, FailureEndsAsTheDiagramSays) {
  const Case& c = GetParam();
  auto sink = std::make_shared<FakePageSink>();
  auto cancel = std::make_shared<Cancel>();
  Latch dest_in_phase, source_gone;
  std::mutex phases_lock;
  std::vector<P> phases;
  if (c.failure == Failure::sink_fails) {
    const SinkCall call = c.phase == P::prepare ? SinkCall::prepare
                          : c.phase == P::receive ? SinkCall::take_exec_state
                          : c.phase == P::resume  ? SinkCall::resume
                                                  : SinkCall::keep;
    sink->fail(call);
  }
  if (c.failure == Failure::sink_refuses_table) sink->fail(SinkCall::adopt);
  if (c.failure == Failure::vm_fails) sink->fail(SinkCall::wait_running);
  if (c.failure == Failure::vm_not_ready) sink->fail(SinkCall::wait_ready);
  // A cancel while the sink waits for the VM to run (SinkWait::stopped).
  if (c.phase == P::resume && c.failure == Failure::cancel)
    sink->on(SinkCall::wait_running, [&] { cancel->request(kCancelReason); });

  DestinationOptions o;
  o.sink = sink;
  o.timeout = kSilence;
  o.reconnect_timeout = transport::Timeout(0);
  o.cancel = cancel;
  o.on_phase = [&](P p) {
    {
      std::lock_guard g(phases_lock);
      phases.push_back(p);
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
  ASSERT_TRUE(dest.ok()) << dest.error().message;
  std::optional<Result<DestinationOutcome>> outcome;
  std::thread dest_thread([&] { outcome = (*dest)->run(); });

  ScriptedSource source(c, link.dial, dest_in_phase, source_gone);
  source.run();
  dest_thread.join();

  ASSERT_TRUE(outcome.has_value());
  std::vector<P> seen;
  {
    std::lock_guard g(phases_lock);
    seen = phases;
  }
  ASSERT_GE(seen.size(), 2u);
  EXPECT_EQ(seen.back(), c.end) << "ended " << destination_phase_name(seen.back());
  if (c.end == P::discarded) {
    EXPECT_EQ(seen[seen.size() - 2], c.phase) << "the failure must be noticed in " << destination_phase_name(c.phase)
                                               << ", not in " << destination_phase_name(seen[seen.size() - 2]);
  }
  if (c.end == P::kept) {
    ASSERT_TRUE(outcome->ok()) << outcome->error().message;
    EXPECT_TRUE(sink->kept());
    EXPECT_FALSE(sink->discarded());
    EXPECT_EQ(seen, (std::vector<P>{P::accept, P::prepare, P::receive, P::commit, P::resume, P::verdict, P::kept}));
    // Exactly the pages sent (their last versions), zero where none was.
    EXPECT_EQ(sink->regions().size(), source.memory.regions.size());
    uint64_t pages = 0;
    for (auto& r : source.memory.regions)
      for (uint64_t off = 0; off < r.bytes.size(); off += kPageSize, pages++) {
        const uint8_t* held = sink->page(r.addr + off);
        ASSERT_NE(held, nullptr) << "no region at 0x" << std::hex << r.addr + off;
        EXPECT_EQ(std::memcmp(held, &r.bytes[off], kPageSize), 0) << "page 0x" << std::hex << r.addr + off;
      }
    EXPECT_EQ(pages, kRamPages + (c.failure == Failure::table_change ? kExtraPages : 0));
    EXPECT_EQ(outcome->value().pages_received,
              kRamPages / 4 * 3 + 8 + (c.failure == Failure::table_change ? kExtraPages / 2 : 0));
    EXPECT_EQ(sink->exec_kind, uint32_t(ExecStateKind::guest_ram));
  } else {
    ASSERT_FALSE(outcome->ok()) << "the destination must not keep a copy";
    std::printf("destination: %s\n", outcome->error().message.c_str());
    EXPECT_NE(outcome->error().message.find(c.why), std::string::npos) << outcome->error().message;
    EXPECT_TRUE(sink->discarded()) << "a discarded copy must be discarded by the sink";
    EXPECT_FALSE(sink->kept());
  }
  if (c.told) {
    ASSERT_TRUE(source.told.has_value()) << "the source was not told anything";
    std::printf("source heard: %s\n", source.told->c_str());
    EXPECT_NE(source.told->find(c.told), std::string::npos) << *source.told;
  }
}

INSTANTIATE_TEST_SUITE_P(Phases, DestinationMatrix, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return case_name(info.param); });

}  // namespace
}  // namespace lm::engine::test
