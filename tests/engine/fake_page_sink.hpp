// A page sink in memory for engine tests: a memfd region per mapping (it
// follows mapping changes like the image sink), a "VM" that resumes at once,
// a record of what the destination asked of it, and failure injection per
// call. For post-copy a test hands it the RAM and userfaultfd of a "guest"
// it runs itself (use_postcopy_ram).
#pragma once

#include <atomic>
#include <cerrno>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/clock.hpp"
#include "engine/page_sink.hpp"

namespace lm::engine::test {

enum class SinkCall { prepare, adopt, take_exec_state, postcopy_ram, resume, wait_running, wait_ready, keep };

inline const char* sink_call_name(SinkCall c) {
  switch (c) {
    case SinkCall::prepare: return "prepare";
    case SinkCall::adopt: return "adopt";
    case SinkCall::take_exec_state: return "take_exec_state";
    case SinkCall::postcopy_ram: return "postcopy_ram";
    case SinkCall::resume: return "resume";
    case SinkCall::wait_running: return "wait_running";
    case SinkCall::wait_ready: return "wait_ready";
    case SinkCall::keep: return "keep";
  }
  return "?";
}

class FakePageSink final : public PageSink {
 public:
  // The call fails with "fake sink: <call> failed" (EIO).
  void fail(SinkCall call) { failing_.insert(call); }
  // Runs at the start of the call, on the destination's thread.
  void on(SinkCall call, std::function<void()> hook) { hooks_[call] = std::move(hook); }
  // Post-copy: the RAM of a guest the test runs (the sink maps `memfd` for
  // the engine's writes; `uffd` is registered on the guest's mapping at the
  // table's one address).
  void use_postcopy_ram(UniqueFd memfd, UniqueFd uffd) {
    guest_memfd_ = std::move(memfd);
    guest_uffd_ = std::move(uffd);
  }

  bool kept() const { return kept_; }
  bool discarded() const { return discarded_; }
  std::vector<std::string> calls() const {
    std::lock_guard g(lock_);
    return calls_;
  }
  // Pages as the sink holds them (nullptr: no region there).
  const uint8_t* page(uint64_t addr) const {
    std::lock_guard g(lock_);
    for (const auto& r : regions_)
      if (addr >= r.addr() && addr < r.addr() + r.bytes()) return r.base() + (addr - r.addr());
    return nullptr;
  }
  std::vector<SinkRegion> regions() const {
    std::lock_guard g(lock_);
    std::vector<SinkRegion> out;
    for (const auto& r : regions_) out.push_back(r.region());
    return out;
  }
  // Progress reported to the destination (the post-copy rate).
  std::atomic<uint64_t> steps{0};

  Result<std::vector<SinkRegion>> prepare(const transport::MappingTable& table, ServeFaults faults,
                                          const SinkWait&) override {
    LM_TRY(enter(SinkCall::prepare));
    if (faults == ServeFaults::yes && guest_memfd_.get() >= 0) {
      const auto& e = table.entries().front();
      std::lock_guard g(lock_);
      regions_.push_back(LM_TRY(MappedMemfd::map(e.start, e.end - e.start, std::move(guest_memfd_),
                                                 MappedMemfd::Prealloc::no)));
      return std::vector<SinkRegion>{regions_.back().region()};
    }
    return add_regions(table);
  }
  Result<std::vector<SinkRegion>> adopt(const transport::MappingTable& table) override {
    LM_TRY(enter(SinkCall::adopt));
    return add_regions(table);
  }
  Result<void> take_exec_state(const transport::ExecStateView& state) override {
    LM_TRY(enter(SinkCall::take_exec_state));
    exec_kind = state.kind;
    return ok();
  }
  Result<PostcopyGuestRam> postcopy_ram() override {
    LM_TRY(enter(SinkCall::postcopy_ram));
    if (guest_uffd_.get() < 0) return Error::msg("fake sink: no post-copy guest");
    std::lock_guard g(lock_);
    const auto& r = regions_.front();
    return PostcopyGuestRam{std::move(guest_uffd_), false, r.memfd(), r.base(), {r.addr(), r.addr() + r.bytes()}};
  }
  bool resumes_vm() const override { return true; }
  Result<void> resume() override { return enter(SinkCall::resume); }
  Result<uint64_t> wait_running(const SinkWait& wait) override {
    LM_TRY(enter(SinkCall::wait_running));
    if (wait.stopped && wait.stopped()) return Error::sys(ECANCELED, "fake sink: waiting for the VM to run stopped");
    return now_ns();
  }
  Result<void> wait_ready(transport::Timeout) override { return enter(SinkCall::wait_ready); }
  std::optional<uint64_t> progress() override { return steps.load(); }
  Result<void> keep(const transport::MappingTable&) override {
    LM_TRY(enter(SinkCall::keep));
    kept_ = true;
    return ok();
  }
  void discard() override {
    std::lock_guard g(lock_);
    calls_.push_back("discard");
    discarded_ = true;
  }

  uint32_t exec_kind = 0;

 private:
  Result<void> enter(SinkCall call) {
    {
      std::lock_guard g(lock_);
      calls_.push_back(sink_call_name(call));
    }
    if (auto h = hooks_.find(call); h != hooks_.end()) h->second();
    if (failing_.count(call)) return Error::sys(EIO, std::string("fake sink: ") + sink_call_name(call) + " failed");
    return ok();
  }
  Result<std::vector<SinkRegion>> add_regions(const transport::MappingTable& table) {
    std::lock_guard g(lock_);
    std::vector<SinkRegion> added;
    for (const auto& e : table.entries()) {
      bool held = false;
      for (const auto& r : regions_) held |= r.addr() == e.start;
      if (held) continue;
      regions_.push_back(LM_TRY(MappedMemfd::create(e.start, e.end - e.start)));
      added.push_back(regions_.back().region());
    }
    return added;
  }

  std::set<SinkCall> failing_;
  std::map<SinkCall, std::function<void()>> hooks_;
  mutable std::mutex lock_;
  std::vector<MappedMemfd> regions_;
  std::vector<std::string> calls_;
  std::atomic<bool> kept_{false};
  std::atomic<bool> discarded_{false};
  UniqueFd guest_memfd_;
  UniqueFd guest_uffd_;
};

}  // namespace lm::engine::test
