#include "harness/guest_ram_sink.hpp"

#include <unistd.h>

#include "engine/source.hpp"

namespace lm::engine {

GuestRamSink::~GuestRamSink() {
  if (!kept_) discard();
}

Result<std::vector<SinkRegion>> GuestRamSink::prepare(const transport::MappingTable& table, ServeFaults faults,
                                                      const SinkWait& wait) {
  if (table.entries().size() != 1)
    return Error::msg(strf("a guest migration announces one RAM mapping, this one %zu", table.entries().size()));
  const auto& ram = table.entries().front();
  std::string handoff_path = o_.work_dir + strf("/handoff-%d-%p.sock", getpid(), static_cast<void*>(this));
  handoff_ = LM_TRY(guest::HandoffServer::listen(handoff_path));
  guest_ = std::make_unique<guest::GuestProcess>(
      LM_TRY(guest::GuestProcess::spawn_resume(o_.guest_binary, handoff_path, o_.work_dir)));
  const bool postcopy = faults == ServeFaults::yes;
  guest::RamOffer offer = o_.ram;
  if (postcopy) offer = {guest::UffdWanted::yes, false, false, false};
  const uint64_t bytes = ram.end - ram.start;
  auto got = LM_TRY_CTX(handoff_->accept(ram.start, bytes, offer, int(wait.timeout.count()), wait.stopped),
                        strf("resumed guest pid %d", guest_pid()));
  prepared_ = {got.population_ns, std::string(guest::ram_kind_name(got.kind))};
  if (got.kind == guest::RamKind::anon_thp) {
    region_ = SinkRegion{ram.start, bytes, nullptr, -1, got.pid};
  } else {
    const bool populated = !postcopy && offer.populate;
    ram_.emplace(LM_TRY(MappedMemfd::map(ram.start, bytes, std::move(got.memfd),
                                         populated ? MappedMemfd::Prealloc::yes : MappedMemfd::Prealloc::no)));
    prepared_.population_ns += ram_->population_ns();
    region_ = ram_->region();
  }
  uffd_ = std::move(got.uffd);
  minor_registered_ = got.minor_registered;
  return std::vector<SinkRegion>{region_};
}

// The guest's RAM is its one mapping: a table that is not exactly it again
// cannot be followed.
Result<std::vector<SinkRegion>> GuestRamSink::adopt(const transport::MappingTable& table) {
  const auto& e = table.entries();
  if (region_.bytes && e.size() == 1 && e.front().start == region_.addr &&
      e.front().end - e.front().start == region_.bytes)
    return std::vector<SinkRegion>{};
  return Error::msg(strf("a guest migration keeps its one RAM mapping; the source announced %zu mappings "
                         "(generation %u) instead",
                         e.size(), table.generation()));
}

Result<void> GuestRamSink::take_exec_state(const transport::ExecStateView& state) {
  if (state.kind != uint32_t(ExecStateKind::guest_ram))
    return Error::msg(strf("exec state kind %u cannot resume a livemig-guest", state.kind));
  return ok();
}

Result<PostcopyGuestRam> GuestRamSink::postcopy_ram() {
  if (!ram_ || uffd_.get() < 0) return Error::msg("post-copy: the guest's RAM was prepared without a userfaultfd");
  return PostcopyGuestRam{std::move(uffd_), minor_registered_, ram_->memfd(), ram_->base(),
                          {ram_->addr(), ram_->addr() + ram_->bytes()}};
}

Result<void> GuestRamSink::resume() { return handoff_->go(); }

Result<uint64_t> GuestRamSink::wait_running(const SinkWait& wait) {
  return LM_TRY_CTX(handoff_->wait_running(int(wait.timeout.count()), wait.stopped),
                    strf("resume guest pid %d", guest_pid()));
}

Result<void> GuestRamSink::wait_ready(transport::Timeout timeout) { return guest_->wait_ready(int(timeout.count())); }

std::optional<uint64_t> GuestRamSink::progress() {
  if (!guest_) return std::nullopt;
  auto status = guest_->control().status();
  if (!status) return std::nullopt;
  return status->steps;
}

Result<void> GuestRamSink::keep(const transport::MappingTable&) {
  LM_TRY_CTX(handoff_->release(), strf("release the resumed guest pid %d", guest_pid()));
  kept_ = true;
  handoff_.reset();  // released: the guest no longer depends on its engine
  return ok();
}

// The guest never ran from this RAM (abort), or ran and is killed.
void GuestRamSink::discard() {
  if (handoff_) (void)handoff_->abort();
  guest_.reset();  // kills by PID and reaps
  handoff_.reset();
  uffd_.reset();
  ram_.reset();
  region_ = {};
  kept_ = false;
}

std::unique_ptr<guest::GuestProcess> GuestRamSink::take_guest() {
  if (!kept_) return nullptr;
  return std::move(guest_);
}

}  // namespace lm::engine
