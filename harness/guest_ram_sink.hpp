// The page sink that resumes livemig-guest (docs/guest.md): on prepare it
// spawns `livemig-guest --resume`, which makes its RAM (hugetlb, anonymous
// THP or shmem; written in before it replies) and hands over its memfd (and,
// for post-copy, the userfaultfd registered on it), or for anonymous RAM only
// its pid; the engine writes pages into that RAM (mapped, or process_vm_writev); resume says `go` and waits for the
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
  // Pre-copy: the RAM kinds the guest may use besides shmem (it takes the
  // first that works: hugetlb, anon-thp, shmem) and whether it writes its RAM
  // in before the handoff reply (the engine then maps a memfd populated too).
  // Post-copy always takes a shmem memfd, never populated: pages in the page
  // cache would not raise the MISSING faults it serves.
  guest::RamOffer ram;
};

class GuestRamSink final : public PageSink {
 public:
  explicit GuestRamSink(GuestRamSinkOptions options) : o_(std::move(options)) {}
  ~GuestRamSink() override;

  Result<std::vector<SinkRegion>> prepare(const transport::MappingTable& table, ServeFaults faults,
                                          const SinkWait& wait) override;
  PreparedMemory prepared() const override { return prepared_; }
  // The guest's RAM is one mapping that is never remapped: it drops nothing
  // (PageSink's default drop), and a table with other mappings is refused.
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
  SinkRegion region_;                // the guest's RAM as the receivers write it
  std::optional<MappedMemfd> ram_;   // its memfd mapped here (none for anon-thp)
  PreparedMemory prepared_;
  UniqueFd uffd_;  // post-copy: registered by the guest on its RAM
  bool minor_registered_ = false;
  bool kept_ = false;
};

}  // namespace lm::engine
