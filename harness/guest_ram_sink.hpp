// The page sink that resumes livemig-guest (docs/guest.md): on prepare it
// spawns `livemig-guest --resume` and takes its RAM memfd (and, for
// post-copy, the userfaultfd registered on it) over the resume handoff; the
// engine writes pages into that RAM; resume says `go` and waits for the
// guest's running report; keep releases the guest to run on its own, discard
// aborts or kills it. The resumed guest then belongs to the caller
// (take_guest()).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "engine/page_sink.hpp"
#include "harness/guest/client.hpp"
#include "harness/guest/handoff.hpp"

namespace lm::engine {

struct GuestRamSinkOptions {
  std::string guest_binary;  // livemig-guest
  std::string work_dir;      // the handoff socket and the resumed guest's control socket
  // Pre-copy allocates the RAM before receiving (post-copy never does: pages
  // in the page cache would not raise the MISSING faults it serves).
  MappedMemfd::Prealloc prealloc = MappedMemfd::Prealloc::yes;
};

class GuestRamSink final : public PageSink {
 public:
  explicit GuestRamSink(GuestRamSinkOptions options) : o_(std::move(options)) {}
  ~GuestRamSink() override;

  Result<std::vector<SinkRegion>> prepare(const transport::MappingTable& table, ServeFaults faults,
                                          const SinkWait& wait) override;
  Result<std::vector<SinkRegion>> adopt(const transport::MappingTable& table) override;
  Result<void> take_exec_state(const transport::ExecStateView& state) override;
  Result<PostcopyGuestRam> postcopy_ram() override;
  bool resumes_vm() const override { return true; }
  Result<void> resume() override;
  Result<uint64_t> wait_running(const SinkWait& wait) override;
  Result<void> wait_ready(transport::Timeout timeout) override;
  std::optional<uint64_t> progress() override;
  Result<void> keep(const transport::MappingTable& table) override;
  void discard() override;

  // After a kept migration: the resumed guest, now the caller's to stop
  // (null before that, after a failure, or once taken).
  std::unique_ptr<guest::GuestProcess> take_guest();

 private:
  pid_t guest_pid() const { return guest_ ? guest_->pid() : -1; }

  GuestRamSinkOptions o_;
  std::optional<guest::HandoffServer> handoff_;
  std::unique_ptr<guest::GuestProcess> guest_;
  std::optional<MappedMemfd> ram_;
  UniqueFd uffd_;  // post-copy: registered by the guest on its RAM
  bool minor_registered_ = false;
  bool kept_ = false;
};

}  // namespace lm::engine
